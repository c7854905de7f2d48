//! Load client for scripts/bench_relay.sh: the issue 13 relay scenarios
//! against one relay (ours or the Node `ws` baseline), one blocking reader
//! thread per agent so the client is not the bottleneck. Prints one JSON
//! object. Loopback only; every wait is bounded.
//!
//! usage: cargo run --release --example relay_load -- --url ws://127.0.0.1:PORT
//!        --pid RELAY_PID [--only all|empty,fanout,sustained,idle] [--reps 3]
//!        [--fanout 10,100,500] [--messages 100] [--sustain-agents 200]
//!        [--sustain-secs 10] [--idle 5000]
//!
//! * fan-out: one sender, N receivers (the sender included) in `#general`,
//!   closed loop (the next message once all N have the last). Latency is
//!   taken per delivery and, per message, for its last receiver.
//! * sustained: N agents in `#agents`, each sending one message per 1.1 s,
//!   staggered; counts deliveries and the relay's CPU (utime+stime).
//! * idle: `--idle` identified connections held; the relay's RSS growth.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};
use workbench::relay::client::Client;
use workbench::relay::frame::{FrameReader, Incoming, SharedStream};

/// /proc CPU times are in clock ticks: 100 per second on Linux.
const TICK_MS: u64 = 10;
/// The longest any one step may wait before the run is declared broken.
const STEP_LIMIT: Duration = Duration::from_secs(20);

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Args {
    url: String,
    pid: u32,
    only: String,
    reps: usize,
    fanout: Vec<usize>,
    messages: usize,
    sustain_agents: usize,
    sustain_secs: f64,
    idle: usize,
}

fn args() -> Res<Args> {
    let mut a = pico_args::Arguments::from_env();
    let fanout: String = a
        .opt_value_from_str("--fanout")?
        .unwrap_or("10,100,500".into());
    let out = Args {
        url: a.value_from_str("--url")?,
        pid: a.value_from_str("--pid")?,
        only: a.opt_value_from_str("--only")?.unwrap_or("all".into()),
        reps: a.opt_value_from_str("--reps")?.unwrap_or(3),
        fanout: fanout
            .split(',')
            .map(|s| s.trim().parse())
            .collect::<Result<_, _>>()?,
        messages: a.opt_value_from_str("--messages")?.unwrap_or(100),
        sustain_agents: a.opt_value_from_str("--sustain-agents")?.unwrap_or(200),
        sustain_secs: a.opt_value_from_str("--sustain-secs")?.unwrap_or(10.0),
        idle: a.opt_value_from_str("--idle")?.unwrap_or(5000),
    };
    let rest = a.finish();
    if !rest.is_empty() {
        return Err(format!("unexpected arguments: {rest:?}").into());
    }
    Ok(out)
}

fn proc_field(pid: u32, file: &str) -> Res<String> {
    Ok(std::fs::read_to_string(format!("/proc/{pid}/{file}"))?)
}

/// The relay's utime+stime in ms.
fn cpu_ms(pid: u32) -> Res<u64> {
    let stat = proc_field(pid, "stat")?;
    let rest = stat.rsplit_once(") ").ok_or("bad stat")?.1;
    let f: Vec<&str> = rest.split(' ').collect();
    Ok((f[11].parse::<u64>()? + f[12].parse::<u64>()?) * TICK_MS)
}

fn rss_kb(pid: u32) -> Res<u64> {
    let status = proc_field(pid, "status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad VmRSS")?.parse()?)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((p / 100.0 * sorted.len() as f64) as usize).min(sorted.len() - 1)]
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Connected, identified agents, set up `batch` at a time in parallel.
fn agents(url: &str, n: usize, name: &str) -> Res<Vec<Client>> {
    let mut out = Vec::with_capacity(n);
    let batch = 50;
    for start in (0..n).step_by(batch) {
        let handles: Vec<_> = (start..(start + batch).min(n))
            .map(|i| {
                let url = url.to_string();
                let name = format!("{name}{i}");
                thread::spawn(move || -> Result<Client, String> {
                    let mut c = Client::connect(&url).map_err(|e| e.to_string())?;
                    c.set_timeout(Some(STEP_LIMIT));
                    c.identify(&name, None).map_err(|e| e.to_string())?;
                    Ok(c)
                })
            })
            .collect();
        for h in handles {
            out.push(h.join().map_err(|_| "setup thread panicked")??);
        }
    }
    Ok(out)
}

fn join_all(agents: &mut [Client], channel: &str) -> Res<()> {
    for a in agents.iter_mut() {
        a.send(&json!({"type": "JOIN", "channel": channel}))
            .map_err(|e| e.to_string())?;
        while a.recv().map_err(|e| e.to_string())?["type"] != "JOINED" {}
        a.set_timeout(None);
    }
    Ok(())
}

/// One agent's read half on its own thread: calls `on_text` for each text
/// frame until the socket ends.
fn spawn_reader(
    mut r: FrameReader<SharedStream>,
    mut on_text: impl FnMut(&str) + Send + 'static,
) -> io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("load-reader".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            while let Ok(m) = r.next() {
                if let Incoming::Text(t) = m {
                    on_text(&t);
                }
            }
        })
}

/// The number after `"content":"<tag>` in a live (not replayed) MSG.
fn tagged(t: &str, tag: &str) -> Option<u64> {
    if !t.contains(r#""type":"MSG""#) || t.contains(r#""replay":true"#) {
        return None;
    }
    let key = format!(r#""content":"{tag}"#);
    let rest = &t[t.find(&key)? + key.len()..];
    rest[..rest.find(|c: char| !c.is_ascii_digit())?]
        .parse()
        .ok()
}

fn close_all(writers: &[WebSocket<SharedStream>], readers: Vec<thread::JoinHandle<()>>) {
    for w in writers {
        w.get_ref().shutdown();
    }
    for r in readers {
        let _ = r.join();
    }
}

fn fanout(a: &Args, n: usize, rep: usize) -> Res<Value> {
    let tag = format!("F{n}r{rep}:");
    let mut clients = agents(&a.url, n, &format!("fan{n}r{rep}-"))?;
    join_all(&mut clients, "#general")?;
    let (tx, rx) = mpsc::channel::<(u64, Instant)>();
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for c in clients {
        let (r, w) = c.split();
        let tx = tx.clone();
        let tag = tag.clone();
        readers.push(spawn_reader(r, move |t| {
            if let Some(i) = tagged(t, &tag) {
                let _ = tx.send((i, Instant::now()));
            }
        })?);
        writers.push(w);
    }
    drop(tx);
    // Let the joins' AGENT_JOINED notices drain first.
    thread::sleep(Duration::from_millis(300));
    let mut per_delivery = Vec::with_capacity(n * a.messages);
    let mut last = Vec::with_capacity(a.messages);
    for i in 0..a.messages as u64 {
        let t0 = Instant::now();
        let content = format!("{tag}{i}:x");
        writers[0].send(Message::text(
            json!({"type": "MSG", "to": "#general", "content": content}).to_string(),
        ))?;
        let mut got = 0;
        let mut worst: f64 = 0.0;
        while got < n {
            let (j, at) = rx.recv_timeout(STEP_LIMIT)?;
            if j == i {
                let ms = at.duration_since(t0).as_secs_f64() * 1e3;
                per_delivery.push(ms);
                worst = worst.max(ms);
                got += 1;
            }
        }
        last.push(worst);
    }
    close_all(&writers, readers);
    per_delivery.sort_by(f64::total_cmp);
    last.sort_by(f64::total_cmp);
    Ok(json!({
        "p50": pct(&per_delivery, 50.0), "p99": pct(&per_delivery, 99.0),
        "last_p50": pct(&last, 50.0), "last_p99": pct(&last, 99.0),
        "deliveries": per_delivery.len(),
    }))
}

fn sustained(a: &Args) -> Res<Value> {
    let n = a.sustain_agents;
    let tag = "S";
    let mut clients = agents(&a.url, n, "sus")?;
    join_all(&mut clients, "#agents")?;
    let delivered = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for c in clients {
        let (r, w) = c.split();
        let (delivered, bytes, expected, done) = (
            delivered.clone(),
            bytes.clone(),
            expected.clone(),
            done_tx.clone(),
        );
        readers.push(spawn_reader(r, move |t| {
            if tagged(t, tag).is_some() {
                // Payload plus the 2-byte header (these frames are < 126 B)
                // or 4-byte header, as the relay framed it.
                let head = if t.len() < 126 { 2 } else { 4 };
                bytes.fetch_add((t.len() + head) as u64, Ordering::Relaxed);
                let now = delivered.fetch_add(1, Ordering::Relaxed) + 1;
                if now == expected.load(Ordering::Relaxed) {
                    let _ = done.send(());
                }
            }
        })?);
        writers.push(w);
    }
    drop(done_tx);
    thread::sleep(Duration::from_millis(500));
    let cpu0 = cpu_ms(a.pid)?;
    let t0 = Instant::now();
    // Agent j % n sends at t0 + j * 1.1 s / n: each agent once per 1.1 s.
    let step = Duration::from_secs_f64(1.1 / n as f64);
    let limit = Duration::from_secs_f64(a.sustain_secs);
    let mut sent: u64 = 0;
    loop {
        let at = step * sent as u32;
        if at >= limit {
            break;
        }
        if let Some(wait) = at.checked_sub(t0.elapsed()) {
            thread::sleep(wait);
        }
        let content = format!("{tag}{sent}-{}", sent as usize % n);
        writers[sent as usize % n].send(Message::text(
            json!({"type": "MSG", "to": "#agents", "content": content}).to_string(),
        ))?;
        sent += 1;
    }
    let want = sent * n as u64;
    expected.store(want, Ordering::Relaxed);
    if delivered.load(Ordering::Relaxed) < want {
        let _ = done_rx.recv_timeout(Duration::from_secs(10));
    }
    let cpu = cpu_ms(a.pid)? - cpu0;
    let got = delivered.load(Ordering::Relaxed);
    let frame_bytes = bytes.load(Ordering::Relaxed) as f64 / got.max(1) as f64;
    close_all(&writers, readers);
    Ok(json!({
        "agents": n, "sent": sent, "expected": want, "delivered": got,
        "relay_cpu_ms": cpu, "cpu_us_per_delivery": cpu as f64 * 1000.0 / got.max(1) as f64,
        "frame_bytes": frame_bytes, "secs": a.sustain_secs,
    }))
}

fn idle(a: &Args) -> Res<Value> {
    thread::sleep(Duration::from_millis(500));
    let rss0 = rss_kb(a.pid)?;
    let held = agents(&a.url, a.idle, "idle")?;
    thread::sleep(Duration::from_secs(1));
    let rss1 = rss_kb(a.pid)?;
    let cpu0 = cpu_ms(a.pid)?;
    thread::sleep(Duration::from_secs(5));
    let idle_cpu = cpu_ms(a.pid)? - cpu0;
    drop(held);
    thread::sleep(Duration::from_millis(500));
    Ok(json!({
        "connections": a.idle, "rss_before_kb": rss0, "rss_after_kb": rss1,
        "rss_per_conn_kb": (rss1 as f64 - rss0 as f64) / a.idle as f64,
        "idle_cpu_ms_5s_with_conns": idle_cpu,
    }))
}

fn run(a: &Args) -> Res<Value> {
    let has = |what: &str| a.only == "all" || a.only.split(',').any(|s| s == what);
    let mut out = json!({"url": a.url});
    if has("empty") {
        let c0 = cpu_ms(a.pid)?;
        thread::sleep(Duration::from_secs(3));
        out["idle_cpu_ms_3s_empty"] = json!(cpu_ms(a.pid)? - c0);
    }
    if has("fanout") {
        for &n in &a.fanout {
            let runs = (0..a.reps)
                .map(|rep| fanout(a, n, rep))
                .collect::<Res<Vec<_>>>()?;
            let med = |k: &str| median(runs.iter().filter_map(|r| r[k].as_f64()).collect());
            out[format!("fanout_{n}")] = json!({
                "p50_ms": med("p50"), "p99_ms": med("p99"),
                "last_p50_ms": med("last_p50"), "last_p99_ms": med("last_p99"), "runs": runs,
            });
        }
    }
    if has("sustained") {
        out["sustained"] = sustained(a)?;
    }
    if has("idle") {
        out["idle"] = idle(a)?;
    }
    Ok(out)
}

fn main() {
    let result = args().and_then(|a| run(&a));
    match result {
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("relay_load: {e}");
            std::process::exit(1);
        }
    }
}
