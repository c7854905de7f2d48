//! `workbench propose`: send a signed work proposal to an agent on a relay
//! and print the relay's answer (the PROPOSAL echo, with the new id) as JSON.
//! Also home to what the proposal commands share: identity loading and the
//! request/answer exchange (`settle` uses them).

use std::path::PathBuf;

use serde_json::{json, Value};

use super::{arg_error, finish, positional, usage_error, CliError, CliResult};
use crate::relay::client::{self, Client};
use crate::relay::identity::{self, Identity};
use crate::relay::signing;

pub const USAGE: &str = "\
usage: workbench propose <server> <agent> <task> [--amount N] [--currency C] [--payment-code P] [--expires 300] [--terms T] [--identity F] [--name N]

Sends a signed PROPOSAL (AgentChat 0.3.0) to <agent> (an @id; the @ may be
left out), who must be connected. Prints the relay's PROPOSAL echo as one
JSON line: its \"id\" is what accept/reject/complete/dispute take.

  --amount N        payment amount (a number)
  --currency C      e.g. USDC, SOL
  --payment-code P  where to pay (address, BIP47 code, …)
  --expires SECS    seconds until a pending proposal expires (default 300;
                    0: never)
  --terms T         free-form terms (relayed, not signed)
  --identity F      identity file (default ~/.agentchat/identity.json);
                    proposals need one: see `workbench identity --generate`
  --name N          agent name to IDENTIFY with (default: the identity's)

example:
  workbench propose ws://localhost:6667 @k3f9x2ab 'review PR 12' --amount 5 --currency USDC
";

/// Who a proposal command acts as: a loaded identity and the name to
/// IDENTIFY with.
pub(super) struct Who {
    pub identity: Identity,
    pub name: String,
}

/// `--identity F` and `--name N`, shared by every proposal command; read
/// before `finish`, loaded only once all arguments are known to be good.
pub(super) struct IdentityArgs {
    file: Option<PathBuf>,
    name: Option<String>,
}

impl IdentityArgs {
    pub(super) fn take(
        args: &mut pico_args::Arguments,
        usage: &str,
    ) -> Result<IdentityArgs, CliError> {
        let file: Option<PathBuf> = args
            .opt_value_from_os_str(["-i", "--identity"], |s| {
                Ok::<_, std::convert::Infallible>(PathBuf::from(s))
            })
            .map_err(arg_error(usage))?;
        let name: Option<String> = args
            .opt_value_from_str(["-n", "--name"])
            .map_err(arg_error(usage))?;
        Ok(IdentityArgs { file, name })
    }

    pub(super) fn load(self) -> Result<Who, CliError> {
        let file = match self.file {
            Some(f) => f,
            None => identity::default_path()
                .ok_or_else(|| CliError::Failed("HOME is not set; pass --identity F".into()))?,
        };
        let identity = Identity::load(&file).map_err(|e| {
            CliError::Failed(format!("{e}\nproposals need an identity (--identity F)"))
        })?;
        let name = self.name.unwrap_or_else(|| identity.name.clone());
        Ok(Who { identity, name })
    }
}

/// Signs `msg` (which has its `type` and fields) as 0.3.0 does.
pub(super) fn sign(msg: &mut Value, identity: &Identity) {
    let obj = msg.as_object_mut().expect("proposal messages are objects");
    let text = signing::signing_text(obj).expect("proposal message types are signed");
    obj.insert("sig".into(), json!(identity.sign(&text)));
}

/// Connects with the identity, sends `msg`, and returns the first message
/// `wanted` picks out, printing it as one JSON line. The relay answers one
/// connection in order, so an ERROR caused by `msg` comes before the PONG
/// that `request` waits for.
pub(super) fn exchange(
    server: &str,
    who: &Who,
    msg: &Value,
    wanted: impl Fn(&Value, &str) -> bool,
) -> CliResult {
    let fail = |e: client::ClientError| CliError::Failed(e.to_string());
    let mut c: Client = client::open(server, &who.name, Some(&who.identity)).map_err(fail)?;
    let me = c.agent_id().unwrap_or_default().to_string();
    let got = c.request(msg);
    let got = c.close_with(got).map_err(fail)?;
    let answer = got.into_iter().find(|v| wanted(v, &me)).ok_or_else(|| {
        CliError::Failed(format!(
            "the relay did not answer the {} (is it an AgentChat 0.3.0 relay?)",
            msg["type"].as_str().unwrap_or("request")
        ))
    })?;
    super::print_json(&answer)?;
    Ok(())
}

/// A JSON number as JavaScript would send `parseFloat(x)`: integral values
/// without a fraction, so the echo reads `100`, not `100.0`.
fn js_number_value(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9_007_199_254_740_992.0 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

struct Config {
    server: String,
    to: String,
    task: String,
    amount: Option<f64>,
    currency: Option<String>,
    payment_code: Option<String>,
    expires: u64,
    terms: Option<String>,
    who: IdentityArgs,
}

fn parse(mut args: pico_args::Arguments) -> Result<Config, CliError> {
    let e = arg_error(USAGE);
    let amount: Option<f64> = args.opt_value_from_str("--amount").map_err(&e)?;
    let currency: Option<String> = args.opt_value_from_str("--currency").map_err(&e)?;
    let payment_code: Option<String> = args.opt_value_from_str("--payment-code").map_err(&e)?;
    let expires: u64 = args
        .opt_value_from_str("--expires")
        .map_err(&e)?
        .unwrap_or(300);
    let terms: Option<String> = args.opt_value_from_str("--terms").map_err(&e)?;
    let who = IdentityArgs::take(&mut args, USAGE)?;
    let server: String = positional(&mut args, USAGE, "server")?;
    let agent: String = positional(&mut args, USAGE, "agent")?;
    let task: String = positional(&mut args, USAGE, "task")?;
    finish(args, USAGE)?;
    if amount.is_some_and(|a| !a.is_finite()) {
        return Err(usage_error(USAGE, "--amount must be a finite number"));
    }
    if task.is_empty() {
        return Err(usage_error(USAGE, "<task> must not be empty"));
    }
    let to = if agent.starts_with('@') {
        agent
    } else {
        format!("@{agent}")
    };
    if to.len() < 2 {
        return Err(usage_error(
            USAGE,
            "<agent> must be an agent id like @k3f9x2ab",
        ));
    }
    Ok(Config {
        server,
        to,
        task,
        amount,
        currency,
        payment_code,
        expires,
        terms,
        who,
    })
}

pub fn run(args: pico_args::Arguments) -> CliResult {
    let cfg = parse(args)?;
    let who = cfg.who.load()?;
    // The fields 0.3.0's client sends; absent options are left out.
    let mut msg = json!({"type": "PROPOSAL", "to": cfg.to, "task": cfg.task});
    if let Some(a) = cfg.amount {
        msg["amount"] = js_number_value(a);
    }
    for (key, value) in [
        ("currency", cfg.currency),
        ("payment_code", cfg.payment_code),
        ("terms", cfg.terms),
    ] {
        if let Some(v) = value {
            msg[key] = json!(v);
        }
    }
    msg["expires"] = json!(cfg.expires);
    sign(&mut msg, &who.identity);
    let to = cfg.to.clone();
    exchange(&cfg.server, &who, &msg, move |v, me| {
        v["type"] == "PROPOSAL" && v["from"] == me && v["to"] == to.as_str()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> pico_args::Arguments {
        pico_args::Arguments::from_vec(list.iter().map(Into::into).collect())
    }

    #[test]
    fn parses_like_0_3_0() {
        let c = parse(args(&[
            "ws://h:1",
            "k3f9x2ab",
            "do it",
            "--amount",
            "1.5",
            "--expires",
            "60",
        ]))
        .unwrap();
        assert_eq!(c.to, "@k3f9x2ab");
        assert_eq!(c.amount, Some(1.5));
        assert_eq!(c.expires, 60);
        let c = parse(args(&["h", "@a", "t"])).unwrap();
        assert_eq!(c.expires, 300);
        assert!(parse(args(&["h", "@a"])).is_err());
        assert!(parse(args(&["h", "@a", "t", "extra"])).is_err());
        assert!(parse(args(&["h", "@a", "t", "--amount", "lots"])).is_err());
        assert!(parse(args(&["h", "@a", "t", "--amount", "inf"])).is_err());
        assert!(parse(args(&["h", "@a", "t", "--expires", "-5"])).is_err());
        assert!(parse(args(&["h", "@", "t"])).is_err());
    }

    #[test]
    fn amounts_print_like_javascript() {
        assert_eq!(js_number_value(100.0).to_string(), "100");
        assert_eq!(js_number_value(1.5).to_string(), "1.5");
        assert_eq!(js_number_value(-0.0).to_string(), "0");
    }
}
