//! `workbench_state` round trips over `workbench mcp --http` (one kept-alive
//! connection) against the same call over stdio, interleaved in one run so
//! both see the same machine. Run by scripts/bench_mcp_http.sh; loopback only.
//!
//! usage: bench_mcp_http <path-to-workbench-binary> [rounds]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Instant;

#[path = "common/mod.rs"]
mod common;
use common::pct;
use serde_json::{json, Value};

struct Http {
    r: BufReader<TcpStream>,
    w: TcpStream,
    token: String,
    sid: String,
}

impl Http {
    fn post(&mut self, body: &str) -> (Vec<(String, String)>, Vec<u8>) {
        let mut req = format!(
            "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
            self.token,
            body.len()
        );
        if !self.sid.is_empty() {
            req.push_str(&format!(
                "Mcp-Session-Id: {}\r\nMCP-Protocol-Version: 2025-11-25\r\n",
                self.sid
            ));
        }
        req.push_str("\r\n");
        req.push_str(body);
        self.w.write_all(req.as_bytes()).unwrap();
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        let mut headers = Vec::new();
        loop {
            let mut l = String::new();
            self.r.read_line(&mut l).unwrap();
            let l = l.trim_end().to_string();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
        }
        let n: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .expect("a JSON answer");
        let mut b = vec![0; n];
        self.r.read_exact(&mut b).unwrap();
        (headers, b)
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let bin = args
        .next()
        .expect("usage: bench_mcp_http <workbench binary> [rounds]");
    let rounds: usize = args.next().map(|r| r.parse().unwrap()).unwrap_or(300);
    let home = std::env::temp_dir().join(format!("wb-bench-mcp-http-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let cmd = |args: &[&str]| {
        let mut c = Command::new(&bin);
        c.args(args)
            .env("WORKBENCH_HOME", &home)
            .env("WORKBENCH_HOST", "127.0.0.1")
            .env("WORKBENCH_SERVE_HOST", "127.0.0.1");
        c
    };
    // stdio
    let mut stdio = cmd(&["mcp"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut sin = stdio.stdin.take().unwrap();
    let mut sout = BufReader::new(stdio.stdout.take().unwrap());
    let mut id = 0u64;
    let mut stdio_call = |method: &str, params: Value| -> Value {
        id += 1;
        let line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
            .to_string()
            + "\n";
        sin.write_all(line.as_bytes()).unwrap();
        let mut reply = String::new();
        sout.read_line(&mut reply).unwrap();
        serde_json::from_str(&reply).unwrap()
    };
    stdio_call("initialize", json!({"protocolVersion": "2025-11-25"}));
    let s = stdio_call(
        "tools/call",
        json!({"name": "workbench_scaffold", "arguments": {"name": "bench"}}),
    );
    assert_eq!(s["result"]["isError"], false, "{s}");
    // http
    let mut server = cmd(&["mcp", "--http", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .trim()
        .trim_end_matches("/mcp")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let token = std::fs::read_to_string(home.join(".mcp-http-token"))
        .unwrap()
        .trim()
        .to_string();
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_nodelay(true).unwrap();
    let mut http = Http {
        w: sock.try_clone().unwrap(),
        r: BufReader::new(sock),
        token,
        sid: String::new(),
    };
    let (h, _) = http.post(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}).to_string());
    http.sid = h
        .iter()
        .find(|(k, _)| k == "mcp-session-id")
        .unwrap()
        .1
        .clone();

    let template = "<h2>Rail 1</h2><p>3.30 V</p>".repeat(10);
    let params =
        json!({"name": "workbench_state", "arguments": {"project": "bench", "template": template}});
    let body =
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": params}).to_string();
    let (mut over_stdio, mut over_http) = (Vec::new(), Vec::new());
    for i in 0..rounds + 20 {
        // Interleaved, so drift on the shared machine hits both alike.
        let t = Instant::now();
        let r = stdio_call("tools/call", params.clone());
        let a = t.elapsed().as_secs_f64() * 1e3;
        assert_eq!(r["result"]["isError"], false);
        let t = Instant::now();
        let (_, b) = http.post(&body);
        let h = t.elapsed().as_secs_f64() * 1e3;
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["result"]["isError"], false, "{v}");
        if i >= 20 {
            // The first 20 rounds warm both paths up.
            over_stdio.push(a);
            over_http.push(h);
        }
    }
    let (s50, h50) = (pct(&mut over_stdio, 0.5), pct(&mut over_http, 0.5));
    println!("# workbench_state round trip, {rounds} interleaved rounds each, medians (ms)");
    println!(
        "stdio (baseline):        p50 {s50:.3}  p95 {:.3}",
        pct(&mut over_stdio, 0.95)
    );
    println!(
        "HTTP, kept-alive:        p50 {h50:.3}  p95 {:.3}",
        pct(&mut over_http, 0.95)
    );
    println!(
        "ratio HTTP/stdio p50:    {:.2}x (target <= 1.5x)",
        h50 / s50
    );
    let _ = cmd(&["stop", "bench"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = stdio.kill();
    let _ = server.kill();
    let _ = stdio.wait();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&home);
}
