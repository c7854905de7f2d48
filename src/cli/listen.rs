//! `workbench listen`: stream a relay's messages as JSON lines.

use serde_json::json;

use super::print_json;
use super::{arg_error, usage_error, CliResult};
use crate::relay::client::open;
use crate::relay::display::terminal_safe;
use crate::relay::protocol::ChannelName;

pub const USAGE: &str = "\
usage: workbench listen <server> [channels…] [--max-messages N] [--name NAME] [--identity F]

Joins the channels (default #general) and prints every MSG the relay
delivers, replayed history first (those carry \"replay\":true), as one JSON
object per line, flushed as it arrives. Exits after N messages if
--max-messages is given, otherwise runs until the relay goes away (exit 1)
or stdout is closed (exit 0). A line on stderr says when it is listening.

options:
  --max-messages N   exit after printing N messages
  --name NAME        agent name to identify as (default: listener)
  --identity F       identify with this identity file (its stable id)

example:
  workbench listen ws://localhost:6667 '#general' '#agents' | jq .content
";

pub fn run(mut args: pico_args::Arguments) -> CliResult {
    let e = arg_error(USAGE);
    let name =
        super::relay_args::name_option(&mut args, USAGE)?.unwrap_or_else(|| "listener".into());
    let identity = super::identity::client_option(&mut args, USAGE)?;
    let max: Option<u64> = args.opt_value_from_str("--max-messages").map_err(&e)?;
    let free: Vec<String> = args
        .finish()
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    super::reject_flags(&free, USAGE)?;
    let mut rest = free.into_iter();
    let Some(server) = rest.next() else {
        return Err(usage_error(USAGE, "missing <server>"));
    };
    let mut channels = Vec::new();
    for a in rest {
        if a.starts_with('-') {
            return Err(usage_error(USAGE, format!("unknown option '{a}'")));
        }
        channels.push(super::relay_args::channel(&a, USAGE, "channel")?);
    }
    if channels.is_empty() {
        channels.push(ChannelName::parse("#general").expect("valid default channel"));
    }

    let identity = super::identity::load_client(identity)?;
    let mut client = open(&server, &name, identity.as_ref())?;
    let mut printed: u64 = 0;
    let done = |n: u64| max.is_some_and(|m| n >= m);
    for ch in &channels {
        if done(printed) {
            break;
        }
        for v in client.request(&json!({"type": "JOIN", "channel": ch.as_str()}))? {
            if v["type"] == "MSG" && !done(printed) {
                if !print_json(&v)? {
                    return Ok(());
                }
                printed += 1;
            }
        }
    }
    let list: Vec<&str> = channels.iter().map(|c| c.as_str()).collect();
    eprintln!(
        "workbench: listening on {} as {} in {}",
        terminal_safe(client.url()),
        terminal_safe(client.agent_id().unwrap_or("?")),
        list.join(" ")
    );
    client.set_timeout(None);
    while !done(printed) {
        let v = client.recv()?;
        if v["type"] == "MSG" {
            if !print_json(&v)? {
                return Ok(());
            }
            printed += 1;
        }
    }
    client.close();
    Ok(())
}
