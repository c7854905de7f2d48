//! Shared helpers for the black-box tests: a temporary WORKBENCH_HOME, the
//! real `workbench` binary as a child process (killed on drop), HTTP and
//! WebSocket clients, and a watchdog so a hang fails fast.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::{Message, WebSocket};
use workbench::httpc;

pub const BIN: &str = env!("CARGO_BIN_EXE_workbench");

/// A fresh, empty home folder, removed when dropped.
pub struct TempHome {
    pub path: PathBuf,
}

impl TempHome {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "wb-test-{tag}-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            workbench::util::now_ms()
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempHome { path }
    }

    pub fn project(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

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
        // Stop any detached servers this test left behind, then clean up.
        if let Ok(entries) = std::fs::read_dir(&self.path) {
            for e in entries.flatten() {
                if let Ok(text) = std::fs::read_to_string(e.path().join(".server.json")) {
                    if let Some(pid) = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| v["pid"].as_u64())
                    {
                        let _ = workbench::sys::terminate(pid as u32);
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Kills the child on drop so a failed test never leaves a server running.
pub struct Proc {
    pub child: Child,
    pub stdout: Option<BufReader<ChildStdout>>,
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

/// A running `workbench serve` on 127.0.0.1 with a port chosen by the OS.
pub struct Server {
    pub proc: Proc,
    pub port: u16,
    pub token: String,
    pub info: Value,
    pub dir: PathBuf,
}

impl Server {
    pub fn start(home: &TempHome, name: &str, extra: &[&str]) -> Server {
        Self::start_on(home, name, 0, extra)
    }

    pub fn start_on(home: &TempHome, name: &str, port: u16, extra: &[&str]) -> Server {
        let mut child = home
            .cmd()
            .args([
                "serve",
                name,
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn workbench serve");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        // The server prints its URL once it listens and .server.json exists.
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(line.contains("serving"), "unexpected first line: {line:?}");
        let dir = home.project(name);
        let info: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(".server.json")).unwrap())
                .unwrap();
        Server {
            port: info["port"].as_u64().unwrap() as u16,
            token: info["token"].as_str().unwrap().to_string(),
            info,
            dir,
            proc: Proc {
                child,
                stdout: Some(stdout),
            },
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        http(&self.addr(), "GET", path, None, None)
    }

    pub fn get_auth(&self, path: &str) -> (u16, Value) {
        http(&self.addr(), "GET", path, Some(&self.token), None)
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        http(
            &self.addr(),
            "POST",
            path,
            Some(&self.token),
            Some(body.to_string().as_bytes()),
        )
    }

    pub fn post_raw(&self, path: &str, token: Option<&str>, body: &[u8]) -> (u16, Value) {
        http(&self.addr(), "POST", path, token, Some(body))
    }

    pub fn viewer(&self) -> Viewer {
        Viewer::connect(self.port)
    }

    pub fn health(&self) -> Value {
        let (s, v) = self.get("/health");
        assert_eq!(s, 200);
        v
    }
}

pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> (u16, Value) {
    let r = httpc::request(addr, method, path, token, body, Duration::from_secs(30))
        .expect("http request");
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

/// Sends raw bytes as an HTTP request and returns the status code.
pub fn raw_status(port: u16, request: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A WebSocket viewer of a page, reading with a timeout.
pub struct Viewer {
    pub ws: WebSocket<TcpStream>,
}

impl Viewer {
    pub fn connect(port: u16) -> Viewer {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let (ws, _) =
            tungstenite::client(format!("ws://127.0.0.1:{port}/ws"), stream).expect("ws handshake");
        Viewer { ws }
    }

    /// The next JSON text message (pings are skipped).
    pub fn next(&mut self) -> Value {
        loop {
            let read = match self.ws.read() {
                // A signal can interrupt a read with a timeout; just retry.
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                    continue
                }
                other => other,
            };
            match read.expect("viewer read") {
                Message::Text(t) => return serde_json::from_str(t.as_str()).expect("json message"),
                Message::Close(f) => panic!("viewer closed: {f:?}"),
                _ => continue,
            }
        }
    }

    /// Reads the connect preamble: HELLO, the full STATE, then `logs` replayed LOGs.
    pub fn preamble(&mut self, logs: usize) -> (Value, Vec<Value>) {
        assert_eq!(self.next()["type"], "HELLO");
        let state = self.next();
        assert_eq!(state["type"], "STATE");
        assert_eq!(state["full"], true);
        let replayed = (0..logs).map(|_| self.next()).collect();
        (state, replayed)
    }
}

/// Aborts the whole test process if the test runs past `limit`.
pub fn watchdog(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("watchdog: test exceeded {limit:?}");
        std::process::exit(101);
    });
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

/// `workbench mcp` driven over pipes exactly as an AI CLI does, with the
/// minimal environment such clients pass.
pub struct Mcp {
    pub proc: Proc,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
    next_id: i64,
    /// Notifications seen while waiting for responses.
    pub notifications: Vec<Value>,
}

impl Mcp {
    pub fn start(home: &TempHome) -> Mcp {
        let mut cmd = Command::new(BIN);
        cmd.arg("mcp")
            .env_clear()
            .env("HOME", &home.path)
            .env("PATH", "/usr/bin:/bin")
            .env("USER", "tester")
            .env("WORKBENCH_HOME", &home.path)
            .env("WORKBENCH_SERVE_HOST", "127.0.0.1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // Its own process group, so a test can signal the group as clients do.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().expect("spawn workbench mcp");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Mcp {
            proc: Proc {
                child,
                stdout: None,
            },
            stdin: Some(stdin),
            lines: rx,
            next_id: 0,
            notifications: Vec::new(),
        }
    }

    pub fn send_raw(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    pub fn send(&mut self, v: &Value) {
        self.send_raw(&format!("{v}\n"));
    }

    /// The next line on stdout, parsed; panics after `limit`.
    pub fn next_line(&mut self, limit: Duration) -> Value {
        let line = self
            .lines
            .recv_timeout(limit)
            .expect("an answer from workbench mcp in time");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {line}"))
    }

    /// Reads until the response with `id`, keeping notifications aside.
    pub fn response_to(&mut self, id: &Value, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self.next_line(left.max(Duration::from_millis(1)));
            if v.get("id") == Some(id) && v.get("method").is_none() {
                return v;
            }
            if v.get("method").is_some() {
                self.notifications.push(v);
            } else {
                panic!("unexpected message while waiting for {id}: {v}");
            }
        }
    }

    pub fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = Value::from(self.next_id);
        self.send(
            &serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        );
        self.response_to(&id, Duration::from_secs(60))
    }

    pub fn initialize(&mut self) -> Value {
        let r = self.request(
            "initialize",
            serde_json::json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}),
        );
        self.send(&serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        r
    }

    /// Calls a tool; returns (isError, structuredContent or the text).
    pub fn call(&mut self, tool: &str, args: Value) -> (bool, Value) {
        let r = self.request(
            "tools/call",
            serde_json::json!({"name": tool, "arguments": args}),
        );
        let result = &r["result"];
        assert!(result.is_object(), "tools/call answered with an error: {r}");
        let is_error = result["isError"] == true;
        let text = result["content"][0]["text"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if is_error {
            (true, Value::String(text))
        } else {
            // Both forms carry the same JSON.
            assert_eq!(
                serde_json::from_str::<Value>(&text).unwrap(),
                result["structuredContent"]
            );
            (false, result["structuredContent"].clone())
        }
    }

    pub fn ok(&mut self, tool: &str, args: Value) -> Value {
        let (err, v) = self.call(tool, args);
        assert!(!err, "{tool} failed: {v}");
        v
    }

    pub fn close_stdin_and_wait(&mut self) -> Option<i32> {
        self.stdin = None;
        self.proc.wait_exit(Duration::from_secs(10))
    }
}

/// Reads `.server.json` of a project.
pub fn server_info(home: &TempHome, name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(home.project(name).join(".server.json")).unwrap())
        .unwrap()
}

/// Counts live `workbench serve <name>` processes that use this test's home
/// (read from /proc, so parallel tests never see each other's servers).
pub fn count_servers(home: &TempHome, name: &str) -> usize {
    let want_env = format!("WORKBENCH_HOME={}", home.path.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            let argv = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let argv: Vec<&[u8]> = argv.split(|b| *b == 0).collect();
            let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
            argv.len() >= 3
                && argv[1] == b"serve"
                && argv[2] == name.as_bytes()
                && env.split(|b| *b == 0).any(|kv| kv == want_env.as_bytes())
        })
        .count()
}
