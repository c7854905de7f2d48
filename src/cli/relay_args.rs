//! Arguments the relay client commands share: `--name` and channel names,
//! validated by the protocol's own rules before anything connects, and
//! `--ca FILE` for `wss://` relays, which the front door (`cli::dispatch`)
//! takes for every client command so each one need not.

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

/// The commands that connect to a relay, and so take `--ca`.
pub(super) const CLIENTS: &[&str] = &[
    "send", "listen", "channels", "agents", "create", "invite", "connect", "propose", "accept",
    "reject", "complete", "dispute",
];

/// Appended to a client command's `--help`.
pub(super) const TLS_HELP: &str = "
TLS (every relay client command):
  <server> may be wss://host:port: the relay's certificate is verified
  against the system's trust store; there is no option to skip that.
  --ca FILE     also trust the PEM certificate(s) in FILE (a private CA,
                or a self-signed relay's own certificate)
";

/// `--ca FILE`: loads the certificates now (a bad file exits 2, naming it)
/// and trusts them for this process's `wss://` connections.
pub(super) fn ca_option(args: &mut pico_args::Arguments, usage: &str) -> Result<(), CliError> {
    let path: Option<std::path::PathBuf> =
        args.opt_value_from_str("--ca").map_err(arg_error(usage))?;
    if let Some(path) = path {
        let certs = crate::tls::load_certs(&path).map_err(|e| CliError::Usage(e.to_string()))?;
        crate::relay::client::set_extra_ca(certs);
    }
    Ok(())
}
