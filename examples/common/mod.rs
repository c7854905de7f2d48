//! What the benchmark programs in `examples/` share: percentiles, a field of
//! `/proc/PID/status`, and a `workbench mcp` child spoken to over its pipes.
//! Each example takes it with `#[path = "common/mod.rs"] mod common;` and
//! uses only part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{json, Value};

/// The `p` quantile (0.0–1.0) of `v`, nearest rank; sorts `v`.
pub fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// A number field of `/proc/PID/status` (`"VmRSS:"`, `"Threads:"`…); 0 if
/// the process is gone.
pub fn proc_field(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A `workbench mcp` child with its own WORKBENCH_HOME, its page servers on
/// loopback; killed on drop.
pub struct Mcp {
    pub child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
    id: u64,
}

impl Mcp {
    pub fn start(bin: &str, home: &Path) -> Mcp {
        let mut child = Command::new(bin)
            .arg("mcp")
            .env("WORKBENCH_HOME", home)
            .env("WORKBENCH_SERVE_HOST", "127.0.0.1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn workbench mcp");
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Mcp {
            child,
            stdin,
            out,
            id: 0,
        }
    }

    /// Writes one request line and returns the next line it answers, unparsed.
    pub fn raw_line(&mut self, line: &str) -> String {
        self.stdin.write_all(line.as_bytes()).unwrap();
        self.stdin.flush().unwrap();
        let mut reply = String::new();
        if self.out.read_line(&mut reply).unwrap() == 0 {
            panic!("workbench mcp closed its stdout");
        }
        reply
    }

    pub fn call_line(&mut self, line: &str) -> Value {
        serde_json::from_str(&self.raw_line(line)).unwrap()
    }

    /// Writes a request and returns its id; the answer is read with `answer`.
    pub fn send(&mut self, method: &str, params: Value) -> u64 {
        self.id += 1;
        let line = json!({"jsonrpc": "2.0", "id": self.id, "method": method, "params": params})
            .to_string()
            + "\n";
        self.stdin.write_all(line.as_bytes()).unwrap();
        self.stdin.flush().unwrap();
        self.id
    }

    /// The answer to request `id`, skipping notifications and other answers.
    pub fn answer(&mut self, id: u64) -> Value {
        loop {
            let mut line = String::new();
            if self.out.read_line(&mut line).unwrap() == 0 {
                panic!("workbench mcp closed its stdout");
            }
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["id"] == id {
                return v;
            }
        }
    }

    /// One request, its whole answer.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params);
        self.answer(id)
    }

    /// Starts a `tools/call`; `tool_result` reads it.
    pub fn send_tool(&mut self, tool: &str, args: Value) -> u64 {
        self.send("tools/call", json!({"name": tool, "arguments": args}))
    }

    /// The `structuredContent` of tool call `id`; panics if the tool failed.
    pub fn tool_result(&mut self, id: u64) -> Value {
        let v = self.answer(id);
        assert!(v["result"]["isError"] == false, "tool failed: {v}");
        v["result"]["structuredContent"].clone()
    }

    pub fn tool(&mut self, tool: &str, args: Value) -> Value {
        let id = self.send_tool(tool, args);
        self.tool_result(id)
    }
}

impl Drop for Mcp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
