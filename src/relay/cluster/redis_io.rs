//! The Redis side of a cluster node (the `cluster` feature): the two
//! connections, the publisher, reader and heartbeat threads, the snapshot
//! script. See the parent module for the design.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Value as RValue};
use serde_json::json;

use super::{ClusterConfig, ClusterStore, Link, Out, Target, BEAT_MS, SNAPSHOT, STREAM};
use crate::relay::hub::Hub;
use crate::util::log_event;

/// Writes a snapshot only if it is newer than the one there, and trims the
/// stream to the previous one (atomic in Redis).
const SNAPSHOT_SCRIPT: &str = r#"
local function parse(id)
  local ms, seq = string.match(id, "^(%d+)-(%d+)$")
  return tonumber(ms), tonumber(seq)
end
local cur = redis.call('HGET', KEYS[2], 'at')
if cur then
  local cm, cs = parse(cur)
  local nm, ns = parse(ARGV[1])
  if nm < cm or (nm == cm and ns <= cs) then return 0 end
  redis.call('XTRIM', KEYS[1], 'MINID', cur)
end
redis.call('HSET', KEYS[2], 'at', ARGV[1], 'state', ARGV[2])
return 1
"#;

/// Records a node queues for Redis before it refuses more.
const QUEUE: usize = 8192;
/// Records per pipeline / per XREAD.
const BATCH: usize = 1000;
/// How long one XREAD blocks before it is issued again (an idle cluster
/// node wakes this often; the read timeout is a little longer).
const BLOCK_MS: u64 = 10_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The redis crate's form of a `--cluster` target.
fn info(t: &Target) -> redis::RedisResult<ConnectionInfo> {
    let mut settings = redis::RedisConnectionInfo::default().set_db(t.db);
    if let Some(u) = &t.user {
        settings = settings.set_username(u);
    }
    if let Some(p) = &t.password {
        settings = settings.set_password(p);
    }
    Ok(ConnectionAddr::Tcp(t.host.clone(), t.port)
        .into_connection_info()?
        .set_redis_settings(settings))
}

fn connect(info: &ConnectionInfo) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(info.clone())?;
    let con = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    con.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(con)
}

/// A node about to start: its links to Redis, not yet running.
pub struct Node {
    link: Option<Link>,
    store: Option<ClusterStore>,
    rx: Receiver<Out>,
    reader: redis::Connection,
    info: ConnectionInfo,
    reader_up: Arc<AtomicBool>,
    writer_up: Arc<AtomicBool>,
}

/// Connects to Redis (both connections) or says clearly why not.
pub fn open(cfg: &ClusterConfig) -> Result<Node, String> {
    let fail = |e: redis::RedisError| format!("cannot reach Redis at {}: {e}", cfg.shown);
    let target = info(&cfg.target).map_err(fail)?;
    let reader = connect(&target).map_err(fail)?;
    // One round trip proves the password and database too.
    let mut probe = connect(&target).map_err(fail)?;
    redis::cmd("PING")
        .query::<RValue>(&mut probe)
        .map_err(fail)?;
    drop(probe);
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    let reader_up = Arc::new(AtomicBool::new(true));
    let writer_up = Arc::new(AtomicBool::new(true));
    let random =
        crate::util::random_hex(4).unwrap_or_else(|_| format!("{:08x}", std::process::id()));
    let session: Arc<str> = format!("{}/{random}", cfg.node_id).into();
    Ok(Node {
        link: Some(Link {
            session,
            node: cfg.node_id.clone(),
            shown: cfg.shown.clone(),
            tx,
            reader_up: reader_up.clone(),
            writer_up: writer_up.clone(),
        }),
        store: Some(ClusterStore {
            shown: cfg.shown.clone(),
            node: cfg.node_id.clone(),
            reader_up: reader_up.clone(),
            writer_up: writer_up.clone(),
        }),
        rx,
        reader,
        info: target,
        reader_up,
        writer_up,
    })
}

/// Stream entries of one XREAD reply: `(id, record)`.
fn entries(v: RValue) -> Vec<(String, String)> {
    let text = |v: &RValue| match v {
        RValue::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        RValue::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let mut out = Vec::new();
    // RESP2: [[key, [[id, [field, value, …]], …]]]; RESP3: {key: [...]}.
    let streams: Vec<RValue> = match v {
        RValue::Array(a) => a
            .into_iter()
            .filter_map(|s| match s {
                RValue::Array(mut kv) if kv.len() == 2 => kv.pop(),
                _ => None,
            })
            .collect(),
        RValue::Map(m) => m.into_iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    };
    for s in streams {
        let RValue::Array(items) = s else { continue };
        for item in items {
            let RValue::Array(pair) = item else { continue };
            let (Some(id), Some(RValue::Array(fields))) =
                (pair.first().and_then(text), pair.get(1))
            else {
                continue;
            };
            let body = fields
                .chunks(2)
                .find(|f| f.first().and_then(text).as_deref() == Some("r"))
                .and_then(|f| f.get(1).and_then(text));
            out.push((id, body.unwrap_or_default()));
        }
    }
    out
}

/// Writes `state` as the snapshot at stream id `at` (if no newer one is
/// there), trimming the stream behind the previous one; logs the outcome.
fn write_snapshot(c: &mut redis::Connection, at: &str, state: &str) {
    let done = redis::cmd("EVAL")
        .arg(SNAPSHOT_SCRIPT)
        .arg(2)
        .arg(STREAM)
        .arg(SNAPSHOT)
        .arg(at)
        .arg(state)
        .query::<RValue>(c);
    match done {
        Ok(v) => log_event(
            "cluster_snapshot",
            json!({"at": at, "bytes": state.len(), "written": v == RValue::Int(1)}),
        ),
        Err(e) => log_event(
            "cluster_snapshot_failed",
            json!({"at": at, "error": e.to_string()}),
        ),
    }
}

/// The snapshot there is, as (`at`, `state`).
fn read_snapshot(con: &mut redis::Connection) -> redis::RedisResult<Option<(String, String)>> {
    let v = redis::cmd("HMGET")
        .arg(SNAPSHOT)
        .arg("at")
        .arg("state")
        .query::<RValue>(con)?;
    let text = |v: &RValue| match v {
        RValue::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    };
    Ok(match &v {
        RValue::Array(a) if a.len() == 2 => text(&a[0]).zip(text(&a[1])),
        _ => None,
    })
}

/// A stream id as numbers, for comparing.
fn stream_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// After a reconnect: if what this node read last was trimmed away and a
/// newer snapshot exists, it may have missed records; rebuild from the
/// snapshot. Returns where to read on from.
fn check_gap(hub: &Hub, con: &mut redis::Connection, last: String) -> redis::RedisResult<String> {
    if last == "0-0" {
        return Ok(last);
    }
    let first = entries_of_range(
        redis::cmd("XRANGE")
            .arg(STREAM)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query::<RValue>(con)?,
    );
    let Some((first, _)) = first.into_iter().next() else {
        return Ok(last);
    };
    if stream_id(&first) <= stream_id(&last) {
        return Ok(last);
    }
    let Some((at, state)) = read_snapshot(con)? else {
        return Ok(last);
    };
    if stream_id(&at) <= stream_id(&last) {
        return Ok(last);
    }
    log_event(
        "cluster_gap",
        json!({"read_up_to": &last, "stream_starts_at": &first, "snapshot_at": &at,
               "action": "local clients closed; state rebuilt from the snapshot"}),
    );
    hub.reset_replica();
    match hub.load_snapshot(&state) {
        Ok(held) => log_event("cluster_snapshot_loaded", json!({"at": &at, "held": held})),
        Err(e) => log_event("cluster_snapshot_failed", json!({"error": e})),
    }
    Ok(at)
}

/// XRANGE's reply: `[[id, [field, value, …]], …]`.
fn entries_of_range(v: RValue) -> Vec<(String, String)> {
    entries(RValue::Array(vec![RValue::Array(vec![
        RValue::BulkString(STREAM.into()),
        v,
    ])]))
}

fn xread(
    con: &mut redis::Connection,
    last: &str,
    block: Option<u64>,
) -> redis::RedisResult<Vec<(String, String)>> {
    let mut cmd = redis::cmd("XREAD");
    cmd.arg("COUNT").arg(BATCH);
    if let Some(ms) = block {
        cmd.arg("BLOCK").arg(ms);
    }
    cmd.arg("STREAMS").arg(STREAM).arg(last);
    Ok(entries(cmd.query::<RValue>(con)?))
}

impl Node {
    pub fn take_store(&mut self) -> Option<ClusterStore> {
        self.store.take()
    }

    pub fn take_link(&mut self) -> Option<Link> {
        self.link.take()
    }

    /// Loads the cluster's state (the whole stream, oldest first) into the
    /// hub, before the node listens; returns how many records.
    pub fn catch_up(&mut self, hub: &Hub) -> Result<(String, usize), String> {
        let mut last = "0-0".to_string();
        if let Some((at, state)) = read_snapshot(&mut self.reader)
            .map_err(|e| format!("reading the cluster's snapshot from Redis: {e}"))?
        {
            let held = hub.load_snapshot(&state)?;
            log_event("cluster_snapshot_loaded", json!({"at": &at, "held": held}));
            last = at;
        }
        let mut n = 0usize;
        loop {
            let batch = xread(&mut self.reader, &last, None)
                .map_err(|e| format!("reading the cluster's state from Redis: {e}"))?;
            if batch.is_empty() {
                return Ok((last, n));
            }
            for (id, body) in batch {
                hub.apply(&body, true);
                last = id;
                n += 1;
            }
        }
    }

    /// Starts the publisher, reader and heartbeat threads.
    pub fn start(self, hub: Arc<Hub>, last: String) -> io::Result<()> {
        let Node {
            rx,
            reader,
            info,
            reader_up,
            writer_up,
            ..
        } = self;
        let (nudge_tx, nudge_rx) = mpsc::channel::<()>();
        {
            let hub = hub.clone();
            let info = info.clone();
            thread::Builder::new()
                .name("cluster-publish".into())
                .spawn(move || publisher(hub, info, rx, writer_up))?;
        }
        {
            let hub = hub.clone();
            thread::Builder::new()
                .name("cluster-read".into())
                .spawn(move || read_loop(hub, info, reader, last, reader_up, nudge_tx))?;
        }
        thread::Builder::new()
            .name("cluster-beat".into())
            .spawn(move || heartbeat(hub, nudge_rx))?;
        Ok(())
    }
}

/// Sends queued records, in order, as pipelines of XADDs. On a failure the
/// senders of what was lost are told; departures are kept and re-sent.
fn publisher(hub: Arc<Hub>, info: ConnectionInfo, rx: Receiver<Out>, up: Arc<AtomicBool>) {
    let mut con: Option<redis::Connection> = None;
    let mut retry: VecDeque<Out> = VecDeque::new();
    loop {
        // Block for work; with departures waiting, wake now and then to
        // try Redis again.
        let first = if retry.is_empty() {
            match rx.recv() {
                Ok(o) => Some(o),
                Err(_) => return,
            }
        } else {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(o) => Some(o),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        };
        let mut batch: Vec<Out> = retry.drain(..).collect();
        batch.extend(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        if con.is_none() {
            match connect(&info) {
                Ok(c) => con = Some(c),
                Err(e) => {
                    if up.swap(false, Ordering::Relaxed) {
                        log_event(
                            "cluster_unavailable",
                            json!({"error": e.to_string(), "side": "publish"}),
                        );
                    }
                }
            }
        }
        let sent = match con.as_mut() {
            Some(c) => {
                let mut p = redis::pipe();
                for o in &batch {
                    p.cmd("XADD").arg(STREAM).arg("*").arg("r").arg(&o.body);
                }
                p.query::<RValue>(c).map(drop).map_err(|e| e.to_string())
            }
            None => Err("not connected".into()),
        };
        match sent {
            Ok(_) => {
                if !up.swap(true, Ordering::Relaxed) {
                    log_event("cluster_available", json!({"side": "publish"}));
                }
            }
            Err(e) => {
                con = None;
                if up.swap(false, Ordering::Relaxed) {
                    log_event(
                        "cluster_unavailable",
                        json!({"error": e, "side": "publish"}),
                    );
                }
                for o in batch {
                    if o.retry {
                        retry.push_back(o);
                    } else if let Some(id) = o.origin {
                        hub.unpublished(id);
                    }
                }
                // Bounded: a long outage keeps the newest departures.
                while retry.len() > QUEUE {
                    retry.pop_front();
                }
            }
        }
    }
}

/// Applies the stream as it grows; on a lost connection, marks the node
/// unavailable and reconnects with backoff (100 ms doubling to 5 s).
fn read_loop(
    hub: Arc<Hub>,
    info: ConnectionInfo,
    first: redis::Connection,
    mut last: String,
    up: Arc<AtomicBool>,
    nudge: mpsc::Sender<()>,
) {
    let mut con = Some(first);
    let mut backoff = Duration::from_millis(100);
    loop {
        let c = match con.as_mut() {
            Some(c) => c,
            None => {
                thread::sleep(backoff);
                match connect(&info) {
                    Ok(mut c) => {
                        backoff = Duration::from_millis(100);
                        match check_gap(&hub, &mut c, last.clone()) {
                            Ok(l) => last = l,
                            Err(_) => continue,
                        }
                        con = Some(c);
                        hub.cluster_connected();
                        up.store(true, Ordering::Relaxed);
                        log_event("cluster_available", json!({"side": "read", "from": &last}));
                        // Beat at once, so no survivor counts the outage
                        // against this node.
                        let _ = nudge.send(());
                        continue;
                    }
                    Err(_) => {
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
        };
        let _ = c.set_read_timeout(Some(Duration::from_millis(BLOCK_MS + 5_000)));
        match xread(c, &last, Some(BLOCK_MS)) {
            Ok(batch) => {
                for (id, body) in batch {
                    hub.apply(&body, false);
                    last = id;
                    // Counted record by record, not per XREAD batch: a reader
                    // that fell behind gets large batches, and snapshots (so
                    // trims) must still come every `snapshot_every` records.
                    if let Some(state) = hub.snapshot_due(1) {
                        write_snapshot(c, &last, &state);
                    }
                }
            }
            Err(e) => {
                con = None;
                if up.swap(false, Ordering::Relaxed) {
                    log_event(
                        "cluster_unavailable",
                        json!({"error": e.to_string(), "side": "read"}),
                    );
                }
            }
        }
    }
}

/// Every `BEAT_MS` (or at once when nudged): a beat, and a `dead` record
/// for each node silent for `DEAD_MS`. Blocks in `recv_timeout`.
fn heartbeat(hub: Arc<Hub>, nudge: Receiver<()>) {
    loop {
        match nudge.recv_timeout(Duration::from_millis(BEAT_MS)) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        hub.cluster_tick();
    }
}

/// A clean stop: tells the cluster this node's agents are gone (best
/// effort, one short-lived connection).
pub fn farewell(target: &Target, body: &str) {
    if let Ok(mut c) = info(target).and_then(|i| connect(&i)) {
        let _ = redis::cmd("XADD")
            .arg(STREAM)
            .arg("*")
            .arg("r")
            .arg(body)
            .query::<RValue>(&mut c);
    }
}
