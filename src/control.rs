//! Finding, starting, stopping and talking to project servers from another
//! process (`workbench mcp`, `list`, `stop`, `demo`). Stateless: everything
//! comes from the project folder, so a restarted AI CLI simply carries on.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::httpc;
use crate::project::{Project, ServerInfo};
use crate::{sys, util};

/// How long a started server has to come up.
const START_TIMEOUT: Duration = Duration::from_secs(3);
const HEALTH_TIMEOUT: Duration = Duration::from_millis(1000);

/// What `.server.json` and `/health` say together.
pub enum Status {
    /// No record: not running.
    Down,
    /// A record whose server is gone, or another program answers its port.
    Stale(Option<ServerInfo>, String),
    /// Our server for this project, answering.
    Live(ServerInfo, Value),
}

/// Checks `.server.json` against `/health` (project name and pid must match,
/// so a reused port or pid is never mistaken for our server).
pub fn status(project: &Project) -> Status {
    let info = match ServerInfo::load(project) {
        Ok(None) => return Status::Down,
        Ok(Some(i)) => i,
        Err(e) => return Status::Stale(None, e),
    };
    match httpc::request(
        &info.connect_addr(),
        "GET",
        "/health",
        None,
        None,
        HEALTH_TIMEOUT,
    ) {
        Ok(r) if r.status == 200 => match r.json() {
            Some(h) if h["project"] == project.name.as_str() && h["pid"] == info.pid => {
                Status::Live(info, h)
            }
            _ => Status::Stale(Some(info), "another program answers on that port".into()),
        },
        Ok(r) => Status::Stale(Some(info), format!("port answered HTTP {}", r.status)),
        Err(e) => Status::Stale(Some(info), format!("server not answering ({e})")),
    }
}

/// True when `pid` runs `workbench serve <name>` (checked via /proc).
pub fn is_our_server(pid: u32, project: &Project) -> bool {
    let Some(argv) = sys::process_cmdline(pid) else {
        return false;
    };
    let exe_ok = argv.first().is_some_and(|a| {
        a.rsplit('/')
            .next()
            .is_some_and(|b| b.starts_with("workbench"))
    });
    exe_ok
        && argv.get(1).map(String::as_str) == Some("serve")
        && argv.get(2).map(String::as_str) == Some(project.name.as_str())
}

pub struct Running {
    pub info: ServerInfo,
    pub reused: bool,
}

/// Makes sure the project's server runs: reattach to a live one, else clean
/// up a stale record and start `workbench serve` detached (own session,
/// output to server.log) and wait until it listens. Concurrent callers (two
/// AI CLIs) are serialised by a lock file, so exactly one server starts.
/// How to start a server when one is needed.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// `--host` for `workbench serve` (default 0.0.0.0, the LAN).
    pub host: Option<String>,
    /// `--port` (default: the previous port if free, else the first from 8070).
    pub port: Option<u16>,
}

impl Launch {
    /// What `workbench mcp` uses: `WORKBENCH_SERVE_HOST` picks the address
    /// servers bind to (e.g. 127.0.0.1 to keep pages off the LAN).
    pub fn from_env() -> Launch {
        Launch {
            host: std::env::var("WORKBENCH_SERVE_HOST")
                .ok()
                .filter(|h| !h.is_empty()),
            port: None,
        }
    }
}

pub fn ensure_running(project: &Project, launch: &Launch) -> Result<Running, String> {
    let _guard = sys::lock_file_blocking(&project.path(".scaffold.lock"))
        .map_err(|e| format!("cannot lock {}: {e}", project.dir.display()))?;
    let mut port_hint = None;
    match status(project) {
        Status::Live(info, _) => return Ok(Running { info, reused: true }),
        Status::Down => {}
        Status::Stale(info, why) => {
            util::log_event(
                "stale_server",
                json!({"project": project.name.as_str(), "why": why}),
            );
            if let Some(info) = info {
                // A hung server of ours still holds the project: end it.
                if sys::pid_alive(info.pid) && is_our_server(info.pid, project) {
                    let _ = sys::terminate(info.pid);
                    sys::wait_pid_exit(info.pid, Duration::from_secs(3));
                }
                port_hint = Some(info.port);
            }
            let _ = std::fs::remove_file(project.server_file());
        }
    }
    let info = spawn_server(project, launch, port_hint)?;
    Ok(Running {
        info,
        reused: false,
    })
}

fn spawn_server(
    project: &Project,
    launch: &Launch,
    port_hint: Option<u16>,
) -> Result<ServerInfo, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the workbench binary: {e}"))?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(project.path("server.log"))
        .map_err(|e| format!("cannot open server.log: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("serve").arg(project.name.as_str());
    // Reuse the previous port when it is free, so open pages reconnect.
    let host = launch.host.clone().unwrap_or_else(|| "0.0.0.0".into());
    let port = launch
        .port
        .or(port_hint.filter(|p| std::net::TcpListener::bind((host.as_str(), *p)).is_ok()));
    if let Some(p) = port {
        cmd.args(["--port", &p.to_string()]);
    }
    cmd.args(["--host", &host]);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
    sys::detach(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the project server: {e}"))?;
    // The server prints one line once it listens and .server.json is written;
    // EOF means it exited (its reason is in server.log).
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("serve-ready".into())
        .spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        })
        .expect("spawn ready reader");
    let line = rx.recv_timeout(START_TIMEOUT).unwrap_or_default();
    if !line.contains("serving") {
        let _ = child.kill();
        let _ = child.wait();
        let tail = std::fs::read_to_string(project.path("server.log")).unwrap_or_default();
        let last = tail
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .to_string();
        return Err(format!(
            "the project server did not start within 3 s (server.log: {last})"
        ));
    }
    // Reap the server when it ends, so no zombie outlives it while we run.
    let _ = std::thread::Builder::new()
        .name(format!("reaper-{}", project.name))
        .spawn(move || child.wait());
    match ServerInfo::load(project) {
        Ok(Some(info)) => Ok(info),
        Ok(None) => Err("the project server started but wrote no .server.json".into()),
        Err(e) => Err(e),
    }
}

/// Why an API call failed, for the caller to choose what to tell the AI.
#[derive(Debug)]
pub enum ApiError {
    /// The server is not there (connection refused, wrong program, …).
    Unreachable(String),
    /// It answered with an error status.
    Status(u16, String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Unreachable(m) => write!(f, "project server unreachable: {m}"),
            ApiError::Status(s, m) => write!(f, "project server answered {s}: {m}"),
        }
    }
}

/// One authenticated call to a server described by `info`.
pub fn call(
    info: &ServerInfo,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<Value, ApiError> {
    let bytes = body.map(|b| b.to_string().into_bytes());
    let r = httpc::request(
        &info.connect_addr(),
        method,
        path,
        Some(&info.token),
        bytes.as_deref(),
        timeout,
    )
    .map_err(|e| ApiError::Unreachable(e.to_string()))?;
    let v = r
        .json()
        .ok_or_else(|| ApiError::Unreachable("the answer was not JSON".into()))?;
    match r.status {
        200 => Ok(v),
        // 401 means whoever answers is not the server that wrote our token.
        401 => Err(ApiError::Unreachable(
            "token not accepted: another server holds that port".into(),
        )),
        s => Err(ApiError::Status(
            s,
            v["error"].as_str().unwrap_or("unknown error").to_string(),
        )),
    }
}

/// Calls the project's server, starting (or restarting) it first if it is
/// not running, so callers never have to reason about processes.
pub fn call_project(
    project: &Project,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<Value, String> {
    if !project.exists() {
        return Err(format!(
            "project '{}' does not exist; call workbench_scaffold first",
            project.name
        ));
    }
    // The record must name a live `workbench serve <project>` (a cheap /proc
    // check) before we trust whatever answers on its port.
    if let Some(info) = ServerInfo::load(project)
        .ok()
        .flatten()
        .filter(|i| is_our_server(i.pid, project))
    {
        match call(&info, method, path, body, timeout) {
            Ok(v) => return Ok(v),
            Err(ApiError::Status(s, m)) => return Err(format!("{m} (HTTP {s})")),
            Err(ApiError::Unreachable(why)) => {
                util::log_event(
                    "restarting",
                    json!({"project": project.name.as_str(), "why": why}),
                );
            }
        }
    }
    let running = ensure_running(project, &Launch::from_env())?;
    call(&running.info, method, path, body, timeout).map_err(|e| e.to_string())
}

/// Stops the project's server: through its API, falling back to SIGTERM only
/// when the pid really is our server. A dead server's record is cleaned up
/// and its session end recorded. Returns whether a server was running.
pub fn stop(project: &Project) -> Result<bool, String> {
    match status(project) {
        Status::Down => Ok(false),
        Status::Live(info, _) => {
            let via_api = call(
                &info,
                "POST",
                "/api/stop",
                Some(&json!({})),
                Duration::from_secs(5),
            )
            .is_ok();
            if !via_api && is_our_server(info.pid, project) {
                sys::terminate(info.pid)
                    .map_err(|e| format!("cannot signal pid {}: {e}", info.pid))?;
            }
            if !sys::wait_pid_exit(info.pid, Duration::from_secs(5)) {
                return Err(format!("server pid {} did not exit within 5 s", info.pid));
            }
            Ok(true)
        }
        Status::Stale(info, why) => {
            if let Some(info) = &info {
                if sys::pid_alive(info.pid) && is_our_server(info.pid, project) {
                    let _ = sys::terminate(info.pid);
                    sys::wait_pid_exit(info.pid, Duration::from_secs(5));
                }
            }
            // Record the end of a session whose server died without doing it.
            if project.server_file().exists() {
                let ended = util::now_ms();
                let line = json!({
                    "event": "session_end",
                    "started": info.as_ref().map(|i| i.started.clone()),
                    "ended": util::rfc3339_ms(ended),
                    "note": format!("recorded by workbench stop: {why}"),
                });
                let _ = util::append_line(&project.path("cost-log.jsonl"), &line.to_string());
            }
            let _ = std::fs::remove_file(project.server_file());
            Ok(false)
        }
    }
}

/// One row of `workbench list` / `workbench_list`.
pub fn describe(project: &Project) -> Value {
    let title = project.title();
    match status(project) {
        Status::Live(info, h) => json!({
            "name": project.name.as_str(), "title": title, "url": info.url, "running": true,
            "pid": info.pid, "port": info.port, "viewers": h["viewers"], "started": info.started,
        }),
        Status::Stale(info, why) => json!({
            "name": project.name.as_str(), "title": title, "url": info.as_ref().map(|i| i.url.clone()), "running": false,
            "pid": null, "port": null, "viewers": 0, "started": null, "stale": why,
        }),
        Status::Down => json!({
            "name": project.name.as_str(), "title": title, "url": null, "running": false,
            "pid": null, "port": null, "viewers": 0, "started": null,
        }),
    }
}
