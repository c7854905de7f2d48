//! The push hub: the page's current state, the recent log, one bounded
//! outbox per connected viewer, and the snapshot requests in flight. Every
//! push is framed once, outside the hub lock, and the same reference-counted
//! frame is queued for every viewer (`try_send`); under the lock only
//! reference counts are taken. A viewer whose outbox is full is dropped; it
//! reconnects and gets full state. Nothing here does I/O: files go to the
//! disk writer, diagnostics are written after the lock is released.
//!
//! Two locks, always taken in this order: `doc` (the state and its number;
//! serialises state pushes and the full-state frame a new viewer gets) and
//! `inner` (viewers, log ring, snapshots), which is held only for O(viewers)
//! pointer work.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::disk::{DiskOp, DiskSender};
use crate::ratelimit::client_key;
use crate::relay::frame::ServerFrame;
use crate::util;

/// Messages a viewer may have queued before it counts as too slow.
pub const OUTBOX_DEPTH: usize = 1024;
/// Bytes a viewer may have queued before it counts as too slow. Frames are
/// shared between viewers, so this bounds how long a stalled viewer can pin
/// old frames, not a copy per viewer.
pub const OUTBOX_BYTES: usize = 16 << 20;
/// Log entries replayed to a viewer that connects.
pub const REPLAY_LOGS: usize = 50;
/// Log entries kept in memory for `GET /api/log`.
pub const RECENT_LOGS: usize = 1000;
/// How long a viewer has to answer a snapshot request.
pub const SNAPSHOT_WAIT: Duration = Duration::from_secs(3);

pub const LEVELS: [&str; 4] = ["info", "success", "warn", "error"];

/// Builds a session log entry; the one shape every log line has.
pub fn log_entry(level: &str, message: &str, source: &str) -> Value {
    json!({"ts": util::rfc3339_now(), "level": level, "message": message, "source": source})
}

/// Caps on viewers (WebSocket connections attached to the hub).
#[derive(Debug, Clone, Copy)]
pub struct ViewerLimits {
    pub max_total: usize,
    /// Per client address (IPv6: per /64, see `ratelimit::client_key`).
    pub max_per_client: usize,
}

/// The page state: one reference-counted value per field, so a snapshot for
/// the disk writer is a handful of reference counts, never a deep copy.
#[derive(Clone, Default)]
pub struct StateSnapshot(BTreeMap<String, Arc<Value>>);

impl StateSnapshot {
    /// The state as one JSON object (what state.json and full STATE hold).
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&Value::String(k.clone()).to_string());
            out.push(':');
            out.push_str(&v.to_string());
        }
        out.push('}');
        out
    }
}

/// What a viewer's writer thread receives.
pub struct Outbox {
    pub id: u64,
    pub rx: Receiver<ServerFrame>,
    /// Set when the hub gave up on this viewer: stop writing at once.
    pub dropped: Arc<AtomicBool>,
    /// Bytes queued and not yet written; the writer subtracts what it wrote.
    pub queued: Arc<AtomicUsize>,
}

struct Slot {
    id: u64,
    /// Secret the page presents for its goodbye and its snapshot answers.
    key: String,
    client: Option<IpAddr>,
    tx: SyncSender<ServerFrame>,
    dropped: Arc<AtomicBool>,
    queued: Arc<AtomicUsize>,
}

/// One log entry, serialised once: its JSON (for `GET /api/log`) and the
/// frame replayed to viewers that connect later.
pub struct LogItem {
    pub json: String,
    replay: ServerFrame,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub state_pushes: u64,
    pub log_entries: u64,
    pub peak_viewers: usize,
    pub bytes_pushed: u64,
}

struct Doc {
    state: StateSnapshot,
    seq: u64,
    /// The full-state frame for `seq`, built once when first needed.
    full: Option<ServerFrame>,
}

struct Pending {
    viewer: u64,
    tx: SyncSender<Value>,
}

struct Inner {
    viewers: Vec<Slot>,
    next_viewer: u64,
    seq: u64,
    recent: VecDeque<Arc<LogItem>>,
    stats: Stats,
    snapshots: HashMap<String, Pending>,
}

pub struct Hub {
    doc: Mutex<Doc>,
    inner: Mutex<Inner>,
    disk: DiskSender,
    limits: ViewerLimits,
    /// Sent to every viewer in HELLO; events must carry it.
    page_key: String,
}

/// The result of one push: how many viewers it was queued for and its size.
#[derive(Debug, Clone, Copy)]
pub struct Pushed {
    pub seq: u64,
    pub viewers: usize,
    pub bytes: usize,
}

/// Why a viewer was not attached.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    TooManyViewers(usize),
    TooManyFromClient(usize),
}

/// Why a snapshot answer was not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum AnswerError {
    /// No request under that id (never asked, answered, or timed out).
    Unknown,
    /// Asked of another viewer, or the key is not that viewer's.
    NotAsked,
}

pub enum SnapshotOutcome {
    NoViewer,
    Answered { viewer: u64, snapshot: Value },
    NoAnswer,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the page down with a poisoned lock.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn log_item(entry: &Value) -> (Arc<LogItem>, ServerFrame) {
    let json = entry.to_string();
    let replay = ServerFrame::text(&format!(r#"{{"type":"LOG","entry":{json},"replay":true}}"#));
    let live = ServerFrame::text(&format!(r#"{{"type":"LOG","entry":{json}}}"#));
    (Arc::new(LogItem { json, replay }), live)
}

impl Hub {
    pub fn new(
        state: Map<String, Value>,
        recent: Vec<Value>,
        disk: DiskSender,
        limits: ViewerLimits,
    ) -> Self {
        let skip = recent.len().saturating_sub(RECENT_LOGS);
        let recent = recent.iter().skip(skip).map(|e| log_item(e).0).collect();
        let state = StateSnapshot(state.into_iter().map(|(k, v)| (k, Arc::new(v))).collect());
        Hub {
            doc: Mutex::new(Doc {
                state,
                seq: 0,
                full: None,
            }),
            inner: Mutex::new(Inner {
                viewers: Vec::new(),
                next_viewer: 1,
                seq: 0,
                recent,
                stats: Stats::default(),
                snapshots: HashMap::new(),
            }),
            disk,
            limits,
            page_key: util::random_hex(16).unwrap_or_default(),
        }
    }

    /// The key events must carry (the page gets it in HELLO).
    pub fn page_key(&self) -> &str {
        &self.page_key
    }

    /// Registers a viewer from `client`, unless the caps say no. Its outbox
    /// starts with HELLO, the full state and the last log entries, queued
    /// under the same locks as live pushes, so it misses nothing and sees
    /// nothing twice.
    pub fn attach(&self, client: Option<IpAddr>) -> Result<Outbox, Refused> {
        let client = client.map(client_key);
        // Unguessable, so no other client can speak for this viewer.
        let key = util::random_hex(8).unwrap_or_default();
        let mut doc = lock(&self.doc);
        let full = match &doc.full {
            Some(f) => f.clone(),
            None => {
                // Built once per state version, under the state lock only:
                // pushes wait, viewers and logs do not.
                let f = ServerFrame::text(&format!(
                    r#"{{"type":"STATE","state":{},"full":true,"seq":{}}}"#,
                    doc.state.to_json(),
                    doc.seq
                ));
                doc.full = Some(f.clone());
                f
            }
        };
        let (tx, rx) = sync_channel(OUTBOX_DEPTH);
        let dropped = Arc::new(AtomicBool::new(false));
        let queued = Arc::new(AtomicUsize::new(0));
        let mut g = lock(&self.inner);
        if g.viewers.len() >= self.limits.max_total {
            return Err(Refused::TooManyViewers(self.limits.max_total));
        }
        if client.is_some()
            && g.viewers.iter().filter(|s| s.client == client).count() >= self.limits.max_per_client
        {
            return Err(Refused::TooManyFromClient(self.limits.max_per_client));
        }
        let id = g.next_viewer;
        g.next_viewer += 1;
        let hello = ServerFrame::text(
            &json!({"type": "HELLO", "viewer": format!("v{id}"), "key": key, "event_key": self.page_key})
                .to_string(),
        );
        let skip = g.recent.len().saturating_sub(REPLAY_LOGS);
        let replay = g.recent.iter().skip(skip).map(|item| item.replay.clone());
        for frame in [hello, full].into_iter().chain(replay) {
            queued.fetch_add(frame.wire().len(), Ordering::Relaxed);
            // The outbox is new and deeper than what we queue here.
            let _ = tx.try_send(frame);
        }
        g.viewers.push(Slot {
            id,
            key,
            client,
            tx,
            dropped: dropped.clone(),
            queued: queued.clone(),
        });
        g.stats.peak_viewers = g.stats.peak_viewers.max(g.viewers.len());
        Ok(Outbox {
            id,
            rx,
            dropped,
            queued,
        })
    }

    pub fn detach(&self, id: u64) {
        // The slot (and the frames its channel holds) is freed after unlock.
        let gone = {
            let mut g = lock(&self.inner);
            g.viewers
                .iter()
                .position(|s| s.id == id)
                .map(|i| g.viewers.swap_remove(i))
        };
        drop(gone);
    }

    fn key_matches(s: &Slot, key: &str) -> bool {
        !s.key.is_empty() && util::constant_time_eq(s.key.as_bytes(), key.as_bytes())
    }

    /// A page that is closing says goodbye (`navigator.sendBeacon`): forget
    /// it now instead of at the next failed ping. Dropping its sender ends
    /// its writer thread. False when the viewer or key is unknown.
    pub fn bye(&self, viewer: &str, key: &str) -> bool {
        let Some(id) = parse_viewer(viewer) else {
            return false;
        };
        let gone = {
            let mut g = lock(&self.inner);
            g.viewers
                .iter()
                .position(|s| s.id == id && Self::key_matches(s, key))
                .map(|i| g.viewers.swap_remove(i))
        };
        gone.is_some()
    }

    pub fn viewers(&self) -> usize {
        lock(&self.inner).viewers.len()
    }

    pub fn stats(&self) -> Stats {
        lock(&self.inner).stats
    }

    /// Drops every viewer (server shutdown): their writers send a close frame.
    pub fn close_all(&self) {
        let all = std::mem::take(&mut lock(&self.inner).viewers);
        drop(all);
    }

    /// Queues `frame` for every viewer; drops those that can't keep up and
    /// returns their ids, to be logged once the lock is released.
    fn fan_out(g: &mut Inner, frame: &ServerFrame) -> (usize, Vec<u64>) {
        let bytes = frame.wire().len();
        let mut delivered = 0;
        let mut slow = Vec::new();
        g.viewers.retain(|s| {
            let over_budget = s.queued.load(Ordering::Relaxed) + bytes > OUTBOX_BYTES;
            let sent = if over_budget {
                Err(TrySendError::Full(()))
            } else {
                s.tx.try_send(frame.clone()).map_err(|e| match e {
                    TrySendError::Full(_) => TrySendError::Full(()),
                    TrySendError::Disconnected(_) => TrySendError::Disconnected(()),
                })
            };
            match sent {
                Ok(()) => {
                    s.queued.fetch_add(bytes, Ordering::Relaxed);
                    delivered += 1;
                    true
                }
                Err(TrySendError::Full(())) => {
                    s.dropped.store(true, Ordering::Relaxed);
                    slow.push(s.id);
                    false
                }
                Err(TrySendError::Disconnected(())) => false,
            }
        });
        g.stats.bytes_pushed += (bytes * delivered) as u64;
        (delivered, slow)
    }

    fn log_dropped(slow: Vec<u64>) {
        for id in slow {
            util::log_event(
                "viewer_dropped",
                json!({"viewer": id, "reason": "outbox full"}),
            );
        }
    }

    /// Merges `fields` into the state (a `null` removes a field), pushes them
    /// to every viewer, and queues the merged state for `state.json`.
    pub fn push_state(&self, fields: Map<String, Value>) -> Pushed {
        let mut doc = lock(&self.doc);
        let delta = Value::Object(fields);
        let delta_json = delta.to_string();
        if let Value::Object(fields) = delta {
            for (k, v) in fields {
                if v.is_null() {
                    doc.state.0.remove(&k);
                } else {
                    doc.state.0.insert(k, Arc::new(v));
                }
            }
        }
        doc.seq += 1;
        doc.full = None;
        let seq = doc.seq;
        let frame = ServerFrame::text(&format!(
            r#"{{"type":"STATE","state":{delta_json},"full":false,"seq":{seq}}}"#
        ));
        drop(delta_json);
        let (viewers, slow) = {
            let mut g = lock(&self.inner);
            g.seq = seq;
            g.stats.state_pushes += 1;
            Self::fan_out(&mut g, &frame)
        };
        // Still under the state lock, so state.json versions queue in order.
        self.disk.send(DiskOp::State(doc.state.clone()));
        drop(doc);
        Self::log_dropped(slow);
        Pushed {
            seq,
            viewers,
            bytes: frame.wire().len(),
        }
    }

    /// Appends a log entry: memory ring, disk (session.jsonl + session.md),
    /// and every viewer, in one order.
    pub fn push_log(&self, entry: Value) -> Pushed {
        let (item, live) = log_item(&entry);
        let (seq, viewers, slow, evicted) = {
            let mut g = lock(&self.inner);
            g.recent.push_back(item);
            let evicted = if g.recent.len() > RECENT_LOGS {
                g.recent.pop_front()
            } else {
                None
            };
            g.stats.log_entries += 1;
            self.disk.send(DiskOp::Log(entry));
            let (viewers, slow) = Self::fan_out(&mut g, &live);
            (g.seq, viewers, slow, evicted)
        };
        drop(evicted);
        Self::log_dropped(slow);
        Pushed {
            seq,
            viewers,
            bytes: live.wire().len(),
        }
    }

    /// Logs `message` at `level` from `source` (see `log_entry`).
    pub fn log(&self, level: &str, message: &str, source: &str) -> (Value, Pushed) {
        let entry = log_entry(level, message, source);
        let pushed = self.push_log(entry.clone());
        (entry, pushed)
    }

    /// The last `limit` log entries as a JSON array, oldest first; only
    /// reference counts are taken under the lock.
    pub fn recent_logs_json(&self, limit: usize) -> String {
        let items: Vec<Arc<LogItem>> = {
            let g = lock(&self.inner);
            let skip = g.recent.len().saturating_sub(limit);
            g.recent.iter().skip(skip).cloned().collect()
        };
        let mut out = String::from("[");
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&item.json);
        }
        out.push(']');
        out
    }

    /// Asks the most recently connected viewer what it shows (then older
    /// ones, up to three), and waits for the answer.
    pub fn snapshot(&self, image: bool) -> SnapshotOutcome {
        let ids: Vec<u64> = lock(&self.inner).viewers.iter().map(|s| s.id).collect();
        if ids.is_empty() {
            return SnapshotOutcome::NoViewer;
        }
        for id in ids.iter().rev().take(3) {
            let Ok(token) = util::random_hex(12) else {
                return SnapshotOutcome::NoAnswer;
            };
            let (tx, rx) = sync_channel(1);
            let frame = ServerFrame::text(
                &json!({"type": "SNAPSHOT", "id": token, "image": image}).to_string(),
            );
            let sent = {
                let mut g = lock(&self.inner);
                let sent = g.viewers.iter().find(|s| s.id == *id).is_some_and(|s| {
                    s.queued.fetch_add(frame.wire().len(), Ordering::Relaxed);
                    s.tx.try_send(frame.clone()).is_ok()
                });
                if sent {
                    g.snapshots
                        .insert(token.clone(), Pending { viewer: *id, tx });
                }
                sent
            };
            if !sent {
                continue;
            }
            // Drawing a PNG takes the page longer than reading its DOM.
            let wait = if image {
                SNAPSHOT_WAIT * 5
            } else {
                SNAPSHOT_WAIT
            };
            let answer = rx.recv_timeout(wait);
            lock(&self.inner).snapshots.remove(&token);
            if let Ok(snapshot) = answer {
                return SnapshotOutcome::Answered {
                    viewer: *id,
                    snapshot,
                };
            }
        }
        SnapshotOutcome::NoAnswer
    }

    /// Whether `viewer`/`key` may answer snapshot request `token`: it must
    /// be the viewer the request was sent to, proven by that viewer's key.
    pub fn may_answer(&self, token: &str, viewer: &str, key: &str) -> Result<(), AnswerError> {
        let g = lock(&self.inner);
        let pending = g.snapshots.get(token).ok_or(AnswerError::Unknown)?;
        let asked = parse_viewer(viewer) == Some(pending.viewer)
            && g.viewers
                .iter()
                .any(|s| s.id == pending.viewer && Self::key_matches(s, key));
        if asked {
            Ok(())
        } else {
            Err(AnswerError::NotAsked)
        }
    }

    /// Delivers a snapshot answer (checked again: the request may have ended).
    pub fn answer_snapshot(
        &self,
        token: &str,
        viewer: &str,
        key: &str,
        snapshot: Value,
    ) -> Result<(), AnswerError> {
        self.may_answer(token, viewer, key)?;
        let pending = lock(&self.inner).snapshots.remove(token);
        match pending {
            Some(p) => {
                let _ = p.tx.try_send(snapshot);
                Ok(())
            }
            None => Err(AnswerError::Unknown),
        }
    }
}

/// `v12` → 12.
fn parse_viewer(v: &str) -> Option<u64> {
    v.strip_prefix('v').and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(max_total: usize, max_per_client: usize) -> Hub {
        let (_, _, disk) = crate::page::test_parts("hub");
        Hub::new(
            Map::new(),
            vec![],
            disk,
            ViewerLimits {
                max_total,
                max_per_client,
            },
        )
    }

    fn text(f: &ServerFrame) -> Value {
        serde_json::from_str(f.as_str()).unwrap()
    }

    #[test]
    fn every_viewer_shares_one_frame_per_push() {
        let h = hub(10, 10);
        let a = h.attach(None).unwrap();
        let b = h.attach(None).unwrap();
        let mut fields = Map::new();
        fields.insert("template".into(), json!("<p>x</p>"));
        h.push_state(fields);
        let last = |o: &Outbox| {
            let mut last = None;
            while let Ok(f) = o.rx.try_recv() {
                last = Some(f);
            }
            last.unwrap()
        };
        let (fa, fb) = (last(&a), last(&b));
        // The same bytes, not two copies.
        assert_eq!(fa.wire().as_ptr(), fb.wire().as_ptr());
        assert_eq!(text(&fa)["seq"], 1);
        // A viewer arriving later gets the merged state as its full frame,
        // and so does the next one, from the same frame.
        let c = h.attach(None).unwrap();
        let d = h.attach(None).unwrap();
        let full_c = c.rx.iter().nth(1).unwrap();
        let full_d = d.rx.iter().nth(1).unwrap();
        assert_eq!(text(&full_c)["state"]["template"], "<p>x</p>");
        assert_eq!(full_c.wire().as_ptr(), full_d.wire().as_ptr());
    }

    #[test]
    fn viewers_are_capped_in_total_and_per_client() {
        let h = hub(3, 2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::2".parse().unwrap();
        let _a = h.attach(Some(ip)).unwrap();
        let _b = h.attach(Some(ip)).unwrap();
        assert_eq!(
            h.attach(Some(ip)).err(),
            Some(Refused::TooManyFromClient(2))
        );
        let _c = h.attach(Some(v6a)).unwrap();
        assert_eq!(h.attach(Some(v6b)).err(), Some(Refused::TooManyViewers(3)));
        h.detach(1);
        assert!(h.attach(Some(ip)).is_ok());
    }

    #[test]
    fn snapshot_answers_only_from_the_asked_viewer_with_its_key() {
        let h = Arc::new(hub(10, 10));
        let a = h.attach(None).unwrap();
        let b = h.attach(None).unwrap();
        let hello = |o: &Outbox| text(&o.rx.recv().unwrap());
        let (ha, hb) = (hello(&a), hello(&b));
        let h2 = h.clone();
        let asker = std::thread::spawn(move || h2.snapshot(false));
        // The newest viewer (b) is asked.
        let req = loop {
            let m = text(&b.rx.recv().unwrap());
            if m["type"] == "SNAPSHOT" {
                break m;
            }
        };
        let token = req["id"].as_str().unwrap();
        let key_a = ha["key"].as_str().unwrap();
        let key_b = hb["key"].as_str().unwrap();
        assert_eq!(
            h.answer_snapshot(token, "v1", key_a, json!("forged")),
            Err(AnswerError::NotAsked)
        );
        assert_eq!(
            h.answer_snapshot(token, "v2", key_a, json!("forged")),
            Err(AnswerError::NotAsked)
        );
        assert_eq!(
            h.answer_snapshot("nope", "v2", key_b, json!("x")),
            Err(AnswerError::Unknown)
        );
        assert_eq!(h.answer_snapshot(token, "v2", key_b, json!("real")), Ok(()));
        match asker.join().unwrap() {
            SnapshotOutcome::Answered { viewer, snapshot } => {
                assert_eq!((viewer, snapshot), (2, json!("real")));
            }
            _ => panic!("no answer"),
        }
        assert_ne!(ha["event_key"], Value::Null);
        assert_eq!(ha["event_key"], hb["event_key"]);
    }
}
