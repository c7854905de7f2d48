//! The relay chat tools of `workbench mcp` (`chat_*`): their schemas and
//! implementations. Each tool talks to a chat session process (`chat::`)
//! over its loopback API; the MCP process itself holds no relay connection
//! and no state, so any number of MCP processes can share one session and
//! a restarted AI CLI simply carries on. Their own table, in the shape of
//! `tools::TOOLS`; `tools::all()` chains the two.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use super::tools::{args, long_wait, Slice, Tool, ToolResult};
use super::Outbox;
use crate::chat::{self, api, Config, SessionDir, SessionInfo, SessionName, Status};
use crate::relay::client;
use crate::relay::identity::Identity;
use crate::relay::protocol::{AgentId, AgentName, ChannelName};
use crate::{control, sys};

/// What `initialize` adds to the server's instructions: when to use these.
pub const INSTRUCTIONS: &str = "\
Relay chat: to talk with other AI agents on an AgentChat relay, call chat_connect(server, name) once and pass the returned session to chat_send, chat_wait and the other chat_* tools; the session runs in its own process, so messages that arrive while you are busy (or while this MCP server restarts) wait, numbered, in its inbox. \
Whenever you expect an answer call chat_wait(session, since=cursor) and pass back the cursor it returns ('pending' just means call again), and use chat_propose/chat_accept/chat_complete for signed work agreements, which need a session connected with identity=<identity file>.";

/// The relay's limit on a message's content, in characters.
const MAX_CONTENT: usize = 4096;
/// How long a new session process has to connect and say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(12);
/// Answers from a session's API (not waits) come well within this.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

fn obj(props: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
}

fn out(props: Value) -> Value {
    json!({"type": "object", "properties": props})
}

fn session_prop() -> Value {
    json!({"type": "string", "description": "The session returned by chat_connect (its agent name)."})
}

fn channel_prop() -> Value {
    json!({"type": "string", "description": "A channel: '#' and 1-31 letters, digits, '_' or '-'. Example: #general."})
}

fn since_prop() -> Value {
    json!({"type": "integer", "minimum": 0, "description": "Cursor from the previous chat_read/chat_wait result (0 = from the beginning)."})
}

fn proposal_id_prop() -> Value {
    json!({"type": "string", "description": "The proposal's id (from chat_propose's result or the PROPOSAL message)."})
}

fn messages_schema() -> Value {
    json!({"type": "array", "items": {"type": "object", "description": "One inbox entry: the relay frame as received (type MSG, JOINED, AGENT_JOINED, PROPOSAL, ACCEPT, …, or SESSION for the session's own reports such as reconnects) plus its seq.", "properties": {
        "seq": {"type": "integer"}, "type": {"type": "string"}, "from": {"type": "string"}, "to": {"type": "string"},
        "content": {"type": "string"}, "ts": {"type": "integer"}, "received": {"type": "integer"}}}})
}

fn session_only() -> Value {
    obj(json!({"session": session_prop()}), &["session"])
}

fn session_channel() -> Value {
    obj(
        json!({"session": session_prop(), "channel": channel_prop()}),
        &["session", "channel"],
    )
}

fn settled() -> Value {
    out(
        json!({"proposal_id": {"type": "string"}, "status": {"type": "string"}, "answer": {"type": "object"}}),
    )
}

/// The chat tools; `tools::all()` lists them after the page tools.
pub static TOOLS: &[Tool] = &[
    Tool {
        name: "chat_connect",
        title: "Connect to an agent relay",
        description: "Start a chat session on an AgentChat relay (or reattach to the running one with this name) and join channels. The session is its own process: it stays connected across restarts of your CLI and keeps every message in a numbered inbox. With identity=<identity file> the agent id is stable and messages and proposals are signed; without, the relay gives an ephemeral id that lasts while the session stays connected.",
        input_schema: || obj(json!({
            "server": {"type": "string", "description": "The relay: ws://host:port, or host[:port] (port 6667 by default)."},
            "name": {"type": "string", "description": "Agent name and session name: 1-32 letters, digits, '_' or '-' (default: the identity's name, else 'agent'). The same name reattaches to the same session."},
            "identity": {"type": "string", "description": "Path of an identity file (`workbench identity --generate` makes one; 0.3.0's ~/.agentchat/identity.json works)."},
            "channels": {"type": "array", "items": channel_prop(), "description": "Channels to join (default for a new session: [\"#general\"])."}
        }), &["server"]),
        output_schema: || out(json!({"session": {"type": "string"}, "agent_id": {"type": "string"}, "channels": {"type": "array", "items": {"type": "string"}},
            "connected": {"type": "boolean"}, "reused": {"type": "boolean"}, "last_seq": {"type": "integer"}, "keyed": {"type": "boolean"}})),
        run: |a, c| connect(args(c.tool, a)?),
    },
    Tool {
        name: "chat_send",
        title: "Send a chat message",
        description: "Send a message to a channel (#name, which you must have joined) or to one agent (@id). Signed when the session has an identity. A refusal by the relay (NOT_INVITED, RATE_LIMITED, AGENT_NOT_FOUND, …) is an error that says what to do.",
        input_schema: || obj(json!({"session": session_prop(), "to": {"type": "string", "description": "#channel or @agent_id."},
            "content": {"type": "string", "description": "The text, at most 4096 characters."}}), &["session", "to", "content"]),
        output_schema: || out(json!({"sent": {"type": "boolean"}, "to": {"type": "string"}, "ts": {"type": ["integer", "null"]}})),
        run: |a, c| send(args(c.tool, a)?),
    },
    Tool {
        name: "chat_read",
        title: "Read the chat inbox",
        description: "The inbox entries after cursor `since`, without waiting: messages (yours included, as the relay echoes them), joins and leaves, proposals, and the session's own reports (type SESSION, e.g. a reconnect and what it may have missed). Pass the returned cursor next time; nothing is lost between calls.",
        input_schema: || obj(json!({"session": session_prop(), "since": since_prop(),
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "description": "At most this many (default 100)."}}), &["session"]),
        output_schema: || out(json!({"messages": messages_schema(), "cursor": {"type": "integer"}, "last_seq": {"type": "integer"}})),
        run: |a, c| read(args(c.tool, a)?),
    },
    Tool {
        name: "chat_wait",
        title: "Wait for chat messages",
        description: "Return the inbox entries after cursor `since`, or block until one arrives. On timeout returns status 'pending' with the same cursor: just call again. Always pass the cursor from the previous result; nothing that arrives meanwhile is lost.",
        input_schema: || obj(json!({"session": session_prop(), "since": since_prop(),
            "timeout_seconds": {"type": "number", "minimum": 1, "maximum": 50, "description": "How long to wait (default 25, clamped to 1-50)."}}), &["session"]),
        output_schema: || out(json!({"status": {"type": "string", "enum": ["messages", "pending"]}, "messages": messages_schema(), "cursor": {"type": "integer"}, "last_seq": {"type": "integer"}})),
        run: |a, c| wait(args(c.tool, a)?, c.progress.as_ref(), &c.out),
    },
    Tool {
        name: "chat_join",
        title: "Join a channel",
        description: "Join a channel; its recent messages arrive in the inbox (flagged replay). The session re-joins it by itself after reconnecting.",
        input_schema: session_channel,
        output_schema: || out(json!({"channel": {"type": "string"}, "agents": {"type": "array", "items": {"type": "string"}}})),
        run: |a, c| join(args(c.tool, a)?),
    },
    Tool {
        name: "chat_leave",
        title: "Leave a channel",
        description: "Leave a channel; the session stops re-joining it after reconnects.",
        input_schema: session_channel,
        output_schema: || out(json!({"channel": {"type": "string"}, "left": {"type": "boolean"}})),
        run: |a, c| leave(args(c.tool, a)?),
    },
    Tool {
        name: "chat_create",
        title: "Create a channel",
        description: "Create a channel and join it. invite_only channels admit only agents a member invites with chat_invite (use a keyed session, or nobody can manage it after a reconnect).",
        input_schema: || obj(json!({"session": session_prop(), "channel": channel_prop(), "invite_only": {"type": "boolean", "description": "Default false."}}), &["session", "channel"]),
        output_schema: || out(json!({"channel": {"type": "string"}, "invite_only": {"type": "boolean"}, "agents": {"type": "array", "items": {"type": "string"}}})),
        run: |a, c| create(args(c.tool, a)?),
    },
    Tool {
        name: "chat_invite",
        title: "Invite an agent to a channel",
        description: "Invite an agent (@id) to a channel you are a member of (needed for invite-only channels); the agent is told if it is connected.",
        input_schema: || obj(json!({"session": session_prop(), "channel": channel_prop(), "agent": {"type": "string", "description": "@agent_id"}}), &["session", "channel", "agent"]),
        output_schema: || out(json!({"channel": {"type": "string"}, "agent": {"type": "string"}, "invited": {"type": "boolean"}})),
        run: |a, c| invite(args(c.tool, a)?),
    },
    Tool {
        name: "chat_channels",
        title: "List channels",
        description: "The relay's public channels with how many agents are in each.",
        input_schema: session_only,
        output_schema: || out(json!({"channels": {"type": "array", "items": {"type": "object"}}})),
        run: |a, c| channels(args(c.tool, a)?),
    },
    Tool {
        name: "chat_agents",
        title: "List agents in a channel",
        description: "The agent ids in a channel: who is there, and whom you can DM with chat_send(to=@id).",
        input_schema: session_channel,
        output_schema: || out(json!({"channel": {"type": "string"}, "agents": {"type": "array"}})),
        run: |a, c| agents(args(c.tool, a)?),
    },
    Tool {
        name: "chat_propose",
        title: "Propose work to an agent",
        description: "Send a signed work proposal to a connected agent (@id). Needs a keyed session. Returns the proposal's id and status (pending); the other agent's ACCEPT or REJECT arrives in your inbox.",
        input_schema: || obj(json!({"session": session_prop(), "to": {"type": "string", "description": "@agent_id"},
            "task": {"type": "string", "description": "What is to be done."},
            "amount": {"type": "number"}, "currency": {"type": "string"}, "payment_code": {"type": "string"},
            "expires": {"type": "integer", "minimum": 0, "description": "Seconds until a pending proposal expires (default 300; 0: never)."},
            "terms": {"type": "string", "description": "Free-form terms (relayed, not signed)."}}), &["session", "to", "task"]),
        output_schema: || out(json!({"proposal_id": {"type": "string"}, "status": {"type": "string"}, "proposal": {"type": "object"}})),
        run: |a, c| propose(args(c.tool, a)?),
    },
    Tool {
        name: "chat_accept",
        title: "Accept a proposal",
        description: "Accept a pending proposal made to you (signed). Returns its new status.",
        input_schema: || obj(json!({"session": session_prop(), "proposal_id": proposal_id_prop(), "payment_code": {"type": "string", "description": "Where you want to be paid."}}), &["session", "proposal_id"]),
        output_schema: settled,
        run: |a, c| settle("ACCEPT", args(c.tool, a)?),
    },
    Tool {
        name: "chat_reject",
        title: "Reject a proposal",
        description: "Reject a pending proposal made to you (signed). Returns its new status.",
        input_schema: || obj(json!({"session": session_prop(), "proposal_id": proposal_id_prop(), "reason": {"type": "string"}}), &["session", "proposal_id"]),
        output_schema: settled,
        run: |a, c| settle("REJECT", args(c.tool, a)?),
    },
    Tool {
        name: "chat_complete",
        title: "Complete a proposal",
        description: "Mark an accepted proposal complete (either party; signed). Returns its new status.",
        input_schema: || obj(json!({"session": session_prop(), "proposal_id": proposal_id_prop(), "proof": {"type": "string", "description": "Evidence: a URL, a hash, …"}}), &["session", "proposal_id"]),
        output_schema: settled,
        run: |a, c| settle("COMPLETE", args(c.tool, a)?),
    },
    Tool {
        name: "chat_dispute",
        title: "Dispute a proposal",
        description: "Dispute an accepted proposal (either party; signed). Returns its new status.",
        input_schema: || obj(json!({"session": session_prop(), "proposal_id": proposal_id_prop(), "reason": {"type": "string"}}), &["session", "proposal_id", "reason"]),
        output_schema: settled,
        run: |a, c| settle("DISPUTE", args(c.tool, a)?),
    },
    Tool {
        name: "chat_disconnect",
        title: "End a chat session",
        description: "Disconnect from the relay and stop the session's process. Its inbox stays on disk; chat_connect with the same name starts it again and numbering continues.",
        input_schema: session_only,
        output_schema: || out(json!({"session": {"type": "string"}, "stopped": {"type": "boolean"}, "was_running": {"type": "boolean"}})),
        run: |a, c| disconnect(args(c.tool, a)?),
    },
];

fn join(a: ChannelArgs) -> ToolResult {
    let ch = channel(&a.channel)?;
    let frames = relay(&a.session, json!({"type": "JOIN", "channel": ch}))?;
    let joined = find(&frames, |f| f["type"] == "JOINED" && f["channel"] == ch)?;
    Ok(json!({"channel": ch, "agents": joined["agents"]}))
}

fn leave(a: ChannelArgs) -> ToolResult {
    let ch = channel(&a.channel)?;
    relay(&a.session, json!({"type": "LEAVE", "channel": ch}))?;
    Ok(json!({"channel": ch, "left": true}))
}

fn invite(a: InviteArgs) -> ToolResult {
    let ch = channel(&a.channel)?;
    let agent = agent(&a.agent)?;
    relay(
        &a.session,
        json!({"type": "INVITE", "channel": ch, "agent": agent}),
    )?;
    Ok(json!({"channel": ch, "agent": agent, "invited": true}))
}

fn channels(a: SessionArgs) -> ToolResult {
    let frames = relay(&a.session, json!({"type": "LIST_CHANNELS"}))?;
    let list = find(&frames, |f| f["type"] == "CHANNELS")?;
    Ok(json!({"channels": list["list"]}))
}

fn agents(a: ChannelArgs) -> ToolResult {
    let ch = channel(&a.channel)?;
    let frames = relay(&a.session, json!({"type": "LIST_AGENTS", "channel": ch}))?;
    let list = find(&frames, |f| f["type"] == "AGENTS")?;
    Ok(json!({"channel": ch, "agents": list["list"]}))
}

fn disconnect(a: SessionArgs) -> ToolResult {
    let dir = known(&a.session)?;
    let was_running = chat::stop(&dir)?;
    Ok(json!({"session": a.session, "stopped": true, "was_running": was_running}))
}

// ---------- finding a session ----------

/// A session folder that exists, or an error naming the ones that do.
fn known(session: &str) -> Result<SessionDir, String> {
    let name = SessionName::parse(session)?;
    let dir = SessionDir::new(name);
    if dir.exists() {
        return Ok(dir);
    }
    let others: Vec<String> = chat::all_sessions()
        .iter()
        .map(|d| d.name.to_string())
        .collect();
    let hint = if others.is_empty() {
        String::new()
    } else {
        format!(" (sessions here: {})", others.join(", "))
    };
    Err(format!(
        "no chat session '{session}'{hint}; chat_connect(server, name='{session}') starts one"
    ))
}

/// What to tell the AI when a session's process is not there.
fn gone(dir: &SessionDir, why: &str) -> String {
    let server = Config::load(dir)
        .map(|c| c.server)
        .unwrap_or_else(|_| "<relay>".into());
    format!(
        "chat session '{0}' is gone: {why}. chat_connect(server='{server}', name='{0}') starts it again, with the same inbox and cursor",
        dir.name
    )
}

/// One API call to a running session; a missing process is `gone`.
fn call(session: &str, req: Value, timeout: Duration) -> Result<Value, String> {
    let dir = known(session)?;
    let info = match SessionInfo::load(&dir) {
        Ok(Some(i)) if chat::is_our_session(i.pid, &dir.name) => i,
        Ok(Some(i)) => {
            return Err(gone(
                &dir,
                &format!("its process (pid {}) has ended", i.pid),
            ))
        }
        Ok(None) => return Err(gone(&dir, "it was stopped")),
        Err(e) => return Err(gone(&dir, &e)),
    };
    match api::call(&info, &req, timeout) {
        Ok(v) => Ok(v),
        Err(api::ApiError::Refused(m)) => Err(m),
        Err(api::ApiError::Unreachable(m)) => {
            Err(gone(&dir, &format!("its process does not answer ({m})")))
        }
    }
}

/// Sends one frame through the session; a relay ERROR among the answers
/// becomes a tool error with what to do next.
fn relay(session: &str, frame: Value) -> Result<Vec<Value>, String> {
    let v = call(
        session,
        json!({"op": "relay", "frame": frame}),
        CALL_TIMEOUT,
    )?;
    let frames = match v["frames"].clone() {
        Value::Array(f) => f,
        _ => Vec::new(),
    };
    if let Some(e) = frames.iter().find(|f| f["type"] == "ERROR") {
        return Err(relay_error(
            e["code"].as_str().unwrap_or("?"),
            e["message"].as_str().unwrap_or(""),
        ));
    }
    Ok(frames)
}

fn find(frames: &[Value], wanted: impl Fn(&Value) -> bool) -> Result<Value, String> {
    frames.iter().find(|f| wanted(f)).cloned().ok_or_else(|| {
        "the relay did not send the expected answer (is it an AgentChat 0.3.0 relay?)".into()
    })
}

/// The relay's refusal, and what the AI can do about it.
fn relay_error(code: &str, message: &str) -> String {
    let advice = match code {
        "NOT_INVITED" => "join the channel first with chat_join; an invite-only channel needs a member to chat_invite your agent id",
        "RATE_LIMITED" => "you are sending too fast: wait a second or two, then send again (the relay allows a burst of about 10, then about 1 per second)",
        "AGENT_NOT_FOUND" => "that agent is not connected; chat_agents(channel) lists who is",
        "CHANNEL_NOT_FOUND" => "no such channel; chat_channels lists public ones, chat_create makes one",
        "CHANNEL_EXISTS" => "it already exists: chat_join it instead",
        "SIGNATURE_REQUIRED" => "this needs a keyed session: chat_connect with identity=<identity file>",
        "AUTH_REQUIRED" => "the session is not identified yet; try again in a moment",
        "INVALID_PROPOSAL" => "check the proposal id and its state (chat_read shows the PROPOSAL and its answers)",
        "INVALID_NAME" | "INVALID_MSG" => "check the arguments: channels are #name, agents are @id, content at most 4096 characters",
        _ => "see the relay's message",
    };
    format!("the relay refused: {code}: {message}. {advice}")
}

// ---------- arguments ----------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionArgs {
    session: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelArgs {
    session: String,
    channel: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InviteArgs {
    session: String,
    channel: String,
    agent: String,
}

fn channel(s: &str) -> Result<String, String> {
    ChannelName::parse(s)
        .map(|c| c.as_str().to_string())
        .ok_or_else(|| {
            format!(
                "bad channel {s:?}: use '#' and 1-31 letters, digits, '_' or '-', e.g. #general"
            )
        })
}

fn agent(s: &str) -> Result<String, String> {
    let with_at = if s.starts_with('@') {
        s.to_string()
    } else {
        format!("@{s}")
    };
    AgentId::parse(&with_at)
        .map(|a| a.as_str().to_string())
        .ok_or_else(|| format!("bad agent {s:?}: use an agent id like @k3f9x2ab"))
}

fn cursor(since: Option<i64>) -> Result<u64, String> {
    match since {
        None => Ok(0),
        Some(n) if n >= 0 => Ok(n as u64),
        Some(n) => Err(format!(
            "since must be a cursor ≥ 0 (got {n}); use 0 to read from the beginning"
        )),
    }
}

// ---------- chat_connect ----------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectArgs {
    server: String,
    name: Option<String>,
    identity: Option<String>,
    channels: Option<Vec<String>>,
}

fn identity_path(p: &str) -> PathBuf {
    let expanded = match p.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(rest))
            .unwrap_or_else(|| PathBuf::from(p)),
        None => PathBuf::from(p),
    };
    chat::absolute(&expanded)
}

fn connect(a: ConnectArgs) -> ToolResult {
    let url = client::normalize_url(&a.server)
        .map_err(|e| format!("{e}; give the relay as ws://host:port"))?;
    let id_path = a.identity.as_deref().map(identity_path);
    let identity = match &id_path {
        Some(p) => Some(Identity::load(p).map_err(|e| e.to_string())?),
        None => None,
    };
    let name = match (&a.name, &identity) {
        (Some(n), _) => n.clone(),
        (None, Some(id)) => id.name.clone(),
        (None, None) => "agent".into(),
    };
    if AgentName::parse(&name).is_none() {
        return Err(format!(
            "bad agent name {name:?}: use 1-32 letters, digits, '_' or '-' (pass name=…)"
        ));
    }
    let wanted: Vec<String> = a
        .channels
        .unwrap_or_default()
        .iter()
        .map(|c| channel(c))
        .collect::<Result<_, _>>()?;
    let dir = SessionDir::new(SessionName::parse(&name)?);
    dir.create()
        .map_err(|e| format!("cannot create {}: {e}", dir.dir.display()))?;
    // Two MCP processes connecting the same name at once start one process.
    let _guard = sys::lock_file_blocking(&dir.path(".connect.lock"))
        .map_err(|e| format!("cannot lock {}: {e}", dir.dir.display()))?;
    if let Status::Live(_, st) = chat::status(&dir) {
        return reattach(&dir, st, &url, id_path.as_ref(), &wanted);
    }
    let previous = Config::load(&dir).ok();
    let mut channels = match &previous {
        // The same relay: back to the channels it was in.
        Some(p) if p.server == url => p.channels.clone(),
        _ if wanted.is_empty() => vec!["#general".to_string()],
        _ => Vec::new(),
    };
    for ch in &wanted {
        if !channels.contains(ch) {
            channels.push(ch.clone());
        }
    }
    let created = previous
        .filter(|p| p.server == url)
        .map(|p| p.created)
        .unwrap_or_default();
    let cfg = Config {
        server: url.clone(),
        name: name.clone(),
        identity: id_path,
        channels,
        created,
    };
    cfg.save(&dir)
        .map_err(|e| format!("cannot write the session config: {e}"))?;
    start(&dir, &url)?;
    let st = call(&name, json!({"op": "status"}), CALL_TIMEOUT)?;
    Ok(connect_result(&st, false))
}

fn start(dir: &SessionDir, url: &str) -> Result<(), String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the workbench binary: {e}"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("chat-session").arg(dir.name.as_str());
    control::spawn_detached(&mut cmd, &dir.path("session.log"), START_TIMEOUT, "ready")
        .map(|_pid| ())
        .map_err(
        |f| {
            // The session's last log line is JSON with its own reason.
            let why = serde_json::from_str::<Value>(&f.last_log_line)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(f.last_log_line);
            if f.timed_out {
                format!("the chat session did not connect to {url} within {} s ({why}); is the relay reachable?", START_TIMEOUT.as_secs())
            } else {
                format!("cannot start the chat session: {why}; is a relay running at {url}? (`workbench relay` starts one)")
            }
        },
    )
}

fn reattach(
    dir: &SessionDir,
    st: Value,
    url: &str,
    id_path: Option<&PathBuf>,
    wanted: &[String],
) -> ToolResult {
    let name = dir.name.as_str();
    if st["server"] != url {
        return Err(format!(
            "chat session '{name}' is connected to {}, not {url}; chat_disconnect(session='{name}') first, or connect under another name",
            st["server"].as_str().unwrap_or("?")
        ));
    }
    let same_identity = match id_path {
        Some(p) => st["identity"].as_str() == p.to_str(),
        None => st["identity"].is_null(),
    };
    if !same_identity {
        return Err(format!(
            "chat session '{name}' runs with a different identity ({}); chat_disconnect(session='{name}') first, or connect under another name",
            st["identity"].as_str().unwrap_or("none: ephemeral")
        ));
    }
    let joined: Vec<String> = serde_json::from_value(st["channels"].clone()).unwrap_or_default();
    let mut st = st;
    let missing: Vec<&String> = wanted.iter().filter(|c| !joined.contains(c)).collect();
    if !missing.is_empty() {
        for ch in missing {
            relay(name, json!({"type": "JOIN", "channel": ch}))?;
        }
        st = call(name, json!({"op": "status"}), CALL_TIMEOUT)?;
    }
    Ok(connect_result(&st, true))
}

fn connect_result(st: &Value, reused: bool) -> Value {
    json!({
        "session": st["session"], "agent_id": st["agent_id"], "channels": st["channels"],
        "connected": st["connected"], "reused": reused, "last_seq": st["last_seq"], "keyed": st["keyed"],
    })
}

// ---------- messages ----------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendArgs {
    session: String,
    to: String,
    content: String,
}

fn send(a: SendArgs) -> ToolResult {
    let to = if a.to.starts_with('#') {
        channel(&a.to)?
    } else if a.to.starts_with('@') {
        agent(&a.to)?
    } else {
        return Err(format!(
            "bad target {:?}: send to #channel or @agent_id",
            a.to
        ));
    };
    let chars = a.content.chars().count();
    if chars > MAX_CONTENT {
        return Err(format!(
            "the message is {chars} characters; the relay's limit is {MAX_CONTENT}: split it into several messages"
        ));
    }
    if a.content.is_empty() {
        return Err("the message is empty".into());
    }
    let frames = relay(
        &a.session,
        json!({"type": "MSG", "to": to, "content": a.content}),
    )?;
    // The relay echoes a channel message and a DM to their sender.
    let echo = frames.iter().find(|f| {
        f["type"] == "MSG" && f["to"] == to.as_str() && f["content"] == a.content.as_str()
    });
    Ok(json!({"sent": true, "to": to, "ts": echo.map(|e| e["ts"].clone())}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadArgs {
    session: String,
    since: Option<i64>,
    limit: Option<u64>,
}

fn read(a: ReadArgs) -> ToolResult {
    let since = cursor(a.since)?;
    let limit = a.limit.unwrap_or(100).clamp(1, 1000);
    let v = call(
        &a.session,
        json!({"op": "read", "since": since, "limit": limit}),
        CALL_TIMEOUT,
    )?;
    Ok(batch(&v, None))
}

fn batch(v: &Value, status: Option<&str>) -> Value {
    let mut out =
        json!({"messages": v["messages"], "cursor": v["cursor"], "last_seq": v["last_seq"]});
    if let Some(s) = status {
        out["status"] = json!(s);
    }
    if !v["dropped"].is_null() {
        out["dropped"] = v["dropped"].clone();
        out["note"] =
            json!("entries in 'dropped' were compacted out of the inbox file before you read them");
    }
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitArgs {
    session: String,
    since: Option<i64>,
    timeout_seconds: Option<f64>,
}

/// Blocks in the session (its inbox's condition variable), in the slices
/// of [`long_wait`].
fn wait(a: WaitArgs, progress: Option<&(Value, Outbox)>, out: &Outbox) -> ToolResult {
    let since = cursor(a.since)?;
    long_wait(
        a.timeout_seconds,
        progress,
        out,
        "waiting for chat messages",
        |slice| {
            let v = call(
                &a.session,
                json!({"op": "wait", "since": since, "limit": 100, "timeout_ms": slice.as_millis() as u64}),
                slice + CALL_TIMEOUT,
            )?;
            Ok(if v["messages"].as_array().is_some_and(|m| !m.is_empty()) {
                Slice::Found(batch(&v, Some("messages")))
            } else {
                Slice::Nothing(batch(&v, Some("pending")))
            })
        },
    )
}

// ---------- channels ----------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateArgs {
    session: String,
    channel: String,
    invite_only: Option<bool>,
}

fn create(a: CreateArgs) -> ToolResult {
    let ch = channel(&a.channel)?;
    let invite_only = a.invite_only.unwrap_or(false);
    let frames = relay(
        &a.session,
        json!({"type": "CREATE_CHANNEL", "channel": ch, "invite_only": invite_only}),
    )?;
    let joined = find(&frames, |f| {
        f["type"] == "JOINED" && f["channel"] == ch.as_str()
    })?;
    Ok(json!({"channel": ch, "invite_only": invite_only, "agents": joined["agents"]}))
}

// ---------- proposals ----------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProposeArgs {
    session: String,
    to: String,
    task: String,
    amount: Option<serde_json::Number>,
    currency: Option<String>,
    payment_code: Option<String>,
    expires: Option<u64>,
    terms: Option<String>,
}

fn propose(a: ProposeArgs) -> ToolResult {
    let to = agent(&a.to)?;
    if a.task.is_empty() {
        return Err("task must not be empty".into());
    }
    // The fields 0.3.0's client sends; absent options are left out.
    let mut msg = json!({"type": "PROPOSAL", "to": to, "task": a.task});
    if let Some(n) = a.amount {
        msg["amount"] = Value::Number(n);
    }
    for (k, v) in [
        ("currency", a.currency),
        ("payment_code", a.payment_code),
        ("terms", a.terms),
    ] {
        if let Some(v) = v {
            msg[k] = json!(v);
        }
    }
    msg["expires"] = json!(a.expires.unwrap_or(300));
    let frames = relay(&a.session, msg)?;
    let echo = find(&frames, |f| {
        f["type"] == "PROPOSAL" && f["to"] == to.as_str()
    })?;
    Ok(json!({"proposal_id": echo["id"], "status": echo["status"], "proposal": echo}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettleArgs {
    session: String,
    proposal_id: String,
    payment_code: Option<String>,
    reason: Option<String>,
    proof: Option<String>,
}

fn settle(kind: &str, a: SettleArgs) -> ToolResult {
    if a.proposal_id.is_empty() {
        return Err("proposal_id must not be empty".into());
    }
    let (field, value, other) = match kind {
        "ACCEPT" => ("payment_code", a.payment_code, [a.reason, a.proof]),
        "REJECT" => ("reason", a.reason, [a.payment_code, a.proof]),
        "COMPLETE" => ("proof", a.proof, [a.payment_code, a.reason]),
        _ => ("reason", a.reason, [a.payment_code, a.proof]),
    };
    if other.iter().any(Option::is_some) {
        return Err(format!(
            "chat_{} takes only session, proposal_id and {field}",
            kind.to_ascii_lowercase()
        ));
    }
    if kind == "DISPUTE" && value.as_deref().is_none_or(str::is_empty) {
        return Err("a dispute needs a reason".into());
    }
    // 0.3.0's client always sends the optional field, null when not given.
    let msg = json!({"type": kind, "proposal_id": a.proposal_id, field: value});
    let frames = relay(&a.session, msg)?;
    let answer = find(&frames, |f| {
        f["type"] == kind && f["proposal_id"] == a.proposal_id.as_str()
    })?;
    Ok(json!({"proposal_id": a.proposal_id, "status": answer["status"], "answer": answer}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chat_tool_is_in_the_table_with_schemas() {
        assert_eq!(TOOLS.len(), 16);
        for t in TOOLS {
            assert!(t.name.starts_with("chat_"));
            assert!(std::ptr::eq(super::super::tools::find(t.name).unwrap(), t));
            assert!(t.description.len() > 40, "{}", t.name);
            assert_eq!((t.input_schema)()["type"], "object");
            assert_eq!((t.output_schema)()["type"], "object");
        }
    }

    #[test]
    fn instructions_are_two_sentences() {
        let ends = INSTRUCTIONS.matches(". ").count() + INSTRUCTIONS.ends_with('.') as usize;
        assert_eq!(ends, 2, "{INSTRUCTIONS}");
    }

    #[test]
    fn targets_and_cursors_are_checked() {
        assert_eq!(channel("#ok").unwrap(), "#ok");
        assert!(channel("nohash").is_err());
        assert_eq!(agent("k3f9x2ab").unwrap(), "@k3f9x2ab");
        assert!(agent("@").is_err());
        assert!(cursor(Some(-1)).is_err());
        assert_eq!(cursor(None).unwrap(), 0);
        assert!(relay_error("NOT_INVITED", "x").contains("chat_join"));
    }
}
