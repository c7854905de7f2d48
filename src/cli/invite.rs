//! `workbench invite`: add an agent id to a channel's invite list.

use serde_json::json;

use super::print_json;
use super::{finish, positional, usage_error, CliResult};
use crate::relay::client::open;
use crate::relay::protocol::AgentId;

pub const USAGE: &str = "\
usage: workbench invite <server> <channel> <agent> [--name NAME] [--identity F]

Invites <agent> (an @id) to <channel>. Only members may invite, so this
joins <channel> first; for an invite-only channel that needs an identity
already on its invite list. The invited agent, if connected, gets a MSG
saying so. Prints {\"channel\",\"invited\"} as a JSON line.

options:
  --name NAME   agent name to identify as (default: cli)
  --identity F  identify with this identity file (its stable id)

example:
  workbench invite ws://localhost:6667 '#general' @k3f9x2ab
";

pub fn run(mut args: pico_args::Arguments) -> CliResult {
    let name = super::relay_args::name_option(&mut args, USAGE)?.unwrap_or_else(|| "cli".into());
    let identity = super::identity::client_option(&mut args, USAGE)?;
    let server: String = positional(&mut args, USAGE, "server")?;
    let channel: String = positional(&mut args, USAGE, "channel")?;
    let agent: String = positional(&mut args, USAGE, "agent")?;
    finish(args, USAGE)?;
    super::relay_args::channel(&channel, USAGE, "<channel>")?;
    if AgentId::parse(&agent).is_none() {
        return Err(usage_error(
            USAGE,
            format!("bad <agent> '{agent}': use @agent-id"),
        ));
    }
    let identity = super::identity::load_client(identity)?;
    let mut client = open(&server, &name, identity.as_ref())?;
    let done = client
        .request(&json!({"type": "JOIN", "channel": channel}))
        .and_then(|_| {
            client.request(&json!({"type": "INVITE", "channel": channel, "agent": agent}))
        });
    client.close_with(done)?;
    print_json(&json!({"channel": channel, "invited": agent}))?;
    Ok(())
}
