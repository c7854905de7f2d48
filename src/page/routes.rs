//! The page server's routes as one table: each route names its methods, who
//! may call it, the largest body it takes and whether that body must be
//! JSON. `admit` decides everything the headers can decide (Host, Origin,
//! auth, 404/405, body size and type) in one place, before any body byte is
//! read; handlers are plain functions from an `Incoming` to a `Reply`,
//! testable without a socket (see the tests below).

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::events::{self, ReadError};
use super::http::{reply_error, Head, Incoming, Reply};
use super::hub::{self, AnswerError, SnapshotOutcome};
use super::{files, Shared};
use crate::util;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Anyone who can reach the server (after the Host/Origin checks).
    Public,
    /// The owner: `Authorization: Bearer <token from .server.json>`.
    Owner,
    /// The page: `X-Workbench-Key: <event_key from HELLO>` (or the owner).
    PageKey,
    /// The viewer a snapshot was asked of: `X-Workbench-Viewer` and
    /// `X-Workbench-Key` from its HELLO (or the owner, who relays the
    /// answers of an MCP Apps frame).
    AskedViewer,
    /// `/app/<origin::app_key>/ws`: an MCP Apps frame's viewer socket, from
    /// any origin (the key stands in for it).
    AppKey,
}

/// The largest body a route takes.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    Bytes(usize),
    /// `--max-body` (owner pushes and snapshot answers).
    MaxBody,
    /// The per-file upload limit (`--upload-max-bytes`).
    Upload,
}

type Handler = fn(&Shared, &Incoming, &str) -> Reply;

#[derive(Clone, Copy)]
pub enum Action {
    Plain(Handler),
    /// `/ws`: the raw request goes to `viewer::handle`.
    Upgrade,
    /// The body is streamed by the handler itself (uploads), never
    /// buffered whole.
    Stream(StreamHandler),
}

type StreamHandler = fn(&Shared, &Head, &mut tiny_http::Request) -> Reply;

pub struct Route {
    pub methods: &'static [&'static str],
    /// Exact path, or a prefix when it ends with '/' and `prefix` is set.
    pub path: &'static str,
    pub prefix: bool,
    pub auth: Auth,
    pub limit: Limit,
    /// The body must be `Content-Type: application/json` (a cross-site form
    /// or `text/plain` post needs no CORS preflight; JSON does).
    pub json: bool,
    pub action: Action,
}

const GET: &[&str] = &["GET", "HEAD"];
const GET_ONLY: &[&str] = &["GET"];
const POST: &[&str] = &["POST"];
const NO_BODY: Limit = Limit::Bytes(0);

/// Events are small: what a human typed or measured.
pub const EVENT_LIMIT: usize = 64 << 10;
/// Log messages from the owner.
pub const LOG_LIMIT: usize = 1 << 20;
/// Control bodies: `/api/bye`, `/api/stop`.
pub const SMALL_LIMIT: usize = 1 << 10;

const fn route(
    methods: &'static [&'static str],
    path: &'static str,
    auth: Auth,
    limit: Limit,
    json: bool,
    action: Action,
) -> Route {
    Route {
        methods,
        path,
        prefix: false,
        auth,
        limit,
        json,
        action,
    }
}

const fn prefixed(r: Route) -> Route {
    Route { prefix: true, ..r }
}

use Action::{Plain, Stream, Upgrade};
use Auth::{AppKey, AskedViewer, Owner, PageKey, Public};

pub static ROUTES: &[Route] = &[
    route(GET, "/", Public, NO_BODY, false, Plain(page)),
    route(GET, "/index.html", Public, NO_BODY, false, Plain(page)),
    route(GET_ONLY, "/health", Public, NO_BODY, false, Plain(health)),
    prefixed(route(GET, "/files/", Public, NO_BODY, false, Plain(file))),
    route(GET_ONLY, "/ws", Public, NO_BODY, false, Upgrade),
    prefixed(route(GET_ONLY, "/app/", AppKey, NO_BODY, false, Upgrade)),
    // Attachments from the page (src/page/uploads.rs, docs/files.md).
    route(
        POST,
        "/api/upload",
        PageKey,
        Limit::Upload,
        false,
        Stream(super::uploads::handle),
    ),
    route(
        POST,
        "/api/event",
        PageKey,
        Limit::Bytes(EVENT_LIMIT),
        true,
        Plain(post_event),
    ),
    // sendBeacon cannot set headers or a JSON type: the key is in the body.
    route(
        POST,
        "/api/bye",
        Public,
        Limit::Bytes(SMALL_LIMIT),
        false,
        Plain(post_bye),
    ),
    prefixed(route(
        POST,
        "/api/snapshot/",
        AskedViewer,
        Limit::MaxBody,
        true,
        Plain(post_snapshot),
    )),
    route(
        POST,
        "/api/state",
        Owner,
        Limit::MaxBody,
        false,
        Plain(post_state),
    ),
    route(
        POST,
        "/api/log",
        Owner,
        Limit::Bytes(LOG_LIMIT),
        false,
        Plain(post_log),
    ),
    route(GET_ONLY, "/api/log", Owner, NO_BODY, false, Plain(get_log)),
    route(
        GET_ONLY,
        "/api/events",
        Owner,
        NO_BODY,
        false,
        Plain(get_events),
    ),
    route(
        GET_ONLY,
        "/api/snapshot",
        Owner,
        NO_BODY,
        false,
        Plain(get_snapshot),
    ),
    route(
        POST,
        "/api/stop",
        Owner,
        Limit::Bytes(SMALL_LIMIT),
        false,
        Plain(stop),
    ),
];

impl Route {
    fn matches<'p>(&self, path: &'p str) -> Option<&'p str> {
        if self.prefix {
            path.strip_prefix(self.path)
        } else {
            (path == self.path).then_some("")
        }
    }

    pub fn limit(&self, shared: &Shared) -> usize {
        match self.limit {
            Limit::Bytes(n) => n,
            Limit::MaxBody => shared.max_body,
            Limit::Upload => shared.uploads.limits.max_file_bytes as usize,
        }
    }
}

/// A request the headers have cleared: its route, the path after the
/// route's prefix, and the body limit to read against.
pub struct Admitted {
    pub route: &'static Route,
    pub rest: String,
    pub limit: usize,
}

fn owner(shared: &Shared, head: &Head) -> bool {
    head.bearer()
        .is_some_and(|t| util::constant_time_eq(t.as_bytes(), shared.token.as_bytes()))
}

/// Everything the headers decide, in this order: Host (every request),
/// route (404) and method (405), Origin (POST and the upgrade), auth
/// (401/403), then the body's framing, size (413) and type (415). An error
/// for a request that announced a body closes the connection, so the body
/// is never read.
pub fn admit(shared: &Shared, head: &Head) -> Result<Admitted, Reply> {
    let announced =
        head.content_length().unwrap_or(0) > 0 || head.header("Transfer-Encoding").is_some();
    let closing = |mut r: Reply| {
        r.close |= announced;
        r
    };
    check(shared, head).map_err(closing)
}

fn check(shared: &Shared, head: &Head) -> Result<Admitted, Reply> {
    if head.header_count("Host") > 1 {
        return Err(reply_error(400, "more than one Host header"));
    }
    if let Some(host) = head.header("Host") {
        if !shared.origins.host_ok(host) {
            return Err(reply_error(
                403,
                format!("Host {host:?} is not a name of this server (add it with --allow-origin)"),
            ));
        }
    }
    let mut path_known = false;
    let mut found = None;
    for r in ROUTES {
        if let Some(rest) = r.matches(&head.path) {
            path_known = true;
            if r.methods.contains(&head.method.as_str()) {
                found = Some((r, rest.to_string()));
                break;
            }
        }
    }
    let Some((route, rest)) = found else {
        return Err(if path_known {
            reply_error(
                405,
                format!("method {} is not allowed on {}", head.method, head.path),
            )
        } else {
            reply_error(404, format!("no such route: {}", head.path))
        });
    };
    let from_browser =
        (head.method == "POST" || matches!(route.action, Upgrade)) && route.auth != AppKey;
    if from_browser {
        let origins = head.header_count("Origin");
        let ok = match head.header("Origin") {
            None => true,
            Some(o) => origins == 1 && shared.origins.origin_ok(o),
        };
        if !ok {
            return Err(reply_error(
                403,
                format!(
                    "Origin {:?} may not use this page's API (add it with --allow-origin)",
                    head.header("Origin").unwrap_or("")
                ),
            ));
        }
    }
    match route.auth {
        Public => {}
        Owner if owner(shared, head) => {}
        Owner => {
            return Err(reply_error(401, "missing or wrong bearer token: send `Authorization: Bearer <token>` with the token from .server.json"));
        }
        PageKey => {
            let key_ok = head.header("X-Workbench-Key").is_some_and(|k| {
                util::constant_time_eq(k.as_bytes(), shared.hub.page_key().as_bytes())
            });
            if !key_ok && !owner(shared, head) {
                return Err(reply_error(
                    403,
                    "missing or wrong X-Workbench-Key: events carry the event_key from the page's HELLO",
                ));
            }
            // The rate limits, too, are decided before the body is read.
            // Uploads apply their own, and the events one only when they
            // announce an event (uploads.rs).
            let upload = matches!(route.action, Stream(_));
            if let (Some(ip), false) = (head.remote, upload) {
                match shared.events.admit(ip) {
                    Ok(()) => {}
                    Err(events::Limited::Client) => {
                        return Err(reply_error(
                            429,
                            "too many events from this viewer; slow down and retry in a second",
                        ))
                    }
                    Err(events::Limited::Total) => {
                        return Err(reply_error(
                            429,
                            "too many events from all viewers together; slow down and retry in a second",
                        ))
                    }
                }
            }
        }
        AskedViewer if owner(shared, head) => {}
        AppKey => {
            let want = super::origin::app_key(&shared.token);
            let ok = rest
                .strip_suffix("/ws")
                .is_some_and(|k| util::constant_time_eq(k.as_bytes(), want.as_bytes()));
            if !ok {
                return Err(reply_error(404, format!("no such route: {}", head.path)));
            }
        }
        AskedViewer => {
            let viewer = head.header("X-Workbench-Viewer").unwrap_or("");
            let key = head.header("X-Workbench-Key").unwrap_or("");
            match shared.hub.may_answer(&rest, viewer, key) {
                Ok(()) => {}
                Err(AnswerError::Unknown) => {
                    return Err(reply_error(
                        404,
                        "no snapshot was requested under that id (or it timed out)",
                    ))
                }
                Err(AnswerError::NotAsked) => {
                    return Err(reply_error(
                        403,
                        "this snapshot was asked of another viewer, or the viewer key is wrong",
                    ))
                }
            }
        }
    }
    let limit = route.limit(shared);
    if head.header("Transfer-Encoding").is_some() {
        return Err(reply_error(
            411,
            "send the body with a Content-Length (chunked uploads are not accepted)",
        ));
    }
    let length = head.content_length().unwrap_or(0);
    if length > limit && matches!(route.limit, Limit::Upload) {
        return Err(reply_error(
            413,
            format!("the file is {length} bytes; the limit is {limit} bytes per file"),
        ));
    }
    if length > limit {
        return Err(reply_error(
            413,
            format!(
                "request body is larger than the limit of {limit} bytes for {}",
                head.path
            ),
        ));
    }
    if route.json && !head.content_type_is_json() {
        return Err(reply_error(
            415,
            "send the body as Content-Type: application/json",
        ));
    }
    Ok(Admitted { route, rest, limit })
}

/// Runs an admitted route's handler on the request with its body.
pub fn dispatch(shared: &Shared, admitted: &Admitted, inc: &Incoming) -> Reply {
    match admitted.route.action {
        Plain(f) => f(shared, inc, &admitted.rest),
        Upgrade => reply_error(400, "the WebSocket endpoint needs a socket"),
        Stream(_) => reply_error(400, "this route streams its body from a socket"),
    }
}

/// The whole decision for a request whose body is already in hand: what the
/// in-process tests call.
pub fn handle(shared: &Shared, inc: &Incoming) -> Reply {
    match admit(shared, &inc.head) {
        Ok(a) if inc.body.len() > a.limit => reply_error(413, "request body is too large"),
        Ok(a) => dispatch(shared, &a, inc),
        Err(r) => r,
    }
}

fn parse_json_object(inc: &Incoming) -> Result<Map<String, Value>, Reply> {
    match serde_json::from_slice::<Value>(&inc.body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(reply_error(400, "the body must be a JSON object")),
        Err(e) => Err(reply_error(400, format!("the body is not valid JSON: {e}"))),
    }
}

fn page(shared: &Shared, _: &Incoming, _: &str) -> Reply {
    match std::fs::read(shared.project.path("index.html")) {
        Ok(b) => Reply::bytes(200, "text/html; charset=utf-8", b),
        Err(e) => reply_error(500, format!("cannot read index.html: {e}")),
    }
}

fn file(shared: &Shared, _: &Incoming, rest: &str) -> Reply {
    files::serve(&shared.project, rest)
}

fn health(shared: &Shared, _: &Incoming, _: &str) -> Reply {
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

fn stop(_: &Shared, _: &Incoming, _: &str) -> Reply {
    let mut r = Reply::json(200, json!({"ok": true, "stopping": true}));
    r.then_stop = true;
    r
}

const STATE_FIELDS: [&str; 4] = ["template", "styles", "script", "data"];

fn post_state(shared: &Shared, inc: &Incoming, _: &str) -> Reply {
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

fn post_log(shared: &Shared, inc: &Incoming, _: &str) -> Reply {
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
        Some(Value::String(l)) if hub::LEVELS.contains(&l.as_str()) => l.as_str(),
        Some(other) => {
            return reply_error(
                400,
                format!("'level' must be one of info, success, warn, error (got {other})"),
            )
        }
    };
    let (entry, pushed) = shared.hub.log(level, message, "ai");
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
    match inc.head.query.get(key) {
        None => Ok(None),
        Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
            reply_error(
                400,
                format!("'{key}' must be a whole number ≥ 0 (got {v:?})"),
            )
        }),
    }
}

fn get_log(shared: &Shared, inc: &Incoming, _: &str) -> Reply {
    let limit = match query_u64(inc, "limit") {
        Ok(l) => l.unwrap_or(50).clamp(1, 1000) as usize,
        Err(r) => return r,
    };
    let body = format!(
        r#"{{"ok":true,"entries":{}}}"#,
        shared.hub.recent_logs_json(limit)
    );
    Reply::bytes(200, "application/json", body.into_bytes())
}

/// Events from the page: `{"name": "...", "data": any, "viewer"?: "v3"}`.
fn post_event(shared: &Shared, inc: &Incoming, _: &str) -> Reply {
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
    let remote = inc.head.remote;
    let viewer = body
        .get("viewer")
        .and_then(Value::as_str)
        .filter(|v| v.len() <= 32)
        .unwrap_or("");
    let from = json!({"viewer": viewer, "addr": remote.map(|ip| ip.to_string())});
    let data = body.get("data").cloned().unwrap_or(Value::Null);
    let mut summary = data.to_string();
    // The human's answer is acknowledged only once it is in the events log
    // (fsynced); a failed write uses up no number.
    let seq = match shared.disk.append_event(name, data, from) {
        Ok(seq) => seq,
        Err(e) => return disk_error(&e, "the event was not stored; send it again"),
    };
    if util::truncate_utf8(&mut summary, 500) {
        summary.push('…');
    }
    shared
        .hub
        .log("info", &format!("event {name}: {summary}"), "page");
    // The event is stored; its session log line is a copy, so a failure to
    // write that line is logged (by the writer) but does not undo the event.
    let _ = shared.disk.sync();
    Reply::json(200, json!({"ok": true, "seq": seq}))
}

/// A closing page's goodbye: `{"viewer","key"}` from its HELLO, sent with
/// `navigator.sendBeacon` (so any content type; the key is the credential).
fn post_bye(shared: &Shared, inc: &Incoming, _: &str) -> Reply {
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

fn get_events(shared: &Shared, inc: &Incoming, _: &str) -> Reply {
    let since = match inc.head.query.get("since").map(|s| s.parse::<i64>()) {
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
        .head
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
        Ok(b) => Reply::bytes(
            200,
            "application/json",
            format!(
                r#"{{"ok":true,"events":[{}],"cursor":{},"last_seq":{}}}"#,
                b.events.join(","),
                b.cursor,
                b.last_seq
            )
            .into_bytes(),
        ),
        Err(ReadError::AheadOfLog { since, last_seq }) => reply_error(
            400,
            format!("cursor {since} is ahead of the newest event ({last_seq}); call again with since={last_seq}"),
        ),
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

/// Asks the most recently connected viewer for what it shows, and waits.
fn get_snapshot(shared: &Shared, inc: &Incoming, _: &str) -> Reply {
    let image = inc
        .head
        .query
        .get("image")
        .is_some_and(|v| v == "1" || v == "true");
    match shared.hub.snapshot(image) {
        SnapshotOutcome::NoViewer => Reply::json(
            200,
            json!({"ok": true, "viewer": null, "message": "no browser is viewing this page right now"}),
        ),
        SnapshotOutcome::Answered { viewer, snapshot } => Reply::json(
            200,
            json!({"ok": true, "viewer": format!("v{viewer}"), "snapshot": snapshot}),
        ),
        SnapshotOutcome::NoAnswer => reply_error(
            504,
            format!(
                "no viewer answered the snapshot request within {} s",
                hub::SNAPSHOT_WAIT.as_secs()
            ),
        ),
    }
}

fn post_snapshot(shared: &Shared, inc: &Incoming, token: &str) -> Reply {
    let body = match parse_json_object(inc) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let viewer = inc.head.header("X-Workbench-Viewer").unwrap_or("");
    let key = inc.head.header("X-Workbench-Key").unwrap_or("");
    match shared
        .hub
        .answer_snapshot(token, viewer, key, Value::Object(body))
    {
        Ok(()) => Reply::json(200, json!({"ok": true})),
        Err(AnswerError::Unknown) => reply_error(
            404,
            "no snapshot was requested under that id (or it timed out)",
        ),
        Err(AnswerError::NotAsked) => reply_error(
            403,
            "this snapshot was asked of another viewer, or the viewer key is wrong",
        ),
    }
}

#[cfg(test)]
mod tests {
    //! The route table in process: a request in, a reply out, no socket.
    use super::*;
    use crate::page::{hub::Hub, origin::Origins, Limits, LogBudget};

    fn shared(tag: &str) -> Shared {
        let (project, events, disk) = crate::page::test_parts(tag);
        std::fs::write(project.path("index.html"), "<!doctype html><p>page</p>").unwrap();
        let dir_files = project.path("files");
        let (stop, _) = std::sync::mpsc::channel();
        Shared {
            project,
            token: "owner-token".into(),
            hub: Hub::new(
                Map::new(),
                vec![],
                disk.clone(),
                crate::page::hub::ViewerLimits {
                    max_total: 4,
                    max_per_client: 4,
                },
            ),
            events,
            disk,
            stop,
            max_body: 1000,
            origins: Origins::new("127.0.0.1", 8070, None, &[]),
            limits: Limits::default(),
            error_log: LogBudget::new(),
            uploads: crate::page::uploads::Uploads::open(
                &dir_files,
                crate::page::uploads::UploadLimits::default(),
            )
            .unwrap(),
        }
    }

    fn req(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Incoming {
        let (path, query) = crate::page::http::split_url(url);
        let mut headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !body.is_empty() {
            headers.push(("Content-Length".into(), body.len().to_string()));
        }
        Incoming {
            head: Head {
                method: method.into(),
                path,
                query,
                headers,
                remote: Some("127.0.0.1".parse().unwrap()),
            },
            body: body.as_bytes().to_vec(),
        }
    }

    const OWNER: (&str, &str) = ("Authorization", "Bearer owner-token");
    const JSON: (&str, &str) = ("Content-Type", "application/json");

    #[test]
    fn not_found_method_not_allowed_and_the_page() {
        let s = shared("basic");
        assert_eq!(handle(&s, &req("GET", "/nope", &[], "")).status, 404);
        assert_eq!(handle(&s, &req("DELETE", "/", &[], "")).status, 405);
        assert_eq!(
            handle(&s, &req("GET", "/api/state", &[OWNER], "")).status,
            405
        );
        assert_eq!(handle(&s, &req("POST", "/health", &[], "")).status, 405);
        let page = handle(&s, &req("GET", "/", &[("Host", "localhost:8070")], ""));
        assert_eq!(
            (page.status, page.text()),
            (200, "<!doctype html><p>page</p>")
        );
        let health = handle(&s, &req("GET", "/health", &[], ""));
        assert!(health.text().contains(r#""project":"unit""#));
    }

    #[test]
    fn every_owner_route_wants_the_token_and_the_check_comes_first() {
        let s = shared("owner");
        for (m, p) in [
            ("POST", "/api/state"),
            ("POST", "/api/log"),
            ("GET", "/api/log"),
            ("GET", "/api/events"),
            ("GET", "/api/snapshot"),
            ("POST", "/api/stop"),
        ] {
            let r = handle(&s, &req(m, p, &[("Authorization", "Bearer wrong")], "{}"));
            assert_eq!(r.status, 401, "{m} {p}");
            // An unauthenticated upload is refused without being read.
            assert!(
                r.close,
                "{m} {p} keeps the connection for a body it did not read"
            );
        }
        let ok = handle(
            &s,
            &req("POST", "/api/state", &[OWNER], r#"{"data":{"v":1}}"#),
        );
        assert_eq!(ok.status, 200, "{}", ok.text());
        let logged = handle(&s, &req("GET", "/api/log?limit=5", &[OWNER], ""));
        assert_eq!(logged.text(), r#"{"ok":true,"entries":[]}"#);
    }

    #[test]
    fn host_origin_size_and_type_are_decided_from_the_headers() {
        let s = shared("headers");
        let evil_host = req("GET", "/", &[("Host", "evil.example")], "");
        assert_eq!(handle(&s, &evil_host).status, 403);
        let evil_origin = req(
            "POST",
            "/api/state",
            &[OWNER, ("Origin", "http://evil.example")],
            "{}",
        );
        assert_eq!(handle(&s, &evil_origin).status, 403);
        let own_origin = req(
            "POST",
            "/api/log",
            &[OWNER, ("Origin", "http://127.0.0.1:8070")],
            r#"{"message":"hi"}"#,
        );
        assert_eq!(handle(&s, &own_origin).status, 200);
        // --max-body is 1000 here; events have their own 64 KiB limit.
        let big = "x".repeat(1001);
        assert_eq!(
            handle(&s, &req("POST", "/api/state", &[OWNER], &big)).status,
            413
        );
        let key = s.hub.page_key().to_string();
        let event = |ctype: &str, key: &str| {
            handle(
                &s,
                &req(
                    "POST",
                    "/api/event",
                    &[("Content-Type", ctype), ("X-Workbench-Key", key)],
                    r#"{"name":"reading","data":1}"#,
                ),
            )
            .status
        };
        assert_eq!(event("text/plain", &key), 415);
        assert_eq!(event("application/json", "wrong"), 403);
        assert_eq!(event("application/json", ""), 403);
        assert_eq!(event("application/json", &key), 200);
        assert_eq!(s.events.last_seq(), 1);
        let ws = req(
            "GET",
            "/ws",
            &[
                ("Origin", "http://localhost:9999"),
                ("Upgrade", "websocket"),
            ],
            "",
        );
        assert_eq!(handle(&s, &ws).status, 403);
    }

    #[test]
    fn snapshot_answers_need_the_asked_viewers_key_and_json() {
        let s = shared("snap");
        let s = std::sync::Arc::new(s);
        let viewer = s.hub.attach(None).unwrap();
        let hello: Value = serde_json::from_str(viewer.rx.recv().unwrap().as_str()).unwrap();
        let asker = {
            let s = s.clone();
            std::thread::spawn(move || handle(&s, &req("GET", "/api/snapshot", &[OWNER], "")))
        };
        let id = loop {
            let m: Value = serde_json::from_str(viewer.rx.recv().unwrap().as_str()).unwrap();
            if m["type"] == "SNAPSHOT" {
                break m["id"].as_str().unwrap().to_string();
            }
        };
        let path = format!("/api/snapshot/{id}");
        let v = hello["viewer"].as_str().unwrap();
        let k = hello["key"].as_str().unwrap();
        let answer = |headers: &[(&str, &str)]| {
            handle(&s, &req("POST", &path, headers, r#"{"text":"shown"}"#)).status
        };
        assert_eq!(answer(&[JSON]), 403);
        assert_eq!(
            answer(&[JSON, ("X-Workbench-Viewer", v), ("X-Workbench-Key", "bad")]),
            403
        );
        assert_eq!(
            answer(&[
                ("Content-Type", "text/plain"),
                ("X-Workbench-Viewer", v),
                ("X-Workbench-Key", k)
            ]),
            415
        );
        assert_eq!(
            answer(&[JSON, ("X-Workbench-Viewer", v), ("X-Workbench-Key", k)]),
            200
        );
        let r = asker.join().unwrap();
        assert_eq!(r.status, 200);
        let got: Value = serde_json::from_str(r.text()).unwrap();
        assert_eq!(got["snapshot"]["text"], "shown");
    }
}
