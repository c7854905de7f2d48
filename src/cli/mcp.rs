//! `workbench mcp`: the MCP server on stdio, for AI CLIs.

use super::{finish, CliError, CliResult};

pub const USAGE: &str = "\
usage: workbench mcp

Runs the MCP server on stdin/stdout (newline-delimited JSON-RPC 2.0). AI CLIs
start it themselves; register it once with `workbench setup`, or by hand:

  claude mcp add workbench -- /path/to/workbench mcp
  ~/.codex/config.toml:   [mcp_servers.workbench]
                          command = \"/path/to/workbench\"
                          args = [\"mcp\"]
  Gemini CLI / Cursor:    {\"mcpServers\": {\"workbench\": {\"command\": \"/path/to/workbench\", \"args\": [\"mcp\"]}}}
  over SSH to a lab PC:   command \"ssh\", args [\"labpc\", \"workbench\", \"mcp\"]

example:
  printf '%s\\n' '{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}' | workbench mcp
";

pub fn run(args: pico_args::Arguments) -> CliResult {
    finish(args, USAGE)?;
    crate::mcp::run().map_err(CliError::Failed)
}
