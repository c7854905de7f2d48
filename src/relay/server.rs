//! The relay process: bind, accept on a named thread, one named reader
//! thread per connection (`conn::serve`), the one writer thread
//! (`writer`), and a clean stop on SIGINT/SIGTERM. Nothing
//! here runs on a timer, so an idle relay uses no CPU.

use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use super::conn::{self, Limits};
use super::hub::{Hub, HubConfig};
use super::writer::Writer;
use crate::sys;
use crate::util::log_event;

/// Writer threads. One: on the 2-core machine BENCHMARKS.md was measured
/// on, two writers (sockets split between them) were no faster and cost
/// a little more CPU per delivery; `sendmsg` itself is ~80% of the relay's
/// CPU under load. More cores would be the reason to raise it.
const WRITER_THREADS: usize = 1;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub max_connections: usize,
    pub limits: Limits,
    pub hub: HubConfig,
}

/// Counts live connections; the last one out wakes a waiting shutdown.
#[derive(Default)]
struct Active {
    count: Mutex<usize>,
    idle: Condvar,
}

impl Active {
    fn try_acquire(&self, max: usize) -> bool {
        let mut n = self.count.lock().unwrap_or_else(|e| e.into_inner());
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    fn release(&self) {
        let mut n = self.count.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.idle.notify_all();
        }
    }

    /// Blocks until no connection is left or `limit` passes.
    fn wait_idle(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut n = self.count.lock().unwrap_or_else(|e| e.into_inner());
        while *n > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            n = match self.idle.wait_timeout(n, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

/// Releases a connection slot however the connection thread ends.
struct Slot(Arc<Active>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release();
    }
}

fn seed() -> u64 {
    let hex = crate::util::random_hex(8).unwrap_or_default();
    u64::from_str_radix(&hex, 16).unwrap_or_else(|_| {
        // No /dev/urandom: fall back to the clock; ids only need uniqueness.
        crate::util::now_ms() ^ u64::from(std::process::id()) << 32
    })
}

/// Runs the relay until SIGINT/SIGTERM.
pub fn run(cfg: ServerConfig) -> io::Result<()> {
    // Before any thread exists, so every thread inherits the blocked mask.
    let signals = sys::shutdown_signals();
    let listener = TcpListener::bind((cfg.host.as_str(), cfg.port))?;
    // Keepalive probes find peers that vanished; a send timeout bounds how
    // long a writer can sit on a peer that stopped reading.
    sys::tune_listener(listener.as_raw_fd(), 30_000, 10);
    let addr = listener.local_addr()?;
    log_event(
        "listening",
        json!({"host": addr.ip().to_string(), "port": addr.port(), "name": cfg.hub.server_name,
               "url": format!("ws://{addr}")}),
    );

    let hub = Arc::new(Hub::new(cfg.hub.clone(), seed()));
    let writer = Writer::start(WRITER_THREADS)?;
    let active = Arc::new(Active::default());
    {
        let hub = hub.clone();
        let active = active.clone();
        let cfg = cfg.clone();
        thread::Builder::new()
            .name("relay-accept".into())
            .spawn(move || accept_loop(listener, hub, writer, active, &cfg))?;
    }

    let sig = signals.recv().unwrap_or(libc::SIGTERM);
    log_event(
        "shutdown",
        json!({"signal": sig, "connections": hub.connections()}),
    );
    hub.close_all();
    active.wait_idle(Duration::from_secs(2));
    log_event("stopped", json!({}));
    Ok(())
}

fn accept_loop(
    listener: TcpListener,
    hub: Arc<Hub>,
    writer: Writer,
    active: Arc<Active>,
    cfg: &ServerConfig,
) {
    let mut n: u64 = 0;
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                log_event("accept_error", json!({"error": e.to_string()}));
                // Out of descriptors: back off instead of spinning on the error.
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        n += 1;
        if !active.try_acquire(cfg.max_connections) {
            refuse_full(stream, cfg.max_connections);
            continue;
        }
        let slot = Slot(active.clone());
        let hub = hub.clone();
        let writer = writer.clone();
        let limits = cfg.limits;
        let spawned = thread::Builder::new()
            .name(format!("relay-conn-{n}"))
            .stack_size(512 * 1024)
            .spawn(move || {
                let _slot = slot;
                conn::serve(hub, &writer, stream, limits);
            });
        if let Err(e) = spawned {
            log_event("spawn_failed", json!({"error": e.to_string()}));
        }
    }
}

/// Over `--max-connections`: answer the upgrade with 503 and close. The
/// socket is fresh, so this small write cannot block the accept loop.
fn refuse_full(mut stream: TcpStream, max: usize) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    log_event(
        "refused",
        json!({"peer": peer, "reason": "max connections", "max": max}),
    );
    let _ = stream.write_all(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
          Content-Length: 14\r\nConnection: close\r\n\r\nrelay is full\n",
    );
}
