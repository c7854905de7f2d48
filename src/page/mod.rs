//! The per-project page server (`workbench serve <name>`): tiny_http accepts,
//! each request runs on its own thread; `/ws` viewers get pushes from the
//! hub; the owner (bearer token in `.server.json`) writes through `/api/*`.
//! This module wires the parts together and owns start-up and shutdown.

mod disk;
mod eventlog;
mod events;
pub mod files;
pub mod http;
mod hub;
pub mod origin;
pub mod routes;
pub mod sniff;
pub mod tls;
pub mod uploads;
mod viewer;

use std::io::Write;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::project::{Project, ServerInfo};
use crate::{sys, util};

pub use eventlog::Quota as EventsQuota;
pub use events::Limits as EventLimits;
pub use hub::LEVELS;

/// Default request body limit (`--max-body`).
pub const DEFAULT_MAX_BODY: usize = 8 << 20;
/// First port tried when none is given; the next 99 are tried after it.
pub const FIRST_PORT: u16 = 8070;

#[derive(Debug, Clone)]
pub enum PortChoice {
    /// The first free port from 8070 up.
    Auto,
    /// Exactly this port (0 = any free port); taken → error.
    Exact(u16),
    /// This port if it is free, else any free port: one bind attempt, then
    /// port 0, so nothing can take it between a check and the bind. How a
    /// restarted server keeps its old port (open pages reconnect) when it can.
    Prefer(u16),
}

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub project: Project,
    pub title: Option<String>,
    pub description: Option<String>,
    pub host: String,
    pub port: PortChoice,
    /// Address shown in the URL (`--public-host`/`WORKBENCH_HOST`); default: LAN address.
    pub public_host: Option<String>,
    pub max_body: usize,
    /// How much the events log may hold on disk and in memory.
    pub events_quota: eventlog::Quota,
    /// Rate limits for POST /api/event.
    pub event_limits: events::Limits,
    /// `--cert/--key`: serve HTTPS (and `wss://` for the page's socket).
    pub tls: Option<tls::PageTls>,
    /// Extra origins or host names allowed besides the server's own
    /// (`--allow-origin`, `WORKBENCH_ALLOW_ORIGIN`).
    pub allow_origins: Vec<String>,
    pub limits: Limits,
    /// Page uploads into files/uploads/ (docs/files.md).
    pub uploads: uploads::UploadLimits,
}

/// What one client, and all of them, may hold (docs/page-limits.md).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub max_viewers: usize,
    pub max_viewers_per_client: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_request_line: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_connections_per_client: 128,
            max_viewers: 256,
            max_viewers_per_client: 32,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            max_request_line: 8 << 10,
            max_header_bytes: 32 << 10,
            max_headers: 64,
        }
    }
}

/// Descriptors kept free of connections for files, the listener and the
/// disk writer: the connection cap is lowered to fit under the open-file
/// limit, so a flood meets the cap (503) and never EMFILE.
fn reserved_fds(nofile: u64) -> u64 {
    64 + nofile / 8
}

/// A budget for diagnostics written under attack: at most `burst` lines,
/// refilled at `per_sec`; `admit` returns how many were suppressed before.
pub struct LogBudget {
    bucket: Mutex<crate::ratelimit::TokenBucket>,
    suppressed: AtomicU64,
}

const LOG_RATE: crate::ratelimit::Rate = crate::ratelimit::Rate::new(20.0, 5.0);

impl LogBudget {
    fn new() -> Self {
        LogBudget {
            bucket: Mutex::new(crate::ratelimit::TokenBucket::full(
                LOG_RATE,
                Instant::now(),
            )),
            suppressed: AtomicU64::new(0),
        }
    }

    pub fn admit(&self) -> Option<u64> {
        let ok = self
            .bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_take(Instant::now(), LOG_RATE);
        if ok {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Why the server is stopping.
pub enum Stop {
    Signal(i32),
    Api,
}

/// What every request thread shares.
pub struct Shared {
    pub project: Project,
    pub token: String,
    pub hub: hub::Hub,
    pub events: Arc<events::Events>,
    /// Answers wait for it (`sync`) where an acknowledged write must be on disk.
    pub disk: disk::DiskSender,
    pub stop: Sender<Stop>,
    pub max_body: usize,
    pub origins: origin::Origins,
    pub limits: Limits,
    pub error_log: LogBudget,
    pub uploads: uploads::Uploads,
}

fn bind(host: &str, port: &PortChoice) -> Result<TcpListener, String> {
    let try_bind = |p: u16| TcpListener::bind((host, p));
    match port {
        PortChoice::Exact(p) => try_bind(*p).map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                format!("port {p} is already in use on {host}; choose another with --port N, or --port 0 for any free port")
            }
            _ => format!("cannot listen on {host}:{p}: {e}"),
        }),
        PortChoice::Prefer(p) => try_bind(*p)
            .or_else(|_| try_bind(0))
            .map_err(|e| format!("cannot listen on {host}: {e}")),
        PortChoice::Auto => (FIRST_PORT..FIRST_PORT + 100).find_map(|p| try_bind(p).ok()).ok_or_else(|| {
            format!("no free port in {FIRST_PORT}-{} on {host}; pass --port 0 for any free port", FIRST_PORT + 99)
        }),
    }
}

/// The host part of the URL people on the LAN should open.
pub fn public_host(bind_host: &str, explicit: Option<&str>) -> String {
    if let Some(h) = explicit.filter(|h| !h.is_empty()) {
        return h.to_string();
    }
    if let Some(h) = std::env::var("WORKBENCH_HOST")
        .ok()
        .filter(|h| !h.is_empty())
    {
        return h;
    }
    match bind_host {
        "0.0.0.0" | "::" => sys::lan_ipv4()
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| "127.0.0.1".into()),
        h => h.to_string(),
    }
}

fn load_state(project: &Project) -> Map<String, Value> {
    let path = project.path("state.json");
    match std::fs::read(&path) {
        Ok(b) => match serde_json::from_slice::<Value>(&b) {
            Ok(Value::Object(m)) => m,
            _ => {
                // Keep the unreadable file for inspection instead of losing it.
                let aside = project.path(&format!("state.json.corrupt-{}", util::now_ms()));
                let _ = std::fs::rename(&path, &aside);
                util::log_event(
                    "state_corrupt",
                    json!({"moved_to": aside.display().to_string()}),
                );
                Map::new()
            }
        },
        Err(_) => Map::new(),
    }
}

/// Runs the server in the foreground until SIGINT/SIGTERM or `POST /api/stop`.
pub fn serve(cfg: ServeConfig) -> Result<(), String> {
    let signals = sys::shutdown_signals();
    sys::return_big_allocations_to_the_os();
    let project = cfg.project.clone();
    project
        .create(cfg.title.as_deref(), cfg.description.as_deref())
        .map_err(|e| format!("cannot create {}: {e}", project.dir.display()))?;

    // One server per project: the lock is held for the process lifetime and
    // released by the kernel however we exit.
    let lock = sys::try_lock_file(&project.path(crate::control::LOCK_FILE)).map_err(|e| {
        let who = ServerInfo::load(&project)
            .ok()
            .flatten()
            .map(|i| format!(" by pid {} at {}", i.pid, i.url));
        format!(
            "project '{}' is already being served{} ({e})",
            project.name,
            who.unwrap_or_default()
        )
    })?;

    // Session data is the owner's alone; older projects are fixed here.
    project.secure_files();

    let listener = bind(&cfg.host, &cfg.port)?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    // Vanished viewers: unacked pings time out after 20 s; stuck writes after 15 s.
    sys::tune_listener(listener.as_raw_fd(), 20_000, 15);
    let mut limits = cfg.limits.clone();
    // Every connection costs one descriptor: keep the cap under the limit.
    let nofile = sys::raise_nofile_limit().unwrap_or(1024);
    let fit = nofile.saturating_sub(reserved_fds(nofile)).max(8) as usize;
    if limits.max_connections > fit {
        util::log_event(
            "connection_cap_lowered",
            json!({"requested": limits.max_connections, "cap": fit, "nofile": nofile}),
        );
        limits.max_connections = fit;
    }
    limits.max_viewers = limits.max_viewers.min(limits.max_connections);
    let http_limits = tiny_http::Limits {
        max_connections: limits.max_connections,
        max_per_client: limits.max_connections_per_client,
        client_key: crate::ratelimit::client_key,
        idle_timeout: limits.idle_timeout,
        header_timeout: limits.header_timeout,
        max_request_line: limits.max_request_line,
        max_header_bytes: limits.max_header_bytes,
        max_headers: limits.max_headers,
    };
    let server = tiny_http::Server::with_limits_tls(
        listener,
        http_limits,
        cfg.tls.as_ref().map(|t| t.config.clone()),
    )
    .map_err(|e| e.to_string())?;
    let server = Arc::new(server);

    // The events log ends its own torn line (eventlog::EventLog::open).
    for log in ["session.jsonl", "session.md", "cost-log.jsonl"] {
        if let Err(e) = util::seal_torn_line(&project.path(log)) {
            util::log_event("disk_error", json!({"file": log, "error": e.to_string()}));
        }
    }
    let opened = eventlog::EventLog::open(&project.dir, cfg.events_quota).map_err(|e| {
        format!(
            "cannot open the events log in {}: {e}",
            project.dir.display()
        )
    })?;
    let events = Arc::new(events::Events::new(
        opened.log.clone(),
        opened.tail,
        opened.last_seq,
        cfg.event_limits,
    ));
    let disk = disk::start(&project, events.clone(), eventlog::Writer::new(opened.log));
    let uploads =
        uploads::Uploads::open(&project.path("files"), cfg.uploads.clone()).map_err(|e| {
            format!(
                "cannot open files/uploads/ in {}: {e}",
                project.dir.display()
            )
        })?;
    let recent =
        util::tail_jsonl(&project.path("session.jsonl"), hub::RECENT_LOGS).unwrap_or_default();
    let (stop_tx, stop_rx) = mpsc::channel();
    let token = util::random_hex(32).map_err(|e| format!("no randomness for the token: {e}"))?;
    let host_shown = public_host(&cfg.host, cfg.public_host.as_deref());
    let viewer_limits = hub::ViewerLimits {
        max_total: limits.max_viewers,
        max_per_client: limits.max_viewers_per_client,
    };
    let shared = Arc::new(Shared {
        project: project.clone(),
        token: token.clone(),
        hub: hub::Hub::new(load_state(&project), recent, disk.clone(), viewer_limits),
        events,
        disk: disk.clone(),
        stop: stop_tx.clone(),
        max_body: cfg.max_body,
        origins: origin::Origins::new(&cfg.host, port, Some(&host_shown), &cfg.allow_origins)
            .with_https(cfg.tls.is_some()),
        limits: limits.clone(),
        error_log: LogBudget::new(),
        uploads,
    });

    let host_url = if host_shown.contains(':') {
        format!("[{host_shown}]")
    } else {
        host_shown
    };
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{host_url}:{port}/");
    let started_ms = util::now_ms();
    let info = ServerInfo {
        pid: std::process::id(),
        port,
        host: cfg.host.clone(),
        url: url.clone(),
        started: util::rfc3339_ms(started_ms),
        token,
        version: crate::VERSION.to_string(),
    };
    // .server.json, a copy in the lock, and a thread that restores it.
    let record = crate::control::publish_record(&project, &info, lock)
        .map_err(|e| format!("cannot write .server.json: {e}"))?;
    let _ = util::append_line(
        &project.path("cost-log.jsonl"),
        &json!({"event": "session_start", "started": info.started, "pid": info.pid, "port": port})
            .to_string(),
    );
    util::log_event(
        "listening",
        json!({"project": project.name.as_str(), "port": port, "url": url, "pid": info.pid,
               "max_connections": limits.max_connections, "nofile": nofile}),
    );
    // Stdout carries exactly this one line (`workbench mcp` waits for it);
    // a closed stdout must not stop the server.
    let _ = writeln!(
        std::io::stdout(),
        "workbench: serving '{}' at {url}  (Ctrl-C to stop)",
        project.name
    );

    // Signals become stop events on the same channel as POST /api/stop.
    std::thread::Builder::new()
        .name("signal-relay".into())
        .spawn(move || {
            if let Ok(sig) = signals.recv() {
                let _ = stop_tx.send(Stop::Signal(sig));
            }
        })
        .expect("spawn signal relay");

    let accept_server = server.clone();
    let accept_shared = shared.clone();
    std::thread::Builder::new()
        .name("http-accept".into())
        .spawn(move || accept_loop(&accept_server, accept_shared))
        .expect("spawn accept loop");

    let why = stop_rx.recv().unwrap_or(Stop::Api);
    let reason = match why {
        Stop::Signal(s) => format!("signal {s}"),
        Stop::Api => "POST /api/stop".to_string(),
    };
    server.unblock();
    shared.hub.close_all();
    disk.flush();
    let stats = shared.hub.stats();
    let ended_ms = util::now_ms();
    let _ = util::append_line(
        &project.path("cost-log.jsonl"),
        &json!({
            "event": "session_end",
            "started": info.started,
            "ended": util::rfc3339_ms(ended_ms),
            "duration_s": (ended_ms.saturating_sub(started_ms)) as f64 / 1000.0,
            "state_pushes": stats.state_pushes,
            "log_entries": stats.log_entries,
            "peak_viewers": stats.peak_viewers,
            "bytes_pushed": stats.bytes_pushed,
        })
        .to_string(),
    );
    record.retire();
    util::log_event("stopped", json!({"reason": reason}));
    Ok(())
}

fn accept_loop(server: &tiny_http::Server, shared: Arc<Shared>) {
    let mut n: u64 = 0;
    for req in server.incoming_requests() {
        n += 1;
        let worker_shared = shared.clone();
        let is_ws = req.url() == "/ws" || req.url().starts_with("/ws?");
        let name = if is_ws {
            format!("viewer-{n}")
        } else {
            format!("http-{n}")
        };
        // A failed spawn drops the request: its connection closes, the
        // server goes on.
        let spawned = std::thread::Builder::new()
            .name(name)
            .spawn(move || http::serve_request(&worker_shared, req));
        if let Err(e) = spawned {
            if let Some(suppressed) = shared.error_log.admit() {
                util::log_event(
                    "spawn_failed",
                    json!({"error": e.to_string(), "suppressed_before": suppressed}),
                );
            }
        }
    }
}

/// For unit tests: a project in a fresh temp folder with its real events
/// log and disk writer.
#[cfg(test)]
pub(crate) fn test_parts(tag: &str) -> (Project, Arc<events::Events>, disk::DiskSender) {
    let dir = std::env::temp_dir().join(format!(
        "wb-page-{tag}-{}-{}",
        std::process::id(),
        util::now_ms()
    ));
    std::fs::create_dir_all(&dir).expect("temp project folder");
    let project = Project {
        name: crate::project::ProjectName::parse("unit").expect("valid name"),
        dir,
    };
    let opened =
        eventlog::EventLog::open(&project.dir, eventlog::Quota::default()).expect("events log");
    let events = Arc::new(events::Events::new(
        opened.log.clone(),
        opened.tail,
        opened.last_seq,
        events::Limits::default(),
    ));
    let disk = disk::start(&project, events.clone(), eventlog::Writer::new(opened.log));
    (project, events, disk)
}
