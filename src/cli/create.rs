//! `workbench create`: create a channel on a relay.

use serde_json::json;

use super::print_json;
use super::{finish, positional, CliError, CliResult};
use crate::relay::client::open;

pub const USAGE: &str = "\
usage: workbench create <server> <channel> [--private] [--name NAME] [--identity F]

Creates <channel>; with --private it is invite-only (hidden from
`workbench channels`, joinable only by invited agent ids). Prints
{\"channel\",\"invite_only\",\"agent_id\"} as a JSON line. Channels outlive
their creator's connection. Note: an invite-only channel can only be
managed by its members, so with an ephemeral id (no identity) nobody can
invite into it once this command exits.

options:
  --private     make the channel invite-only
  --name NAME   agent name to identify as (default: cli)
  --identity F  identify with this identity file (its stable id)

example:
  workbench create ws://localhost:6667 '#builds'
";

pub fn run(mut args: pico_args::Arguments) -> CliResult {
    let name = super::relay_args::name_option(&mut args, USAGE)?.unwrap_or_else(|| "cli".into());
    let identity = super::identity::client_option(&mut args, USAGE)?;
    let private = args.contains("--private");
    let server: String = positional(&mut args, USAGE, "server")?;
    let channel: String = positional(&mut args, USAGE, "channel")?;
    finish(args, USAGE)?;
    super::relay_args::channel(&channel, USAGE, "<channel>")?;
    let identity = super::identity::load_client(identity)?;
    let mut client = open(&server, &name, identity.as_ref())?;
    let me = client.agent_id().unwrap_or_default().to_string();
    let got = client
        .request(&json!({"type": "CREATE_CHANNEL", "channel": channel, "invite_only": private}));
    let got = client.close_with(got)?;
    if !got
        .iter()
        .any(|v| v["type"] == "JOINED" && v["channel"] == channel.as_str())
    {
        return Err(CliError::Failed(
            "the relay did not confirm the channel".into(),
        ));
    }
    print_json(&json!({"channel": channel, "invite_only": private, "agent_id": me}))?;
    Ok(())
}
