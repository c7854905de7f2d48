//! Command-line front door: one `match` from subcommand name to the file that
//! implements it. Each subcommand file starts with its usage text, turns raw
//! arguments into a validated config, and rejects leftovers.

use std::ffi::OsString;

mod agents;
mod channels;
mod chat_session;
mod connect;
mod create;
mod demo;
mod deploy;
mod doctor;
mod identity;
mod invite;
mod list;
mod listen;
mod mcp;
mod propose;
mod relay;
mod relay_args;
mod send;
mod serve;
mod settle;
mod setup;
mod stop;

/// How a subcommand failed; `main` turns this into the exit code.
#[derive(Debug)]
pub enum CliError {
    /// Bad arguments: exit 2 with the usage line.
    Usage(String),
    /// The command ran and failed: exit 1.
    Failed(String),
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Failed(e.to_string())
    }
}

impl From<crate::relay::client::ClientError> for CliError {
    fn from(e: crate::relay::client::ClientError) -> Self {
        CliError::Failed(e.to_string())
    }
}

/// Prints one JSON value as a line and flushes, so a pipe reader sees each
/// message as it arrives. `Ok(false)`: stdout was closed, which callers
/// treat as a clean exit.
pub fn print_json(v: &serde_json::Value) -> std::io::Result<bool> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // What a relay sent is untrusted: control, bidi and invisible characters
    // go out as \u escapes (the same JSON value, inert on a terminal).
    let line = crate::relay::display::json_line(v);
    match writeln!(out, "{line}").and_then(|_| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e),
    }
}

pub type CliResult = Result<(), CliError>;

struct Command {
    name: &'static str,
    summary: &'static str,
    usage: &'static str,
    run: fn(pico_args::Arguments) -> CliResult,
}

const COMMANDS: &[Command] = &[
    Command {
        name: "mcp",
        summary: "MCP server on stdio for AI CLIs (Claude Code, Codex, Gemini, Cursor)",
        usage: mcp::USAGE,
        run: mcp::run,
    },
    Command {
        name: "serve",
        summary: "serve one project's live page on the LAN (foreground)",
        usage: serve::USAGE,
        run: serve::run,
    },
    Command {
        name: "list",
        summary: "list projects and their servers",
        usage: list::USAGE,
        run: list::run,
    },
    Command {
        name: "stop",
        summary: "stop a project's server",
        usage: stop::USAGE,
        run: stop::run,
    },
    Command {
        name: "chat-session",
        summary: "run one relay chat session (chat_connect starts it)",
        usage: chat_session::USAGE,
        run: chat_session::run,
    },
    Command {
        name: "demo",
        summary: "scaffold and drive a demo project, no AI needed",
        usage: demo::USAGE,
        run: demo::run,
    },
    Command {
        name: "setup",
        summary: "register `workbench mcp` with your AI CLI(s), write START.md",
        usage: setup::USAGE,
        run: setup::run,
    },
    Command {
        name: "doctor",
        summary: "check this machine and explain how to fix problems",
        usage: doctor::USAGE,
        run: doctor::run,
    },
    Command {
        name: "relay",
        summary: "run the AgentChat-compatible relay",
        usage: relay::USAGE,
        run: relay::run,
    },
    Command {
        name: "send",
        summary: "send one message to a channel or agent",
        usage: send::USAGE,
        run: send::run,
    },
    Command {
        name: "listen",
        summary: "stream messages as JSON lines",
        usage: listen::USAGE,
        run: listen::run,
    },
    Command {
        name: "channels",
        summary: "list public channels",
        usage: channels::USAGE,
        run: channels::run,
    },
    Command {
        name: "agents",
        summary: "list agents in a channel",
        usage: agents::USAGE,
        run: agents::run,
    },
    Command {
        name: "create",
        summary: "create a channel",
        usage: create::USAGE,
        run: create::run,
    },
    Command {
        name: "invite",
        summary: "invite an agent to a channel",
        usage: invite::USAGE,
        run: invite::run,
    },
    Command {
        name: "connect",
        summary: "interactive relay session",
        usage: connect::USAGE,
        run: connect::run,
    },
    Command {
        name: "deploy",
        summary: "write Docker Compose / Akash SDL files to run the relay",
        usage: deploy::USAGE,
        run: deploy::run,
    },
    Command {
        name: "identity",
        summary: "manage an Ed25519 identity",
        usage: identity::USAGE,
        run: identity::run,
    },
    Command {
        name: "propose",
        summary: "send a signed work proposal",
        usage: propose::USAGE,
        run: propose::run,
    },
    Command {
        name: "accept",
        summary: "accept a proposal",
        usage: settle::ACCEPT_USAGE,
        run: settle::accept,
    },
    Command {
        name: "reject",
        summary: "reject a proposal",
        usage: settle::REJECT_USAGE,
        run: settle::reject,
    },
    Command {
        name: "complete",
        summary: "mark a proposal complete",
        usage: settle::COMPLETE_USAGE,
        run: settle::complete,
    },
    Command {
        name: "dispute",
        summary: "dispute a proposal",
        usage: settle::DISPUTE_USAGE,
        run: settle::dispute,
    },
];

pub use crate::VERSION;

fn overview() -> String {
    let mut s = format!(
        "workbench {VERSION}: live LAN pages for AI agents, and an AgentChat relay\n\n\
         usage: workbench <command> [options]\n\ncommands:\n"
    );
    for c in COMMANDS {
        s.push_str(&format!("  {:<12} {}\n", c.name, c.summary));
    }
    s.push_str("  help         this text, or `workbench help <command>`\n\n");
    s.push_str(
        "Every command takes --help. Projects live in $WORKBENCH_HOME (default ~/workbench).\n",
    );
    s
}

pub fn dispatch(mut argv: Vec<OsString>) -> CliResult {
    if argv.is_empty() {
        print!("{}", overview());
        return Ok(());
    }
    let first = argv.remove(0);
    let name = first.to_string_lossy().into_owned();
    match name.as_str() {
        "help" | "-h" | "--help" => {
            match argv.first().map(|a| a.to_string_lossy().into_owned()) {
                Some(cmd) => match COMMANDS.iter().find(|c| c.name == cmd) {
                    Some(c) => {
                        print!("{}", c.usage);
                        if relay_args::CLIENTS.contains(&c.name) {
                            print!("{}", relay_args::TLS_HELP);
                        }
                    }
                    None => return Err(CliError::Usage(format!("unknown command '{cmd}'; run `workbench help`"))),
                },
                None => print!("{}", overview()),
            }
            Ok(())
        }
        "version" | "-V" | "--version" => {
            println!("workbench {VERSION}");
            Ok(())
        }
        _ => match COMMANDS.iter().find(|c| c.name == name) {
            Some(c) => {
                let client = relay_args::CLIENTS.contains(&c.name);
                if argv.iter().any(|a| a == "-h" || a == "--help") {
                    print!("{}", c.usage);
                    if client {
                        print!("{}", relay_args::TLS_HELP);
                    }
                    return Ok(());
                }
                let mut args = pico_args::Arguments::from_vec(argv);
                if client {
                    relay_args::ca_option(&mut args, c.usage)?;
                }
                (c.run)(args)
            }
            None => Err(CliError::Usage(format!(
                "unknown command '{name}'\nusage: workbench <command> [options]; run `workbench help` for the list"
            ))),
        },
    }
}

/// A usage error naming the command's synopsis (the usage text's first line).
pub fn usage_error(usage: &str, msg: impl std::fmt::Display) -> CliError {
    let synopsis = usage.lines().next().unwrap_or("").trim();
    CliError::Usage(format!("{msg}\n{synopsis}"))
}

/// Rejects leftover arguments, as every subcommand must.
pub fn finish(args: pico_args::Arguments, usage: &str) -> CliResult {
    let rest = args.finish();
    if let Some(first) = rest.first() {
        let a = first.to_string_lossy();
        let what = if a.starts_with('-') {
            "unknown option"
        } else {
            "unexpected argument"
        };
        return Err(usage_error(usage, format!("{what} '{a}'")));
    }
    Ok(())
}

/// Maps a pico-args error (missing value, bad number, …) to a usage error.
pub fn arg_error(usage: &str) -> impl Fn(pico_args::Error) -> CliError + '_ {
    move |e| usage_error(usage, e)
}

/// A required positional argument.
pub fn positional<T: std::str::FromStr>(
    args: &mut pico_args::Arguments,
    usage: &str,
    what: &str,
) -> Result<T, CliError>
where
    T::Err: std::fmt::Display,
{
    // An unknown `--flag` must not be mistaken for a positional value.
    if let Some(flag) = looks_like_flag(args) {
        return Err(usage_error(usage, format!("unknown option '{flag}'")));
    }
    match args.opt_free_from_str::<T>() {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(usage_error(usage, format!("missing <{what}>"))),
        Err(e) => Err(usage_error(usage, format!("bad <{what}>: {e}"))),
    }
}

/// The first remaining argument, if it looks like an option (`--word`).
fn looks_like_flag(args: &pico_args::Arguments) -> Option<String> {
    let rest = args.clone().finish();
    let first = rest.first()?.to_string_lossy().into_owned();
    (first.starts_with("--") && first.len() > 2).then_some(first)
}

/// Rejects leftover `--flags` among free arguments a command collects itself.
pub fn reject_flags(free: &[String], usage: &str) -> CliResult {
    match free.iter().find(|a| a.starts_with("--") && a.len() > 2) {
        Some(flag) => Err(usage_error(usage, format!("unknown option '{flag}'"))),
        None => Ok(()),
    }
}
