//! The physical floor for the relay's sustained write path (issue 13): a
//! process that does nothing but write the same pre-framed bytes to the
//! same N loopback sockets, on the schedule of the sustained scenario
//! (one broadcast to all N every 1.1 s / N), while a child process drains
//! them the way the load client (examples/relay_load.rs) reads: two
//! threads, each on an epoll set over half the sockets. Prints its own CPU (utime+stime) per delivered frame as JSON.
//!
//! usage: cargo run --release --example send_floor -- [--sockets 200]
//!        [--secs 10] [--frame-bytes 90]
//!
//! Each broadcast is one plain `write` per socket, no vectoring and no
//! user-space work beyond the loop: the kernel's loopback send, which any
//! relay pays once per delivery. Loopback only.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use workbench::sys::{Epoll, EpollEvents, Interest};

const TICK_MS: u64 = 10;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn self_cpu_ms() -> Res<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let rest = stat.rsplit_once(") ").ok_or("bad stat")?.1;
    let f: Vec<&str> = rest.split(' ').collect();
    Ok((f[11].parse::<u64>()? + f[12].parse::<u64>()?) * TICK_MS)
}

/// A server text frame (unmasked, RFC 6455 §5.2) of `total` bytes whose
/// payload looks like the relay's MSG.
fn frame(total: usize) -> Vec<u8> {
    let body = total.saturating_sub(2).clamp(20, 125);
    let mut p = String::from(r##"{"type":"MSG","from":"@abcdefgh","to":"#agents","content":""##);
    let pad = body.saturating_sub(p.len() + 2);
    p.extend(std::iter::repeat_n('x', pad));
    p.push_str("\"}");
    let mut f = vec![0x81, p.len() as u8];
    f.extend_from_slice(p.as_bytes());
    f
}

/// The child: connect `n` sockets to `port` and drain them on `threads`
/// threads, each waiting on an epoll set over its share (as the load
/// client reads, so a write wakes the same kind of reader); print the
/// total bytes read once every socket has closed.
fn drain(port: u16, n: usize, threads: usize) -> Res<()> {
    let socks = (0..n)
        .map(|_| TcpStream::connect(("127.0.0.1", port)))
        .collect::<io::Result<Vec<_>>>()?;
    let mut shares: Vec<Vec<TcpStream>> = (0..threads.max(1)).map(|_| Vec::new()).collect();
    for (i, s) in socks.into_iter().enumerate() {
        shares[i % threads.max(1)].push(s);
    }
    let mut handles = Vec::new();
    for mine in shares {
        let epoll = Epoll::new()?;
        for (t, s) in mine.iter().enumerate() {
            epoll.add(s.as_fd(), Interest::Readable, t as u64)?;
        }
        handles.push(thread::spawn(move || {
            let mut live = mine.len();
            let mut total = 0u64;
            let mut buf = vec![0u8; 64 * 1024];
            let mut events = EpollEvents::with_capacity(256);
            let mut ready = Vec::new();
            while live > 0 {
                match epoll.wait(&mut events, None) {
                    Ok(tokens) => ready.extend(tokens),
                    Err(_) => break,
                }
                for t in ready.drain(..) {
                    let s = &mine[t as usize];
                    match (&*s).read(&mut buf) {
                        Ok(0) | Err(_) => {
                            let _ = epoll.delete(s.as_fd());
                            live -= 1;
                        }
                        Ok(k) => total += k as u64,
                    }
                }
            }
            total
        }));
    }
    println!("connected");
    io::stdout().flush()?;
    let total: u64 = handles.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    println!("{total}");
    Ok(())
}

fn run() -> Res<()> {
    let mut a = pico_args::Arguments::from_env();
    if let Some(port) = a.opt_value_from_str::<_, u16>("--drain")? {
        let threads = a.opt_value_from_str("--reader-threads")?.unwrap_or(2);
        return drain(port, a.value_from_str("--sockets")?, threads);
    }
    let n: usize = a.opt_value_from_str("--sockets")?.unwrap_or(200);
    let secs: f64 = a.opt_value_from_str("--secs")?.unwrap_or(10.0);
    let frame_bytes: usize = a.opt_value_from_str("--frame-bytes")?.unwrap_or(90);
    let rest = a.finish();
    if !rest.is_empty() {
        return Err(format!("unexpected arguments: {rest:?}").into());
    }
    let l = TcpListener::bind("127.0.0.1:0")?;
    let port = l.local_addr()?.port();
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--drain", &port.to_string(), "--sockets", &n.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = BufReader::new(child.stdout.take().ok_or("no child stdout")?);
    let mut socks = Vec::with_capacity(n);
    for _ in 0..n {
        let (s, _) = l.accept()?;
        // As the relay's sockets: no Nagle delay on small frames.
        s.set_nodelay(true)?;
        socks.push(s);
    }
    let mut line = String::new();
    out.read_line(&mut line)?;
    if line.trim() != "connected" {
        return Err(format!("drain child said {line:?}").into());
    }
    let f = frame(frame_bytes);
    thread::sleep(Duration::from_millis(500));
    let cpu0 = self_cpu_ms()?;
    let t0 = Instant::now();
    let step = Duration::from_secs_f64(1.1 / n as f64);
    let limit = Duration::from_secs_f64(secs);
    let mut broadcasts: u64 = 0;
    loop {
        let at = step * broadcasts as u32;
        if at >= limit {
            break;
        }
        if let Some(wait) = at.checked_sub(t0.elapsed()) {
            thread::sleep(wait);
        }
        for s in &mut socks {
            s.write_all(&f)?;
        }
        broadcasts += 1;
    }
    let cpu = self_cpu_ms()? - cpu0;
    drop(socks);
    line.clear();
    out.read_line(&mut line)?;
    let _ = child.wait();
    let bytes: u64 = line.trim().parse()?;
    let delivered = bytes / f.len() as u64;
    println!(
        "{}",
        json!({
            "sockets": n, "secs": secs, "frame_bytes": f.len(), "broadcasts": broadcasts,
            "expected": broadcasts * n as u64, "delivered": delivered,
            "cpu_ms": cpu, "cpu_us_per_delivery": cpu as f64 * 1000.0 / delivered.max(1) as f64,
        })
    );
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("send_floor: {e}");
        std::process::exit(1);
    }
}
