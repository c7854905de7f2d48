//! workbench patch: limits a server applies before the application sees a
//! request. Connections are admitted at accept time (in total and per client
//! key), and the request head is read against caps on the request line, the
//! header block, the header count and time. See WORKBENCH-PATCH.md.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a `Server` enforces on every connection. `Default` gives the values
/// documented in WORKBENCH-PATCH.md.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections in total (upgraded WebSockets included).
    pub max_connections: usize,
    /// Open connections per client key (see `client_key`).
    pub max_per_client: usize,
    /// Maps a peer address to the key its connections count under (e.g. an
    /// IPv6 /64); identity by default.
    pub client_key: fn(IpAddr) -> IpAddr,
    /// A read that gets nothing for this long fails: an idle keep-alive
    /// connection is closed silently, a request cut off mid-way gets 408.
    pub idle_timeout: Duration,
    /// From the first byte of a request to the end of its headers → 408.
    pub header_timeout: Duration,
    /// Longest request line (method, target, version) → 431.
    pub max_request_line: usize,
    /// Largest header block (all header lines together) → 431.
    pub max_header_bytes: usize,
    /// Most header lines → 431.
    pub max_headers: usize,
}

fn same(ip: IpAddr) -> IpAddr {
    ip
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_per_client: 128,
            client_key: same,
            idle_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            max_request_line: 8 << 10,
            max_header_bytes: 32 << 10,
            max_headers: 64,
        }
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// Counts open connections; a `Permit` is one of them.
pub(crate) struct Gate {
    max_total: usize,
    max_per_client: usize,
    key: fn(IpAddr) -> IpAddr,
    counts: Mutex<Counts>,
}

/// Held by a connection's socket for as long as any part of it (reader,
/// writer, upgraded stream) is alive; dropping it frees the slot.
pub(crate) struct Permit {
    gate: Arc<Gate>,
    key: Option<IpAddr>,
}

/// Why a connection was refused at the door.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    Total,
    PerClient,
}

impl Gate {
    pub(crate) fn new(limits: &Limits) -> Arc<Gate> {
        Arc::new(Gate {
            max_total: limits.max_connections.max(1),
            max_per_client: limits.max_per_client.max(1),
            key: limits.client_key,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn admit(self: &Arc<Self>, peer: Option<IpAddr>) -> Result<Permit, Refused> {
        let key = peer.map(self.key);
        let mut c = self.lock();
        if c.total >= self.max_total {
            return Err(Refused::Total);
        }
        if let Some(k) = key {
            let n = c.per_client.entry(k).or_insert(0);
            if *n >= self.max_per_client {
                return Err(Refused::PerClient);
            }
            *n += 1;
        }
        c.total += 1;
        Ok(Permit {
            gate: self.clone(),
            key,
        })
    }

    pub(crate) fn open(&self) -> usize {
        self.lock().total
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self.gate.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(k) = self.key {
            if let Some(n) = c.per_client.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    c.per_client.remove(&k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_counts_total_and_per_client_and_frees_on_drop() {
        let limits = Limits {
            max_connections: 3,
            max_per_client: 2,
            ..Limits::default()
        };
        let g = Gate::new(&limits);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let p1 = g.admit(Some(a)).unwrap();
        let _p2 = g.admit(Some(a)).unwrap();
        assert_eq!(g.admit(Some(a)).err(), Some(Refused::PerClient));
        let _p3 = g.admit(Some(b)).unwrap();
        assert_eq!(g.admit(Some(b)).err(), Some(Refused::Total));
        drop(p1);
        assert_eq!(g.open(), 2);
        assert!(g.admit(Some(a)).is_ok());
    }
}
