//! Page server benchmark (run by scripts/bench_page.sh, not a test):
//! push latency from the HTTP request to every WebSocket viewer, against a
//! baseline of the same push with one viewer in the same run; 1000 viewers
//! held; idle CPU and RSS read from /proc. Loopback only, bounded.
//!
//! usage: bench_page <path-to-workbench-binary>

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;
use common::{pct, proc_field};
use serde_json::{json, Value};
use workbench::httpc;

struct Srv {
    child: std::process::Child,
    port: u16,
    token: String,
    home: std::path::PathBuf,
}

impl Drop for Srv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn start(bin: &str) -> Srv {
    let home = std::env::temp_dir().join(format!("wb-bench-page-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let mut child = Command::new(bin)
        .args(["serve", "bench", "--host", "127.0.0.1", "--port", "0"])
        .env("WORKBENCH_HOME", &home)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start workbench serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("bench/.server.json")).unwrap())
            .unwrap();
    Srv {
        port: info["port"].as_u64().unwrap() as u16,
        token: info["token"].as_str().unwrap().into(),
        child,
        home,
    }
}

/// utime + stime in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// Per push id, when a viewer read it.
type Arrivals = Arc<Mutex<Vec<(usize, Instant)>>>;

/// Connects `n` viewers; each records, per push id, when it arrived.
fn viewers(port: u16, n: usize, pushes: usize) -> (Vec<std::thread::JoinHandle<()>>, Arrivals) {
    let arrivals = Arc::new(Mutex::new(Vec::with_capacity(n * pushes)));
    let mut handles = Vec::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    for _ in 0..n {
        let arrivals = arrivals.clone();
        let ready = ready_tx.clone();
        handles.push(
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || {
                    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    let (mut ws, _) =
                        tungstenite::client(format!("ws://127.0.0.1:{port}/ws"), s).unwrap();
                    // HELLO and the full state come first.
                    for _ in 0..2 {
                        ws.read().unwrap();
                    }
                    ready.send(()).unwrap();
                    let mut got = 0;
                    while got < pushes {
                        let Ok(tungstenite::Message::Text(t)) = ws.read() else {
                            continue;
                        };
                        let at = Instant::now();
                        let v: Value = serde_json::from_str(t.as_str()).unwrap();
                        if let Some(id) = v["state"]["data"]["id"].as_u64() {
                            arrivals.lock().unwrap().push((id as usize, at));
                            got += 1;
                        }
                    }
                })
                .unwrap(),
        );
    }
    for _ in 0..n {
        ready_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("viewer connected");
    }
    (handles, arrivals)
}

/// Pushes `pushes` states of ~10 KiB to `n` viewers; returns per-delivery
/// latencies and per-push "last viewer" latencies, in ms.
fn push_latency(srv: &Srv, n: usize, pushes: usize) -> (Vec<f64>, Vec<f64>) {
    let (handles, arrivals) = viewers(srv.port, n, pushes);
    let addr = format!("127.0.0.1:{}", srv.port);
    let filler = "x".repeat(10 * 1024);
    let mut sent = Vec::with_capacity(pushes);
    for id in 0..pushes {
        let body = json!({"template": filler, "data": {"id": id}}).to_string();
        let t0 = Instant::now();
        let r = httpc::request(
            &addr,
            "POST",
            "/api/state",
            Some(&srv.token),
            Some(body.as_bytes()),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(r.status, 200);
        sent.push(t0);
        std::thread::sleep(Duration::from_millis(5));
    }
    for h in handles {
        h.join().unwrap();
    }
    let arr = arrivals.lock().unwrap();
    let per: Vec<f64> = arr
        .iter()
        .map(|(id, at)| at.duration_since(sent[*id]).as_secs_f64() * 1e3)
        .collect();
    let mut last = vec![0f64; pushes];
    for (id, at) in arr.iter() {
        last[*id] = last[*id].max(at.duration_since(sent[*id]).as_secs_f64() * 1e3);
    }
    (per, last)
}

fn main() {
    let bin = std::env::args()
        .nth(1)
        .expect("usage: bench_page <workbench binary>");
    let srv = start(&bin);
    let pid = srv.child.id();
    let addr = format!("127.0.0.1:{}", srv.port);
    println!("# page server benchmark ({bin}), loopback, medians of the distributions below");

    // Floor: an HTTP round trip that does no fan-out.
    let mut health: Vec<f64> = (0..300)
        .map(|_| {
            let t = Instant::now();
            httpc::request(&addr, "GET", "/health", None, None, Duration::from_secs(5)).unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let health_p50 = pct(&mut health, 0.5);
    println!("http GET /health round trip: p50 {health_p50:.3} ms");

    let rss_idle = proc_field(pid, "VmRSS:");
    let t0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(3));
    let idle_ticks = cpu_ticks(pid) - t0;
    println!("idle, no viewers: RSS {rss_idle} KiB, CPU ticks over 3 s: {idle_ticks}");

    let (mut base_per, mut base_last) = push_latency(&srv, 1, 200);
    let (b50, b99) = (pct(&mut base_per, 0.5), pct(&mut base_last, 0.99));
    println!("baseline: 10 KiB push to 1 viewer (200 pushes): p50 {b50:.3} ms, p99 {b99:.3} ms");
    let (mut per, mut last) = push_latency(&srv, 100, 200);
    let (p50, p99, l50, l99) = (
        pct(&mut per.clone(), 0.5),
        pct(&mut per, 0.99),
        pct(&mut last.clone(), 0.5),
        pct(&mut last, 0.99),
    );
    println!("10 KiB push to 100 viewers (200 pushes, 20000 deliveries): per-delivery p50 {p50:.3} ms, p99 {p99:.3} ms; last viewer per push p50 {l50:.3} ms, p99 {l99:.3} ms");
    println!("ratio p99(100 viewers) / p99(1 viewer): {:.2}x", p99 / b99);

    let (mut per1k, mut last1k) = push_latency(&srv, 1000, 20);
    let threads = proc_field(pid, "Threads:");
    let rss_1k = proc_field(pid, "VmRSS:");
    println!(
        "1000 viewers held: all 1000 got all 20 pushes; per-delivery p50 {:.3} ms, p99 {:.3} ms; last viewer p50 {:.3} ms; server RSS {rss_1k} KiB, threads {threads}",
        pct(&mut per1k, 0.5),
        pct(&mut per1k.clone(), 0.99),
        pct(&mut last1k, 0.5)
    );
    std::thread::sleep(Duration::from_secs(2));
    let t0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(3));
    println!(
        "idle again after viewers left: CPU ticks over 3 s: {}, RSS {} KiB",
        cpu_ticks(pid) - t0,
        proc_field(pid, "VmRSS:")
    );
}
