//! HTTP routes of the page server as plain functions from an `Incoming`
//! request to a `Reply`, testable without a socket. `respond` is the one
//! place that turns a reply into bytes on the wire, and `reply_error` the one
//! place that maps errors to HTTP statuses.

use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::events::{self, ReadError};
use super::{files, Shared, Stop};
use crate::util;

/// A request with its body read and its headers reduced to what routes use.
pub struct Incoming {
    pub method: String,
    pub path: String,
    pub query: HashMap<String, String>,
    pub bearer: Option<String>,
    pub content_type: Option<String>,
    pub remote: Option<IpAddr>,
    pub body: Vec<u8>,
}

pub enum Body {
    Bytes(Vec<u8>),
    File(std::fs::File, Option<usize>),
}

pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Body,
    /// Run after the reply is on the wire (used by /api/stop).
    pub then_stop: bool,
}

impl Reply {
    pub fn json(status: u16, v: Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: Body::Bytes(v.to_string().into_bytes()),
            then_stop: false,
        }
    }
}

/// An error answered as `{"ok":false,"error":…}` with the given status.
pub fn reply_error(status: u16, msg: impl Into<String>) -> Reply {
    Reply::json(status, json!({"ok": false, "error": msg.into()}))
}

pub fn json_response(status: u16, body: String) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    tiny_http::Response::from_data(body.into_bytes())
        .with_status_code(status)
        .with_header(
            tiny_http::Header::from_bytes("Content-Type", "application/json")
                .expect("valid header"),
        )
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Splits `/a/b?x=1&y=2` into a raw path and decoded query pairs.
pub fn split_url(url: &str) -> (String, HashMap<String, String>) {
    let (path, q) = url.split_once('?').unwrap_or((url, ""));
    let query = q
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect();
    (path.to_string(), query)
}

/// Reads a tiny_http request into an `Incoming`, enforcing the body limit.
pub fn read_incoming(req: &mut tiny_http::Request, max_body: usize) -> Result<Incoming, Reply> {
    let (path, query) = split_url(req.url());
    let header = |name: &str| {
        req.headers()
            .iter()
            .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str().to_string())
    };
    let bearer = header("Authorization")
        .and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_string()));
    let content_type = header("Content-Type");
    let too_big = || {
        reply_error(
            413,
            format!("request body is larger than the limit of {max_body} bytes"),
        )
    };
    if req.body_length().is_some_and(|n| n > max_body) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    if let Err(e) = req
        .as_reader()
        .take(max_body as u64 + 1)
        .read_to_end(&mut body)
    {
        return Err(reply_error(
            400,
            format!("could not read the request body: {e}"),
        ));
    }
    if body.len() > max_body {
        return Err(too_big());
    }
    Ok(Incoming {
        method: req.method().as_str().to_ascii_uppercase(),
        path,
        query,
        bearer,
        content_type,
        remote: req.remote_addr().map(|a| a.ip()),
        body,
    })
}

/// Writes a reply; a client that went away is not an error worth logging.
pub fn respond(req: tiny_http::Request, reply: Reply) {
    let ctype =
        tiny_http::Header::from_bytes("Content-Type", reply.content_type).expect("valid header");
    let nostore = tiny_http::Header::from_bytes("Cache-Control", "no-store").expect("valid header");
    let status = tiny_http::StatusCode(reply.status);
    let _ = match reply.body {
        Body::Bytes(b) => req.respond(
            tiny_http::Response::from_data(b)
                .with_status_code(status)
                .with_header(ctype)
                .with_header(nostore)
                .with_chunked_threshold(usize::MAX),
        ),
        Body::File(f, len) => req.respond(tiny_http::Response::new(
            status,
            vec![ctype, nostore],
            f,
            len,
            None,
        )),
    };
}

fn authorized(shared: &Shared, inc: &Incoming) -> bool {
    inc.bearer
        .as_deref()
        .is_some_and(|t| util::constant_time_eq(t.as_bytes(), shared.token.as_bytes()))
}

fn parse_json_object(inc: &Incoming) -> Result<Map<String, Value>, Reply> {
    match serde_json::from_slice::<Value>(&inc.body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(reply_error(400, "the body must be a JSON object")),
        Err(e) => Err(reply_error(400, format!("the body is not valid JSON: {e}"))),
    }
}

/// Dispatches every route except `/ws`, which needs the raw request.
pub fn handle(shared: &Shared, inc: &Incoming) -> Reply {
    let owner_only = inc.path.starts_with("/api/")
        && inc.path != "/api/event"
        && inc.path != "/api/bye"
        && !inc.path.starts_with("/api/snapshot/");
    if owner_only && !authorized(shared, inc) {
        return reply_error(401, "missing or wrong bearer token: send `Authorization: Bearer <token>` with the token from .server.json");
    }
    match (inc.method.as_str(), inc.path.as_str()) {
        ("GET" | "HEAD", "/") | ("GET" | "HEAD", "/index.html") => page(shared),
        ("GET", "/health") => health(shared),
        ("GET" | "HEAD", p) if p.starts_with("/files/") => {
            files::serve(&shared.project, &p["/files/".len()..])
        }
        ("POST", "/api/state") => post_state(shared, inc),
        ("POST", "/api/log") => post_log(shared, inc),
        ("GET", "/api/log") => get_log(shared, inc),
        ("POST", "/api/event") => post_event(shared, inc),
        ("POST", "/api/bye") => post_bye(shared, inc),
        ("GET", "/api/events") => get_events(shared, inc),
        ("GET", "/api/snapshot") => get_snapshot(shared, inc),
        ("POST", p) if p.starts_with("/api/snapshot/") => {
            post_snapshot(shared, inc, &p["/api/snapshot/".len()..])
        }
        ("POST", "/api/stop") => {
            let mut r = Reply::json(200, json!({"ok": true, "stopping": true}));
            r.then_stop = true;
            r
        }
        (
            _,
            "/" | "/health" | "/api/state" | "/api/log" | "/api/event" | "/api/events"
            | "/api/stop" | "/api/snapshot",
        ) => reply_error(
            405,
            format!("method {} is not allowed on {}", inc.method, inc.path),
        ),
        _ => reply_error(404, format!("no such route: {}", inc.path)),
    }
}

fn page(shared: &Shared) -> Reply {
    match std::fs::read(shared.project.path("index.html")) {
        Ok(b) => Reply {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: Body::Bytes(b),
            then_stop: false,
        },
        Err(e) => reply_error(500, format!("cannot read index.html: {e}")),
    }
}

fn health(shared: &Shared) -> Reply {
    Reply::json(
        200,
        json!({
            "ok": true,
            "project": shared.project.name.as_str(),
            "pid": std::process::id(),
            "viewers": shared.hub.viewers(),
            "version": crate::VERSION,
        }),
    )
}

const STATE_FIELDS: [&str; 4] = ["template", "styles", "script", "data"];

fn post_state(shared: &Shared, inc: &Incoming) -> Reply {
    let fields = match parse_json_object(inc) {
        Ok(f) => f,
        Err(r) => return r,
    };
    if let Some(k) = fields.keys().find(|k| !STATE_FIELDS.contains(&k.as_str())) {
        return reply_error(
            400,
            format!("unknown field '{k}': send any of template, styles, script, data"),
        );
    }
    for k in ["template", "styles", "script"] {
        if let Some(v) = fields.get(k) {
            if !(v.is_string() || v.is_null()) {
                return reply_error(400, format!("'{k}' must be a string (or null to clear it)"));
            }
        }
    }
    if fields.is_empty() {
        return reply_error(
            400,
            "nothing to push: send at least one of template, styles, script, data",
        );
    }
    let pushed = shared.hub.push_state(fields);
    // An acknowledged push survives a crash of this server (state.json is
    // replaced before the answer; not fsynced, see util::write_replace).
    if let Err(e) = shared.disk.sync() {
        return disk_error(
            &e,
            "the state was pushed to the open pages but not saved to state.json",
        );
    }
    util::log_event(
        "push_state",
        json!({"seq": pushed.seq, "bytes": pushed.bytes, "viewers": pushed.viewers}),
    );
    Reply::json(
        200,
        json!({"ok": true, "seq": pushed.seq, "viewers": pushed.viewers, "bytes": pushed.bytes}),
    )
}

pub const LEVELS: [&str; 4] = ["info", "success", "warn", "error"];

/// Builds a session log entry; the one shape every log line has.
pub fn log_entry(level: &str, message: &str, source: &str) -> Value {
    json!({"ts": util::rfc3339_now(), "level": level, "message": message, "source": source})
}

fn post_log(shared: &Shared, inc: &Incoming) -> Reply {
    let body = match parse_json_object(inc) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(message) = body.get("message").and_then(Value::as_str) else {
        return reply_error(400, "'message' is required and must be a string");
    };
    if message.trim().is_empty() {
        return reply_error(400, "'message' must not be empty");
    }
    let level = match body.get("level") {
        None | Some(Value::Null) => "info",
        Some(Value::String(l)) if LEVELS.contains(&l.as_str()) => l.as_str(),
        Some(other) => {
            return reply_error(
                400,
                format!("'level' must be one of info, success, warn, error (got {other})"),
            )
        }
    };
    let entry = log_entry(level, message, "ai");
    let pushed = shared.hub.push_log(entry.clone());
    // Acknowledged entries are in session.jsonl/session.md (no lock is held).
    if let Err(e) = shared.disk.sync() {
        return disk_error(
            &e,
            "the entry was shown on the open pages but not saved to session.jsonl",
        );
    }
    util::log_event(
        "push_log",
        json!({"level": level, "bytes": pushed.bytes, "viewers": pushed.viewers}),
    );
    Reply::json(
        200,
        json!({"ok": true, "ts": entry["ts"], "viewers": pushed.viewers}),
    )
}

fn query_u64(inc: &Incoming, key: &str) -> Result<Option<u64>, Reply> {
    match inc.query.get(key) {
        None => Ok(None),
        Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
            reply_error(
                400,
                format!("'{key}' must be a whole number ≥ 0 (got {v:?})"),
            )
        }),
    }
}

fn get_log(shared: &Shared, inc: &Incoming) -> Reply {
    let limit = match query_u64(inc, "limit") {
        Ok(l) => l.unwrap_or(50).clamp(1, 1000) as usize,
        Err(r) => return r,
    };
    Reply::json(
        200,
        json!({"ok": true, "entries": shared.hub.recent_logs(limit)}),
    )
}

/// Events from the page: `{"name": "...", "data": any, "viewer"?: "v3"}`.
fn post_event(shared: &Shared, inc: &Incoming) -> Reply {
    if inc.body.len() > 64 << 10 {
        return reply_error(413, "an event may be at most 64 KiB");
    }
    // Requiring JSON makes a cross-site form post impossible (it needs CORS).
    if !inc
        .content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("application/json"))
    {
        return reply_error(415, "send events as Content-Type: application/json");
    }
    let body = match parse_json_object(inc) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let name = match body.get("name").and_then(Value::as_str) {
        Some(n) if events::valid_name(n) => n,
        Some(n) => {
            return reply_error(
                400,
                format!("bad event name {n:?}: use 1-64 letters, digits, '_', '-', '.', ':' (\"lost\" is reserved)"),
            )
        }
        None => return reply_error(400, "'name' is required and must be a string"),
    };
    if let Some(ip) = inc.remote {
        match shared.events.admit(ip) {
            Ok(()) => {}
            Err(events::Limited::Client) => {
                return reply_error(
                    429,
                    "too many events from this viewer; slow down and retry in a second",
                )
            }
            Err(events::Limited::Total) => {
                return reply_error(
                    429,
                    "too many events from all viewers together; slow down and retry in a second",
                )
            }
        }
    }
    let viewer = body
        .get("viewer")
        .and_then(Value::as_str)
        .filter(|v| v.len() <= 32)
        .unwrap_or("");
    let from = json!({"viewer": viewer, "addr": inc.remote.map(|ip| ip.to_string())});
    let data = body.get("data").cloned().unwrap_or(Value::Null);
    // The human's answer is acknowledged only once it is in the events log
    // (fsynced); a failed write uses up no number.
    let seq = match shared.disk.append_event(name, data.clone(), from) {
        Ok(seq) => seq,
        Err(e) => return disk_error(&e, "the event was not stored; send it again"),
    };
    let mut summary = data.to_string();
    if util::truncate_utf8(&mut summary, 500) {
        summary.push('…');
    }
    shared.hub.push_log(log_entry(
        "info",
        &format!("event {name}: {summary}"),
        "page",
    ));
    // The event is stored; its session log line is a copy, so a failure to
    // write that line is logged (by the writer) but does not undo the event.
    let _ = shared.disk.sync();
    Reply::json(200, json!({"ok": true, "seq": seq}))
}

/// A closing page's goodbye: `{"viewer","key"}` from its HELLO, sent with
/// `navigator.sendBeacon` (so any content type; the key is the credential).
fn post_bye(shared: &Shared, inc: &Incoming) -> Reply {
    let body: Value = serde_json::from_slice(&inc.body).unwrap_or(Value::Null);
    let (Some(viewer), Some(key)) = (body["viewer"].as_str(), body["key"].as_str()) else {
        return reply_error(
            400,
            "send {\"viewer\": \"v3\", \"key\": \"…\"} from the page's HELLO",
        );
    };
    if shared.hub.bye(viewer, key) {
        util::log_event(
            "viewer_bye",
            json!({"viewer": viewer, "viewers": shared.hub.viewers()}),
        );
        Reply::json(200, json!({"ok": true}))
    } else {
        reply_error(404, "no such viewer (or wrong key)")
    }
}

/// About how many bytes of events one `GET /api/events` answer carries; the
/// cursor says where the next call continues.
const EVENTS_REPLY_BYTES: usize = 4 << 20;

/// A write that did not reach the disk: 507 when it is full, 500 otherwise,
/// with what happened to the request.
fn disk_error(e: &std::io::Error, what: &str) -> Reply {
    reply_error(
        super::disk::error_status(e),
        format!("{what}: cannot write to the project folder ({e})"),
    )
}

fn get_events(shared: &Shared, inc: &Incoming) -> Reply {
    let since = match inc.query.get("since").map(|s| s.parse::<i64>()) {
        None => 0,
        Some(Ok(n)) if n >= 0 => n as u64,
        Some(_) => {
            return reply_error(400, "'since' must be a cursor ≥ 0 (0 reads from the start)")
        }
    };
    let wait = match query_u64(inc, "wait") {
        Ok(w) => w.unwrap_or(0).min(60),
        Err(r) => return r,
    };
    let limit = match query_u64(inc, "limit") {
        Ok(l) => l.unwrap_or(100).clamp(1, 1000) as usize,
        Err(r) => return r,
    };
    let names: Vec<String> = inc
        .query
        .get("names")
        .map(|n| {
            n.split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    match shared.events.read(since, &names, limit, EVENTS_REPLY_BYTES, Duration::from_secs(wait)) {
        // The events are stored JSON text: joined, never re-parsed.
        Ok(b) => Reply {
            status: 200,
            content_type: "application/json",
            body: Body::Bytes(
                format!(
                    r#"{{"ok":true,"events":[{}],"cursor":{},"last_seq":{}}}"#,
                    b.events.join(","),
                    b.cursor,
                    b.last_seq
                )
                .into_bytes(),
            ),
            then_stop: false,
        },
        Err(ReadError::AheadOfLog { since, last_seq }) => reply_error(
            400,
            format!("cursor {since} is ahead of the newest event ({last_seq}); call again with since={last_seq}"),
        ),
    }
}

/// Asks the most recently connected viewer for what it shows, and waits.
fn get_snapshot(shared: &Shared, _inc: &Incoming) -> Reply {
    let ids = shared.hub.viewer_ids();
    if ids.is_empty() {
        return Reply::json(
            200,
            json!({"ok": true, "viewer": null, "message": "no browser is viewing this page right now"}),
        );
    }
    let token = match util::random_hex(12) {
        Ok(t) => t,
        Err(e) => return reply_error(500, e.to_string()),
    };
    let (tx, rx) = mpsc::sync_channel(1);
    shared
        .snapshots
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(token.clone(), tx);
    // Newest viewer first; fall back to older ones if it doesn't answer.
    let mut answer = None;
    for id in ids.iter().rev().take(3) {
        if !shared
            .hub
            .send_to(*id, json!({"type": "SNAPSHOT", "id": token}).to_string())
        {
            continue;
        }
        if let Ok(v) = rx.recv_timeout(Duration::from_secs(3)) {
            answer = Some((id, v));
            break;
        }
    }
    shared
        .snapshots
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&token);
    match answer {
        Some((id, v)) => Reply::json(
            200,
            json!({"ok": true, "viewer": format!("v{id}"), "snapshot": v}),
        ),
        None => reply_error(504, "no viewer answered the snapshot request within 3 s"),
    }
}

fn post_snapshot(shared: &Shared, inc: &Incoming, token: &str) -> Reply {
    let body = match parse_json_object(inc) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let tx = shared
        .snapshots
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(token);
    match tx {
        Some(tx) => {
            let _ = tx.try_send(Value::Object(body));
            Reply::json(200, json!({"ok": true}))
        }
        None => reply_error(
            404,
            "no snapshot was requested under that id (or it timed out)",
        ),
    }
}

/// The whole request path: read, dispatch, respond, maybe stop.
pub fn serve_request(shared: &Shared, mut req: tiny_http::Request) {
    let reply = match read_incoming(&mut req, shared.max_body) {
        Ok(inc) => {
            let r = handle(shared, &inc);
            if r.status >= 400 {
                util::log_event(
                    "http_error",
                    json!({"method": inc.method, "path": inc.path, "status": r.status}),
                );
            }
            r
        }
        Err(r) => r,
    };
    let stop = reply.then_stop;
    respond(req, reply);
    if stop {
        let _ = shared.stop.send(Stop::Api);
    }
}
