//! Load client for scripts/bench_relay.sh: the issue 13 relay scenarios
//! against one relay (ours or the Node `ws` baseline). Agents read on a few
//! threads (`--client-threads`, default one per core), each waiting on an
//! epoll set over its share of the sockets (`workbench::sys::Epoll`), so a
//! broadcast wakes a couple of threads, not hundreds, and the client is not
//! the bottleneck. Prints one JSON object. Loopback only; every wait is
//! bounded.
//!
//! usage: cargo run --release --example relay_load -- --url ws://127.0.0.1:PORT
//!        --pid RELAY_PID [--only all|empty,fanout,sustained,idle] [--reps 3]
//!        [--redis-pid PID]
//!        [--fanout 10,100,500] [--messages 100] [--sustain-agents 200]
//!        [--sustain-secs 10] [--idle 5000] [--client-threads 2]
//!
//! * fan-out: one sender, N receivers (the sender included) in `#general`,
//!   closed loop (the next message once all N have the last). Latency is
//!   taken per delivery and, per message, for its last receiver.
//! * sustained: N agents in `#agents`, each sending one message per 1.1 s,
//!   staggered; counts deliveries and the relay's CPU (utime+stime).
//! * idle: `--idle` identified connections held; the relay's RSS growth.
//!
//! A cluster (issue 14 §2, scripts/bench_relay_cluster.sh): `--url` and
//! `--pid` take comma-separated lists; agent i connects to URL i mod n (the
//! fan-out sender to the first), CPU is summed over the pids, and
//! `--redis-pid` adds redis-server's CPU to the sustained run, apart.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;

use serde_json::{json, Value};
use workbench::sys::{Epoll, EpollEvents, Interest};

/// /proc CPU times are in clock ticks: 100 per second on Linux.
const TICK_MS: u64 = 10;
/// The longest any one step may wait before the run is declared broken.
const STEP_LIMIT: Duration = Duration::from_secs(20);

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Args {
    url: String,
    urls: Vec<String>,
    pids: Vec<u32>,
    redis_pid: Option<u32>,
    only: String,
    reps: usize,
    fanout: Vec<usize>,
    messages: usize,
    sustain_agents: usize,
    sustain_secs: f64,
    idle: usize,
    client_threads: usize,
}

fn args() -> Res<Args> {
    let mut a = pico_args::Arguments::from_env();
    let fanout: String = a
        .opt_value_from_str("--fanout")?
        .unwrap_or("10,100,500".into());
    let url: String = a.value_from_str("--url")?;
    let pids: String = a.value_from_str("--pid")?;
    let out = Args {
        urls: url.split(',').map(str::to_string).collect(),
        url,
        pids: pids
            .split(',')
            .map(|s| s.trim().parse())
            .collect::<Result<_, _>>()?,
        redis_pid: a.opt_value_from_str("--redis-pid")?,
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
        client_threads: a.opt_value_from_str("--client-threads")?.unwrap_or(2),
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

/// One agent's socket, spoken to by hand (RFC 6455): the client side is
/// small enough, and this way the readers can share a few epoll threads.
struct Agent {
    sock: Arc<TcpStream>,
    /// Bytes read and not yet parsed into whole frames.
    buf: Vec<u8>,
}

/// One whole server frame at the front of `buf`: (opcode, payload range,
/// frame length). Server frames are unmasked and, from these relays,
/// never fragmented.
fn frame_at(buf: &[u8]) -> Option<(u8, std::ops::Range<usize>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (len, head) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().ok()?) as usize, 10),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    (buf.len() >= head + len).then(|| (buf[0] & 0x0f, head..head + len, head + len))
}

/// A masked client text frame (clients must mask, RFC 6455 §5.3).
fn client_frame(text: &str) -> Vec<u8> {
    let key = [0x5a, 0xc3, 0x3c, 0xa5];
    let p = text.as_bytes();
    let mut f = vec![0x81];
    match p.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= u16::MAX as usize => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&key);
    f.extend(p.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

impl Agent {
    fn connect(url: &str) -> Res<Agent> {
        let addr = url
            .strip_prefix("ws://")
            .ok_or("url must be ws://host:port")?;
        let addr = addr.trim_end_matches('/');
        let sock = TcpStream::connect(addr)?;
        sock.set_nodelay(true)?;
        sock.set_read_timeout(Some(STEP_LIMIT))?;
        let req = format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        (&sock).write_all(req.as_bytes())?;
        // The relay sends nothing after its 101 until we speak, so reading
        // byte by byte to the blank line never eats a frame.
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if (&sock).read(&mut b)? == 0 || head.len() > 4096 {
                return Err("handshake: connection closed".into());
            }
            head.push(b[0]);
        }
        if !head.starts_with(b"HTTP/1.1 101") {
            return Err(format!("handshake refused: {}", String::from_utf8_lossy(&head)).into());
        }
        Ok(Agent {
            sock: Arc::new(sock),
            buf: Vec::new(),
        })
    }

    fn send(&self, text: &str) -> io::Result<()> {
        (&*self.sock).write_all(&client_frame(text))
    }

    /// Blocks (setup only) until the next text frame.
    fn recv(&mut self) -> Res<String> {
        loop {
            if let Some((op, body, len)) = frame_at(&self.buf) {
                let text = String::from_utf8_lossy(&self.buf[body]).into_owned();
                self.buf.drain(..len);
                match op {
                    1 => return Ok(text),
                    8 => return Err("closed by the relay".into()),
                    _ => continue,
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            let k = (&*self.sock).read(&mut chunk)?;
            if k == 0 {
                return Err("connection closed".into());
            }
            self.buf.extend_from_slice(&chunk[..k]);
        }
    }

    fn until(&mut self, kind: &str) -> Res<()> {
        let want = format!(r#""type":"{kind}""#);
        loop {
            let t = self.recv()?;
            if t.contains(&want) {
                return Ok(());
            }
            if t.contains(r#""type":"ERROR""#) {
                return Err(format!("relay refused: {t}").into());
            }
        }
    }
}

/// Connected, identified agents, set up `batch` at a time in parallel.
/// CPU ms over all the relay processes.
fn cpu_sum(pids: &[u32]) -> Res<u64> {
    pids.iter().map(|p| cpu_ms(*p)).sum()
}

fn agents(urls: &[String], n: usize, name: &str) -> Res<Vec<Agent>> {
    let mut out = Vec::with_capacity(n);
    let batch = 50;
    for start in (0..n).step_by(batch) {
        let handles: Vec<_> = (start..(start + batch).min(n))
            .map(|i| {
                let url = urls[i % urls.len()].clone();
                let name = format!("{name}{i}");
                thread::spawn(move || -> Result<Agent, String> {
                    let mut a = Agent::connect(&url).map_err(|e| e.to_string())?;
                    a.send(&json!({"type": "IDENTIFY", "name": name}).to_string())
                        .map_err(|e| e.to_string())?;
                    a.until("WELCOME").map_err(|e| e.to_string())?;
                    Ok(a)
                })
            })
            .collect();
        for h in handles {
            out.push(h.join().map_err(|_| "setup thread panicked")??);
        }
    }
    Ok(out)
}

fn join_all(agents: &mut [Agent], channel: &str) -> Res<()> {
    for a in agents.iter_mut() {
        a.send(&json!({"type": "JOIN", "channel": channel}).to_string())?;
        a.until("JOINED")?;
    }
    Ok(())
}

/// Every agent's socket (for writing and for shutting down) and the reader
/// threads that end once all of them are shut.
type Readers = (Vec<Arc<TcpStream>>, Vec<thread::JoinHandle<()>>);

/// Client reader threads: each owns a share of the sockets in one epoll
/// set and calls `on_text` for every text frame, until all its sockets end.
fn spawn_readers(
    agents: Vec<Agent>,
    threads: usize,
    on_text: impl Fn(&str) + Send + Clone + 'static,
) -> Res<Readers> {
    let socks: Vec<Arc<TcpStream>> = agents.iter().map(|a| a.sock.clone()).collect();
    let mut shares: Vec<Vec<Agent>> = (0..threads.max(1)).map(|_| Vec::new()).collect();
    for (i, a) in agents.into_iter().enumerate() {
        a.sock.set_read_timeout(None)?;
        shares[i % threads.max(1)].push(a);
    }
    let mut handles = Vec::new();
    for (k, mut mine) in shares.into_iter().enumerate() {
        let on_text = on_text.clone();
        let epoll = Epoll::new()?;
        for (t, a) in mine.iter().enumerate() {
            epoll.add(a.sock.as_fd(), Interest::Readable, t as u64)?;
        }
        handles.push(
            thread::Builder::new()
                .name(format!("load-reader-{k}"))
                .spawn(move || {
                    let mut live = mine.len();
                    let mut events = EpollEvents::with_capacity(256);
                    let mut chunk = vec![0u8; 64 * 1024];
                    let mut ready = Vec::new();
                    // Frames that arrived during setup come first.
                    for a in mine.iter_mut() {
                        drain_frames(&mut a.buf, &on_text);
                    }
                    while live > 0 {
                        match epoll.wait(&mut events, None) {
                            Ok(tokens) => ready.extend(tokens),
                            Err(_) => return,
                        }
                        for t in ready.drain(..) {
                            let a = &mut mine[t as usize];
                            match (&*a.sock).read(&mut chunk) {
                                Ok(0) | Err(_) => {
                                    let _ = epoll.delete(a.sock.as_fd());
                                    live -= 1;
                                }
                                Ok(k) => {
                                    a.buf.extend_from_slice(&chunk[..k]);
                                    drain_frames(&mut a.buf, &on_text);
                                }
                            }
                        }
                    }
                })?,
        );
    }
    Ok((socks, handles))
}

/// Hands every whole text frame at the front of `buf` to `on_text`.
fn drain_frames(buf: &mut Vec<u8>, on_text: &impl Fn(&str)) {
    let mut at = 0;
    while let Some((op, body, len)) = frame_at(&buf[at..]) {
        if op == 1 {
            if let Ok(t) = std::str::from_utf8(&buf[at + body.start..at + body.end]) {
                on_text(t);
            }
        }
        at += len;
    }
    buf.drain(..at);
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

fn close_all(socks: &[Arc<TcpStream>], readers: Vec<thread::JoinHandle<()>>) {
    for s in socks {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    for r in readers {
        let _ = r.join();
    }
}

fn send_on(sock: &TcpStream, text: &str) -> io::Result<()> {
    let mut w = sock;
    w.write_all(&client_frame(text))
}

fn fanout(a: &Args, n: usize, rep: usize) -> Res<Value> {
    let tag = format!("F{n}r{rep}:");
    let mut clients = agents(&a.urls, n, &format!("fan{n}r{rep}-"))?;
    join_all(&mut clients, "#general")?;
    let (tx, rx) = mpsc::channel::<(u64, Instant)>();
    let reader_tag = tag.clone();
    let (socks, readers) = spawn_readers(clients, a.client_threads, move |t| {
        if let Some(i) = tagged(t, &reader_tag) {
            let _ = tx.send((i, Instant::now()));
        }
    })?;
    // Let the joins' AGENT_JOINED notices drain first.
    thread::sleep(Duration::from_millis(300));
    let mut per_delivery = Vec::with_capacity(n * a.messages);
    let mut last = Vec::with_capacity(a.messages);
    for i in 0..a.messages as u64 {
        let content = format!("{tag}{i}:x");
        let text = json!({"type": "MSG", "to": "#general", "content": content}).to_string();
        let t0 = Instant::now();
        send_on(&socks[0], &text)?;
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
    close_all(&socks, readers);
    per_delivery.sort_by(f64::total_cmp);
    last.sort_by(f64::total_cmp);
    Ok(json!({
        "p50": pct(&per_delivery, 50.0), "p99": pct(&per_delivery, 99.0),
        "last_p50": pct(&last, 50.0), "last_p99": pct(&last, 99.0),
        "deliveries": per_delivery.len(), "last_ms": last,
    }))
}

fn sustained(a: &Args) -> Res<Value> {
    let n = a.sustain_agents;
    let tag = "S";
    let mut clients = agents(&a.urls, n, "sus")?;
    join_all(&mut clients, "#agents")?;
    let delivered = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (d, b, e) = (delivered.clone(), bytes.clone(), expected.clone());
    let (socks, readers) = spawn_readers(clients, a.client_threads, move |t| {
        if tagged(t, tag).is_some() {
            // Payload plus the 2- or 4-byte header the relay framed it with.
            let head = if t.len() < 126 { 2 } else { 4 };
            b.fetch_add((t.len() + head) as u64, Ordering::Relaxed);
            let now = d.fetch_add(1, Ordering::Relaxed) + 1;
            if now == e.load(Ordering::Relaxed) {
                let _ = done_tx.send(());
            }
        }
    })?;
    thread::sleep(Duration::from_millis(500));
    let cpu0 = cpu_sum(&a.pids)?;
    let redis0 = a.redis_pid.map(cpu_ms).transpose()?;
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
        let text = json!({"type": "MSG", "to": "#agents", "content": content}).to_string();
        send_on(&socks[sent as usize % n], &text)?;
        sent += 1;
    }
    let want = sent * n as u64;
    expected.store(want, Ordering::Relaxed);
    if delivered.load(Ordering::Relaxed) < want {
        let _ = done_rx.recv_timeout(Duration::from_secs(10));
    }
    let cpu = cpu_sum(&a.pids)? - cpu0;
    let redis_cpu = match (a.redis_pid, redis0) {
        (Some(p), Some(c0)) => Some(cpu_ms(p)? - c0),
        _ => None,
    };
    let got = delivered.load(Ordering::Relaxed);
    let frame_bytes = bytes.load(Ordering::Relaxed) as f64 / got.max(1) as f64;
    close_all(&socks, readers);
    Ok(json!({
        "agents": n, "sent": sent, "expected": want, "delivered": got,
        "relay_cpu_ms": cpu, "cpu_us_per_delivery": cpu as f64 * 1000.0 / got.max(1) as f64,
        "frame_bytes": frame_bytes, "secs": a.sustain_secs,
        "nodes": a.pids.len(), "redis_cpu_ms": redis_cpu,
        "redis_cpu_us_per_delivery": redis_cpu.map(|c| c as f64 * 1000.0 / got.max(1) as f64),
    }))
}

fn idle(a: &Args) -> Res<Value> {
    thread::sleep(Duration::from_millis(500));
    let rss0 = rss_kb(a.pids[0])?;
    let held = agents(&a.urls, a.idle, "idle")?;
    thread::sleep(Duration::from_secs(1));
    let rss1 = rss_kb(a.pids[0])?;
    let cpu0 = cpu_sum(&a.pids)?;
    thread::sleep(Duration::from_secs(5));
    let idle_cpu = cpu_sum(&a.pids)? - cpu0;
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
        let c0 = cpu_sum(&a.pids)?;
        thread::sleep(Duration::from_secs(3));
        out["idle_cpu_ms_3s_empty"] = json!(cpu_sum(&a.pids)? - c0);
    }
    if has("fanout") {
        for &n in &a.fanout {
            let runs = (0..a.reps)
                .map(|rep| fanout(a, n, rep))
                .collect::<Res<Vec<_>>>()?;
            let med = |k: &str| median(runs.iter().filter_map(|r| r[k].as_f64()).collect());
            // One run's p99 is its second-worst message; pooled over the
            // runs it rests on a few more.
            let mut pooled: Vec<f64> = runs
                .iter()
                .filter_map(|r| r["last_ms"].as_array())
                .flatten()
                .filter_map(Value::as_f64)
                .collect();
            pooled.sort_by(f64::total_cmp);
            out[format!("fanout_{n}")] = json!({
                "p50_ms": med("p50"), "p99_ms": med("p99"),
                "last_p50_ms": med("last_p50"), "last_p99_ms": med("last_p99"),
                "last_p99_pooled_ms": pct(&pooled, 99.0), "runs": runs,
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
