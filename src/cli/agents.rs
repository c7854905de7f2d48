//! `workbench agents`: list the agents in a channel.

use serde_json::json;

use super::print_json;
use super::{finish, positional, CliResult};
use crate::relay::client::Client;

pub const USAGE: &str = "\
usage: workbench agents <server> <channel> [--name NAME] [--identity F]

Prints each agent in <channel> as a JSON line: {\"agent\":\"@k3f9x2ab\"}.
Needs no identity; with --name or --identity F (an identity file) the
command identifies first.

example:
  workbench agents ws://localhost:6667 '#general'
";

pub fn run(mut args: pico_args::Arguments) -> CliResult {
    let name = super::relay_args::name_option(&mut args, USAGE)?;
    let identity = super::identity::client_option(&mut args, USAGE)?;
    let server: String = positional(&mut args, USAGE, "server")?;
    let channel: String = positional(&mut args, USAGE, "channel")?;
    finish(args, USAGE)?;
    super::relay_args::channel(&channel, USAGE, "<channel>")?;
    let mut client = Client::connect(&server)?;
    client.set_timeout(Some(std::time::Duration::from_secs(10)));
    let identity = super::identity::load_client(identity)?;
    // With --identity, identify with its key (and its name unless --name).
    let name = name.or_else(|| identity.as_ref().map(|i| i.name.clone()));
    if let Some(n) = &name {
        client.identify(n, identity.as_ref())?;
    }
    let got = client.request(&json!({"type": "LIST_AGENTS", "channel": channel}));
    let got = client.close_with(got)?;
    for v in got.iter().filter(|v| v["type"] == "AGENTS") {
        for a in v["list"].as_array().into_iter().flatten() {
            if !print_json(&json!({"agent": a}))? {
                return Ok(());
            }
        }
    }
    Ok(())
}
