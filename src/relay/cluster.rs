//! `workbench relay --cluster redis://HOST:PORT[/DB]` (issue 14 §2): the
//! Redis side of a cluster node. docs/relay-cluster.md is the user's side.
//!
//! The shape is state-machine replication over one Redis stream
//! ([`STREAM`]): every change to the relay's shared state, and every
//! request of an identified agent (MSG, JOIN, LIST_AGENTS, …), is one XADD
//! of one record; every node reads the stream (XREAD BLOCK, on its own
//! connection and thread) and applies the records in stream order
//! (`hub::replica`), delivering to its own clients only. So every node
//! holds the same state, every channel has one order on every node, and a
//! race (ACCEPT vs REJECT on one proposal, one id on two nodes) is decided
//! by which record comes first. A message costs one XADD, never one per
//! recipient, plus each node's share of a batched XREAD.
//!
//! Threads here: the publisher (owns one connection; pipelines what the
//! hub queued, in order; tells a sender whose request could not be
//! published), the reader (owns another; applies; reconnects with backoff),
//! and the heartbeat timer (blocks in `recv_timeout`; publishes a beat and
//! declares silent nodes dead). The hub never does Redis I/O under its lock.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;

use serde_json::{json, Value};

use super::hub::ConnId;
use super::store::{Record, Store};

/// The one stream every node writes and reads (in the URL's database).
pub const STREAM: &str = "workbench:relay:log";
/// The latest snapshot of the state (a hash: `at`, the stream id it is the
/// state after, and `state`), written by one node every
/// `--cluster-snapshot-every` records; the stream is then trimmed to the
/// snapshot before it, so a reader one interval behind still finds its place.
pub const SNAPSHOT: &str = "workbench:relay:snapshot";
/// Heartbeat period, and how long a silent node lives on (issue: a dead
/// node's agents are gone everywhere within 15 s).
pub const BEAT_MS: u64 = 2_000;
pub const DEAD_MS: u64 = 10_000;

/// What `--cluster` and `--node-id` asked for.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub target: Target,
    /// The URL without its password, for logs and /health.
    pub shown: String,
    pub node_id: String,
    /// `--cluster-snapshot-every`: records between snapshots.
    pub snapshot_every: usize,
}

/// Checks a `--cluster` URL: `redis://[[user]:password@]host[:port][/db]`
/// (port 6379 and database 0 by default; user and password
/// percent-decoded). Parsed here rather than by the redis crate's URL
/// parser, which would link the `url` crate in (binary size). `rediss://`
/// (TLS) is refused for now (docs/relay-cluster.md).
/// Where Redis is, from a `--cluster` URL.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub db: i64,
    pub user: Option<String>,
    pub password: Option<String>,
}

pub fn parse_url(url: &str) -> Result<(Target, String), String> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("rediss://") {
        return Err(
            "--cluster: rediss:// (Redis over TLS) is not supported in this build; \
                    use redis:// on a trusted network or a TLS tunnel (docs/relay-cluster.md)"
                .into(),
        );
    }
    if !lower.starts_with("redis://") {
        return Err(format!(
            "--cluster must be a redis://HOST:PORT[/DB] URL (got {:?})",
            shown(url, 80)
        ));
    }
    let rest = &url["redis://".len()..];
    if rest.contains(['?', '#']) {
        return Err("--cluster: query and fragment parts are not supported \
                    (redis://[:PASSWORD@]HOST:PORT[/DB])"
            .into());
    }
    let (auth, hostpart) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    let (hostport, db) = match hostpart.split_once('/') {
        Some((hp, d)) => (hp, d),
        None => (hostpart, ""),
    };
    let db: i64 = if db.is_empty() {
        0
    } else {
        db.parse::<u16>().map(i64::from).map_err(|_| {
            format!(
                "--cluster: the database must be a number (got /{})",
                shown(db, 40)
            )
        })?
    };
    // [v6]:port, host:port, or host.
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or("--cluster: an IPv6 host needs its closing ]")?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("--cluster: the URL names no host (redis://HOST:PORT[/DB])".into());
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
    {
        return Err(format!(
            "--cluster: {:?} is not a host name or address",
            shown(host, 80)
        ));
    }
    let port: u16 = match port {
        None => 6379,
        Some(p) => p.parse().map_err(|_| {
            format!(
                "--cluster: not a valid Redis URL (bad port {:?})",
                shown(p, 20)
            )
        })?,
    };
    if port == 0 {
        return Err("--cluster: port 0 is not a Redis port".into());
    }
    let (mut user, mut password) = (None, None);
    if let Some(auth) = auth {
        let (u, p) = auth.split_once(':').unwrap_or((auth, ""));
        let decode = |s: &str| {
            percent_decode(s).ok_or("--cluster: bad %-escape in the URL's user or password")
        };
        let (u, p) = (decode(u)?, decode(p)?);
        user = Some(u).filter(|u| !u.is_empty());
        password = Some(p).filter(|p| !p.is_empty());
    }
    let target = Target {
        host: host.to_string(),
        port,
        db,
        user,
        password,
    };
    let shown = if host.contains(':') {
        format!("redis://[{host}]:{port}/{db}")
    } else {
        format!("redis://{host}:{port}/{db}")
    };
    Ok((target, shown))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `s` as safe to print, cut to `max` characters.
fn shown(s: &str, max: usize) -> String {
    crate::relay::display::terminal_safe(s)
        .chars()
        .take(max)
        .collect()
}

/// One record for Redis. `origin` is told (CLUSTER_UNAVAILABLE) if it
/// cannot be published; a record with `retry` is kept and sent once Redis
/// is back (a departure the others must hear of).
pub struct Out {
    pub body: String,
    pub origin: Option<ConnId>,
    pub retry: bool,
}

/// The hub's handle on the publisher, and whether Redis is reachable.
pub struct Link {
    /// This run of this node: `<node-id>/<random>`, in every record it writes.
    pub session: Arc<str>,
    pub node: String,
    pub shown: String,
    tx: SyncSender<Out>,
    reader_up: Arc<AtomicBool>,
    writer_up: Arc<AtomicBool>,
}

impl Link {
    pub fn is_up(&self) -> bool {
        self.reader_up.load(Ordering::Relaxed) && self.writer_up.load(Ordering::Relaxed)
    }

    /// Queues `out` (never blocks). A client's request while Redis is
    /// down, or with the queue full, comes back as `Err`, to be refused.
    pub fn publish(&self, out: Out) -> Result<(), Out> {
        // A client's request is refused at once while Redis is away; the
        // node's own records (beats, departures) go to the publisher, whose
        // attempts are what finds Redis back.
        if out.origin.is_some() && !self.is_up() {
            return Err(out);
        }
        self.tx.try_send(out).map_err(|e| match e {
            TrySendError::Full(o) | TrySendError::Disconnected(o) => o,
        })
    }
}

/// The store in cluster mode: lasting state lives in the stream, so the
/// hub's journal records go nowhere; it describes the node for /health.
pub struct ClusterStore {
    pub shown: String,
    pub node: String,
    reader_up: Arc<AtomicBool>,
    writer_up: Arc<AtomicBool>,
}

impl Store for ClusterStore {
    fn append(&mut self, _rec: &Record<'_>) -> io::Result<()> {
        Ok(())
    }
    fn describe(&self) -> Value {
        let up = self.reader_up.load(Ordering::Relaxed) && self.writer_up.load(Ordering::Relaxed);
        json!({"mode": "cluster", "node": self.node, "redis": self.shown, "redis_up": up})
    }
}

#[cfg(feature = "cluster")]
mod redis_io;
#[cfg(feature = "cluster")]
pub use redis_io::{farewell, open, Node};

/// Built without the `cluster` feature (no Redis client in the binary):
/// `--cluster` parses, then stops at start with this error.
#[cfg(not(feature = "cluster"))]
mod no_redis {
    use std::io;
    use std::sync::Arc;

    use super::{ClusterConfig, ClusterStore, Link, Target};
    use crate::relay::hub::Hub;

    /// Never made: no Redis client in this build.
    pub enum Node {}

    pub fn open(_cfg: &ClusterConfig) -> Result<Node, String> {
        Err(
            "this workbench was built without the `cluster` feature: --cluster is \
             not available (build with the default features)"
                .into(),
        )
    }

    impl Node {
        pub fn take_store(&mut self) -> Option<ClusterStore> {
            match *self {}
        }
        pub fn take_link(&mut self) -> Option<Link> {
            match *self {}
        }
        pub fn catch_up(&mut self, _hub: &Hub) -> Result<(String, usize), String> {
            match *self {}
        }
        pub fn start(self, _hub: Arc<Hub>, _last: String) -> io::Result<()> {
            match self {}
        }
    }

    pub fn farewell(_target: &Target, _body: &str) {}
}
#[cfg(not(feature = "cluster"))]
pub use no_redis::{farewell, open, Node};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_to_host_port_db_and_credentials() {
        let (t, shown) = parse_url("redis://:p%40ss@127.0.0.1:6390/3").unwrap();
        assert_eq!(shown, "redis://127.0.0.1:6390/3");
        assert_eq!(
            (t.password.as_deref(), t.user.as_deref(), t.db),
            (Some("p@ss"), None, 3)
        );
        let (t, shown) = parse_url("redis://user:pw@[::1]").unwrap();
        assert_eq!(shown, "redis://[::1]:6379/0");
        assert_eq!(
            (t.host.as_str(), t.port, t.user.as_deref()),
            ("::1", 6379, Some("user"))
        );
        for bad in [
            "redis://h:1/x",
            "redis://:%zz@h:1",
            "redis://h:1?db=2",
            "redis://[::1:6379",
            "redis://bad host:1",
            "REDISS://h:1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
