//! `workbench mcp --http`: MCP's Streamable HTTP transport (specification
//! 2025-11-25, basic/transports#streamable-http) on a small std
//! `TcpListener` server, a thread per connection, keep-alive.
//!
//! One endpoint, `/mcp`: POST carries one JSON-RPC message and is answered
//! as JSON, or as an SSE stream when the call can take long (progress goes
//! out before the answer); GET opens the optional server stream; DELETE ends
//! a session. Every message goes through `Session::handle_message`, the same
//! function stdio uses, so both transports give the same answers.
//!
//! Not here: TLS (put a reverse proxy in front), OAuth (a bearer token from
//! `$WORKBENCH_HOME/.mcp-http-token` instead), resumable streams.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::jsonrpc::{self, Message};
use super::{Out, Outbox, MAX_LINE, PROTOCOL_VERSIONS};
use crate::{project, sys, util};

pub const DEFAULT_PORT: u16 = 8765;
/// The one MCP endpoint.
pub const ENDPOINT: &str = "/mcp";
/// Sessions held at once; `initialize` beyond this gets 503.
pub const MAX_SESSIONS: usize = 1024;
/// Open connections at once; more are answered 503 and closed.
const MAX_CONNECTIONS: usize = 512;
/// Request line plus headers.
const MAX_HEAD: usize = 16 << 10;
/// A comment line on open SSE streams this often: it keeps proxies from
/// closing them, and a failed write tells us the client is gone.
const KEEPALIVE: Duration = Duration::from_secs(10);
/// A kept-alive connection with no new request for this long is closed.
const IDLE_CONNECTION: Duration = Duration::from_secs(120);
/// Default idle time after which a session is forgotten.
pub const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(30 * 60);

#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub host: String,
    pub port: u16,
    pub token: String,
    pub session_idle: Duration,
    /// Origins allowed besides loopback ones (`--allow-origin`).
    pub allowed_origins: Vec<String>,
}

/// Where the bearer token lives (mode 0600).
pub fn token_path() -> PathBuf {
    project::home().join(".mcp-http-token")
}

/// Where a running `--http` server says where it is (for `doctor`).
pub fn state_path() -> PathBuf {
    project::home().join(".mcp-http.json")
}

/// The token, created on first use: 32 random bytes as hex, file mode 0600.
pub fn load_or_create_token() -> Result<String, String> {
    let path = token_path();
    match std::fs::read_to_string(&path) {
        Ok(t) if is_token(t.trim()) => return Ok(t.trim().to_string()),
        Ok(_) => {
            return Err(format!(
                "{} does not hold a valid token (64 hex digits); delete it to make a new one",
                path.display()
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }
    let token = util::random_hex(32).map_err(|e| format!("no randomness: {e}"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    util::write_atomic(&path, format!("{token}\n").as_bytes(), 0o600)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(token)
}

fn is_token(t: &str) -> bool {
    t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit())
}

// ---------------------------------------------------------------- sessions

struct Session {
    /// What the MCP layer knows about this client (the same type stdio uses).
    core: super::Session,
    last_used: Instant,
    /// Requests running plus open GET streams: a busy session never expires.
    busy: usize,
    /// Set when the session ends: its running calls stop early.
    ended: Arc<AtomicBool>,
    /// Cancel flags of running requests, by JSON-RPC id (for notifications/cancelled).
    inflight: HashMap<String, Arc<AtomicBool>>,
    /// The open GET stream, if any; dropping it ends the stream.
    stream: Option<Sender<String>>,
}

struct Shared {
    cfg: HttpConfig,
    /// Worker threads for tool calls, shared by every session.
    template: super::Session,
    sessions: Mutex<HashMap<String, Session>>,
    connections: AtomicUsize,
}

impl Shared {
    /// Drops sessions idle for longer than the limit. Runs on each session
    /// lookup, so no timer thread is needed.
    fn sweep(&self, sessions: &mut HashMap<String, Session>) {
        let idle = self.cfg.session_idle;
        sessions.retain(|_, s| {
            let keep = s.busy > 0 || s.last_used.elapsed() < idle;
            if !keep {
                s.ended.store(true, Ordering::Relaxed);
            }
            keep
        });
    }
}

// ---------------------------------------------------------------- replies

/// A complete (non-streamed) HTTP answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// Close the connection after this answer (e.g. a body was left unread).
    close: bool,
}

impl Reply {
    fn json(status: u16, body: String) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type", "application/json".into())],
            body: body.into_bytes(),
            close: false,
        }
    }

    fn empty(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            close: false,
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    fn closing(mut self) -> Reply {
        self.close = true;
        self
    }
}

/// Transport-level refusals. The body is a JSON-RPC error without an id, as
/// the spec allows; the code says what kind of failure it is. This is the
/// one place HTTP statuses map to JSON-RPC codes.
fn refuse(status: u16, msg: impl Into<String>) -> Reply {
    let code = match status {
        400 => -32600,
        413 => -32600,
        _ => -32000,
    };
    let body =
        json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": msg.into()}});
    let r = Reply::json(status, body.to_string());
    match status {
        401 => r.header("WWW-Authenticate", "Bearer realm=\"workbench\""),
        405 => r.header("Allow", "GET, POST, DELETE"),
        _ => r,
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        500 => "Internal Server Error",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

// ---------------------------------------------------------------- requests

#[derive(Debug)]
struct Head {
    method: String,
    path: String,
    /// Header names lower-cased.
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn wants_close(&self) -> bool {
        self.get("connection")
            .is_some_and(|c| c.to_ascii_lowercase().contains("close"))
    }
}

/// Reads a request head. `Ok(None)`: the client closed (or idled out)
/// between requests. `Err(reply)`: a head we refuse.
fn read_head(r: &mut impl BufRead) -> io::Result<Result<Option<Head>, Reply>> {
    let mut raw = Vec::new();
    loop {
        let before = raw.len();
        let n = r
            .by_ref()
            .take((MAX_HEAD + 1 - before.min(MAX_HEAD)) as u64)
            .read_until(b'\n', &mut raw)?;
        if n == 0 {
            return Ok(if raw.iter().all(u8::is_ascii_whitespace) {
                Ok(None)
            } else {
                Err(refuse(400, "the request ended inside its head"))
            });
        }
        if raw.len() > MAX_HEAD {
            return Ok(Err(refuse(431, "request head over 16 KiB").closing()));
        }
        let line = &raw[before..];
        if line == b"\r\n" || line == b"\n" {
            if before == 0 {
                // Blank lines between requests are allowed (RFC 9112 §2.2).
                raw.clear();
                continue;
            }
            break;
        }
    }
    let text = match std::str::from_utf8(&raw) {
        Ok(t) => t,
        Err(_) => return Ok(Err(refuse(400, "request head is not UTF-8").closing())),
    };
    let mut lines = text.split("\r\n").flat_map(|l| l.split('\n'));
    let start = lines.next().unwrap_or("");
    let mut parts = start.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Ok(Err(refuse(400, "malformed request line").closing()));
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return Ok(Err(refuse(400, "malformed request line").closing()));
    }
    let mut headers = Vec::new();
    for l in lines.filter(|l| !l.is_empty()) {
        let Some((n, v)) = l.split_once(':') else {
            return Ok(Err(refuse(400, "malformed header line").closing()));
        };
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let path = target.split('?').next().unwrap_or("").to_string();
    Ok(Ok(Some(Head {
        method: method.to_string(),
        path,
        headers,
    })))
}

/// An `Origin` we accept: none at all (not a browser), a loopback one, the
/// address we were told to bind, or one given with `--allow-origin`. A page
/// on any other site, or a DNS-rebinding name, is refused (spec: 403).
fn origin_allowed(cfg: &HttpConfig, origin: &str) -> bool {
    if cfg.allowed_origins.iter().any(|o| o == origin) {
        return true;
    }
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = if let Some(v6) = rest.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, _)) => format!("[{}]", h.to_ascii_lowercase()),
            None => return false,
        }
    } else {
        rest.split(':').next().unwrap_or("").to_ascii_lowercase()
    };
    let bound = cfg
        .host
        .trim_matches(|c| c == '[' || c == ']')
        .to_ascii_lowercase();
    let wildcard = bound == "0.0.0.0" || bound == "::";
    is_loopback_name(&host) || (!wildcard && (host == bound || host == format!("[{bound}]")))
}

fn is_loopback_name(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "::1")
}

/// The host part of a `Host` header (`name:port`, `[v6]:port`), lower-cased.
fn host_name(authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    match a.strip_prefix('[') {
        Some(v6) => format!("[{}]", v6.split(']').next().unwrap_or("")),
        None => a.split(':').next().unwrap_or("").to_string(),
    }
}

fn bearer_ok(cfg: &HttpConfig, head: &Head) -> bool {
    let Some(v) = head.get("authorization") else {
        return false;
    };
    let Some((scheme, token)) = v.split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && util::constant_time_eq(token.trim().as_bytes(), cfg.token.as_bytes())
}

/// Checks every request must pass before anything else happens, in this
/// order: Origin and Host (403), token (401), path (404), method (405).
fn precheck(cfg: &HttpConfig, head: &Head) -> Result<(), Reply> {
    // Bound to loopback, only loopback names reach us honestly: any other
    // Host is a DNS-rebinding name. (Bound wider, the token is the guard.)
    if is_loopback_name(&host_name(&cfg.host)) || is_loopback_name(&cfg.host) {
        if let Some(h) = head.get("host") {
            if !is_loopback_name(&host_name(h)) {
                return Err(refuse(403, format!("host {h:?} is not this server")));
            }
        }
    }
    if let Some(o) = head.get("origin") {
        if !origin_allowed(cfg, o) {
            return Err(refuse(403, format!("origin {o:?} is not allowed")));
        }
    }
    if !bearer_ok(cfg, head) {
        return Err(refuse(
            401,
            "missing or wrong bearer token (see `workbench mcp --http --show-token`)",
        ));
    }
    if head.path != ENDPOINT {
        return Err(refuse(
            404,
            format!("no such endpoint; MCP is at {ENDPOINT}"),
        ));
    }
    if !matches!(head.method.as_str(), "POST" | "GET" | "DELETE") {
        return Err(refuse(
            405,
            format!("{} is not supported here", head.method),
        ));
    }
    Ok(())
}

/// What the client's Accept header lets us answer with: (JSON, SSE).
fn accepts(head: &Head) -> (bool, bool) {
    match head.get("accept") {
        None => (true, true),
        Some(a) => {
            let a = a.to_ascii_lowercase();
            let any = a.contains("*/*");
            (
                any || a.contains("application/json"),
                any || a.contains("text/event-stream"),
            )
        }
    }
}

/// The version a request claims (spec: MCP-Protocol-Version on every
/// request after initialize; an unsupported one is 400).
fn check_version(head: &Head) -> Result<(), Reply> {
    match head.get("mcp-protocol-version") {
        Some(v) if !PROTOCOL_VERSIONS.contains(&v) => Err(refuse(
            400,
            format!(
                "unsupported MCP-Protocol-Version {v:?}; supported: {}",
                PROTOCOL_VERSIONS.join(", ")
            ),
        )),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------- server

pub fn run(cfg: HttpConfig) -> Result<(), String> {
    // Before any thread exists, so SIGTERM reaches only our signal thread.
    let signals = sys::shutdown_signals();
    let listener = TcpListener::bind((cfg.host.as_str(), cfg.port))
        .map_err(|e| format!("cannot listen on {}:{}: {e}", cfg.host, cfg.port))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("no local address: {e}"))?;
    let host = if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    let url = format!("http://{host}:{}{ENDPOINT}", addr.port());
    let state = json!({"pid": std::process::id(), "host": cfg.host, "port": addr.port(), "url": url,
        "started": util::rfc3339_now(), "version": crate::VERSION});
    util::write_atomic(&state_path(), state.to_string().as_bytes(), 0o600)
        .map_err(|e| format!("cannot write {}: {e}", state_path().display()))?;
    util::log_event("mcp_http_listening", json!({"url": url}));
    // One line on stdout once we listen: `--detach` and tests wait for it.
    println!("workbench mcp: serving MCP over HTTP at {url}");
    let _ = io::stdout().flush();

    let shared = Arc::new(Shared {
        cfg,
        template: super::Session::new(super::workers::Workers::new()),
        sessions: Mutex::new(HashMap::new()),
        connections: AtomicUsize::new(0),
    });
    let accept_shared = shared.clone();
    std::thread::Builder::new()
        .name("mcp-http-accept".into())
        .spawn(move || accept_loop(listener, accept_shared))
        .map_err(|e| format!("cannot start the accept thread: {e}"))?;
    let sig = signals.recv().unwrap_or(libc::SIGTERM);
    util::log_event("mcp_http_stopping", json!({"signal": sig}));
    // Only our own state file: a newer server may have replaced it.
    if let Ok(text) = std::fs::read_to_string(state_path()) {
        let ours = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["pid"].as_u64())
            == Some(u64::from(std::process::id()));
        if ours {
            let _ = std::fs::remove_file(state_path());
        }
    }
    Ok(())
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut n: u64 = 0;
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            // EMFILE and friends: back off briefly instead of spinning.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        n += 1;
        if shared.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            shared.connections.fetch_sub(1, Ordering::SeqCst);
            let mut s = stream;
            let _ = write_reply(&mut s, &refuse(503, "too many connections").closing());
            continue;
        }
        let sh = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("mcp-http-{n}"))
            .spawn(move || {
                let _ = connection(stream, &sh);
                sh.connections.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            shared.connections.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn write_reply(w: &mut impl Write, r: &Reply) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
    for (n, v) in &r.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n", r.body.len()));
    if r.close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&r.body);
    w.write_all(&out)?;
    w.flush()
}

/// One connection: requests one after another (keep-alive) until the
/// client closes, idles out, or an answer says close.
fn connection(stream: TcpStream, sh: &Shared) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IDLE_CONNECTION))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let head = match read_head(&mut reader) {
            Ok(Ok(Some(h))) => h,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(reply)) => return write_reply(&mut writer, &reply.closing()),
            Err(_) => return Ok(()), // idle timeout or reset
        };
        let close = head.wants_close();
        let keep = match request(sh, &head, &mut reader, &mut writer)? {
            Some(reply) => {
                let reply = if close { reply.closing() } else { reply };
                write_reply(&mut writer, &reply)?;
                !reply.close
            }
            None => !close, // answered as a stream
        };
        if !keep {
            return Ok(());
        }
    }
}

/// Handles one request. `Some(reply)` to be written, or `None` when the
/// answer was streamed already.
fn request(
    sh: &Shared,
    head: &Head,
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
) -> io::Result<Option<Reply>> {
    let has_body = head.get("content-length").is_some_and(|l| l.trim() != "0")
        || head.get("transfer-encoding").is_some();
    if let Err(r) = precheck(&sh.cfg, head) {
        // An unread body would be taken for the next request: close instead.
        return Ok(Some(if has_body { r.closing() } else { r }));
    }
    match head.method.as_str() {
        "POST" => post(sh, head, reader, writer),
        "GET" => get(sh, head, writer).map(|_| None),
        _ => Ok(Some(delete(sh, head))),
    }
}

/// Looks a session up (sweeping idle ones first) and marks it busy.
fn enter_session(sh: &Shared, head: &Head) -> Result<String, Reply> {
    let Some(id) = head.get("mcp-session-id") else {
        return Err(refuse(
            400,
            "missing Mcp-Session-Id header: send initialize first",
        ));
    };
    let mut sessions = sh.sessions.lock().expect("sessions lock");
    sh.sweep(&mut sessions);
    match sessions.get_mut(id) {
        Some(s) => {
            s.busy += 1;
            s.last_used = Instant::now();
            Ok(id.to_string())
        }
        None => Err(refuse(
            404,
            "unknown or expired session: send initialize to start a new one",
        )),
    }
}

fn leave_session(sh: &Shared, id: &str, rpc_id: Option<&str>) {
    let mut sessions = sh.sessions.lock().expect("sessions lock");
    if let Some(s) = sessions.get_mut(id) {
        s.busy = s.busy.saturating_sub(1);
        s.last_used = Instant::now();
        if let Some(r) = rpc_id {
            s.inflight.remove(r);
        }
    }
}

fn read_body(head: &Head, reader: &mut BufReader<TcpStream>) -> io::Result<Result<Vec<u8>, Reply>> {
    if head.get("transfer-encoding").is_some() {
        return Ok(Err(refuse(
            411,
            "chunked request bodies are not supported: send Content-Length",
        )
        .closing()));
    }
    let len = match head
        .get("content-length")
        .map(|l| l.trim().parse::<usize>())
    {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return Ok(Err(refuse(400, "bad Content-Length").closing())),
    };
    if len > MAX_LINE {
        return Ok(Err(refuse(
            413,
            format!("body of {len} bytes is over the {MAX_LINE}-byte limit"),
        )
        .closing()));
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    Ok(Ok(body))
}

fn post(
    sh: &Shared,
    head: &Head,
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
) -> io::Result<Option<Reply>> {
    let (json_ok, sse_ok) = accepts(head);
    let type_ok = head
        .get("content-type")
        .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/json"));
    // Refusals before the body is read close the connection (body unread).
    if !type_ok {
        return Ok(Some(
            refuse(415, "send JSON-RPC as Content-Type: application/json").closing(),
        ));
    }
    if !json_ok && !sse_ok {
        return Ok(Some(
            refuse(
                406,
                "Accept must include application/json and text/event-stream",
            )
            .closing(),
        ));
    }
    let body = match read_body(head, reader)? {
        Ok(b) => b,
        Err(r) => return Ok(Some(r)),
    };
    let text = String::from_utf8_lossy(&body);
    let msg = match jsonrpc::parse(&text) {
        Ok(m) => m,
        Err((id, e)) => return Ok(Some(Reply::json(400, jsonrpc::failure(&id, &e)))),
    };
    if let Message::Request { method, .. } = &msg {
        if method == "initialize" {
            return Ok(Some(initialize(sh, msg)));
        }
    }
    if let Err(r) = check_version(head) {
        return Ok(Some(r));
    }
    let sid = match enter_session(sh, head) {
        Ok(s) => s,
        Err(r) => return Ok(Some(r)),
    };
    let Message::Request { id, method, params } = msg else {
        if let Message::Notification { method, params } = &msg {
            if method == "notifications/cancelled" {
                cancel(sh, &sid, &params["requestId"]);
            }
        }
        leave_session(sh, &sid, None);
        // Notifications and responses are accepted without an answer.
        return Ok(Some(Reply::empty(202)));
    };
    let rpc_key = id.to_value().to_string();
    let stream = sse_ok && (!json_ok || long_call(&method, &params));
    let flag = Arc::new(AtomicBool::new(false));
    // A copy of the session's MCP state, so no lock is held while the
    // message is handled (answering may read the disk).
    let (ended, mut core) = {
        let mut sessions = sh.sessions.lock().expect("sessions lock");
        match sessions.get_mut(&sid) {
            Some(s) => {
                s.inflight.insert(rpc_key.clone(), flag.clone());
                (s.ended.clone(), s.core.clone())
            }
            None => (Arc::new(AtomicBool::new(true)), sh.template.fresh()),
        }
    };
    let (tx, rx) = mpsc::channel();
    let out = Outbox::new(tx, vec![flag.clone(), ended]);
    let _watch = (method == "tools/call")
        .then(|| watch_disconnect(writer, flag.clone()))
        .flatten();
    core.handle_message(Message::Request { id, method, params }, &out);
    drop(out);
    let result = if stream {
        stream_answer(writer, &sid, rx, &flag).map(|()| None)
    } else {
        // Without a stream only the answer goes out; it is the last line,
        // since nothing is sent after it.
        let last = rx.into_iter().filter_map(|m| match m {
            Out::Line(l) => Some(l),
            Out::Flush(_) => None,
        });
        Ok(Some(match last.last() {
            Some(l) => Reply::json(200, l),
            None => refuse(500, "the call gave no answer"),
        }))
    };
    leave_session(sh, &sid, Some(&rpc_key));
    result
}

/// Calls that can block for a while are answered as a stream, so progress
/// and keep-alives can go out first (and a vanished client is noticed).
fn long_call(method: &str, params: &Value) -> bool {
    method == "tools/call"
        && (params["_meta"]["progressToken"].is_string()
            || params["_meta"]["progressToken"].is_number()
            || params["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("_wait")))
}

fn cancel(sh: &Shared, sid: &str, request_id: &Value) {
    let sessions = sh.sessions.lock().expect("sessions lock");
    if let Some(flag) = sessions
        .get(sid)
        .and_then(|s| s.inflight.get(&request_id.to_string()))
    {
        flag.store(true, Ordering::Relaxed);
    }
}

/// Sets `flag` if the client closes the connection while its call runs.
/// The returned guard ends the watch when dropped (the call is answered).
fn watch_disconnect(stream: &TcpStream, flag: Arc<AtomicBool>) -> Option<WatchGuard> {
    use std::os::fd::AsRawFd;
    let (wake_tx, wake_rx) = std::os::unix::net::UnixStream::pair().ok()?;
    let sock = stream.try_clone().ok()?;
    let handle = std::thread::Builder::new()
        .name("mcp-http-watch".into())
        .spawn(move || {
            if sys::wait_hangup(sock.as_raw_fd(), wake_rx.as_raw_fd()) {
                flag.store(true, Ordering::Relaxed);
            }
        })
        .ok()?;
    Some(WatchGuard {
        wake: Some(wake_tx),
        handle: Some(handle),
    })
}

struct WatchGuard {
    wake: Option<std::os::unix::net::UnixStream>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        // Closing our end wakes the watcher; it exits at once.
        drop(self.wake.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn initialize(sh: &Shared, msg: Message) -> Reply {
    let mut sessions = sh.sessions.lock().expect("sessions lock");
    sh.sweep(&mut sessions);
    if sessions.len() >= MAX_SESSIONS {
        return refuse(503, "too many sessions; end one with DELETE or retry later");
    }
    drop(sessions);
    let mut core = sh.template.fresh();
    let (tx, rx) = mpsc::channel();
    core.handle_message(msg, &Outbox::new(tx, Vec::new()));
    let Some(Out::Line(answer)) = rx.into_iter().last() else {
        return refuse(500, "initialize gave no answer");
    };
    let Ok(id) = util::random_hex(16) else {
        return refuse(503, "no randomness for a session id");
    };
    sh.sessions.lock().expect("sessions lock").insert(
        id.clone(),
        Session {
            core,
            last_used: Instant::now(),
            busy: 0,
            ended: Arc::new(AtomicBool::new(false)),
            inflight: HashMap::new(),
            stream: None,
        },
    );
    Reply::json(200, answer).header("Mcp-Session-Id", id)
}

fn sse_head(w: &mut impl Write, session: &str) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
         Transfer-Encoding: chunked\r\nMcp-Session-Id: {session}\r\n\r\n"
    );
    w.write_all(head.as_bytes())?;
    w.flush()
}

fn chunk(w: &mut impl Write, data: &str) -> io::Result<()> {
    w.write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes())?;
    w.flush()
}

fn sse_event(line: &str) -> String {
    // A JSON-RPC line never holds a raw newline, so one data field is enough.
    format!("event: message\ndata: {line}\n\n")
}

/// Streams what the call sends (progress, then the answer) as SSE events,
/// with keep-alive comments in between. A failed write means the client is
/// gone: the call is told to stop.
fn stream_answer(
    w: &mut TcpStream,
    session: &str,
    rx: mpsc::Receiver<Out>,
    flag: &AtomicBool,
) -> io::Result<()> {
    let r = (|| {
        sse_head(w, session)?;
        loop {
            match rx.recv_timeout(KEEPALIVE) {
                // A cancelled call gets no answer (spec: basic/utilities/cancellation).
                Ok(Out::Line(l)) if !flag.load(Ordering::Relaxed) => chunk(w, &sse_event(&l))?,
                Ok(Out::Line(_)) => {}
                Ok(Out::Flush(done)) => {
                    let _ = done.send(());
                }
                Err(RecvTimeoutError::Timeout) => chunk(w, ": keep-alive\n\n")?,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        w.write_all(b"0\r\n\r\n")?;
        w.flush()
    })();
    if r.is_err() {
        flag.store(true, Ordering::Relaxed);
    }
    r
}

/// The optional GET stream. We send no requests of our own, so it carries
/// keep-alives until the session ends or the client leaves.
fn get(sh: &Shared, head: &Head, w: &mut TcpStream) -> io::Result<()> {
    if !accepts(head).1 || head.get("accept").is_none() {
        return write_reply(w, &refuse(406, "GET needs Accept: text/event-stream"));
    }
    if let Err(r) = check_version(head) {
        return write_reply(w, &r);
    }
    let sid = match enter_session(sh, head) {
        Ok(s) => s,
        Err(r) => return write_reply(w, &r),
    };
    let (tx, rx) = mpsc::channel::<String>();
    let taken = {
        let mut sessions = sh.sessions.lock().expect("sessions lock");
        match sessions.get_mut(&sid) {
            Some(s)
                if s.stream
                    .as_ref()
                    .is_some_and(|t| t.send(String::new()).is_ok()) =>
            {
                true
            }
            Some(s) => {
                s.stream = Some(tx);
                false
            }
            None => true,
        }
    };
    if taken {
        leave_session(sh, &sid, None);
        return write_reply(w, &refuse(409, "this session already has a GET stream"));
    }
    let r = (|| {
        sse_head(w, &sid)?;
        loop {
            match rx.recv_timeout(KEEPALIVE) {
                Ok(l) if l.is_empty() => {} // a probe from a second GET
                Ok(l) => chunk(w, &sse_event(&l))?,
                Err(RecvTimeoutError::Timeout) => chunk(w, ": keep-alive\n\n")?,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        w.write_all(b"0\r\n\r\n")?;
        w.flush()
    })();
    {
        let mut sessions = sh.sessions.lock().expect("sessions lock");
        if let Some(s) = sessions.get_mut(&sid) {
            s.stream = None;
        }
    }
    leave_session(sh, &sid, None);
    r
}

fn delete(sh: &Shared, head: &Head) -> Reply {
    let Some(id) = head.get("mcp-session-id") else {
        return refuse(400, "missing Mcp-Session-Id header");
    };
    let mut sessions = sh.sessions.lock().expect("sessions lock");
    match sessions.remove(id) {
        Some(s) => {
            // Running calls stop early; dropping `stream` ends the GET stream.
            s.ended.store(true, Ordering::Relaxed);
            Reply::empty(204)
        }
        None => refuse(404, "unknown or expired session"),
    }
}

/// Starts `workbench mcp --http …` as a detached process (own session,
/// stderr to `$WORKBENCH_HOME/mcp-http.log`) and returns its URL once it
/// listens.
pub fn spawn_detached(args: &[String]) -> Result<String, String> {
    use std::process::{Command, Stdio};
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the workbench binary: {e}"))?;
    let home = project::home();
    std::fs::create_dir_all(&home).map_err(|e| format!("cannot create {}: {e}", home.display()))?;
    let log_path = home.join("mcp-http.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
    let mut cmd = Command::new(exe);
    cmd.arg("mcp").arg("--http").args(args);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
    sys::detach(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the server: {e}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("mcp-http-ready".into())
        .spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        })
        .map_err(|e| e.to_string())?;
    let line = rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
    match line.rsplit_once(" at ") {
        Some((_, url)) if line.contains("serving") => Ok(url.trim().to_string()),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "the server did not start (see {})",
                log_path.display()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(host: &str) -> HttpConfig {
        HttpConfig {
            host: host.into(),
            port: 0,
            token: "t".repeat(64),
            session_idle: DEFAULT_SESSION_IDLE,
            allowed_origins: vec!["https://app.example".into()],
        }
    }

    fn head(text: &str) -> Result<Option<Head>, Reply> {
        read_head(&mut io::Cursor::new(text.as_bytes().to_vec())).unwrap()
    }

    #[test]
    fn origins_loopback_bound_and_listed_only() {
        let c = cfg("127.0.0.1");
        for ok in [
            "http://localhost:3000",
            "http://127.0.0.1",
            "https://[::1]:8",
            "https://app.example",
        ] {
            assert!(origin_allowed(&c, ok), "{ok}");
        }
        for bad in [
            "http://evil.example",
            "null",
            "http://localhost.evil.example",
            "http://127.0.0.1.nip.io",
            "file://",
            "http://[::1",
        ] {
            assert!(!origin_allowed(&c, bad), "{bad}");
        }
        assert!(origin_allowed(&cfg("10.1.2.3"), "http://10.1.2.3:8765"));
        assert!(!origin_allowed(&cfg("0.0.0.0"), "http://0.0.0.0:8765"));
    }

    #[test]
    fn parses_heads_and_refuses_bad_ones() {
        let h = head("POST /mcp?x=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer tt\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.method.as_str(), h.path.as_str()), ("POST", "/mcp"));
        assert_eq!(h.get("authorization"), Some("Bearer tt"));
        assert!(head("").unwrap().is_none());
        assert_eq!(head("GARBAGE\r\n\r\n").unwrap_err().status, 400);
        assert_eq!(
            head("GET / HTTP/1.1\r\nNoColon\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(head(&big).unwrap_err().status, 431);
    }

    #[test]
    fn precheck_order_origin_token_path_method() {
        let c = cfg("127.0.0.1");
        let tok = "t".repeat(64);
        let h = |s: String| head(&s).unwrap().unwrap();
        let status = |s: String| precheck(&c, &h(s)).err().map(|r| r.status);
        assert_eq!(
            status("POST /mcp HTTP/1.1\r\nOrigin: http://evil.example\r\n\r\n".into()),
            Some(403)
        );
        assert_eq!(
            status("POST /mcp HTTP/1.1\r\nHost: evil.example:8765\r\n\r\n".into()),
            Some(403)
        );
        assert_eq!(
            status("POST /mcp HTTP/1.1\r\nHost: localhost:1\r\n\r\n".into()),
            Some(401)
        );
        assert_eq!(
            status("POST /mcp HTTP/1.1\r\nAuthorization: Bearer wrong\r\n\r\n".into()),
            Some(401)
        );
        assert_eq!(
            status(format!(
                "POST /x HTTP/1.1\r\nAuthorization: Bearer {tok}\r\n\r\n"
            )),
            Some(404)
        );
        assert_eq!(
            status(format!(
                "PUT /mcp HTTP/1.1\r\nAuthorization: bearer {tok}\r\n\r\n"
            )),
            Some(405)
        );
        assert_eq!(
            status(format!(
                "POST /mcp HTTP/1.1\r\nAuthorization: Bearer {tok}\r\n\r\n"
            )),
            None
        );
    }

    #[test]
    fn refusals_carry_a_json_rpc_error_without_id() {
        let r = refuse(401, "no");
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            r#"{"error":{"code":-32000,"message":"no"},"id":null,"jsonrpc":"2.0"}"#
        );
        assert!(r.headers.iter().any(|(n, _)| *n == "WWW-Authenticate"));
    }

    #[test]
    fn long_calls_are_waits_or_carry_a_progress_token() {
        assert!(long_call("tools/call", &json!({"name": "workbench_wait"})));
        assert!(long_call(
            "tools/call",
            &json!({"name": "workbench_state", "_meta": {"progressToken": 1}})
        ));
        assert!(!long_call(
            "tools/call",
            &json!({"name": "workbench_state"})
        ));
        assert!(!long_call("tools/list", &json!({})));
    }
}
