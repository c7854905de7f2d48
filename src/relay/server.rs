//! The relay process: bind, accept on a named thread, one named reader
//! thread per connection (`conn::serve`), the writer threads (`writer`,
//! one per core), a clean stop on SIGINT/SIGTERM, and the allowlist re-read
//! on SIGHUP. Connections are bounded in total and per client address
//! (IPv6: per /64). Nothing here runs on a timer, so an idle relay uses no CPU.
//! Before anything listens, the state store is opened (`store`: the data
//! directory is locked and its journal loaded, or `--ephemeral`). A plain
//! `GET /health` on the relay port is answered as HTTP (issue 14 §3).

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use super::cluster::{self, ClusterConfig};
use super::conn::{self, Limits};
use super::hub::{Hub, HubConfig};
use super::store::{Ephemeral, Journal, JournalConfig, Store};
use super::trust::Allowlist;
use super::writer::Writer;
use crate::ratelimit::client_key;
use crate::sys;
use crate::util::log_event;

/// Writer threads: one per core, at most 4 (sockets are split between
/// them by token). Issue 13's A/B on the 2-core machine (BENCHMARKS.md):
/// with 2 writers a broadcast to 500 agents reaches its last receiver in
/// ~15 ms at p99 against ~30 ms with one, because the kernel's loopback
/// send, most of the cost, then runs on both cores.
fn writer_threads() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 4))
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub max_connections: usize,
    /// Connections per client address (`--max-per-ip`).
    pub max_per_ip: usize,
    /// New connections per client address (`--connect-rate-*`): bounds
    /// reconnect churn (a thread, a handshake and log lines each).
    pub connect_rate: crate::ratelimit::Rate,
    /// `--allow FILE`, re-read on SIGHUP.
    pub allow_file: Option<PathBuf>,
    /// Where lasting state goes.
    pub state: StateMode,
    pub limits: Limits,
    pub hub: HubConfig,
    /// `--cert/--key`: serve `wss://` (TLS on every connection).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// `--ephemeral`, or the durable default with its data directory.
#[derive(Debug, Clone)]
pub enum StateMode {
    Ephemeral,
    Durable(JournalConfig),
    /// `--cluster redis://…`: one node of a cluster (relay/cluster.rs).
    Cluster(ClusterConfig),
}

impl StateMode {
    pub fn name(&self) -> &'static str {
        match self {
            StateMode::Ephemeral => "ephemeral",
            StateMode::Durable(_) => "durable",
            StateMode::Cluster(_) => "cluster",
        }
    }
}

/// Counts live connections, in total and per client address; the last one
/// out wakes a waiting shutdown.
#[derive(Default)]
struct Active {
    count: Mutex<Counts>,
    idle: Condvar,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Why a connection was turned away before its handshake.
enum Over {
    Total,
    PerIp,
    TooFast,
}

impl Active {
    fn try_acquire(&self, max: usize, ip: Option<IpAddr>, max_per_ip: usize) -> Result<(), Over> {
        let mut n = self.count.lock().unwrap_or_else(|e| e.into_inner());
        if n.total >= max {
            return Err(Over::Total);
        }
        if let Some(ip) = ip {
            let here = n.per_ip.entry(ip).or_insert(0);
            if *here >= max_per_ip {
                return Err(Over::PerIp);
            }
            *here += 1;
        }
        n.total += 1;
        Ok(())
    }

    fn release(&self, ip: Option<IpAddr>) {
        let mut n = self.count.lock().unwrap_or_else(|e| e.into_inner());
        n.total = n.total.saturating_sub(1);
        if let Some(ip) = ip {
            if let Some(here) = n.per_ip.get_mut(&ip) {
                *here = here.saturating_sub(1);
                if *here == 0 {
                    n.per_ip.remove(&ip);
                }
            }
        }
        if n.total == 0 {
            self.idle.notify_all();
        }
    }

    /// Blocks until no connection is left or `limit` passes.
    fn wait_idle(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut n = self.count.lock().unwrap_or_else(|e| e.into_inner());
        while n.total > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            n = match self.idle.wait_timeout(n, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

/// Releases a connection slot however the connection thread ends.
struct Slot(Arc<Active>, Option<IpAddr>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

fn seed() -> u64 {
    let hex = crate::util::random_hex(8).unwrap_or_default();
    u64::from_str_radix(&hex, 16).unwrap_or_else(|_| {
        // No /dev/urandom: fall back to the clock; ids only need uniqueness.
        crate::util::now_ms() ^ u64::from(std::process::id()) << 32
    })
}

/// Runs the relay until SIGINT/SIGTERM.
pub fn run(cfg: ServerConfig) -> io::Result<()> {
    // Idle memory per connection (issue 13): why, at the function. Same
    // pid; on failure the relay runs on with the caches.
    if let Err(e) = sys::reexec_without_thread_caches() {
        log_event("reexec_failed", json!({"error": e.to_string()}));
    }
    // Before any thread exists, so every thread inherits the blocked mask.
    let signals = sys::shutdown_signals();
    let mut common = serde_json::Map::new();
    common.insert("mode".into(), json!(cfg.state.name()));
    let node = match &cfg.state {
        StateMode::Cluster(cc) => cc.node_id.clone(),
        _ => cfg.hub.server_name.clone(),
    };
    common.insert("node".into(), json!(node));
    crate::util::set_log_fields(common);
    // The store first: a second relay on one data directory, or damaged
    // data, stops here, before anything listens.
    // A cluster node connects to Redis first: unreachable, it stops here.
    let mut node = match &cfg.state {
        StateMode::Cluster(cc) => Some(cluster::open(cc).map_err(io::Error::other)?),
        _ => None,
    };
    let (store, loaded, notes): (Box<dyn Store>, _, _) = match &cfg.state {
        StateMode::Ephemeral => (Box::new(Ephemeral), Vec::new(), Vec::new()),
        StateMode::Cluster(_) => match node.as_mut().and_then(cluster::Node::take_store) {
            Some(st) => (Box::new(st), Vec::new(), Vec::new()),
            None => (Box::new(Ephemeral), Vec::new(), Vec::new()),
        },
        StateMode::Durable(jc) => {
            let (mut j, loaded) = Journal::open(jc.clone()).map_err(|e| io::Error::other(e.0))?;
            let notes = j.take_notes();
            (Box::new(j), loaded, notes)
        }
    };
    let listener = TcpListener::bind((cfg.host.as_str(), cfg.port))?;
    // Keepalive probes find peers that vanished; a send timeout bounds how
    // long a writer can sit on a peer that stopped reading.
    sys::tune_listener(listener.as_raw_fd(), 30_000, 10);
    let addr = listener.local_addr()?;
    // Always the first line (the usage text promises it); it also says
    // where state lives.
    let mut listening = store.describe();
    listening["host"] = json!(addr.ip().to_string());
    listening["port"] = json!(addr.port());
    listening["name"] = json!(cfg.hub.server_name);
    listening["url"] = json!(format!(
        "{}://{addr}",
        if cfg.tls.is_some() { "wss" } else { "ws" }
    ));
    listening["tls"] = json!(cfg.tls.is_some());
    log_event("listening", listening);
    for (event, fields) in notes {
        log_event(event, fields);
    }

    let (hub, node) = match node.take() {
        None => (
            Arc::new(Hub::with_store(cfg.hub.clone(), seed(), store, loaded)),
            None,
        ),
        Some(n) => start_node(&cfg, n, store)?,
    };
    let writer = Writer::start(writer_threads())?;
    let active = Arc::new(Active::default());
    {
        let hub = hub.clone();
        let active = active.clone();
        let cfg = cfg.clone();
        let writer = writer.clone();
        thread::Builder::new()
            .name("relay-accept".into())
            .spawn(move || accept_loop(listener, hub, writer, active, &cfg))?;
    }

    let sig = loop {
        let sig = signals.recv().unwrap_or(libc::SIGTERM);
        if sig != libc::SIGHUP {
            break sig;
        }
        reload_allowlist(&hub, cfg.allow_file.as_deref());
    };
    log_event(
        "shutdown",
        json!({"signal": sig, "connections": hub.connections(), "held": hub.census()}),
    );
    if let (Some(cc), Some(body)) = (node.as_ref(), hub.farewell_record()) {
        cluster::farewell(&cc.target, &body);
    }
    hub.close_all();
    active.wait_idle(Duration::from_secs(2));
    // Write batching, for the benchmark: frames written per sendmsg call.
    let w = writer.stats();
    log_event(
        "stopped",
        json!({"writer": {"sendmsg_calls": w.sends, "frames": w.frames}}),
    );
    Ok(())
}

/// A cluster node's hub: the cluster's state loaded from Redis, a `hello`
/// published, and the Redis threads running (relay/cluster.rs).
fn start_node(
    cfg: &ServerConfig,
    mut n: cluster::Node,
    store: Box<dyn Store>,
) -> io::Result<(Arc<Hub>, Option<ClusterConfig>)> {
    let StateMode::Cluster(cc) = &cfg.state else {
        unreachable!("start_node is only called in cluster mode")
    };
    let link = n
        .take_link()
        .ok_or_else(|| io::Error::other("cluster link already taken"))?;
    let hub = Arc::new(Hub::clustered(
        cfg.hub.clone(),
        seed(),
        store,
        link,
        cc.snapshot_every,
    ));
    let (last, records) = n.catch_up(&hub).map_err(io::Error::other)?;
    log_event(
        "cluster_joined",
        json!({"records": records, "stream": cluster::STREAM, "redis": cc.shown,
               "session": hub.session_name(), "census": hub.census()}),
    );
    if let Some(body) = hub.hello_record() {
        hub.publish_control(body);
    }
    n.start(hub.clone(), last)?;
    Ok((hub, Some(cc.clone())))
}

/// SIGHUP: re-read `--allow FILE`. A file that no longer reads or parses
/// keeps the list in force, and says so in the log.
fn reload_allowlist(hub: &Hub, file: Option<&std::path::Path>) {
    let Some(file) = file else {
        log_event("sighup", json!({"allowlist": null}));
        return;
    };
    match Allowlist::load(file) {
        Ok(list) => {
            let keys = list.len();
            let closed = hub.set_allowlist(Some(list));
            log_event(
                "allowlist_reloaded",
                json!({"file": file.display().to_string(), "keys": keys, "closed": closed}),
            );
        }
        Err(e) => log_event(
            "allowlist_reload_failed",
            json!({"file": file.display().to_string(), "error": e, "kept": "the previous list"}),
        ),
    }
}

fn accept_loop(
    listener: TcpListener,
    hub: Arc<Hub>,
    writer: Writer,
    active: Arc<Active>,
    cfg: &ServerConfig,
) {
    let mut n: u64 = 0;
    // Owned by this thread alone: no lock. Bounded in keys.
    let mut churn =
        crate::ratelimit::KeyedLimiter::new(cfg.connect_rate, 100_000, Duration::from_secs(600));
    let mut log_gate = LogGate::default();
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                log_event("accept_error", json!({"error": e.to_string()}));
                // Out of descriptors: back off instead of spinning on the error.
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        n += 1;
        let ip = stream.peer_addr().ok().map(|a| client_key(a.ip()));
        if ip.is_some_and(|ip| !churn.try_take(&ip, Instant::now())) {
            refuse(stream, Over::TooFast, cfg, &mut log_gate);
            continue;
        }
        if let Err(over) = active.try_acquire(cfg.max_connections, ip, cfg.max_per_ip) {
            refuse(stream, over, cfg, &mut log_gate);
            continue;
        }
        let slot = Slot(active.clone(), ip);
        let hub = hub.clone();
        let writer = writer.clone();
        let limits = cfg.limits;
        let tls = cfg.tls.clone();
        let spawned = thread::Builder::new()
            .name(format!("relay-conn-{n}"))
            .stack_size(512 * 1024)
            .spawn(move || {
                let _slot = slot;
                if !answer_health(&stream, &hub) {
                    conn::serve(hub, &writer, stream, limits, tls.as_ref());
                }
            });
        if let Err(e) = spawned {
            log_event("spawn_failed", json!({"error": e.to_string()}));
        }
    }
}

/// Lets one log line a second through; counts the rest.
#[derive(Default)]
struct LogGate {
    last: Option<Instant>,
    held: u64,
}

impl LogGate {
    /// `Some(held back since the last line)` when a line may be written.
    fn pass(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

/// Over `--max-connections` (503) or `--max-per-ip` (429): answered before
/// the WebSocket exists, so as HTTP, with the ERROR code and message as the
/// body (docs/relay-trust.md). The socket is fresh, so this small write
/// cannot block the accept loop.
fn refuse(mut stream: TcpStream, over: Over, cfg: &ServerConfig, log_gate: &mut LogGate) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let (status, code, body) = match over {
        Over::Total => (
            "503 Service Unavailable",
            "TOO_MANY_CONNECTIONS",
            format!("relay is full ({} connections)", cfg.max_connections),
        ),
        Over::PerIp => (
            "429 Too Many Requests",
            "TOO_MANY_CONNECTIONS",
            format!("at most {} connections per client address", cfg.max_per_ip),
        ),
        Over::TooFast => (
            "429 Too Many Requests",
            "TOO_MANY_CONNECTIONS",
            format!(
                "connecting too fast (at most {} new connections per second per client address)",
                cfg.connect_rate.per_sec
            ),
        ),
    };
    // At most one line a second, with the count of those not logged, so a
    // connection flood cannot flood the log.
    if let Some(suppressed) = log_gate.pass(Instant::now()) {
        log_event(
            "refused",
            json!({"peer": peer, "code": code, "message": &body, "not_logged_since_last": suppressed}),
        );
    }
    let body = format!("ERROR {code}: {body}\n");
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    // A TLS port just closes: answering would need a handshake on this
    // thread (the accept loop).
    if cfg.tls.is_some() {
        return;
    }
    let _ = stream.write_all(response.as_bytes());
}

/// A load balancer's check (issue 14 §3): `GET /health` without an
/// `Upgrade` header gets `200` and a small JSON body, then the connection
/// closes. Anything else (every WebSocket upgrade, /health included) is
/// left unread for the handshake. Decided from one peek at what the client
/// sent first: a request line split across segments is not recognised and
/// fails as a handshake would.
///
/// Never inlined: its two 2 KiB buffers would otherwise sit in the
/// connection thread's frame above the read loop, and every idle connection
/// would keep a third stack page (20 KiB instead of 12; see `trim_stack` in
/// relay/conn.rs and tests/relay_idle_rss.rs).
#[inline(never)]
fn answer_health(stream: &TcpStream, hub: &Hub) -> bool {
    let mut head = [0u8; 2048];
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(n) = stream.peek(&mut head) else {
        return false;
    };
    let head = &head[..n];
    if !(head.starts_with(b"GET /health ") || head.starts_with(b"GET /health?")) {
        return false;
    }
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    if text.contains("\nupgrade:") {
        return false;
    }
    // Take the request off the socket (what was peeked, and the rest of
    // its head, bounded), so closing does not reset the connection.
    let mut s = stream;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while got.len() < 16 * 1024 && !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match io::Read::read(&mut s, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => got.extend_from_slice(&buf[..k]),
        }
    }
    let mut body = hub.store_info();
    // A cluster node that cannot reach Redis is unhealthy: 503, so a load
    // balancer sends new clients elsewhere.
    let ok = hub.healthy();
    body["ok"] = json!(ok);
    body["service"] = json!("workbench-relay");
    if body.get("node").is_none() {
        body["node"] = json!(hub.server_name());
    }
    body["version"] = json!(env!("CARGO_PKG_VERSION"));
    body["pid"] = json!(std::process::id());
    body["connections"] = json!(hub.connections());
    let body = format!("{body}\n");
    let response = format!(
        "HTTP/1.1 {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        if ok {
            "200 OK"
        } else {
            "503 Service Unavailable"
        },
        body.len()
    );
    let _ = s.write_all(response.as_bytes());
    let _ = s.flush();
    true
}
