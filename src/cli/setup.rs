//! `workbench setup`: register `workbench mcp` with the user's AI CLIs by
//! editing each one's own config file (merge, backup, idempotent), then write
//! `$WORKBENCH_HOME/START.md` for the AI to read. The file formats live in
//! `crate::setup`; this file is arguments, orchestration and the report.

use std::fs;
use std::path::{Path, PathBuf};

use super::{arg_error, finish, usage_error, CliError, CliResult, VERSION};
use crate::project;
use crate::setup::clients::{self, Client, Plan, Registration, Target};
use crate::setup::remote;
use crate::setup::start_md;
use crate::sys;
use crate::util;

pub const USAGE: &str = "\
usage: workbench setup [--client claude|codex|gemini|cursor|all]... [--dry-run]
       workbench setup --remote URL [--token-env NAME] [--client …]... [--dry-run]

Registers `workbench mcp` (this binary's absolute path, argument `mcp`) as the
MCP server \"workbench\" in each AI CLI's user-wide config, then writes
$WORKBENCH_HOME/START.md (default ~/workbench/START.md), a guide for the AI.

  claude   ~/.claude.json, top-level \"mcpServers\" (Claude Code's user scope)
  codex    ~/.codex/config.toml, table [mcp_servers.workbench] ($CODEX_HOME honoured)
  gemini   ~/.gemini/settings.json, \"mcpServers\"
  cursor   ~/.cursor/mcp.json, \"mcpServers\"

Everything else in those files is kept as it was. Before changing a file it
saves a copy as <file>.bak-<timestamp>. Running it again changes nothing and
says \"already configured\". A file it cannot edit safely (invalid JSON, an
\"mcpServers\" that is not an object, TOML that defines the table some other
way) is reported and left untouched.

With --remote it registers a `workbench mcp --http` server on another machine
instead (the URL it prints, e.g. http://bench:8765/mcp), in each CLI's own HTTP
form. The token stays out of the files: each entry reads it from the
environment variable NAME (default WORKBENCH_MCP_TOKEN), which you set to the
output of `workbench mcp --http --show-token` on the bench machine.

options:
  --remote URL      register the remote server at URL (see above)
  --token-env NAME  the variable holding its token (default WORKBENCH_MCP_TOKEN)
  --client C   which CLI to configure; repeat for several, or `all`.
               Default: every CLI whose config file or folder exists in $HOME.
  --dry-run    print what would change; write nothing (not even START.md)

Exit status: 1 when every requested client failed (or START.md could not be
written), 2 on bad usage, else 0. Finding no AI CLI at all is not an error:
START.md is still written (a lab machine reached over ssh needs only that).

examples:
  workbench setup --client claude
  workbench setup --remote http://bench.local:8765/mcp --client codex
  workbench setup --client codex --client gemini --dry-run
";

struct Config {
    clients: Option<Vec<Client>>,
    dry_run: bool,
    remote: Option<remote::Remote>,
}

fn parse_args(mut args: pico_args::Arguments) -> Result<Config, CliError> {
    let raw: Vec<String> = args.values_from_str("--client").map_err(arg_error(USAGE))?;
    let dry_run = args.contains("--dry-run");
    let url: Option<String> = args
        .opt_value_from_str("--remote")
        .map_err(arg_error(USAGE))?;
    let token_env: Option<String> = args
        .opt_value_from_str("--token-env")
        .map_err(arg_error(USAGE))?;
    finish(args, USAGE)?;
    let remote = match (url, token_env) {
        (None, Some(_)) => return Err(usage_error(USAGE, "--token-env needs --remote")),
        (None, None) => None,
        (Some(url), env) => {
            let url = remote::parse_url(&url).map_err(|e| usage_error(USAGE, e))?;
            let token_env = env.unwrap_or_else(|| remote::TOKEN_ENV.into());
            if !remote::valid_env_name(&token_env) {
                return Err(usage_error(
                    USAGE,
                    format!("--token-env {token_env:?} is not a variable name"),
                ));
            }
            Some(remote::Remote { url, token_env })
        }
    };
    let clients = if raw.is_empty() {
        None
    } else {
        let mut out: Vec<Client> = Vec::new();
        for value in raw.iter().flat_map(|v| v.split(',')) {
            let picked: Vec<Client> = if value == "all" {
                Client::ALL.to_vec()
            } else {
                match Client::parse(value) {
                    Some(c) => vec![c],
                    None => {
                        return Err(usage_error(
                            USAGE,
                            format!(
                            "unknown --client '{value}' (use claude, codex, gemini, cursor or all)"
                        ),
                        ))
                    }
                }
            };
            for c in picked {
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        Some(out)
    };
    Ok(Config {
        clients,
        dry_run,
        remote,
    })
}

/// `HOME`, which every client's config path is relative to.
pub fn user_home() -> Result<PathBuf, CliError> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| CliError::Failed("HOME is not set; cannot find the AI CLIs' configs".into()))
}

/// `path` with the home folder shown as `~`, for readable reports.
pub fn tilde(path: &Path, home: &Path) -> String {
    match path.strip_prefix(home) {
        Ok(rest) => format!("~/{}", rest.display()),
        Err(_) => path.display().to_string(),
    }
}

/// What we register: this very binary, so the AI CLI runs the same version.
pub fn target() -> Result<Target, CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Failed(format!("cannot find this binary's path: {e}")))?;
    let command = exe
        .to_str()
        .ok_or_else(|| {
            CliError::Failed(format!(
                "this binary's path is not UTF-8: {}",
                exe.display()
            ))
        })?
        .to_string();
    Ok(Target {
        command,
        args: vec!["mcp".into()],
    })
}

pub fn run(args: pico_args::Arguments) -> CliResult {
    let cfg = parse_args(args)?;
    let home = user_home()?;
    let target = target()?;

    let chosen = match cfg.clients {
        Some(c) => c,
        None => Client::ALL
            .into_iter()
            .filter(|c| c.detected(&home))
            .collect(),
    };
    if chosen.is_empty() {
        // Not a failure: a lab machine reached over `ssh host workbench mcp`
        // has no AI CLI of its own and only needs START.md.
        println!(
            "No AI CLI found in {} (looked for ~/.claude.json, ~/.claude/, ~/.codex/, ~/.gemini/, ~/.cursor/);\n\
             nothing to register. To configure one anyway: workbench setup --client claude|codex|gemini|cursor",
            home.display()
        );
    }

    let mut failed: Vec<&str> = Vec::new();
    for &client in &chosen {
        let path = client.config_path(&home);
        let head = format!("{:<7}{}", client.name(), tilde(&path, &home));
        let was = clients::registration(client, &home);
        let planned = match &cfg.remote {
            Some(r) => remote::plan(client, &home, r),
            None => clients::plan(client, &home, &target),
        };
        match planned {
            Err(e) => {
                failed.push(client.name());
                println!(
                    "{head}: NOT CHANGED: {e}.\n       Fix or move the file aside, then run `workbench setup --client {}` again.",
                    client.name()
                );
            }
            Ok(Plan::AlreadyConfigured) => println!("{head}: already configured"),
            Ok(plan @ Plan::Write { .. }) => {
                let (verb, done) = match was {
                    Registration::Registered { .. } => ("update", "updated"),
                    _ => ("add", "added"),
                };
                let Plan::Write { old, new, .. } = &plan else {
                    unreachable!("matched Write above")
                };
                if cfg.dry_run {
                    let what = if old.is_some() { "edit" } else { "create" };
                    println!(
                        "{head}: would {what} it to {verb} \"workbench\":\n{}",
                        clients::diff(old.as_deref().unwrap_or(""), new)
                    );
                    continue;
                }
                match clients::apply(&plan) {
                    Ok(backup) => {
                        let note = match backup {
                            Some(b) => format!(" (backup: {})", tilde(&b, &home)),
                            None => " (new file)".into(),
                        };
                        println!("{head}: {done} \"workbench\"{note}");
                    }
                    Err(e) => {
                        failed.push(client.name());
                        println!("{head}: NOT CHANGED: {e}");
                    }
                }
            }
        }
    }

    if let Some(r) = &cfg.remote {
        return finish_remote(r, &chosen, &failed, cfg.dry_run);
    }
    let start = project::home().join("START.md");
    if cfg.dry_run {
        println!(
            "dry run: would write {}; nothing was written",
            start.display()
        );
    } else {
        if write_start(&home, &target, &start)? {
            println!("wrote {}", start.display());
        } else {
            println!("{} is up to date", start.display());
        }
    }

    if !chosen.is_empty() && failed.len() == chosen.len() {
        return Err(CliError::Failed(format!(
            "no client was configured ({} failed); see above",
            failed.join(", ")
        )));
    }
    if !cfg.dry_run && !chosen.is_empty() {
        println!("Restart your AI CLI so it starts `workbench mcp`, then ask it to read START.md.");
    }
    Ok(())
}

/// The end of a `--remote` run: where the token goes, and whether the
/// server answers with it (when the variable is set here).
fn finish_remote(
    r: &remote::Remote,
    chosen: &[Client],
    failed: &[&str],
    dry_run: bool,
) -> CliResult {
    if !chosen.is_empty() && failed.len() == chosen.len() {
        return Err(CliError::Failed(format!(
            "no client was configured ({} failed); see above",
            failed.join(", ")
        )));
    }
    let var = &r.token_env;
    match std::env::var(var).ok().filter(|t| !t.trim().is_empty()) {
        None => println!(
            "The token stays out of these files: set {var} in the environment your AI CLI starts from, e.g.\n  \
             export {var}=$(ssh BENCH workbench mcp --http --show-token)   # in ~/.profile"
        ),
        Some(token) => match remote::probe(&r.url, token.trim()) {
            remote::Probe::Accepted => println!("{}: answers, and accepts the token in {var}", r.url),
            remote::Probe::WrongToken => println!(
                "warning: {} refuses the token in {var}; copy it again from `workbench mcp --http --show-token`",
                r.url
            ),
            remote::Probe::NotOurs(s) => println!(
                "warning: {} answered HTTP {s}, not as `workbench mcp --http`; check the URL",
                r.url
            ),
            remote::Probe::Unreachable(e) => println!(
                "warning: {} does not answer from here ({e}); is `workbench mcp --http --host 0.0.0.0` running on the bench?",
                r.url
            ),
        },
    }
    if !dry_run && !chosen.is_empty() {
        println!("Restart your AI CLI so it connects to {}.", r.url);
    }
    Ok(())
}

/// Writes START.md when its content changed; returns whether it wrote.
fn write_start(home: &Path, target: &Target, path: &Path) -> Result<bool, CliError> {
    let wb_home = project::home();
    let facts = start_md::Facts {
        binary: &target.command,
        version: VERSION,
        home: &wb_home,
        lan: sys::lan_ipv4(),
        clients: Client::ALL
            .into_iter()
            .map(|c| {
                let on = matches!(
                    clients::registration(c, home),
                    Registration::Registered { ref command, .. } if *command == target.command
                );
                (c.label(), tilde(&c.config_path(home), home), on)
            })
            .collect(),
    };
    let text = start_md::render(&facts);
    if fs::read_to_string(path).ok().as_deref() == Some(text.as_str()) {
        return Ok(false);
    }
    fs::create_dir_all(&wb_home)
        .map_err(|e| CliError::Failed(format!("cannot create {}: {e}", wb_home.display())))?;
    util::write_atomic(path, text.as_bytes(), 0o644)
        .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))?;
    Ok(true)
}
