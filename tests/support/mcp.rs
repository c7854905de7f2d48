//! `workbench mcp` driven over pipes exactly as an AI CLI does, and what a
//! test reads of the project servers it starts.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Proc, TempHome, BIN};

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
        Self::start_env(home, &[])
    }

    /// Like `start`, with extra environment variables (the servers it
    /// starts inherit them).
    pub fn start_env(home: &TempHome, env: &[(&str, &str)]) -> Mcp {
        let mut cmd = Command::new(BIN);
        cmd.arg("mcp")
            .env_clear()
            .envs(env.iter().copied())
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

    /// The next line on stdout as sent (for checks on the exact text).
    pub fn next_raw_line(&mut self, limit: Duration) -> String {
        self.lines
            .recv_timeout(limit)
            .expect("an answer from workbench mcp in time")
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
