//! `workbench identity`: create, show and export the Ed25519 identity file
//! that relay clients sign with (AgentChat 0.3.0's format and CLI).

use std::path::PathBuf;

use super::{arg_error, finish, usage_error, CliError, CliResult};
use crate::relay::identity::{self, Identity, IdentityError};

pub const USAGE: &str = "\
usage: workbench identity [--generate | --show | --export] [--file F] [--name N] [--force]

Manage the Ed25519 identity relay clients sign with. The file is AgentChat
0.3.0's ({\"name\",\"pubkey\",\"privkey\",\"created\"}, SPKI and PKCS#8 PEM), kept
with mode 0600; files written by either implementation load in the other.
The agent id is the first 8 hex digits of SHA-256 over the public key PEM.

  -g, --generate   create a new keypair (never overwrites without --force)
  -s, --show       print name, agent id, fingerprint and creation time
  -e, --export     print {\"name\",\"pubkey\",\"created\"} as JSON: no private key
  -f, --file F     identity file (default ~/.agentchat/identity.json)
  -n, --name N     agent name for --generate (1-32 of A-Z a-z 0-9 _ -;
                   default agent-<pid>)
      --force      with --generate: replace an existing identity (its key is lost)

With no action: --show if the file exists, otherwise say how to create one.

example:
  workbench identity --generate --name bench-agent
";

enum Action {
    Generate { name: String, force: bool },
    Show,
    Export,
    Default,
}

struct Config {
    action: Action,
    file: PathBuf,
}

fn parse(mut args: pico_args::Arguments) -> Result<Config, CliError> {
    let generate = args.contains(["-g", "--generate"]);
    let show = args.contains(["-s", "--show"]);
    let export = args.contains(["-e", "--export"]);
    let force = args.contains("--force");
    let file: Option<PathBuf> = args
        .opt_value_from_os_str(["-f", "--file"], |s| {
            Ok::<_, std::convert::Infallible>(PathBuf::from(s))
        })
        .map_err(arg_error(USAGE))?;
    let name: Option<String> = args
        .opt_value_from_str(["-n", "--name"])
        .map_err(arg_error(USAGE))?;
    finish(args, USAGE)?;

    if [generate, show, export].iter().filter(|b| **b).count() > 1 {
        return Err(usage_error(
            USAGE,
            "choose one of --generate, --show, --export",
        ));
    }
    if !generate && (force || name.is_some()) {
        return Err(usage_error(USAGE, "--name and --force go with --generate"));
    }
    let file = match file {
        Some(f) => f,
        None => identity::default_path().ok_or_else(|| {
            CliError::Failed("HOME is not set; pass --file to name the identity file".into())
        })?,
    };
    let action = if generate {
        let name = name.unwrap_or_else(|| format!("agent-{}", std::process::id()));
        if !valid_name(&name) {
            return Err(usage_error(
                USAGE,
                format!("bad --name '{name}': use 1-32 of A-Z a-z 0-9 _ -"),
            ));
        }
        Action::Generate { name, force }
    } else if show {
        Action::Show
    } else if export {
        Action::Export
    } else {
        Action::Default
    };
    Ok(Config { action, file })
}

/// AgentChat agent names: 1–32 of `A–Z a–z 0–9 _ -` (AGENTCHAT.md, "Names").
fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `--identity F` (or `-i F`) of the relay client commands, taken before
/// `finish`. With it they IDENTIFY with the file's public key, so they get
/// its stable id, and `send` signs what it sends.
pub(super) fn client_option(
    args: &mut pico_args::Arguments,
    usage: &str,
) -> Result<Option<PathBuf>, CliError> {
    args.opt_value_from_os_str(["-i", "--identity"], |s| {
        Ok::<_, std::convert::Infallible>(PathBuf::from(s))
    })
    .map_err(arg_error(usage))
}

/// Loads the file `client_option` returned, if any.
pub(super) fn load_client(file: Option<PathBuf>) -> Result<Option<Identity>, CliError> {
    file.map(|f| Identity::load(&f).map_err(failed)).transpose()
}

fn failed(e: IdentityError) -> CliError {
    CliError::Failed(e.to_string())
}

fn print_show(id: &Identity, file: &std::path::Path) {
    println!("Current identity:");
    println!("  Name: {}", id.name);
    println!("  Fingerprint: {}", id.fingerprint());
    println!("  Agent ID: {}", id.agent_id());
    println!("  Created: {}", id.created);
    println!("  File: {}", file.display());
}

pub fn run(args: pico_args::Arguments) -> CliResult {
    let cfg = parse(args)?;
    let file = &cfg.file;
    match cfg.action {
        Action::Generate { name, force } => {
            // Refuse early, before spending randomness, if the file exists.
            if !force && file.exists() {
                return Err(failed(IdentityError::AlreadyExists(file.clone())));
            }
            let id = Identity::generate(&name)?;
            id.save(file, force).map_err(failed)?;
            println!("Generated new identity:");
            println!("  Name: {}", id.name);
            println!("  Fingerprint: {}", id.fingerprint());
            println!("  Agent ID: {}", id.agent_id());
            println!("  Saved to: {}", file.display());
        }
        Action::Show => print_show(&Identity::load(file).map_err(failed)?, file),
        Action::Export => {
            let id = Identity::load(file).map_err(failed)?;
            println!("{}", id.export());
        }
        Action::Default => match Identity::load(file) {
            Ok(id) => print_show(&id, file),
            Err(IdentityError::NotFound(_)) => {
                println!("No identity found.");
                println!(
                    "Use `workbench identity --generate` to create one at {}",
                    file.display()
                );
            }
            Err(e) => return Err(failed(e)),
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> pico_args::Arguments {
        pico_args::Arguments::from_vec(list.iter().map(Into::into).collect())
    }

    #[test]
    fn parses_and_rejects() {
        let c = parse(args(&["--generate", "--name", "bot-1", "--file", "/tmp/x"])).unwrap();
        assert!(matches!(c.action, Action::Generate { ref name, force: false } if name == "bot-1"));
        assert_eq!(c.file, PathBuf::from("/tmp/x"));
        assert!(parse(args(&["--show", "--export", "-f", "x"])).is_err());
        assert!(parse(args(&["--show", "--force", "-f", "x"])).is_err());
        assert!(parse(args(&["--generate", "--name", "bad name", "-f", "x"])).is_err());
        assert!(parse(args(&["--generate", "-f", "x", "extra"])).is_err());
        assert!(parse(args(&["--bogus"])).is_err());
    }

    #[test]
    fn names() {
        assert!(valid_name("a"));
        assert!(valid_name("Agent_7-x"));
        assert!(valid_name(&"a".repeat(32)));
        assert!(!valid_name(&"a".repeat(33)));
        assert!(!valid_name(""));
        assert!(!valid_name("é"));
        assert!(!valid_name("a b"));
    }
}
