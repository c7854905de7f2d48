//! A chat session's inbox: every received frame, numbered, one JSON line
//! each in `inbox.jsonl`, with a condition variable so `wait` long-polls
//! without polling. Numbering continues across restarts of the session
//! process, so a reader's cursor stays valid. One writer (the session's
//! relay loop) appends; any number of readers read by cursor.
//!
//! Memory keeps the newest window; older cursors are served from the file.
//! The file is compacted past a size cap (the oldest half is dropped, and a
//! reader whose cursor falls in the dropped part is told so).
//!
//! Not here: what counts as a frame worth keeping (`session`).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::util;

/// Entries kept in memory, at most this many and this many bytes (so a
/// burst of large messages cannot grow an idle session); older ones are
/// read from the file.
const WINDOW: usize = 512;
const WINDOW_BYTES: usize = 512 << 10;
/// Past this size the file is rewritten with its newest half (small in
/// unit tests, so compaction is exercised).
const MAX_FILE: u64 = if cfg!(test) { 2 << 20 } else { 32 << 20 };

struct Inner {
    /// The newest entries as their JSON lines, oldest first.
    window: VecDeque<(u64, Arc<str>)>,
    /// Bytes of the lines in `window`.
    window_bytes: usize,
    last_seq: u64,
    /// The oldest seq still in the file (after compaction, > 1).
    first_seq: u64,
}

pub struct Inbox {
    inner: Mutex<Inner>,
    cond: Condvar,
    path: PathBuf,
}

/// The only appender, owned by the session's relay loop.
pub struct InboxWriter {
    inbox: Arc<Inbox>,
    file: File,
    size: u64,
}

/// A read's answer: entries after the cursor, the cursor to pass next
/// time, and, when the cursor pointed into a compacted part, what is gone.
pub struct Batch {
    pub lines: Vec<Arc<str>>,
    pub cursor: u64,
    pub last_seq: u64,
    pub dropped: Option<(u64, u64)>,
}

#[derive(Debug, PartialEq)]
pub enum ReadError {
    /// `since` is newer than anything this inbox has numbered.
    AheadOfInbox { since: u64, last_seq: u64 },
}

fn seq_of(line: &str) -> Option<u64> {
    serde_json::from_str::<Value>(line).ok()?["seq"].as_u64()
}

/// Opens (or creates) the inbox at `path`: a line torn by a crash is
/// sealed, numbering resumes after the last entry. Returns the shared
/// reader side, the writer, and the newest entries (for the caller's
/// duplicate filter).
pub fn open(path: &Path) -> io::Result<(Arc<Inbox>, InboxWriter, Vec<Value>)> {
    util::seal_torn_line(path)?;
    let recent = util::tail_jsonl(path, WINDOW)?;
    let mut inner = Inner {
        window: VecDeque::new(),
        window_bytes: 0,
        last_seq: 0,
        first_seq: 0,
    };
    for v in &recent {
        if let Some(seq) = v["seq"].as_u64() {
            inner.last_seq = inner.last_seq.max(seq);
            inner.push(seq, Arc::from(v.to_string()));
        }
    }
    let last_seq = inner.last_seq;
    let first_seq = first_seq_in(path).unwrap_or(last_seq + 1);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let size = file.metadata()?.len();
    let inbox = Arc::new(Inbox {
        inner: Mutex::new(Inner { first_seq, ..inner }),
        cond: Condvar::new(),
        path: path.to_path_buf(),
    });
    let writer = InboxWriter {
        inbox: inbox.clone(),
        file,
        size,
    };
    Ok((inbox, writer, recent))
}

fn first_seq_in(path: &Path) -> Option<u64> {
    let f = File::open(path).ok()?;
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| seq_of(&l))
}

impl InboxWriter {
    /// Numbers `entry` (a frame's fields, or a session event), writes it
    /// to the file as one line, then publishes it and wakes every waiter.
    /// The file write happens before readers can see the entry, and with
    /// no lock held. Returns its seq.
    pub fn append(&mut self, entry: Map<String, Value>) -> u64 {
        let seq = self.inbox.lock().last_seq + 1;
        let mut obj = Map::new();
        obj.insert("seq".into(), json!(seq));
        obj.insert("received".into(), json!(util::now_ms()));
        for (k, v) in entry {
            if k != "seq" && k != "received" {
                obj.insert(k, v);
            }
        }
        let line = Value::Object(obj).to_string();
        let mut buf = String::with_capacity(line.len() + 1);
        buf.push_str(&line);
        buf.push('\n');
        match self.file.write_all(buf.as_bytes()) {
            Ok(()) => self.size += buf.len() as u64,
            // Kept in memory all the same: readers still get it.
            Err(e) => util::log_event(
                "inbox_write_failed",
                json!({"error": e.to_string(), "seq": seq}),
            ),
        }
        {
            let mut g = self.inbox.lock();
            g.last_seq = seq;
            g.push(seq, Arc::from(line));
        }
        self.inbox.cond.notify_all();
        if self.size > MAX_FILE {
            if let Err(e) = self.compact() {
                util::log_event("inbox_compact_failed", json!({"error": e.to_string()}));
            }
        }
        seq
    }

    /// Rewrites the file with its newest half (atomically), so a flood of
    /// messages can never fill the disk.
    fn compact(&mut self) -> io::Result<()> {
        let text = fs::read_to_string(&self.inbox.path)?;
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let keep = &lines[lines.len() / 2..];
        let mut data = keep.join("\n");
        data.push('\n');
        util::write_atomic(&self.inbox.path, data.as_bytes(), 0o600)?;
        self.file = OpenOptions::new().append(true).open(&self.inbox.path)?;
        self.size = data.len() as u64;
        let first = keep.iter().find_map(|l| seq_of(l));
        let mut g = self.inbox.lock();
        if let Some(first) = first {
            g.first_seq = first;
        }
        util::log_event("inbox_compacted", json!({"first_seq": g.first_seq}));
        Ok(())
    }
}

impl Inner {
    /// Adds the newest entry, forgetting the oldest past the window's caps
    /// (the newest one always stays).
    fn push(&mut self, seq: u64, line: Arc<str>) {
        self.window_bytes += line.len();
        self.window.push_back((seq, line));
        while self.window.len() > 1
            && (self.window.len() > WINDOW || self.window_bytes > WINDOW_BYTES)
        {
            if let Some((_, old)) = self.window.pop_front() {
                self.window_bytes -= old.len();
            }
        }
    }
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn last_seq(&self) -> u64 {
        self.lock().last_seq
    }

    /// Entries with `seq > since`, at most `limit` of them and about
    /// `max_bytes` (always at least one), with the cursor at the last one
    /// returned so the next read gets the rest. With nothing to return,
    /// waits up to `wait` for an entry to arrive.
    pub fn read(
        &self,
        since: u64,
        limit: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Batch, ReadError> {
        let deadline = Instant::now() + wait;
        let limit = limit.max(1);
        let mut g = self.lock();
        if since > g.last_seq {
            return Err(ReadError::AheadOfInbox {
                since,
                last_seq: g.last_seq,
            });
        }
        loop {
            let oldest_in_memory = g.window.front().map(|(s, _)| *s).unwrap_or(g.last_seq + 1);
            if since + 1 < oldest_in_memory {
                // Older than memory holds: read the file, without the lock.
                let (first_seq, last_seq) = (g.first_seq, g.last_seq);
                drop(g);
                return Ok(self.read_file(since, limit, max_bytes, first_seq, last_seq));
            }
            if g.last_seq > since {
                let mut size = 0;
                let picked: Vec<&(u64, Arc<str>)> = g
                    .window
                    .iter()
                    .filter(|(s, _)| *s > since)
                    .take(limit)
                    .take_while(|(_, l)| {
                        size += l.len() + 1;
                        size <= max_bytes || size == l.len() + 1
                    })
                    .collect();
                let cursor = picked.last().map_or(since, |(s, _)| *s);
                let lines = picked.into_iter().map(|(_, l)| l.clone()).collect();
                return Ok(Batch {
                    lines,
                    cursor,
                    last_seq: g.last_seq,
                    dropped: None,
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Batch {
                    lines: Vec::new(),
                    cursor: since,
                    last_seq: g.last_seq,
                    dropped: None,
                });
            }
            g = self
                .cond
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn read_file(
        &self,
        since: u64,
        limit: usize,
        max_bytes: usize,
        first_seq: u64,
        last_seq: u64,
    ) -> Batch {
        let dropped = (since + 1 < first_seq).then_some((since + 1, first_seq - 1));
        let mut lines = Vec::new();
        let mut size = 0;
        let mut cursor = since;
        if let Ok(f) = File::open(&self.path) {
            for line in BufReader::new(f).lines().map_while(Result::ok) {
                let Some(seq) = seq_of(&line) else { continue };
                if seq <= since {
                    continue;
                }
                size += line.len() + 1;
                if lines.len() >= limit || (size > max_bytes && !lines.is_empty()) {
                    break;
                }
                cursor = seq;
                lines.push(Arc::from(line));
            }
        }
        if lines.is_empty() {
            // Everything after the cursor was dropped: skip to what remains.
            cursor = cursor.max(first_seq.saturating_sub(1)).min(last_seq);
        }
        Batch {
            lines,
            cursor,
            last_seq,
            dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "wb-inbox-{tag}-{}-{}",
            std::process::id(),
            util::now_ms()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir.join("inbox.jsonl")
    }

    fn entry(content: &str) -> Map<String, Value> {
        json!({"type": "MSG", "content": content})
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn numbers_reads_by_cursor_and_resumes_after_reopen() {
        let path = temp("resume");
        let (inbox, mut w, _) = open(&path).unwrap();
        assert_eq!(w.append(entry("a")), 1);
        assert_eq!(w.append(entry("b")), 2);
        let b = inbox.read(0, 10, 1 << 20, Duration::ZERO).unwrap();
        assert_eq!((b.lines.len(), b.cursor, b.last_seq), (2, 2, 2));
        let b = inbox.read(1, 10, 1 << 20, Duration::ZERO).unwrap();
        assert!(b.lines[0].contains("\"b\""));
        assert_eq!(
            inbox.read(5, 10, 1 << 20, Duration::ZERO).err(),
            Some(ReadError::AheadOfInbox {
                since: 5,
                last_seq: 2
            })
        );
        drop((inbox, w));
        // A crash mid-line: the torn tail is sealed and skipped.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":3,\"tor").unwrap();
        let (inbox, mut w, recent) = open(&path).unwrap();
        assert_eq!(recent.len(), 2);
        assert_eq!(w.append(entry("c")), 3);
        let b = inbox.read(2, 10, 1 << 20, Duration::ZERO).unwrap();
        assert_eq!(b.lines.len(), 1);
        assert!(b.lines[0].contains("\"c\""));
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn old_cursors_are_served_from_the_file() {
        let path = temp("old");
        let (inbox, mut w, _) = open(&path).unwrap();
        for i in 0..(WINDOW + 50) {
            w.append(entry(&format!("m{i}")));
        }
        let b = inbox.read(0, 10, 1 << 20, Duration::ZERO).unwrap();
        assert_eq!(b.lines.len(), 10);
        assert_eq!(b.cursor, 10);
        assert!(b.lines[0].contains("\"m0\""));
        let b = inbox.read(10, 1000, 1 << 20, Duration::ZERO).unwrap();
        assert_eq!(
            b.cursor,
            (WINDOW + 50) as u64,
            "the file path reads to the end"
        );
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn memory_holds_a_bounded_window_and_the_file_the_rest() {
        let path = temp("window");
        let (inbox, mut w, _) = open(&path).unwrap();
        for i in 0..300 {
            w.append(entry(&format!("{i:03}{}", "y".repeat(4000))));
        }
        let g = inbox.lock();
        assert!(g.window_bytes <= WINDOW_BYTES && g.window.len() < 300);
        drop(g);
        let b = inbox.read(0, 1000, 64 << 20, Duration::ZERO).unwrap();
        assert_eq!(
            (b.lines.len(), b.cursor),
            (300, 300),
            "old ones come from the file"
        );
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_byte_cap_splits_a_batch_without_losing_entries() {
        let path = temp("cap");
        let (inbox, mut w, _) = open(&path).unwrap();
        for _ in 0..5 {
            w.append(entry(&"x".repeat(1000)));
        }
        let b = inbox.read(0, 100, 2500, Duration::ZERO).unwrap();
        assert_eq!((b.lines.len(), b.cursor), (2, 2));
        let b = inbox.read(2, 100, 10, Duration::ZERO).unwrap();
        assert_eq!(
            (b.lines.len(), b.cursor),
            (1, 3),
            "at least one, even if over the cap"
        );
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_full_file_is_compacted_and_a_reader_is_told_what_was_dropped() {
        let path = temp("compact");
        let (inbox, mut w, _) = open(&path).unwrap();
        let n = 6000;
        for i in 0..n {
            w.append(entry(&format!("{i:04}{}", "x".repeat(400))));
        }
        let size = fs::metadata(&path).unwrap().len();
        assert!(size <= MAX_FILE + 1024, "{size}");
        let b = inbox.read(0, 5, 1 << 20, Duration::ZERO).unwrap();
        let (from, to) = b.dropped.expect("the oldest entries were dropped");
        assert_eq!(from, 1);
        let first = seq_of(&b.lines[0]).unwrap();
        assert_eq!(first, to + 1, "reading resumes at the oldest entry kept");
        assert_eq!(b.cursor, first + 4);
        assert_eq!(inbox.last_seq(), n);
        // Numbering survives compaction and a reopen.
        drop((inbox, w));
        let (_, mut w, _) = open(&path).unwrap();
        assert_eq!(w.append(entry("after")), n + 1);
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_waiter_wakes_on_append() {
        let path = temp("wait");
        let (inbox, mut w, _) = open(&path).unwrap();
        let reader = inbox.clone();
        let t = std::thread::spawn(move || {
            reader
                .read(0, 10, 1 << 20, Duration::from_secs(20))
                .unwrap()
        });
        std::thread::sleep(Duration::from_millis(50));
        w.append(entry("late"));
        let b = t.join().unwrap();
        assert_eq!(b.lines.len(), 1);
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }
}
