//! What the human sent back from the page: an ordered, numbered event list
//! with a condition variable, so `GET /api/events?wait=S` long-polls without
//! polling and an event that arrives while nobody waits is kept for the next
//! read. events.jsonl is the durable copy; memory keeps the newest window.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::disk::{DiskOp, DiskSender};
use crate::ratelimit::{self, KeyedLimiter, Rate};
use crate::util;

/// Events kept in memory; older ones stay in events.jsonl.
const WINDOW: usize = 10_000;
/// Per-address token bucket for POST /api/event.
const RATE: Rate = Rate::new(20.0, 5.0);

/// Event names: 1–64 chars of letters, digits, `_ - . :`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

struct Inner {
    list: VecDeque<Value>,
    last_seq: u64,
    limiter: KeyedLimiter<IpAddr>,
}

pub struct Events {
    inner: Mutex<Inner>,
    cond: Condvar,
    disk: DiskSender,
}

/// A read's answer: matching events and the cursor to pass next time.
pub struct Batch {
    pub events: Vec<Value>,
    pub cursor: u64,
    pub last_seq: u64,
}

#[derive(Debug, PartialEq)]
pub enum ReadError {
    /// `since` is newer than anything this server has numbered.
    AheadOfLog { since: u64, last_seq: u64 },
}

impl Events {
    pub fn new(existing: Vec<Value>, disk: DiskSender) -> Self {
        let last_seq = existing
            .iter()
            .filter_map(|e| e["seq"].as_u64())
            .max()
            .unwrap_or(0);
        let mut list: VecDeque<Value> = existing.into();
        while list.len() > WINDOW {
            list.pop_front();
        }
        Events {
            inner: Mutex::new(Inner {
                list,
                last_seq,
                limiter: KeyedLimiter::new(RATE, 4096, Duration::from_secs(60)),
            }),
            cond: Condvar::new(),
            disk,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one token from the bucket of `addr` (its /64 for IPv6); false
    /// when it is empty.
    pub fn admit(&self, addr: IpAddr) -> bool {
        self.lock()
            .limiter
            .try_take(&ratelimit::client_key(addr), Instant::now())
    }

    /// Numbers and stores an event, queues it for disk, wakes every waiter.
    pub fn append(&self, name: &str, data: Value, from: Value) -> Value {
        let mut g = self.lock();
        g.last_seq += 1;
        let ev = json!({"seq": g.last_seq, "ts": util::rfc3339_now(), "name": name, "data": data, "from": from});
        g.list.push_back(ev.clone());
        if g.list.len() > WINDOW {
            g.list.pop_front();
        }
        self.disk.send(DiskOp::Event(ev.clone()));
        drop(g);
        self.cond.notify_all();
        ev
    }

    pub fn last_seq(&self) -> u64 {
        self.lock().last_seq
    }

    /// Events with `seq > since` (only `names`, if given), at most `limit`.
    /// With nothing to return, waits up to `wait` for one to arrive.
    pub fn read(
        &self,
        since: u64,
        names: &[String],
        limit: usize,
        wait: Duration,
    ) -> Result<Batch, ReadError> {
        let deadline = Instant::now() + wait;
        let mut g = self.lock();
        if since > g.last_seq {
            return Err(ReadError::AheadOfLog {
                since,
                last_seq: g.last_seq,
            });
        }
        loop {
            let events: Vec<Value> = g
                .list
                .iter()
                .filter(|e| e["seq"].as_u64().unwrap_or(0) > since)
                .filter(|e| names.is_empty() || names.iter().any(|n| e["name"].as_str() == Some(n)))
                .take(limit.max(1))
                .cloned()
                .collect();
            let now = Instant::now();
            if !events.is_empty() || now >= deadline {
                let cursor = events
                    .last()
                    .and_then(|e| e["seq"].as_u64())
                    .unwrap_or(since);
                return Ok(Batch {
                    events,
                    cursor,
                    last_seq: g.last_seq,
                });
            }
            g = self
                .cond
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> Events {
        let (tx, _rx) = std::sync::mpsc::channel();
        // The receiver is dropped: disk ops are discarded in this unit test.
        Events::new(vec![], super::super::disk::DiskSender::for_tests(tx))
    }

    #[test]
    fn names_follow_the_rule() {
        assert!(valid_name("step3-done"));
        assert!(valid_name("a.b:c_d"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name(&"x".repeat(65)));
    }

    #[test]
    fn read_returns_after_cursor_and_filters() {
        let ev = events();
        ev.append("a", json!(1), json!(null));
        ev.append("b", json!(2), json!(null));
        ev.append("a", json!(3), json!(null));
        let all = ev.read(0, &[], 100, Duration::ZERO).unwrap();
        assert_eq!(all.events.len(), 3);
        assert_eq!(all.cursor, 3);
        let only_b = ev.read(0, &["b".into()], 100, Duration::ZERO).unwrap();
        assert_eq!(only_b.events.len(), 1);
        assert_eq!(only_b.cursor, 2);
        let none = ev.read(3, &[], 100, Duration::ZERO).unwrap();
        assert!(none.events.is_empty());
        assert_eq!(none.cursor, 3);
        assert_eq!(
            ev.read(9, &[], 100, Duration::ZERO).err(),
            Some(ReadError::AheadOfLog {
                since: 9,
                last_seq: 3
            })
        );
    }

    #[test]
    fn waiter_wakes_on_append() {
        let ev = std::sync::Arc::new(events());
        let ev2 = ev.clone();
        let t = std::thread::spawn(move || ev2.read(0, &[], 10, Duration::from_secs(20)).unwrap());
        std::thread::sleep(Duration::from_millis(50));
        ev.append("x", json!({}), json!(null));
        let batch = t.join().unwrap();
        assert_eq!(batch.events.len(), 1);
    }

    #[test]
    fn rate_limit_has_a_burst() {
        let ev = events();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let admitted = (0..100).filter(|_| ev.admit(ip)).count();
        assert!((20..=21).contains(&admitted), "{admitted}");
    }
}
