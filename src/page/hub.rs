//! The push hub: the page's current state, the recent log, and one bounded
//! outbox per connected viewer. Every push is built once, numbered under the
//! lock (so every viewer sees the same order), cloned into each outbox with
//! `try_send`, and handed to the disk writer — all without I/O under the lock.
//! A viewer whose outbox is full is dropped; it reconnects and gets full state.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Map, Value};
use tungstenite::Message;

use super::disk::{DiskOp, DiskSender};

/// Messages a viewer may have queued before it counts as too slow.
pub const OUTBOX_DEPTH: usize = 1024;
/// Bytes a viewer may have queued before it counts as too slow, so a stalled
/// viewer can't make the server hold many copies of multi-MiB states.
pub const OUTBOX_BYTES: usize = 16 << 20;
/// Log entries replayed to a viewer that connects.
pub const REPLAY_LOGS: usize = 50;
/// Log entries kept in memory for `GET /api/log`.
pub const RECENT_LOGS: usize = 1000;

/// What a viewer's writer thread receives.
pub struct Outbox {
    pub id: u64,
    pub rx: Receiver<Message>,
    /// Set when the hub gave up on this viewer: stop writing at once.
    pub dropped: Arc<AtomicBool>,
    /// Bytes queued and not yet written; the writer subtracts what it wrote.
    pub queued: Arc<AtomicUsize>,
}

struct Slot {
    id: u64,
    /// Secret the page presents to say it is leaving (`POST /api/bye`).
    key: String,
    tx: SyncSender<Message>,
    dropped: Arc<AtomicBool>,
    queued: Arc<AtomicUsize>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub state_pushes: u64,
    pub log_entries: u64,
    pub peak_viewers: usize,
    pub bytes_pushed: u64,
}

struct Inner {
    viewers: Vec<Slot>,
    next_viewer: u64,
    state: Map<String, Value>,
    seq: u64,
    recent: VecDeque<Value>,
    stats: Stats,
}

pub struct Hub {
    inner: Mutex<Inner>,
    disk: DiskSender,
}

/// The result of one push: how many viewers it was queued for and its size.
#[derive(Debug, Clone, Copy)]
pub struct Pushed {
    pub seq: u64,
    pub viewers: usize,
    pub bytes: usize,
}

impl Hub {
    pub fn new(state: Map<String, Value>, recent: Vec<Value>, disk: DiskSender) -> Self {
        let mut q: VecDeque<Value> = recent.into();
        while q.len() > RECENT_LOGS {
            q.pop_front();
        }
        Hub {
            inner: Mutex::new(Inner {
                viewers: Vec::new(),
                next_viewer: 1,
                state,
                seq: 0,
                recent: q,
                stats: Stats::default(),
            }),
            disk,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not take the page down with a poisoned lock.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a viewer. Its outbox starts with a HELLO, the full state and
    /// the last log entries, queued under the same lock as live pushes, so it
    /// misses nothing and sees nothing twice.
    pub fn attach(&self) -> Outbox {
        let (tx, rx) = sync_channel(OUTBOX_DEPTH);
        let dropped = Arc::new(AtomicBool::new(false));
        let queued = Arc::new(AtomicUsize::new(0));
        let mut g = self.lock();
        let id = g.next_viewer;
        g.next_viewer += 1;
        // Unguessable, so no other client can make this viewer leave.
        let key = crate::util::random_hex(8).unwrap_or_default();
        let hello = json!({"type": "HELLO", "viewer": format!("v{id}"), "key": key});
        let full = json!({"type": "STATE", "state": Value::Object(g.state.clone()), "full": true, "seq": g.seq});
        let mut first = vec![hello.to_string(), full.to_string()];
        let skip = g.recent.len().saturating_sub(REPLAY_LOGS);
        for entry in g.recent.iter().skip(skip) {
            first.push(json!({"type": "LOG", "entry": entry, "replay": true}).to_string());
        }
        for text in first {
            queued.fetch_add(text.len(), Ordering::Relaxed);
            // The outbox is new and deeper than what we queue here.
            let _ = tx.try_send(Message::text(text));
        }
        g.viewers.push(Slot {
            id,
            key,
            tx,
            dropped: dropped.clone(),
            queued: queued.clone(),
        });
        g.stats.peak_viewers = g.stats.peak_viewers.max(g.viewers.len());
        Outbox {
            id,
            rx,
            dropped,
            queued,
        }
    }

    pub fn detach(&self, id: u64) {
        self.lock().viewers.retain(|s| s.id != id);
    }

    /// A page that is closing says goodbye (`navigator.sendBeacon`): forget
    /// it now instead of at the next failed ping. Dropping its sender ends
    /// its writer thread. False when the viewer or key is unknown.
    pub fn bye(&self, viewer: &str, key: &str) -> bool {
        let Some(id) = viewer.strip_prefix('v').and_then(|n| n.parse::<u64>().ok()) else {
            return false;
        };
        let mut g = self.lock();
        let before = g.viewers.len();
        g.viewers.retain(|s| {
            !(s.id == id
                && !s.key.is_empty()
                && crate::util::constant_time_eq(s.key.as_bytes(), key.as_bytes()))
        });
        g.viewers.len() < before
    }

    pub fn viewers(&self) -> usize {
        self.lock().viewers.len()
    }

    pub fn viewer_ids(&self) -> Vec<u64> {
        self.lock().viewers.iter().map(|s| s.id).collect()
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats
    }

    /// Drops every viewer (server shutdown): their writers send a close frame.
    pub fn close_all(&self) {
        self.lock().viewers.clear();
    }

    /// Queues `text` for every viewer; drops those that can't keep up.
    fn fan_out(g: &mut Inner, text: String) -> (usize, usize) {
        let bytes = text.len();
        let msg = Message::text(text);
        let mut delivered = 0;
        g.viewers.retain(|s| {
            let over_budget = s.queued.load(Ordering::Relaxed) + bytes > OUTBOX_BYTES;
            let sent = if over_budget {
                Err(TrySendError::Full(()))
            } else {
                s.tx.try_send(msg.clone()).map_err(|e| match e {
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
                    crate::util::log_event(
                        "viewer_dropped",
                        json!({"viewer": s.id, "reason": "outbox full"}),
                    );
                    false
                }
                Err(TrySendError::Disconnected(())) => false,
            }
        });
        g.stats.bytes_pushed += (bytes * delivered) as u64;
        (delivered, bytes)
    }

    /// Merges `fields` into the state (a `null` removes a field), pushes them
    /// to every viewer, and queues the merged state for `state.json`.
    pub fn push_state(&self, fields: Map<String, Value>) -> Pushed {
        let mut g = self.lock();
        for (k, v) in &fields {
            if v.is_null() {
                g.state.remove(k);
            } else {
                g.state.insert(k.clone(), v.clone());
            }
        }
        g.seq += 1;
        let seq = g.seq;
        let text =
            json!({"type": "STATE", "state": Value::Object(fields), "full": false, "seq": seq})
                .to_string();
        let (viewers, bytes) = Self::fan_out(&mut g, text);
        g.stats.state_pushes += 1;
        self.disk.send(DiskOp::State(g.state.clone()));
        Pushed {
            seq,
            viewers,
            bytes,
        }
    }

    /// Appends a log entry: memory ring, disk (session.jsonl + session.md),
    /// and every viewer, in one order.
    pub fn push_log(&self, entry: Value) -> Pushed {
        let mut g = self.lock();
        g.recent.push_back(entry.clone());
        if g.recent.len() > RECENT_LOGS {
            g.recent.pop_front();
        }
        g.stats.log_entries += 1;
        self.disk.send(DiskOp::Log(entry.clone()));
        let text = json!({"type": "LOG", "entry": entry}).to_string();
        let (viewers, bytes) = Self::fan_out(&mut g, text);
        Pushed {
            seq: g.seq,
            viewers,
            bytes,
        }
    }

    /// The last `limit` log entries, oldest first.
    pub fn recent_logs(&self, limit: usize) -> Vec<Value> {
        let g = self.lock();
        let skip = g.recent.len().saturating_sub(limit);
        g.recent.iter().skip(skip).cloned().collect()
    }

    /// Sends one message to one viewer (snapshot requests). False if gone.
    pub fn send_to(&self, viewer: u64, text: String) -> bool {
        let g = self.lock();
        g.viewers
            .iter()
            .find(|s| s.id == viewer)
            .map(|s| {
                s.queued.fetch_add(text.len(), Ordering::Relaxed);
                s.tx.try_send(Message::text(text)).is_ok()
            })
            .unwrap_or(false)
    }
}
