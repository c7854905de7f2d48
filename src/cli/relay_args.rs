//! Arguments the relay client commands share: `--name` and channel names,
//! validated by the protocol's own rules before anything connects.

use super::{arg_error, usage_error, CliError};
use crate::relay::protocol::{AgentName, ChannelName};

/// `--name NAME`, checked against the protocol's agent-name rule.
pub(super) fn name_option(
    args: &mut pico_args::Arguments,
    usage: &str,
) -> Result<Option<String>, CliError> {
    let name: Option<String> = args
        .opt_value_from_str("--name")
        .map_err(arg_error(usage))?;
    match name {
        Some(n) if AgentName::parse(&n).is_none() => Err(usage_error(
            usage,
            "--name must be 1-32 chars of A-Z a-z 0-9 _ -",
        )),
        other => Ok(other),
    }
}

/// A `#channel` argument; `what` names it in the error (`<channel>`, `--join`).
pub(super) fn channel(value: &str, usage: &str, what: &str) -> Result<ChannelName, CliError> {
    ChannelName::parse(value)
        .ok_or_else(|| usage_error(usage, format!("bad {what} '{value}': use #name")))
}
