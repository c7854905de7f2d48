//! MCP server benchmark (run by scripts/bench_mcp.sh, not a test): spawn →
//! `initialize` answered, and `workbench_state` round trips, each against a
//! baseline measured in the same run (spawning `workbench --version`; the
//! same push as a direct HTTP call). Loopback only, bounded.
//!
//! usage: bench_mcp <path-to-workbench-binary>

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use workbench::httpc;

#[path = "common/mod.rs"]
mod common;
use common::{pct, proc_field, Mcp};

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
    let (b, i) = (pct(&mut base, 0.5), pct(&mut init, 0.5));
    println!("baseline: spawn `workbench --version` to exit: median {b:.3} ms ({runs} runs)");
    println!("spawn `workbench mcp` to initialize answered: median {i:.3} ms, p95 {:.3} ms; ratio to baseline {:.2}x", pct(&mut init, 0.95), i / b);

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
    let added = pct(&mut added, 0.5);
    let (d, v) = (pct(&mut direct, 0.5), pct(&mut via_mcp, 0.5));
    println!(
        "baseline: the same push as a direct POST /api/state on a kept-alive connection: p50 {d:.3} ms, p95 {:.3} ms ({n} calls, interleaved)",
        pct(&mut direct, 0.95)
    );
    println!(
        "workbench_state over MCP stdio: p50 {v:.3} ms, p95 {:.3} ms; ratio to baseline {:.2}x",
        pct(&mut via_mcp, 0.95),
        v / d
    );
    println!(
        "added by the MCP hop, median of call-by-call differences: {:.3} ms",
        added
    );
    println!(
        "tools/list over MCP stdio: p50 {:.3} ms, p95 {:.3} ms",
        pct(&mut list, 0.5),
        pct(&mut list, 0.95)
    );
    println!(
        "(older baseline) direct POST /api/state on a new connection each: p50 {:.3} ms",
        pct(&mut fresh, 0.5)
    );
    println!(
        "workbench mcp RSS after {n} calls: {} KiB",
        proc_field(m.child.id(), "VmRSS:")
    );
    m.call(
        "tools/call",
        json!({"name": "workbench_stop", "arguments": {"project": "bench"}}),
    );
    drop(m);
    let _ = std::fs::remove_dir_all(&home);
}
