//! Relay chat sessions that outlive the AI CLI: one identity on one relay,
//! held by its own detached process (`workbench chat-session <name>`), with
//! every received frame numbered in an inbox file. This module owns the
//! session folder on disk and how other processes find a session; the
//! process itself is `session`, its loopback API `api`, the inbox `inbox`.
//!
//! Not here: the MCP tools (`mcp/chat_tools.rs`) or the relay protocol.
//!
//! ```text
//! $WORKBENCH_HOME/.chat/<session>/      mode 0700 (the name can never be a project's)
//!   config.json     what to connect to: server, name, identity file, channels
//!   .session.json   {"pid","port","token",…} mode 0600, while the process runs
//!   inbox.jsonl     one received frame per line, {"seq",…frame}
//!   session.log     the process's own JSON logs (never message content)
//!   .run.lock       held by the running process: one process per session
//!   .connect.lock   serialises chat_connect calls from several MCP processes
//! ```

pub mod api;
pub mod inbox;
pub mod session;

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::relay::protocol::AgentName;
use crate::{project, sys, util};

/// A session's name: an agent name (1–32 of `A–Z a–z 0–9 _ -`), so it is
/// always one safe path component. Built only through `parse`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionName(String);

impl SessionName {
    pub fn parse(s: &str) -> Result<SessionName, String> {
        match AgentName::parse(s) {
            Some(_) => Ok(SessionName(s.to_string())),
            None => Err(format!(
                "invalid session name {s:?}: use 1-32 characters of letters, digits, '_' and '-'"
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SessionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `$WORKBENCH_HOME/.chat`: a leading dot, so no project name can clash.
pub fn root() -> PathBuf {
    project::home().join(".chat")
}

/// One session's folder.
#[derive(Clone, Debug)]
pub struct SessionDir {
    pub name: SessionName,
    pub dir: PathBuf,
}

impl SessionDir {
    pub fn new(name: SessionName) -> SessionDir {
        let dir = root().join(name.as_str());
        SessionDir { name, dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub fn exists(&self) -> bool {
        self.path("config.json").is_file()
    }

    /// Creates the folder (and `.chat`) with mode 0700.
    pub fn create(&self) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
    }

    pub fn inbox(&self) -> PathBuf {
        self.path("inbox.jsonl")
    }

    pub fn info_file(&self) -> PathBuf {
        self.path(".session.json")
    }
}

/// What a session connects to; written by `chat_connect`, kept up to date
/// by the session (channels joined and created), read again on restart.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Config {
    /// Normalised `ws://` URL.
    pub server: String,
    /// The name to IDENTIFY with.
    pub name: String,
    /// Absolute path of the identity file, if keyed.
    pub identity: Option<PathBuf>,
    /// Channels to be in (re-joined after every reconnect).
    pub channels: Vec<String>,
    /// Channels this session created, with their invite-only flag, so a
    /// relay that forgot them (restarted without state) gets them back.
    #[serde(default)]
    pub created: Vec<(String, bool)>,
}

impl Config {
    pub fn load(dir: &SessionDir) -> Result<Config, String> {
        let path = dir.path("config.json");
        let bytes = fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} is not a valid session config: {e}", path.display()))
    }

    pub fn save(&self, dir: &SessionDir) -> io::Result<()> {
        let text = serde_json::to_string_pretty(self).expect("Config serialises");
        util::write_atomic(&dir.path("config.json"), text.as_bytes(), 0o600)
    }
}

/// `.session.json`: where the running process listens and the token that
/// lets a local process use it. Mode 0600: the token is the credential.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SessionInfo {
    pub pid: u32,
    pub port: u16,
    pub token: String,
    pub started: String,
    pub version: String,
}

impl SessionInfo {
    pub fn load(dir: &SessionDir) -> Result<Option<SessionInfo>, String> {
        let path = dir.info_file();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{} is not a valid session record: {e}", path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    pub fn save(&self, dir: &SessionDir) -> io::Result<()> {
        let text = serde_json::to_string_pretty(self).expect("SessionInfo serialises");
        util::write_atomic(&dir.info_file(), text.as_bytes(), 0o600)
    }
}

/// True when `pid` runs `workbench chat-session <name>` (checked via /proc).
pub fn is_our_session(pid: u32, name: &SessionName) -> bool {
    let Some(argv) = sys::process_cmdline(pid) else {
        return false;
    };
    let exe_ok = argv.first().is_some_and(|a| {
        a.rsplit('/')
            .next()
            .is_some_and(|b| b.starts_with("workbench"))
    });
    exe_ok
        && argv.get(1).map(String::as_str) == Some("chat-session")
        && argv.get(2).map(String::as_str) == Some(name.as_str())
}

/// What the folder and the process say together.
pub enum Status {
    /// No such session folder.
    Unknown,
    /// The folder exists but no process serves it (`why` says what we saw).
    Gone(String),
    /// Running and answering; `status` is its own status answer.
    Live(SessionInfo, Value),
}

/// Checks the record against the process (pid and command line must match,
/// so a reused pid is never mistaken for a session) and asks it for status.
pub fn status(dir: &SessionDir) -> Status {
    if !dir.exists() {
        return Status::Unknown;
    }
    let info = match SessionInfo::load(dir) {
        Ok(Some(i)) => i,
        Ok(None) => return Status::Gone("it was stopped, or never started".into()),
        Err(e) => return Status::Gone(e),
    };
    if !is_our_session(info.pid, &dir.name) {
        return Status::Gone(format!("its process (pid {}) has ended", info.pid));
    }
    match api::call(&info, &json!({"op": "status"}), Duration::from_secs(5)) {
        Ok(v) => Status::Live(info, v),
        Err(e) => Status::Gone(format!("its process does not answer ({e})")),
    }
}

/// Every session folder, sorted by name.
pub fn all_sessions() -> Vec<SessionDir> {
    let mut out: Vec<SessionDir> = fs::read_dir(root())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = SessionName::parse(e.file_name().to_str()?).ok()?;
            let d = SessionDir::new(name);
            d.exists().then_some(d)
        })
        .collect();
    out.sort_unstable_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
    out
}

/// One row of `workbench list`.
pub fn describe(dir: &SessionDir) -> Value {
    let cfg = Config::load(dir).ok();
    let server = cfg.as_ref().map(|c| c.server.clone());
    match status(dir) {
        Status::Live(info, s) => json!({
            "session": dir.name.as_str(), "server": server, "running": true, "pid": info.pid,
            "agent_id": s["agent_id"], "connected": s["connected"], "channels": s["channels"],
            "last_seq": s["last_seq"], "started": info.started,
        }),
        other => json!({
            "session": dir.name.as_str(), "server": server, "running": false, "pid": null,
            "agent_id": null, "connected": false,
            "channels": cfg.map(|c| c.channels).unwrap_or_default(),
            "why": match other { Status::Gone(why) => why, _ => "no such session".into() },
        }),
    }
}

/// Stops a session: through its API (it says goodbye to the relay), then
/// SIGTERM if that fails and the pid really is the session. A stale record
/// is removed. Returns whether a process was running.
pub fn stop(dir: &SessionDir) -> Result<bool, String> {
    let info = match SessionInfo::load(dir) {
        Ok(Some(i)) => i,
        Ok(None) => return Ok(false),
        Err(_) => {
            let _ = fs::remove_file(dir.info_file());
            return Ok(false);
        }
    };
    if !is_our_session(info.pid, &dir.name) {
        let _ = fs::remove_file(dir.info_file());
        return Ok(false);
    }
    if api::call(&info, &json!({"op": "stop"}), Duration::from_secs(5)).is_err() {
        sys::terminate(info.pid).map_err(|e| format!("cannot signal pid {}: {e}", info.pid))?;
    }
    if !sys::wait_pid_exit(info.pid, Duration::from_secs(5)) {
        return Err(format!("session pid {} did not exit within 5 s", info.pid));
    }
    remove_info_if_pid(dir, info.pid);
    Ok(true)
}

/// Removes `.session.json` only if it still names `pid`.
pub fn remove_info_if_pid(dir: &SessionDir, pid: u32) {
    if let Ok(Some(info)) = SessionInfo::load(dir) {
        if info.pid != pid {
            return;
        }
    }
    let _ = fs::remove_file(dir.info_file());
}

/// Makes an identity path absolute against the current directory, so the
/// detached session (whose working directory differs) finds the same file.
pub fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    std::env::current_dir()
        .map(|d| d.join(p))
        .unwrap_or_else(|_| p.to_path_buf())
}
