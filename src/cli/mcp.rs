//! `workbench mcp`: the MCP server on stdio, for AI CLIs; with `--http`, the
//! same server over MCP's Streamable HTTP transport (docs/remote-mcp.md).

use std::time::Duration;

use super::{arg_error, finish, usage_error, CliError, CliResult};
use crate::mcp::http::{self, HttpConfig};

pub const USAGE: &str = "\
usage: workbench mcp
       workbench mcp --http [--host 127.0.0.1] [--port 8765] [--allow-origin O]... [--session-idle SECS] [--detach]
       workbench mcp --http --show-token

Runs the MCP server on stdin/stdout (newline-delimited JSON-RPC 2.0). AI CLIs
start it themselves; register it once with `workbench setup`, or by hand:

  claude mcp add workbench -- /path/to/workbench mcp
  ~/.codex/config.toml:   [mcp_servers.workbench]
                          command = \"/path/to/workbench\"
                          args = [\"mcp\"]
  Gemini CLI / Cursor:    {\"mcpServers\": {\"workbench\": {\"command\": \"/path/to/workbench\", \"args\": [\"mcp\"]}}}
  over SSH to a lab PC:   command \"ssh\", args [\"labpc\", \"workbench\", \"mcp\"]

With --http it serves MCP over Streamable HTTP at http://HOST:PORT/mcp for an
AI CLI on another machine (register it there with `workbench setup --remote URL`).
Every request needs `Authorization: Bearer <token>`; the token is made at
first start in $WORKBENCH_HOME/.mcp-http-token (mode 0600).

options (with --http):
  --host H            address to listen on (default 127.0.0.1: this machine
                      only; 0.0.0.0 for the LAN)
  --port N            port (default 8765; 0 = any free port)
  --allow-origin O    also accept browser requests from Origin O (repeatable;
                      loopback origins are always accepted)
  --session-idle S    forget sessions idle this many seconds (default 1800)
  --detach            run in the background (log: $WORKBENCH_HOME/mcp-http.log)
  --show-token        print the bearer token (made if missing) and exit

examples:
  printf '%s\\n' '{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}' | workbench mcp
  workbench mcp --http --host 0.0.0.0 --detach
";

pub fn run(mut args: pico_args::Arguments) -> CliResult {
    let err = arg_error(USAGE);
    let http_mode = args.contains("--http");
    let show_token = args.contains("--show-token");
    let detach = args.contains("--detach");
    let host: Option<String> = args.opt_value_from_str("--host").map_err(&err)?;
    let port: Option<u16> = args.opt_value_from_str("--port").map_err(&err)?;
    let idle: Option<u64> = args.opt_value_from_str("--session-idle").map_err(&err)?;
    let mut allowed_origins: Vec<String> = Vec::new();
    while let Some(o) = args
        .opt_value_from_str::<_, String>("--allow-origin")
        .map_err(&err)?
    {
        allowed_origins.push(o);
    }
    finish(args, USAGE)?;
    if !http_mode {
        if show_token
            || detach
            || host.is_some()
            || port.is_some()
            || idle.is_some()
            || !allowed_origins.is_empty()
        {
            return Err(usage_error(USAGE, "these options need --http"));
        }
        return crate::mcp::run().map_err(CliError::Failed);
    }
    if idle == Some(0) {
        return Err(usage_error(
            USAGE,
            "--session-idle must be at least 1 second",
        ));
    }
    if let Some(o) = allowed_origins
        .iter()
        .find(|o| !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/'))
    {
        return Err(usage_error(
            USAGE,
            format!("--allow-origin {o:?}: give scheme://host[:port], without a path"),
        ));
    }
    let token = http::load_or_create_token().map_err(CliError::Failed)?;
    if show_token {
        println!("{token}");
        return Ok(());
    }
    let host = host.unwrap_or_else(|| "127.0.0.1".into());
    let port = port.unwrap_or(http::DEFAULT_PORT);
    if detach {
        let mut child_args = vec![
            "--host".to_string(),
            host,
            "--port".into(),
            port.to_string(),
        ];
        if let Some(i) = idle {
            child_args.extend(["--session-idle".into(), i.to_string()]);
        }
        for o in allowed_origins {
            child_args.extend(["--allow-origin".into(), o]);
        }
        let url = http::spawn_detached(&child_args).map_err(CliError::Failed)?;
        println!("workbench mcp: serving MCP over HTTP at {url} (detached)");
        return Ok(());
    }
    let cfg = HttpConfig {
        host,
        port,
        token,
        session_idle: idle
            .map(Duration::from_secs)
            .unwrap_or(http::DEFAULT_SESSION_IDLE),
        allowed_origins,
    };
    http::run(cfg).map_err(CliError::Failed)
}
