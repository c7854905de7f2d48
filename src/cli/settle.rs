//! `workbench accept|reject|complete|dispute`: answer or settle a proposal.
//! Each signs its message with the identity (AgentChat 0.3.0's texts, see
//! `relay::signing`) and prints the relay's answer as one JSON line.

use serde_json::{json, Value};

use super::propose::{exchange, sign, IdentityArgs};
use super::{arg_error, finish, positional, usage_error, CliError, CliResult};

/// The options and output every one of the four shares (kept in step with
/// the usage texts below).
macro_rules! common {
    () => {
        "
  --identity F   identity file (default ~/.agentchat/identity.json)
  --name N       agent name to IDENTIFY with (default: the identity's)

Prints the relay's answer (the message it sends both parties) as one JSON
line. A refusal (ERROR INVALID_PROPOSAL with PROPOSAL_NOT_FOUND,
PROPOSAL_NOT_PENDING, NOT_PROPOSAL_RECIPIENT, PROPOSAL_EXPIRED,
PROPOSAL_NOT_ACCEPTED or NOT_PROPOSAL_PARTY) is one line on stderr and exit
status 1.
"
    };
}

pub const ACCEPT_USAGE: &str = concat!(
    "\
usage: workbench accept <server> <proposal_id> [--payment-code P] [--identity F] [--name N]

Accepts a pending proposal made to you.
  --payment-code P   where you want to be paid",
    common!(),
    "\nexample:\n  workbench accept ws://localhost:6667 prop_m3k2x1_a1b2c3d4 --payment-code 'IBAN DE00…' --identity ~/.agentchat/identity.json\n"
);
pub const REJECT_USAGE: &str = concat!(
    "\
usage: workbench reject <server> <proposal_id> [--reason R] [--identity F] [--name N]

Rejects a pending proposal made to you.
  --reason R     why",
    common!(),
    "\nexample:\n  workbench reject ws://localhost:6667 prop_m3k2x1_a1b2c3d4 --reason 'busy this week'\n"
);
pub const COMPLETE_USAGE: &str = concat!(
    "\
usage: workbench complete <server> <proposal_id> [--proof P] [--identity F] [--name N]

Marks an accepted proposal complete (either party may).
  --proof P      evidence: a URL, a transaction hash, …",
    common!(),
    "\nexample:\n  workbench complete ws://localhost:6667 prop_m3k2x1_a1b2c3d4 --proof https://example.org/pr/42\n"
);
pub const DISPUTE_USAGE: &str = concat!(
    "\
usage: workbench dispute <server> <proposal_id> <reason> [--identity F] [--name N]

Disputes an accepted proposal (either party may).",
    common!(),
    "\nexample:\n  workbench dispute ws://localhost:6667 prop_m3k2x1_a1b2c3d4 'work not delivered'\n"
);

/// The four commands differ only in their type, their optional (or, for
/// DISPUTE, required) last field, and their usage text.
#[derive(Clone, Copy)]
enum Kind {
    Accept,
    Reject,
    Complete,
    Dispute,
}

impl Kind {
    fn wire(self) -> &'static str {
        match self {
            Kind::Accept => "ACCEPT",
            Kind::Reject => "REJECT",
            Kind::Complete => "COMPLETE",
            Kind::Dispute => "DISPUTE",
        }
    }

    fn usage(self) -> &'static str {
        match self {
            Kind::Accept => ACCEPT_USAGE,
            Kind::Reject => REJECT_USAGE,
            Kind::Complete => COMPLETE_USAGE,
            Kind::Dispute => DISPUTE_USAGE,
        }
    }

    /// The optional field and its option: (wire key, `--option`).
    fn option(self) -> Option<(&'static str, &'static str)> {
        match self {
            Kind::Accept => Some(("payment_code", "--payment-code")),
            Kind::Reject => Some(("reason", "--reason")),
            Kind::Complete => Some(("proof", "--proof")),
            Kind::Dispute => None,
        }
    }
}

struct Config {
    server: String,
    msg: Value,
    who: IdentityArgs,
}

fn parse(kind: Kind, mut args: pico_args::Arguments) -> Result<Config, CliError> {
    let usage = kind.usage();
    let optional: Option<(&str, String)> = match kind.option() {
        Some((key, flag)) => args
            .opt_value_from_str::<_, String>(flag)
            .map_err(arg_error(usage))?
            .map(|v| (key, v)),
        None => None,
    };
    let who = IdentityArgs::take(&mut args, usage)?;
    let server: String = positional(&mut args, usage, "server")?;
    let id: String = positional(&mut args, usage, "proposal_id")?;
    let reason: Option<String> = match kind {
        Kind::Dispute => Some(positional(&mut args, usage, "reason")?),
        _ => None,
    };
    finish(args, usage)?;
    if id.is_empty() {
        return Err(usage_error(usage, "<proposal_id> must not be empty"));
    }
    // 0.3.0's client always sends the optional field, null when not given.
    let mut msg = json!({"type": kind.wire(), "proposal_id": id});
    match (kind.option(), optional, reason) {
        (_, _, Some(r)) if r.is_empty() => {
            return Err(usage_error(usage, "<reason> must not be empty"))
        }
        (_, _, Some(r)) => msg["reason"] = json!(r),
        (Some((key, _)), Some((_, v)), None) => msg[key] = json!(v),
        (Some((key, _)), None, None) => msg[key] = Value::Null,
        (None, _, None) => {}
    }
    Ok(Config { server, msg, who })
}

fn run(kind: Kind, args: pico_args::Arguments) -> CliResult {
    let Config {
        server,
        mut msg,
        who,
    } = parse(kind, args)?;
    let who = who.load()?;
    sign(&mut msg, &who.identity);
    let id = msg["proposal_id"].clone();
    exchange(&server, &who, &msg, move |v, _me| {
        v["type"] == kind.wire() && v["proposal_id"] == id
    })
}

pub fn accept(args: pico_args::Arguments) -> CliResult {
    run(Kind::Accept, args)
}

pub fn reject(args: pico_args::Arguments) -> CliResult {
    run(Kind::Reject, args)
}

pub fn complete(args: pico_args::Arguments) -> CliResult {
    run(Kind::Complete, args)
}

pub fn dispute(args: pico_args::Arguments) -> CliResult {
    run(Kind::Dispute, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> pico_args::Arguments {
        pico_args::Arguments::from_vec(list.iter().map(Into::into).collect())
    }

    #[test]
    fn builds_0_3_0_messages() {
        let c = parse(Kind::Accept, args(&["h", "prop_1", "--payment-code", "pc"])).unwrap();
        assert_eq!(
            c.msg,
            json!({"type":"ACCEPT","proposal_id":"prop_1","payment_code":"pc"})
        );
        let c = parse(Kind::Reject, args(&["h", "prop_1"])).unwrap();
        assert_eq!(
            c.msg,
            json!({"type":"REJECT","proposal_id":"prop_1","reason":null})
        );
        let c = parse(Kind::Complete, args(&["h", "prop_1", "--proof", "tx"])).unwrap();
        assert_eq!(c.msg["proof"], "tx");
        let c = parse(Kind::Dispute, args(&["h", "prop_1", "late"])).unwrap();
        assert_eq!(
            c.msg,
            json!({"type":"DISPUTE","proposal_id":"prop_1","reason":"late"})
        );
    }

    #[test]
    fn refuses_bad_arguments() {
        assert!(parse(Kind::Dispute, args(&["h", "prop_1"])).is_err());
        assert!(parse(Kind::Dispute, args(&["h", "prop_1", ""])).is_err());
        assert!(parse(Kind::Accept, args(&["h"])).is_err());
        assert!(parse(Kind::Accept, args(&["h", "p", "--proof", "x"])).is_err());
        assert!(parse(Kind::Dispute, args(&["h", "p", "r", "--reason", "x"])).is_err());
        assert!(parse(Kind::Complete, args(&["h", "p", "extra"])).is_err());
    }
}
