//! `workbench chat-session <name>`: run one relay chat session in the
//! foreground. `chat_connect` (in `workbench mcp`) starts it detached.

use super::{finish, positional, usage_error, CliError, CliResult};
use crate::chat::{self, SessionName};

pub const USAGE: &str = "\
usage: workbench chat-session <name>

Runs the chat session <name> described by
$WORKBENCH_HOME/.chat/<name>/config.json: holds its relay connection,
reconnects with backoff, and numbers every received frame in inbox.jsonl.
The MCP tool chat_connect writes the config and starts this command
detached; you rarely run it by hand. `workbench list` shows sessions,
`workbench stop --chat <name>` ends one.

example:
  workbench chat-session alice
";

pub fn run(mut args: pico_args::Arguments) -> CliResult {
    let name: String = positional(&mut args, USAGE, "name")?;
    finish(args, USAGE)?;
    let name = SessionName::parse(&name).map_err(|e| usage_error(USAGE, e))?;
    chat::session::run(name).map_err(|e| {
        crate::util::log_event("session_failed", serde_json::json!({"error": e}));
        CliError::Failed(e)
    })
}
