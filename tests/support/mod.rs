//! Shared helpers for the black-box tests, one copy each: the real binary
//! (`BIN`), a temporary home removed on drop, child processes killed on drop,
//! a watchdog disarmed on drop, command runs with a time limit and their
//! output as text, and the clients of each boundary: HTTP and the page's
//! WebSocket ([`page`]), `workbench mcp` over pipes ([`mcp`]), and the relay
//! ([`relay`]), and a real redis-server with relay cluster nodes on it
//! ([`redis_server`]). Every read has a timeout, so a hang fails fast.
//!
//! Each test file uses only part of this, hence the `allow`s.
#![allow(dead_code, unused_imports)]

pub mod certs;
pub mod keys;
pub mod mcp;
pub mod page;
pub mod redis_server;
pub mod relay;

pub use certs::*;
pub use keys::*;
pub use mcp::*;
pub use page::*;
pub use redis_server::*;
pub use relay::*;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_workbench");
/// Files written by other implementations (see scripts/identity_vectors.sh).
pub const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors");

/// Aborts the whole test process if the test that armed it outlives its
/// limit; dropping it (at the end of the test) disarms it.
#[must_use = "the watchdog is disarmed when dropped: bind it with `let _w = …`"]
pub struct Watchdog(Option<mpsc::Sender<()>>);

pub fn watchdog(limit: Duration) -> Watchdog {
    let (tx, rx) = mpsc::channel::<()>();
    let name = std::thread::current().name().unwrap_or("test").to_string();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
            eprintln!("watchdog: {name} still running after {limit:?}; aborting");
            std::process::exit(101);
        }
    });
    Watchdog(Some(tx))
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// A fresh, empty folder (used as HOME and WORKBENCH_HOME), removed when
/// dropped, after stopping any server a `.server.json` directly under it
/// names.
pub struct TempHome {
    pub path: PathBuf,
}

impl TempHome {
    /// A new identity file (mode 0600) made by `workbench identity
    /// --generate`, and the agent id (`@…`) it gives on a relay.
    pub fn identity(&self, name: &str) -> (PathBuf, String) {
        let file = self.path.join(format!("{name}.json"));
        let out = self
            .cmd()
            .args(["identity", "--generate", "--name", name, "--file"])
            .arg(&file)
            .output()
            .expect("run workbench identity");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&file).expect("read the identity file");
        let v: Value = serde_json::from_str(&text).expect("identity JSON");
        let pubkey = v["pubkey"].as_str().expect("pubkey");
        (
            file,
            format!("@{}", workbench::relay::identity::agent_id(pubkey)),
        )
    }

    pub fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "wb-test-{tag}-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            workbench::util::now_ms()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempHome { path }
    }

    pub fn project(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// The binary with HOME and WORKBENCH_HOME set to this folder.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("WORKBENCH_HOME", &self.path)
            .env("HOME", &self.path)
            .env_remove("WORKBENCH_HOST");
        c
    }
}

impl Drop for TempHome {
    fn drop(&mut self) {
        // Stop any detached servers and chat sessions this test left
        // behind, then clean up.
        let servers = std::fs::read_dir(&self.path)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join(".server.json"));
        let sessions = std::fs::read_dir(self.path.join(".chat"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join(".session.json"));
        let records: Vec<PathBuf> = servers.chain(sessions).collect();
        for record in records {
            if let Ok(text) = std::fs::read_to_string(record) {
                if let Some(pid) = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["pid"].as_u64())
                {
                    // Wait for it to finish, so it writes nothing (its
                    // session end, a restored record) into a folder
                    // being removed.
                    if workbench::sys::terminate(pid as u32).is_ok() {
                        workbench::sys::wait_pid_exit(pid as u32, Duration::from_secs(5));
                    }
                }
            }
        }
        if std::fs::remove_dir_all(&self.path).is_err() {
            // A test made something read-only: undo that, then remove.
            make_writable(&self.path);
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn make_writable(dir: &Path) {
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                make_writable(&e.path());
            }
        }
    }
}

/// Kills the child on drop so a failed test never leaves a server running.
pub struct Proc {
    pub child: Child,
    pub stdout: Option<std::io::BufReader<ChildStdout>>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit (bounded) and returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: &str) {
        Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` to the end with stdin closed and its output captured; kills
/// it and fails the test if it is still running after `limit`.
pub fn run(cmd: &mut Command, limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn workbench");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for workbench"),
        Err(_) => {
            // SAFETY: kill(2) on our own child, which has not been reaped.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("{cmd:?} did not finish within {limit:?}");
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Makes a child die if the test thread that spawned it dies.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}

pub fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// Waits (bounded) until `f` holds; for state owned by another process.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}
