//! `workbench`: one binary for two systems that share a core.
//!
//! * the workbench: `workbench mcp` (an MCP server on stdio) drives per-project
//!   page servers (`workbench serve <name>`) that push live HTML to browsers;
//! * the relay: `workbench relay`, an AgentChat 0.3.0 compatible WebSocket
//!   relay, and its shell clients (`send`, `listen`, …).
//!
//! `main` only dispatches and decides the exit code; each subcommand lives in
//! its own file under `cli/`.

mod cli;
mod httpc;
mod mcp;
mod page;
mod project;
mod relay;
mod setup;
mod sys;
mod util;

use cli::CliError;

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let code = match cli::dispatch(args) {
        Ok(()) => 0,
        Err(CliError::Usage(msg)) => {
            eprintln!("workbench: {msg}");
            2
        }
        Err(CliError::Failed(msg)) => {
            eprintln!("workbench: error: {msg}");
            1
        }
    };
    std::process::exit(code);
}
