//! Relay chat over MCP benchmark (run by scripts/bench_chat.sh, not a
//! test). Two `workbench mcp` processes, agents A and B, each with its own
//! chat session on one `workbench relay`, all on loopback:
//!
//! * latency: from writing `chat_send` on A's stdin to B's already pending
//!   `chat_wait` answer arriving on B's stdout; baseline in the same run:
//!   the same message between two bare WebSocket clients of the relay;
//! * idle: each session process's CPU over a quiet window and its RSS;
//!   baseline: an idle `workbench relay` with no client.
//!
//! usage: bench_chat <path-to-workbench-binary> [rounds]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "common/mod.rs"]
mod common;
use common::{pct, proc_field, Mcp};

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
}

struct Ws(tungstenite::WebSocket<TcpStream>);

impl Ws {
    fn connect(port: u16, name: &str) -> Ws {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (ws, _) = tungstenite::client(format!("ws://127.0.0.1:{port}/"), s).unwrap();
        let mut w = Ws(ws);
        w.send(json!({"type": "IDENTIFY", "name": name}));
        w.until("WELCOME");
        w.send(json!({"type": "JOIN", "channel": "#general"}));
        w.until("JOINED");
        w
    }
    fn send(&mut self, v: Value) {
        self.0
            .send(tungstenite::Message::text(v.to_string()))
            .unwrap();
    }
    fn until(&mut self, kind: &str) -> Value {
        loop {
            if let tungstenite::Message::Text(t) = self.0.read().unwrap() {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == kind {
                    return v;
                }
            }
        }
    }
}

fn main() {
    let mut argv = std::env::args().skip(1);
    let bin = argv
        .next()
        .expect("usage: bench_chat <workbench binary> [rounds]");
    let rounds: usize = argv.next().and_then(|n| n.parse().ok()).unwrap_or(300);
    let home = std::env::temp_dir().join(format!("wb-bench-chat-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();

    // A relay whose rate limit never throttles the benchmark.
    let mut relay = Command::new(&bin)
        .args(["relay", "--ephemeral", "--host", "127.0.0.1", "--port", "0"])
        .args(["--rate-burst", "1000000", "--rate-per-sec", "1000000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(relay.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let port = serde_json::from_str::<Value>(&first).unwrap()["port"]
        .as_u64()
        .unwrap() as u16;
    let url = format!("ws://127.0.0.1:{port}");
    std::thread::sleep(Duration::from_millis(300));
    let relay_idle_rss = proc_field(relay.id(), "VmRSS:");

    // Baseline: two bare WebSocket clients, sender → receiver.
    let mut x = Ws::connect(port, "x");
    let mut y = Ws::connect(port, "y");
    let mut base = Vec::new();
    for i in 0..rounds {
        let t0 = Instant::now();
        x.send(json!({"type": "MSG", "to": "#general", "content": format!("b{i}")}));
        y.until("MSG");
        base.push(t0.elapsed().as_secs_f64() * 1000.0);
        x.until("MSG");
    }
    drop((x, y));

    let mut a = Mcp::start(&bin, &home);
    let mut b = Mcp::start(&bin, &home);
    for m in [&mut a, &mut b] {
        m.call(
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}),
        );
    }
    a.tool(
        "chat_connect",
        json!({"server": url, "name": "benchA", "channels": ["#general"]}),
    );
    let cb = b.tool(
        "chat_connect",
        json!({"server": url, "name": "benchB", "channels": ["#general"]}),
    );
    let mut cursor = cb["last_seq"].as_u64().unwrap();

    let mut lat = Vec::new();
    for i in 0..rounds {
        let wait = b.send_tool(
            "chat_wait",
            json!({"session": "benchB", "since": cursor, "timeout_seconds": 20}),
        );
        // Let the wait reach the session and block there.
        std::thread::sleep(Duration::from_millis(5));
        let t0 = Instant::now();
        let send = a.send_tool(
            "chat_send",
            json!({"session": "benchA", "to": "#general", "content": format!("m{i}")}),
        );
        let r = b.tool_result(wait);
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(r["status"], "messages");
        assert_eq!(r["messages"][0]["content"], format!("m{i}"));
        cursor = r["cursor"].as_u64().unwrap();
        a.tool_result(send);
    }

    // Idle: both sessions, nothing happening.
    let pids: Vec<u32> = ["benchA", "benchB"]
        .iter()
        .map(|s| {
            let text =
                std::fs::read_to_string(home.join(".chat").join(s).join(".session.json")).unwrap();
            serde_json::from_str::<Value>(&text).unwrap()["pid"]
                .as_u64()
                .unwrap() as u32
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    let quiet = Duration::from_secs(20);
    std::thread::sleep(quiet);
    let after: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();

    let (p50, p90, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.9), pct(&mut lat, 0.99));
    let b50 = pct(&mut base, 0.5);
    println!("rounds: {rounds}");
    println!(
        "chat_send on A's pipe -> B's pending chat_wait answered: p50 {p50:.3} ms, p90 {p90:.3} ms, p99 {p99:.3} ms"
    );
    println!(
        "baseline, bare relay clients sender -> receiver: p50 {b50:.3} ms, p99 {:.3} ms; ratio p50 {:.1}x",
        pct(&mut base, 0.99),
        p50 / b50
    );
    for (i, pid) in pids.iter().enumerate() {
        println!(
            "session {}: idle CPU {} ticks in {} s; RSS {} KiB (peak {} KiB), threads {}",
            ["A", "B"][i],
            after[i] - before[i],
            quiet.as_secs(),
            proc_field(*pid, "VmRSS:"),
            proc_field(*pid, "VmHWM:"),
            proc_field(*pid, "Threads:"),
        );
    }
    println!("baseline, idle relay with no client: RSS {relay_idle_rss} KiB");

    for s in ["benchA", "benchB"] {
        a.tool("chat_disconnect", json!({"session": s}));
    }
    drop((a, b));
    let _ = relay.kill();
    let _ = relay.wait();
    let _ = std::fs::remove_dir_all(&home);
}
