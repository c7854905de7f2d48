//! `workbench send`: send one message to a channel or an agent.

use serde_json::json;

use super::print_json;
use super::{finish, positional, usage_error, CliError, CliResult};
use crate::relay::client::{self, open};
use crate::relay::protocol::{AgentId, ChannelName};

pub const USAGE: &str = "\
usage: workbench send <server> <target> <message> [--name NAME] [--identity F]

Connects to the relay, sends <message> to <target> (#channel or @agent-id)
and prints the relay's echo of it as one JSON line. A channel is joined
first, since only members may post. Exits non-zero, with one line on
stderr, if the relay is down or answers ERROR.

options:
  --name NAME   agent name to identify as (default: cli)
  --identity F  identify with this identity file and sign the message
                (AgentChat 0.3.0 signatures; see `workbench identity`)

example:
  workbench send ws://localhost:6667 '#general' 'build finished'
";

pub fn run(mut args: pico_args::Arguments) -> CliResult {
    let name = super::relay_args::name_option(&mut args, USAGE)?.unwrap_or_else(|| "cli".into());
    let identity = super::identity::client_option(&mut args, USAGE)?;
    let server: String = positional(&mut args, USAGE, "server")?;
    let target: String = positional(&mut args, USAGE, "target")?;
    let message: String = positional(&mut args, USAGE, "message")?;
    finish(args, USAGE)?;
    let channel = ChannelName::parse(&target);
    if channel.is_none() && AgentId::parse(&target).is_none() {
        return Err(usage_error(
            USAGE,
            format!("bad <target> '{target}': use #channel or @agent-id"),
        ));
    }

    let identity = super::identity::load_client(identity)?;
    let mut client = open(&server, &name, identity.as_ref())?;
    let me = client.agent_id().unwrap_or_default().to_string();
    let joined = match &channel {
        Some(ch) => client
            .request(&json!({"type": "JOIN", "channel": ch.as_str()}))
            .map(drop),
        None => Ok(()),
    };
    let sent =
        joined.and_then(|()| client.request(&client::msg(&target, &message, identity.as_ref())));
    let got = client.close_with(sent)?;
    let echo = got
        .into_iter()
        .find(|v| v["type"] == "MSG" && v["from"] == me.as_str() && v["to"] == target.as_str());
    match echo {
        Some(v) => {
            print_json(&v)?;
            Ok(())
        }
        None => Err(CliError::Failed(
            "the relay did not confirm the message".into(),
        )),
    }
}
