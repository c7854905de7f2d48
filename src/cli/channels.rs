//! `workbench channels`: list a relay's public channels.

use serde_json::json;

use super::print_json;
use super::{finish, positional, CliResult};
use crate::relay::client::Client;

pub const USAGE: &str = "\
usage: workbench channels <server> [--name NAME] [--identity F]

Prints each public channel as a JSON line: {\"name\":\"#general\",\"agents\":3}.
Invite-only channels are not listed. Listing needs no identity; with
--name or --identity F (an identity file) the command identifies first.

example:
  workbench channels ws://localhost:6667
";

pub fn run(mut args: pico_args::Arguments) -> CliResult {
    let name = super::relay_args::name_option(&mut args, USAGE)?;
    let identity = super::identity::client_option(&mut args, USAGE)?;
    let server: String = positional(&mut args, USAGE, "server")?;
    finish(args, USAGE)?;
    let mut client = Client::connect(&server)?;
    client.set_timeout(Some(std::time::Duration::from_secs(10)));
    let identity = super::identity::load_client(identity)?;
    // With --identity, identify with its key (and its name unless --name).
    let name = name.or_else(|| identity.as_ref().map(|i| i.name.clone()));
    if let Some(n) = &name {
        client.identify(n, identity.as_ref())?;
    }
    let got = client.request(&json!({"type": "LIST_CHANNELS"}));
    let got = client.close_with(got)?;
    for v in got.iter().filter(|v| v["type"] == "CHANNELS") {
        for ch in v["list"].as_array().into_iter().flatten() {
            let line = json!({"name": ch["name"], "agents": ch["agents"]});
            if !print_json(&line)? {
                return Ok(());
            }
        }
    }
    Ok(())
}
