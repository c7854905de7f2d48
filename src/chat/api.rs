//! The loopback API of a chat session process: one JSON request line, one
//! JSON answer line, per TCP connection to `127.0.0.1:<port>` from
//! `.session.json`, carrying that file's token. Lines, not HTTP: the
//! session answers a handful of local callers and must stay tiny (no HTTP
//! server in a process whose budget is 5 MiB), and a long-poll is simply a
//! connection whose answer comes later.
//!
//! Requests (`{"token", "op", …}`):
//! * `status` → `{agent_id, connected, channels, server, name, keyed, last_seq, reconnects}`
//! * `read {since, limit}` / `wait {since, limit, timeout_ms}` → `{messages, cursor, last_seq, dropped?}`
//! * `relay {frame}` → `{frames}`: the frame is signed if the session holds a key,
//!   sent, and answered with everything the relay sent back before the PONG
//!   that follows it (an ERROR among them is the relay's refusal)
//! * `stop` → `{stopped: true}`, then the process says goodbye and exits
//!
//! Failures are `{"ok": false, "error": "…"}`; successes carry `"ok": true`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

use super::SessionInfo;

/// Longest request line a session reads (a MSG is at most 4096 characters).
pub const MAX_REQUEST: usize = 256 << 10;
/// Longest answer a caller reads (a CHANNELS list can be long).
pub const MAX_ANSWER: usize = 16 << 20;

#[derive(Debug)]
pub enum ApiError {
    /// No answer: the process is gone or not ours.
    Unreachable(String),
    /// It answered `ok: false`.
    Refused(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Unreachable(m) | ApiError::Refused(m) => f.write_str(m),
        }
    }
}

/// One request to the session `info` describes. `timeout` bounds the wait
/// for the answer (a `wait` request needs its own timeout plus a margin).
pub fn call(info: &SessionInfo, request: &Value, timeout: Duration) -> Result<Value, ApiError> {
    let unreachable = |e: std::io::Error| ApiError::Unreachable(e.to_string());
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, info.port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(unreachable)?;
    let _ = s.set_nodelay(true);
    s.set_read_timeout(Some(timeout)).map_err(unreachable)?;
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(unreachable)?;
    let mut req = request.clone();
    req["token"] = Value::from(info.token.as_str());
    let mut line = req.to_string();
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(unreachable)?;
    let mut answer = String::new();
    BufReader::new(s.take(MAX_ANSWER as u64))
        .read_line(&mut answer)
        .map_err(unreachable)?;
    let v: Value = serde_json::from_str(&answer).map_err(|_| {
        ApiError::Unreachable(if answer.is_empty() {
            "the session closed the connection without answering".into()
        } else {
            "the session's answer was not JSON".into()
        })
    })?;
    if v["ok"] == true {
        Ok(v)
    } else {
        Err(ApiError::Refused(
            v["error"].as_str().unwrap_or("unknown error").to_string(),
        ))
    }
}
