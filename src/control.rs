//! Finding, starting, stopping and talking to project servers from another
//! process (`workbench mcp`, `list`, `stop`, `doctor`, `demo`). Everything
//! comes from the project folder, so a restarted AI CLI simply carries on;
//! the only memory is a cache of live connections (`call_project`), which is
//! re-validated against the folder whenever a call on it fails.
//!
//! A running server's record is `.server.json`; the server also keeps a copy
//! in its lock file (`.serve.lock`), so a server whose `.server.json` is
//! missing or corrupt can still be found, reattached to and stopped, and it
//! rewrites a missing or damaged `.server.json` itself (`publish_record`).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::httpc;
use crate::project::{self, Project, ServerInfo};
use crate::{sys, util};

/// How long a started server has to come up (generous: a loaded machine).
const START_TIMEOUT: Duration = Duration::from_secs(10);
const HEALTH_TIMEOUT: Duration = Duration::from_millis(1000);
/// The lock a running server holds (see `page::serve`), with its record in it.
pub const LOCK_FILE: &str = ".serve.lock";

/// What the project folder and `/health` say together.
pub enum Status {
    /// No record: not running.
    Down,
    /// A record whose server is gone, or another program answers its port.
    Stale(Option<ServerInfo>, Stale),
    /// Our server for this project, answering.
    Live(ServerInfo, Value),
}

/// Why a record does not lead to our running server.
#[derive(Debug)]
pub enum Stale {
    /// `.server.json` exists but cannot be read as a record.
    Unreadable(String),
    /// Its pid is not running.
    Dead,
    /// Its pid is another program now (its command line).
    OtherProgram(Vec<String>),
    /// Something answers `/health` on its port, but for another project or pid.
    Foreign { project: Value, pid: Value },
    /// The process is ours, but its port does not answer `/health` properly.
    NotAnswering(String),
}

impl std::fmt::Display for Stale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stale::Unreadable(e) => write!(f, "{e}"),
            Stale::Dead => write!(f, "its process is not running"),
            Stale::OtherProgram(cmd) => {
                write!(f, "its pid is now another program ({})", cmd.join(" "))
            }
            Stale::Foreign { project, pid } => write!(
                f,
                "another program answers on that port (project {project}, pid {pid})"
            ),
            Stale::NotAnswering(e) => write!(f, "server not answering ({e})"),
        }
    }
}

/// The project's server record: `.server.json`, or, when that is missing or
/// unreadable, the copy a live server keeps in its lock file.
pub fn find_record(project: &Project) -> Result<Option<ServerInfo>, String> {
    match ServerInfo::load(project) {
        Ok(Some(info)) => Ok(Some(info)),
        other => match read_holder(project) {
            Some(holder) => Ok(Some(holder)),
            None => other,
        },
    }
}

/// The record in the lock file, if its process still runs.
fn read_holder(project: &Project) -> Option<ServerInfo> {
    let bytes = std::fs::read(project.path(LOCK_FILE)).ok()?;
    let info: ServerInfo = serde_json::from_slice(&bytes).ok()?;
    sys::pid_alive(info.pid).then_some(info)
}

/// Checks the record against the process table and `/health` (project name
/// and pid must match, so a reused port or pid is never mistaken for ours).
pub fn status(project: &Project) -> Status {
    let info = match find_record(project) {
        Ok(None) => return Status::Down,
        Ok(Some(i)) => i,
        Err(e) => return Status::Stale(None, Stale::Unreadable(e)),
    };
    if !sys::pid_alive(info.pid) {
        return Status::Stale(Some(info), Stale::Dead);
    }
    // An unreadable command line (hidepid) proves nothing either way.
    if let Some(cmd) = sys::process_cmdline(info.pid) {
        if !cmdline_is_server(&cmd, project.name.as_str()) {
            return Status::Stale(Some(info), Stale::OtherProgram(cmd));
        }
    }
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
            Some(h) => Status::Stale(
                Some(info),
                Stale::Foreign {
                    project: h["project"].clone(),
                    pid: h["pid"].clone(),
                },
            ),
            None => Status::Stale(
                Some(info),
                Stale::NotAnswering("answered, but not with workbench's JSON".into()),
            ),
        },
        Ok(r) => Status::Stale(
            Some(info),
            Stale::NotAnswering(format!("port answered HTTP {}", r.status)),
        ),
        Err(e) => Status::Stale(Some(info), Stale::NotAnswering(e.to_string())),
    }
}

/// True when `pid` runs `workbench serve … <name> …` (checked via /proc).
pub fn is_our_server(pid: u32, project: &Project) -> bool {
    sys::process_cmdline(pid).is_some_and(|argv| cmdline_is_server(&argv, project.name.as_str()))
}

/// True when `argv` is `…/workbench… serve … <name> …`: the program is a
/// workbench binary, `serve` is its command, and the project name is one of
/// the arguments after it (options may come first). The pid and `/health`
/// checks decide the rest.
pub fn cmdline_is_server(argv: &[String], name: &str) -> bool {
    let Some(exe) = argv.first() else {
        return false;
    };
    let exe_ok = exe
        .rsplit('/')
        .next()
        .is_some_and(|b| b.starts_with("workbench"));
    let Some(serve) = argv.iter().skip(1).position(|a| a == "serve") else {
        return false;
    };
    exe_ok && argv.iter().skip(serve + 2).any(|a| a == name)
}

pub struct Running {
    pub info: ServerInfo,
    pub reused: bool,
}

/// How to start a server when one is needed.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// `--host` for `workbench serve` (default 0.0.0.0, the LAN).
    pub host: Option<String>,
    /// `--port`, exact (default: the previous port if free, else any).
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

/// Makes sure the project's server runs: reattach to a live one, else clean
/// up a stale record and start `workbench serve` detached (own session,
/// output to server.log) and wait until it listens. Concurrent callers (two
/// AI CLIs) are serialised by a lock file, so exactly one server starts.
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
                json!({"project": project.name.as_str(), "why": why.to_string()}),
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
    let mut cmd = Command::new(exe);
    cmd.arg("serve").arg(project.name.as_str());
    // The previous port when it is free, so open pages reconnect; else any.
    // The server binds it or falls back itself: nothing is probed here, so
    // nothing can take the port between a check and the bind.
    match (launch.port, port_hint) {
        (Some(p), _) => cmd.args(["--port", &p.to_string()]),
        (None, Some(p)) => cmd.args(["--prefer-port", &p.to_string()]),
        (None, None) => &mut cmd,
    };
    let host = launch.host.clone().unwrap_or_else(|| "0.0.0.0".into());
    cmd.args(["--host", &host]);
    // The server prints one line once it listens and .server.json is written.
    let pid = spawn_detached(
        &mut cmd,
        &project.path("server.log"),
        START_TIMEOUT,
        "serving",
    )
    .map_err(|f| {
        let what = match f.timed_out {
            false => "exited at start".to_string(),
            true => format!("did not start within {} s", START_TIMEOUT.as_secs()),
        };
        format!(
            "the project server {what} (server.log: {})",
            f.last_log_line
        )
    })?;
    // The record it wrote has the port it really got.
    match find_record(project) {
        Ok(Some(info)) if info.pid == pid => Ok(info),
        Ok(Some(info)) => Err(format!(
            "the project server started, but .server.json names pid {}",
            info.pid
        )),
        Ok(None) => Err("the project server started but wrote no .server.json".into()),
        Err(e) => Err(e),
    }
}

/// Why a detached process did not come up.
#[derive(Debug)]
pub struct StartFailure {
    /// True when it was still silent at the deadline (it was killed);
    /// false when it exited first.
    pub timed_out: bool,
    /// The last non-empty line of its log: usually its own reason.
    pub last_log_line: String,
}

/// Starts `cmd` detached (own session, stdin from /dev/null, stderr appended
/// to `log`, mode 0600) and waits up to `timeout` for its first stdout line,
/// which must contain `ready`: our servers print it once they listen and
/// their record is written. EOF means it exited (its reason is the last line
/// of `log`). A started process is reaped by a thread, so no zombie outlives
/// it while we run. Shared by project servers and chat sessions; returns the
/// pid.
pub fn spawn_detached(
    cmd: &mut Command,
    log: &std::path::Path,
    timeout: Duration,
    ready: &str,
) -> Result<u32, StartFailure> {
    let fail = |timed_out: bool, why: String| StartFailure {
        timed_out,
        last_log_line: why,
    };
    let log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)
        .map_err(|e| fail(false, format!("cannot open {}: {e}", log.display())))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file);
    sys::detach(cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(false, format!("cannot start {:?}: {e}", cmd.get_program())))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("spawn-ready".into())
        .spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        })
        .expect("spawn ready reader");
    let (line, timed_out) = match rx.recv_timeout(timeout) {
        Ok(l) => (l, false),
        Err(_) => (String::new(), true),
    };
    if !line.contains(ready) {
        let _ = child.kill();
        let _ = child.wait();
        let tail = std::fs::read_to_string(log).unwrap_or_default();
        let last = tail
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .to_string();
        return Err(fail(timed_out, last));
    }
    let pid = child.id();
    let _ = std::thread::Builder::new()
        .name(format!("reaper-{pid}"))
        .spawn(move || child.wait());
    Ok(pid)
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

/// One authenticated call to a server described by `info`, on a fresh
/// connection.
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
    answer(r)
}

/// Reads a server's answer: its JSON on 200, else why not.
fn answer(r: httpc::HttpResponse) -> Result<Value, ApiError> {
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

/// Live connections to the servers this process talks to, by project
/// folder: the record they were opened from and the idle connections. The
/// lock guards only this map; every request runs with it released.
struct Link {
    info: ServerInfo,
    idle: Vec<httpc::Conn>,
}

/// Idle connections kept per project (parallel tool calls may use more).
const IDLE_PER_PROJECT: usize = 4;

fn links() -> &'static Mutex<HashMap<std::path::PathBuf, Link>> {
    static LINKS: std::sync::OnceLock<Mutex<HashMap<std::path::PathBuf, Link>>> =
        std::sync::OnceLock::new();
    LINKS.get_or_init(Default::default)
}

fn lock_links() -> std::sync::MutexGuard<'static, HashMap<std::path::PathBuf, Link>> {
    // The map is only ever replaced whole; a panic elsewhere cannot tear it.
    links().lock().unwrap_or_else(|e| e.into_inner())
}

/// A cached record and, if one is idle and still open, a connection to it.
fn take_link(project: &Project) -> Option<(ServerInfo, Option<httpc::Conn>)> {
    let mut map = lock_links();
    let link = map.get_mut(&project.dir)?;
    let conn = link.idle.pop();
    Some((link.info.clone(), conn))
}

fn return_conn(project: &Project, info: &ServerInfo, conn: httpc::Conn) {
    let mut map = lock_links();
    let link = map.entry(project.dir.clone()).or_insert_with(|| Link {
        info: info.clone(),
        idle: Vec::new(),
    });
    if link.info != *info {
        // Another call found a newer server meanwhile: this one is done with.
        return;
    }
    if link.idle.len() < IDLE_PER_PROJECT {
        link.idle.push(conn);
    }
}

fn forget(project: &Project) {
    lock_links().remove(&project.dir);
}

/// One call over a kept-alive connection to `info` (`conn` if it is still
/// usable, else a new one); the connection goes back to the cache after a
/// whole answer.
fn call_linked(
    project: &Project,
    info: &ServerInfo,
    conn: Option<httpc::Conn>,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Value, ApiError> {
    let mut conn = match conn.filter(httpc::Conn::is_usable) {
        Some(c) => c,
        None => httpc::Conn::open(&info.connect_addr(), timeout)
            .map_err(|e| ApiError::Unreachable(e.to_string()))?,
    };
    let r = conn
        .request(method, path, Some(&info.token), body, timeout)
        .map_err(|e| ApiError::Unreachable(e.to_string()))?;
    if conn.keeps_alive() {
        return_conn(project, info, conn);
    }
    answer(r)
}

/// Calls the project's server, starting (or restarting) it first if it is
/// not running, so callers never have to reason about processes. Callers
/// check that the project exists. The body is serialised once.
///
/// Fast path: a cached record and a kept-alive connection, with no look at
/// the disk. Only when that fails is the record re-read and checked
/// (`.server.json` or the lock's copy, the pid's command line), and only
/// when that fails too is the server restarted.
pub fn call_project(
    project: &Project,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<Value, String> {
    let bytes = body.map(|b| b.to_string().into_bytes());
    let bytes = bytes.as_deref();
    if let Some((info, conn)) = take_link(project) {
        match call_linked(project, &info, conn, method, path, bytes, timeout) {
            Ok(v) => return Ok(v),
            Err(ApiError::Status(s, m)) => return Err(format!("{m} (HTTP {s})")),
            Err(ApiError::Unreachable(_)) => forget(project),
        }
    }
    // The record must name a live `workbench serve <project>` (a cheap /proc
    // check) before we trust whatever answers on its port.
    if let Some(info) = find_record(project)
        .ok()
        .flatten()
        .filter(|i| is_our_server(i.pid, project))
    {
        match call_linked(project, &info, None, method, path, bytes, timeout) {
            Ok(v) => return Ok(v),
            Err(ApiError::Status(s, m)) => return Err(format!("{m} (HTTP {s})")),
            Err(ApiError::Unreachable(why)) => {
                forget(project);
                util::log_event(
                    "restarting",
                    json!({"project": project.name.as_str(), "why": why}),
                );
            }
        }
    }
    let running = ensure_running(project, &Launch::from_env())?;
    call_linked(project, &running.info, None, method, path, bytes, timeout)
        .map_err(|e| e.to_string())
}

/// Stops the project's server: through its API, falling back to SIGTERM only
/// when the pid really is our server. A dead server's record is cleaned up
/// and its session end recorded. Returns whether a server was running.
pub fn stop(project: &Project) -> Result<bool, String> {
    forget(project);
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
            let mut was_running = false;
            if let Some(info) = &info {
                if sys::pid_alive(info.pid) && is_our_server(info.pid, project) {
                    let _ = sys::terminate(info.pid);
                    was_running = sys::wait_pid_exit(info.pid, Duration::from_secs(5));
                }
            }
            // Record the end of a session whose server died without doing it.
            if project.server_file().exists() && !was_running {
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
            Ok(was_running)
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
            "pid": null, "port": null, "viewers": 0, "started": null, "stale": why.to_string(),
        }),
        Status::Down => json!({
            "name": project.name.as_str(), "title": title, "url": null, "running": false,
            "pid": null, "port": null, "viewers": 0, "started": null,
        }),
    }
}

/// The running server's side of its record: `.server.json` (mode 0600) and
/// a copy in the lock file it holds, kept for as long as it runs. A thread
/// watches `.server.json` (inotify, no polling) and rewrites it when it goes
/// missing or stops matching. `retire` removes both at shutdown.
pub struct Record {
    project: Project,
    info: ServerInfo,
    lock: File,
    retired: Arc<AtomicBool>,
}

/// Writes the record of the server that holds `lock` (the `.serve.lock`
/// from `sys::try_lock_file`) and starts keeping it.
pub fn publish_record(project: &Project, info: &ServerInfo, lock: File) -> std::io::Result<Record> {
    info.save(project)?;
    // The copy holds the token too: owner only, like .server.json.
    lock.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    let text = serde_json::to_vec(info).expect("ServerInfo serialises");
    lock.set_len(0)?;
    lock.write_all_at(&text, 0)?;
    let retired = Arc::new(AtomicBool::new(false));
    let (p, i, r) = (project.clone(), info.clone(), retired.clone());
    let spawned = std::thread::Builder::new()
        .name("record-keeper".into())
        .spawn(move || keep_record(&p, &i, &r));
    if let Err(e) = spawned {
        util::log_event("record_keeper_failed", json!({"error": e.to_string()}));
    }
    Ok(Record {
        project: project.clone(),
        info: info.clone(),
        lock,
        retired,
    })
}

impl Record {
    /// At shutdown: stop keeping the record and remove it (unless a newer
    /// server's record replaced it).
    pub fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        let _ = self.lock.set_len(0);
        project::remove_server_file_if_pid(&self.project, self.info.pid);
    }
}

fn keep_record(project: &Project, info: &ServerInfo, retired: &AtomicBool) {
    let watch = match sys::FileWatch::new() {
        Ok(w) => w,
        Err(e) => {
            return util::log_event("record_keeper_failed", json!({"error": e.to_string()}));
        }
    };
    let path = project.server_file();
    loop {
        // Watch the file now there first, then look at it: a change after
        // the look always wakes the wait below.
        let watching = watch.watch(&path).is_ok();
        if retired.load(Ordering::SeqCst) {
            return;
        }
        let intact = ServerInfo::load(project).ok().flatten().as_ref() == Some(info);
        if !intact {
            match info.save(project) {
                Ok(()) => util::log_event(
                    "server_record_restored",
                    json!({"project": project.name.as_str()}),
                ),
                Err(e) => {
                    util::log_event(
                        "disk_error",
                        json!({"file": ".server.json", "error": e.to_string()}),
                    );
                    // Try again on the next change, not in a loop.
                    if !watching || watch.wait().is_err() {
                        return;
                    }
                }
            }
            // Shutdown may have begun meanwhile: then its removal stands.
            if retired.load(Ordering::SeqCst) {
                project::remove_server_file_if_pid(project, info.pid);
                return;
            }
            continue;
        }
        if !watching {
            // Intact, yet not watchable: nothing left to wait on.
            return;
        }
        if watch.wait().is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_our_server_cmdline() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(cmdline_is_server(
            &v(&["/usr/bin/workbench", "serve", "bench1"]),
            "bench1"
        ));
        assert!(cmdline_is_server(
            &v(&["workbench", "serve", "--port", "8070", "bench1"]),
            "bench1"
        ));
        assert!(!cmdline_is_server(
            &v(&["/usr/bin/python3", "serve", "bench1"]),
            "bench1"
        ));
        assert!(!cmdline_is_server(
            &v(&["workbench", "serve", "other"]),
            "bench1"
        ));
        assert!(!cmdline_is_server(
            &v(&["workbench", "bench1", "serve"]),
            "bench1"
        ));
        assert!(!cmdline_is_server(&v(&["workbench", "list"]), "list"));
        assert!(!cmdline_is_server(&[], "bench1"));
    }
}
