//! What the human sent back from the page: an ordered, numbered event list
//! with a condition variable, so `GET /api/events?wait=S` long-polls without
//! polling and an event that arrives while nobody waits is kept for the next
//! read. Memory keeps the newest records as raw JSON text under a byte
//! budget; a cursor older than that is served from the log on disk
//! (`eventlog.rs`), and numbers that are gone come back as `lost` markers.
//!
//! Events are numbered and written by the disk thread (`disk.rs`), which
//! `commit`s them here only once they are on disk: memory never shows an
//! event that was not stored, and a failed write uses up no number.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::eventlog::{Collect, EventLog, Record};
use crate::ratelimit::{self, KeyedLimiter, Rate, TokenBucket};

/// Per-record bookkeeping counted against the memory budget besides its text.
const RECORD_OVERHEAD: usize = 64;

/// Rate limits for POST /api/event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Each client address (an IPv6 address counts as its /64).
    pub per_client: Rate,
    /// All clients together, so many addresses cannot add up to a flood.
    pub total: Rate,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_client: Rate::new(20.0, 5.0),
            total: Rate::new(100.0, 50.0),
        }
    }
}

impl Limits {
    /// Limits for a sustained rate per client and in total (events/s); the
    /// bursts are four times the rate, at least the defaults'.
    pub fn per_second(client: f64, total: f64) -> Limits {
        Limits {
            per_client: Rate::new((client * 4.0).max(20.0), client),
            total: Rate::new((total * 4.0).max(100.0), total),
        }
    }
}

/// Event names: 1–64 chars of letters, digits, `_ - . :`; `lost` is taken
/// by the marker for events that can no longer be read.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name != "lost"
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

struct Inner {
    ring: VecDeque<Record>,
    bytes: usize,
    last_seq: u64,
    limiter: KeyedLimiter<IpAddr>,
    total: TokenBucket,
}

pub struct Events {
    inner: Mutex<Inner>,
    cond: Condvar,
    log: Arc<EventLog>,
    budget: usize,
    limits: Limits,
}

/// A read's answer: matching events (and `lost` markers) as JSON text, and
/// the cursor to pass next time.
pub struct Batch {
    pub events: Vec<String>,
    pub cursor: u64,
    pub last_seq: u64,
}

#[derive(Debug, PartialEq)]
pub enum ReadError {
    /// `since` is newer than anything this server has numbered.
    AheadOfLog { since: u64, last_seq: u64 },
}

/// Why an event was refused before it was stored.
#[derive(Debug, PartialEq)]
pub enum Limited {
    Client,
    Total,
}

fn cost(r: &Record) -> usize {
    r.text.len() + r.name.len() + RECORD_OVERHEAD
}

impl Events {
    /// `tail` are the newest records on disk, oldest first; `last_seq` the
    /// highest seq on disk (numbering continues after it).
    pub fn new(log: Arc<EventLog>, mut tail: Vec<Record>, last_seq: u64, limits: Limits) -> Self {
        // Files written by versions that restarted numbering can repeat a
        // seq; memory must be in strict seq order (the first copy wins, as
        // on disk reads).
        tail.sort_by_key(|r| r.seq);
        tail.dedup_by_key(|r| r.seq);
        let budget = log.quota().memory_bytes;
        let mut inner = Inner {
            ring: VecDeque::new(),
            bytes: 0,
            last_seq,
            limiter: KeyedLimiter::new(limits.per_client, 4096, Duration::from_secs(60)),
            total: TokenBucket::full(limits.total, Instant::now()),
        };
        Self::push(&mut inner, tail, budget);
        inner.last_seq = last_seq.max(inner.last_seq);
        Events {
            inner: Mutex::new(inner),
            cond: Condvar::new(),
            log,
            budget,
            limits,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(g: &mut Inner, recs: Vec<Record>, budget: usize) {
        for r in recs {
            g.last_seq = g.last_seq.max(r.seq);
            g.bytes += cost(&r);
            g.ring.push_back(r);
        }
        // The newest record always stays, whatever its size.
        while g.bytes > budget && g.ring.len() > 1 {
            if let Some(old) = g.ring.pop_front() {
                g.bytes -= cost(&old);
            }
        }
    }

    /// Takes one token from the bucket of `addr` (its /64 for IPv6), then
    /// one from the bucket every client shares.
    pub fn admit(&self, addr: IpAddr) -> Result<(), Limited> {
        let now = Instant::now();
        let mut g = self.lock();
        if !g.limiter.try_take(&ratelimit::client_key(addr), now) {
            return Err(Limited::Client);
        }
        if !g.total.try_take(now, self.limits.total) {
            return Err(Limited::Total);
        }
        Ok(())
    }

    /// Called by the disk writer with records that are on disk, in seq
    /// order: they become readable and every waiter wakes.
    pub fn commit(&self, recs: Vec<Record>) {
        if recs.is_empty() {
            return;
        }
        let mut g = self.lock();
        Self::push(&mut g, recs, self.budget);
        drop(g);
        self.cond.notify_all();
    }

    pub fn last_seq(&self) -> u64 {
        self.lock().last_seq
    }

    /// Bytes of record text held in memory (with bookkeeping).
    pub fn memory_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Events with `seq > since` (only `names`, if given; `lost` markers
    /// always), at most `limit` and about `max_bytes`. With nothing to
    /// return, waits up to `wait` for one to arrive. Numbers older than
    /// memory are read from disk, without holding the lock.
    pub fn read(
        &self,
        since: u64,
        names: &[String],
        limit: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Batch, ReadError> {
        let deadline = Instant::now() + wait;
        let mut out = Collect::new(names, limit, max_bytes);
        // Every number up to `pos` has been offered to `out`; a filtered
        // wait that wakes scans only what is new.
        let mut pos = since;
        let mut g = self.lock();
        if since > g.last_seq {
            return Err(ReadError::AheadOfLog {
                since,
                last_seq: g.last_seq,
            });
        }
        loop {
            let mem_first = g.ring.front().map(|r| r.seq).unwrap_or(g.last_seq + 1);
            if pos + 1 < mem_first {
                drop(g);
                pos = self.log.scan(pos, mem_first, &mut out);
                g = self.lock();
                if out.full() || pos + 1 < mem_first {
                    break;
                }
                continue;
            }
            // Memory is in seq order: skip to the first record after `pos`.
            let from = g.ring.partition_point(|r| r.seq <= pos);
            for r in g.ring.range(from..) {
                if r.seq > pos + 1 && !out.lost(pos + 1, r.seq - 1, "unreadable") {
                    break;
                }
                if !out.offer(r.seq, &r.name, &r.text) {
                    break;
                }
                pos = r.seq;
                if out.full() {
                    break;
                }
            }
            let now = Instant::now();
            if !out.items.is_empty() || now >= deadline {
                break;
            }
            g = self
                .cond
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(Batch {
            cursor: out.last.unwrap_or(since),
            events: out.items,
            last_seq: g.last_seq,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::eventlog::{EventLog, Quota, Writer};
    use super::*;
    use serde_json::{json, Value};

    struct T {
        ev: Arc<Events>,
        w: Writer,
        next: u64,
        dir: std::path::PathBuf,
    }

    impl T {
        fn new(tag: &str, quota: Quota) -> T {
            let dir = std::env::temp_dir().join(format!(
                "wb-events-{tag}-{}-{}",
                std::process::id(),
                crate::util::now_ms()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let o = EventLog::open(&dir, quota).unwrap();
            let ev = Arc::new(Events::new(
                o.log.clone(),
                o.tail,
                o.last_seq,
                Limits::default(),
            ));
            T {
                ev,
                w: Writer::new(o.log),
                next: o.last_seq + 1,
                dir,
            }
        }

        fn append(&mut self, name: &str, data: Value) {
            let text = json!({"seq": self.next, "name": name, "data": data}).to_string();
            let r = Record {
                seq: self.next,
                name: name.into(),
                text: text.into(),
            };
            self.next += 1;
            self.w.append(std::slice::from_ref(&r)).unwrap();
            self.ev.commit(vec![r]);
        }

        fn read(&self, since: u64, names: &[String]) -> Vec<Value> {
            self.ev
                .read(since, names, 1000, 1 << 30, Duration::ZERO)
                .unwrap()
                .events
                .iter()
                .map(|t| serde_json::from_str(t).unwrap())
                .collect()
        }
    }

    impl Drop for T {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn names_follow_the_rule() {
        assert!(valid_name("step3-done"));
        assert!(valid_name("a.b:c_d"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name("lost"));
        assert!(!valid_name(&"x".repeat(65)));
    }

    #[test]
    fn read_returns_after_cursor_and_filters() {
        let mut t = T::new("read", Quota::default());
        t.append("a", json!(1));
        t.append("b", json!(2));
        t.append("a", json!(3));
        let ev = &t.ev;
        let all = ev.read(0, &[], 100, 1 << 20, Duration::ZERO).unwrap();
        assert_eq!(all.events.len(), 3);
        assert_eq!(all.cursor, 3);
        let only_b = ev
            .read(0, &["b".into()], 100, 1 << 20, Duration::ZERO)
            .unwrap();
        assert_eq!(only_b.events.len(), 1);
        assert_eq!(only_b.cursor, 2);
        let none = ev.read(3, &[], 100, 1 << 20, Duration::ZERO).unwrap();
        assert!(none.events.is_empty());
        assert_eq!(none.cursor, 3);
        assert_eq!(
            ev.read(9, &[], 100, 1 << 20, Duration::ZERO).err(),
            Some(ReadError::AheadOfLog {
                since: 9,
                last_seq: 3
            })
        );
    }

    #[test]
    fn memory_stays_in_budget_and_old_cursors_come_from_disk() {
        let quota = Quota {
            max_bytes: 1 << 30,
            segment_bytes: 4096,
            memory_bytes: 2000,
        };
        let mut t = T::new("budget", quota);
        t.append("reading", json!({"v": 5.02}));
        for i in 0..500 {
            t.append("tick", json!(i));
        }
        assert!(t.ev.memory_bytes() <= 2000, "{}", t.ev.memory_bytes());
        let got = t.read(0, &["reading".into()]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["seq"], 1);
        assert_eq!(got[0]["data"]["v"], 5.02);
        // Unfiltered from the start: every number once, in order.
        let all = t.read(0, &[]);
        let seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=501).collect::<Vec<u64>>());
        // A byte budget cuts a batch; the cursor continues where it stopped.
        let b = t.ev.read(0, &[], 1000, 500, Duration::ZERO).unwrap();
        assert!(b.events.len() < 20 && !b.events.is_empty());
        assert_eq!(b.cursor, b.events.len() as u64);
    }

    #[test]
    fn waiter_wakes_on_commit_and_filtered_waiter_sees_only_its_name() {
        let mut t = T::new("wake", Quota::default());
        let ev = t.ev.clone();
        let th = std::thread::spawn(move || {
            ev.read(0, &["x".into()], 10, 1 << 20, Duration::from_secs(20))
                .unwrap()
        });
        std::thread::sleep(Duration::from_millis(50));
        t.append("y", json!({}));
        t.append("x", json!({}));
        let batch = th.join().unwrap();
        assert_eq!(batch.events.len(), 1);
        assert_eq!(batch.cursor, 2);
    }

    #[test]
    fn rate_limit_per_client_and_in_total() {
        let t = T::new("rate", Quota::default());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let admitted = (0..100).filter(|_| t.ev.admit(ip).is_ok()).count();
        assert!((20..=21).contains(&admitted), "{admitted}");
        // Many addresses of one IPv6 /64 share a bucket.
        let v6 = (0..100)
            .filter(|i| {
                let a: IpAddr = format!("fd00:1:2:3::{i:x}").parse().unwrap();
                t.ev.admit(a).is_ok()
            })
            .count();
        assert!((20..=21).contains(&v6), "{v6}");
        // Distinct addresses run into the shared bucket.
        let mut total_refused = 0;
        for i in 0..200u32 {
            let a: IpAddr = std::net::Ipv4Addr::from(0x7f00_0100 + i).into();
            if t.ev.admit(a) == Err(Limited::Total) {
                total_refused += 1;
            }
        }
        assert!(total_refused > 0);
    }
}
