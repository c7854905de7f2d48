//! `workbench connect`: an interactive relay session on a terminal.

use std::io::BufRead;
use std::sync::mpsc;
use std::thread;

use serde_json::{json, Value};
use tungstenite::Message;

use super::{arg_error, finish, positional, CliError, CliResult};
use crate::relay::client::{self, open};
use crate::relay::display::terminal_safe;
use crate::relay::frame::{Incoming, ReadError};
use crate::relay::protocol::{AgentId, ChannelName};

pub const USAGE: &str = "\
usage: workbench connect <server> [--join #channel]… [--name NAME] [--identity F]

An interactive session: joins the --join channels (default #general); each
line you type is sent to the current channel (the last one joined).
Commands:
  /join #channel        join and make it current
  /leave #channel       leave a channel
  /dm @agent message    send a direct message
  /channels             list public channels
  /agents [#channel]    list agents (default: the current channel)
  /quit                 leave (so does end of input)
Incoming messages print as `[#channel] @from: text`. With --identity F
the session identifies with that identity file's key (its stable id) and
signs every message, as AgentChat 0.3.0 does.

example:
  workbench connect ws://localhost:6667 --join '#general' --name alice
";

/// What the session loop reacts to: typed lines and relay traffic.
enum Event {
    Line(String),
    EndOfInput,
    Relay(Value),
    Ping(Vec<u8>),
    Lost(String),
}

pub fn run(mut args: pico_args::Arguments) -> CliResult {
    let e = arg_error(USAGE);
    let name = super::relay_args::name_option(&mut args, USAGE)?.unwrap_or_else(|| "human".into());
    let identity = super::identity::client_option(&mut args, USAGE)?;
    let joins: Vec<String> = args.values_from_str("--join").map_err(&e)?;
    let server: String = positional(&mut args, USAGE, "server")?;
    finish(args, USAGE)?;
    let mut channels = Vec::new();
    for j in &joins {
        channels.push(super::relay_args::channel(j, USAGE, "--join")?);
    }
    if channels.is_empty() {
        channels.push(ChannelName::parse("#general").expect("valid default channel"));
    }

    let identity = super::identity::load_client(identity)?;
    let mut client = open(&server, &name, identity.as_ref())?;
    for ch in &channels {
        for v in client.request(&json!({"type": "JOIN", "channel": ch.as_str()}))? {
            show(&v);
        }
    }
    println!(
        "connected to {} as {}; current channel {}; /quit to leave",
        terminal_safe(client.url()),
        terminal_safe(client.agent_id().unwrap_or("?")),
        channels.last().map(|c| c.as_str()).unwrap_or("")
    );
    client.set_timeout(None);
    let mut current = channels.last().cloned();
    let (mut reader, mut writer) = client.split();

    let (tx, rx) = mpsc::channel();
    let relay_tx = tx.clone();
    thread::Builder::new()
        .name("connect-relay".into())
        .spawn(move || loop {
            let ev = match reader.next_message() {
                Ok(Incoming::Text(t)) => match serde_json::from_str(&t) {
                    Ok(v) => Event::Relay(v),
                    Err(_) => continue,
                },
                Ok(Incoming::Ping(p)) => Event::Ping(p),
                Ok(Incoming::Close(_)) => Event::Lost("the relay closed the connection".into()),
                Ok(_) => continue,
                Err(ReadError::Io(e)) => Event::Lost(format!("connection lost: {e}")),
                Err(e) => Event::Lost(e.to_string()),
            };
            let last = matches!(ev, Event::Lost(_));
            if relay_tx.send(ev).is_err() || last {
                return;
            }
        })?;
    thread::Builder::new()
        .name("connect-stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(Event::Line(line)).is_err() {
                    return;
                }
            }
            let _ = tx.send(Event::EndOfInput);
        })?;

    // This loop owns the session state and the only writer.
    for ev in rx {
        let result = match ev {
            Event::Relay(v) => {
                show(&v);
                Ok(())
            }
            Event::Ping(p) => writer.send(Message::Pong(p.into())),
            Event::Lost(why) => return Err(CliError::Failed(why)),
            Event::EndOfInput => break,
            Event::Line(line) => match command(&line, &mut current) {
                Action::Send(mut v) => {
                    // With an identity, messages are signed as 0.3.0 signs them.
                    if let (Some(id), true) = (&identity, v["type"] == "MSG") {
                        client::sign_msg(&mut v, id);
                    }
                    writer.send(Message::text(v.to_string()))
                }
                Action::Say(text) => {
                    println!("{text}");
                    Ok(())
                }
                Action::Quit => break,
                Action::Nothing => Ok(()),
            },
        };
        if let Err(e) = result {
            return Err(CliError::Failed(format!("connection lost: {e}")));
        }
    }
    let _ = writer.close(None);
    let _ = writer.flush();
    Ok(())
}

enum Action {
    Send(Value),
    Say(String),
    Quit,
    Nothing,
}

/// Turns one typed line into what to do; `current` follows /join.
fn command(line: &str, current: &mut Option<ChannelName>) -> Action {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Action::Nothing;
    }
    let Some(cmd) = line.strip_prefix('/') else {
        return match current {
            Some(ch) => Action::Send(json!({"type": "MSG", "to": ch.as_str(), "content": line})),
            None => Action::Say("no current channel: /join #channel first".into()),
        };
    };
    let (verb, rest) = cmd.split_once(' ').unwrap_or((cmd, ""));
    let rest = rest.trim();
    match verb {
        "quit" | "exit" => Action::Quit,
        "join" => match ChannelName::parse(rest) {
            Some(ch) => {
                let v = json!({"type": "JOIN", "channel": ch.as_str()});
                *current = Some(ch);
                Action::Send(v)
            }
            None => Action::Say("usage: /join #channel".into()),
        },
        "leave" => match ChannelName::parse(rest) {
            Some(ch) => {
                if current.as_ref() == Some(&ch) {
                    *current = None;
                }
                Action::Send(json!({"type": "LEAVE", "channel": ch.as_str()}))
            }
            None => Action::Say("usage: /leave #channel".into()),
        },
        "dm" => {
            let (to, msg) = rest.split_once(' ').unwrap_or((rest, ""));
            match AgentId::parse(to) {
                Some(a) if !msg.trim().is_empty() => {
                    Action::Send(json!({"type": "MSG", "to": a.as_str(), "content": msg.trim()}))
                }
                _ => Action::Say("usage: /dm @agent-id message".into()),
            }
        }
        "channels" => Action::Send(json!({"type": "LIST_CHANNELS"})),
        "agents" => {
            let ch = if rest.is_empty() {
                current.clone()
            } else {
                ChannelName::parse(rest)
            };
            match ch {
                Some(ch) => Action::Send(json!({"type": "LIST_AGENTS", "channel": ch.as_str()})),
                None => Action::Say("usage: /agents #channel".into()),
            }
        }
        _ => Action::Say(
            "commands: /join #c, /leave #c, /dm @id msg, /channels, /agents [#c], /quit".into(),
        ),
    }
}

/// Prints one relay message for a human.
fn show(v: &Value) {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let line = match v["type"].as_str().unwrap_or("") {
        "MSG" => {
            let replay = if v["replay"] == true {
                " (earlier)"
            } else {
                ""
            };
            format!("[{}] {}: {}{}", s("to"), s("from"), s("content"), replay)
        }
        "JOINED" => format!(
            "* joined {} ({} here)",
            s("channel"),
            v["agents"].as_array().map_or(0, Vec::len)
        ),
        "LEFT" => format!("* left {}", s("channel")),
        "AGENT_JOINED" => format!("* {} joined {}", s("agent"), s("channel")),
        "AGENT_LEFT" => format!("* {} left {}", s("agent"), s("channel")),
        "CHANNELS" => {
            let list: Vec<String> = v["list"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| format!("{} ({})", c["name"].as_str().unwrap_or(""), c["agents"]))
                .collect();
            format!("* channels: {}", list.join(", "))
        }
        "AGENTS" => {
            let list: Vec<&str> = v["list"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            format!("* in {}: {}", s("channel"), list.join(" "))
        }
        "ERROR" => format!("! {}: {}", s("code"), s("message")),
        "PONG" | "WELCOME" => return,
        _ => v.to_string(),
    };
    println!("{}", terminal_safe(&line));
}

#[cfg(test)]
mod show_tests {
    /// What `show` prints of a hostile MSG: every unsafe character escaped.
    #[test]
    fn hostile_text_is_escaped() {
        let line = format!("[#g] @x: {}", "hi\u{1b}[2J\r\u{202e}gnp.exe\u{200b}");
        assert_eq!(
            super::terminal_safe(&line),
            "[#g] @x: hi\\u{1b}[2J\\u{d}\\u{202e}gnp.exe\\u{200b}"
        );
    }
}
