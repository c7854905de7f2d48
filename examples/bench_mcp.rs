//! MCP server benchmark (run by scripts/bench_mcp.sh, not a test): spawn →
//! `initialize` answered, and `workbench_state` round trips, each against a
//! baseline measured in the same run (spawning `workbench --version`; the
//! same push as a direct HTTP call). Loopback only, bounded.
//!
//! usage: bench_mcp <path-to-workbench-binary>

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use workbench::httpc;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn p95(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * 0.95).round() as usize]
}

struct Mcp {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    out: BufReader<std::process::ChildStdout>,
    id: u64,
}

impl Mcp {
    fn start(bin: &str, home: &std::path::Path) -> Mcp {
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

    /// Writes one request line and returns the reply line, unparsed.
    fn raw_line(&mut self, line: &str) -> String {
        self.stdin.write_all(line.as_bytes()).unwrap();
        self.stdin.flush().unwrap();
        let mut reply = String::new();
        self.out.read_line(&mut reply).unwrap();
        reply
    }

    fn call_line(&mut self, line: &str) -> Value {
        serde_json::from_str(&self.raw_line(line)).unwrap()
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        self.id += 1;
        let line = json!({"jsonrpc": "2.0", "id": self.id, "method": method, "params": params})
            .to_string()
            + "\n";
        self.stdin.write_all(line.as_bytes()).unwrap();
        self.stdin.flush().unwrap();
        let mut reply = String::new();
        self.out.read_line(&mut reply).unwrap();
        serde_json::from_str(&reply).unwrap()
    }
}

impl Drop for Mcp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let bin = std::env::args()
        .nth(1)
        .expect("usage: bench_mcp <workbench binary>");
    let home = std::env::temp_dir().join(format!("wb-bench-mcp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    println!("# MCP benchmark ({bin}), medians");

    let runs = 40;
    let mut base: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let st = Command::new(&bin)
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success());
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let mut init: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let mut m = Mcp::start(&bin, &home);
            let r = m.call("initialize", json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}));
            assert!(r["result"]["protocolVersion"].is_string());
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let (b, i) = (median(&mut base), median(&mut init));
    println!("baseline: spawn `workbench --version` to exit: median {b:.3} ms ({runs} runs)");
    println!("spawn `workbench mcp` to initialize answered: median {i:.3} ms, p95 {:.3} ms; ratio to baseline {:.2}x", p95(&mut init), i / b);

    let mut m = Mcp::start(&bin, &home);
    m.call("initialize", json!({"protocolVersion": "2025-06-18"}));
    let s = m.call(
        "tools/call",
        json!({"name": "workbench_scaffold", "arguments": {"name": "bench"}}),
    );
    assert_eq!(s["result"]["isError"], false, "{s}");
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("bench/.server.json")).unwrap())
            .unwrap();
    let addr = format!("127.0.0.1:{}", info["port"]);
    let token = info["token"].as_str().unwrap().to_string();
    let template = "<h2>Rail 1</h2><p>3.30 V</p>".repeat(10);
    let n = 400;
    let body = json!({"template": template}).to_string();
    let state_line = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "workbench_state", "arguments": {"project": "bench", "template": template}}})
    .to_string()
        + "\n";
    let list_line = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string() + "\n";
    // The baseline: the same push as a direct POST /api/state on one
    // kept-alive connection, as a client in-process with the page would.
    let mut conn = httpc::Conn::open(&addr, Duration::from_secs(5)).unwrap();
    let mut direct_once = || {
        let t = Instant::now();
        let r = conn
            .request(
                "POST",
                "/api/state",
                Some(&token),
                Some(body.as_bytes()),
                Duration::from_secs(5),
            )
            .unwrap();
        let el = t.elapsed().as_secs_f64() * 1e3;
        assert_eq!(r.status, 200);
        el
    };
    // Warm up both paths (the MCP side opens its kept connection here).
    for _ in 0..50 {
        direct_once();
        let r = m.call_line(&state_line);
        assert_eq!(r["result"]["isError"], false, "{r}");
    }
    // Interleaved, so both see the same machine.
    let mut direct = Vec::with_capacity(n);
    let mut via_mcp = Vec::with_capacity(n);
    for _ in 0..n {
        direct.push(direct_once());
        let t = Instant::now();
        let reply = m.raw_line(&state_line);
        via_mcp.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(reply.contains("\"isError\":false"), "{reply}");
    }
    let mut list: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            let reply = m.raw_line(&list_line);
            let el = t.elapsed().as_secs_f64() * 1e3;
            assert!(reply.contains("workbench_state"));
            el
        })
        .collect();
    // For comparison with older rows: a new connection per request.
    let mut fresh: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            let r = httpc::request(
                &addr,
                "POST",
                "/api/state",
                Some(&token),
                Some(body.as_bytes()),
                Duration::from_secs(5),
            )
            .unwrap();
            assert_eq!(r.status, 200);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    // Paired call by call: what the MCP hop adds, less sensitive to load
    // swings than the two medians apart.
    let mut added: Vec<f64> = direct.iter().zip(&via_mcp).map(|(d, v)| v - d).collect();
    let added = median(&mut added);
    let (d, v) = (median(&mut direct), median(&mut via_mcp));
    println!(
        "baseline: the same push as a direct POST /api/state on a kept-alive connection: p50 {d:.3} ms, p95 {:.3} ms ({n} calls, interleaved)",
        p95(&mut direct)
    );
    println!(
        "workbench_state over MCP stdio: p50 {v:.3} ms, p95 {:.3} ms; ratio to baseline {:.2}x",
        p95(&mut via_mcp),
        v / d
    );
    println!(
        "added by the MCP hop, median of call-by-call differences: {:.3} ms",
        added
    );
    println!(
        "tools/list over MCP stdio: p50 {:.3} ms, p95 {:.3} ms",
        median(&mut list),
        p95(&mut list)
    );
    println!(
        "(older baseline) direct POST /api/state on a new connection each: p50 {:.3} ms",
        median(&mut fresh)
    );
    println!(
        "workbench mcp RSS after {n} calls: {} KiB",
        rss_kib(m.child.id())
    );
    m.call(
        "tools/call",
        json!({"name": "workbench_stop", "arguments": {"project": "bench"}}),
    );
    drop(m);
    let _ = std::fs::remove_dir_all(&home);
}
