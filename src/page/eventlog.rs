//! The events log on disk: `events.jsonl`, then `events-000001.jsonl`,
//! `events-000002.jsonl`, … — segments, oldest first; the highest-numbered
//! one is appended to, and a new one starts when it reaches the segment size.
//! A byte quota bounds the total: the oldest segments are deleted first, and
//! what they held comes back to readers as an explicit `lost` marker, never
//! as silence. Start-up reads only the tail; an old cursor is served by
//! scanning segments from the one that holds it. Segments are never renamed,
//! so a reader's copy of the segment table stays true while it reads.
//!
//! Not here: numbering and the in-memory window (`events.rs`), and the one
//! thread that writes (`disk.rs`, which owns the `Writer`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Deserialize;
use serde_json::json;

use crate::util::{self, Lines};

/// Longest record line read back; longer lines are skipped as invalid (an
/// event body is at most 64 KiB, so its record is far smaller than this).
pub const MAX_LINE: usize = 1 << 20;
/// About how many bytes apart the sparse index notes a (seq, offset) pair,
/// so a read from an old cursor seeks near it instead of scanning its whole
/// segment: 64 entries for a 4 MiB segment.
const INDEX_EVERY: u64 = 64 << 10;

/// How much the events log may hold, on disk and in memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    /// All segments together (`--events-max-bytes`).
    pub max_bytes: u64,
    /// A new segment starts once the current one holds this much.
    pub segment_bytes: u64,
    /// Raw record text kept in memory for fast reads (`--events-memory-bytes`).
    pub memory_bytes: usize,
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            max_bytes: 64 << 20,
            segment_bytes: 4 << 20,
            memory_bytes: 8 << 20,
        }
    }
}

/// One stored event: its number, its name, and its JSON line as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub seq: u64,
    pub name: Box<str>,
    pub text: Box<str>,
}

#[derive(Deserialize)]
struct Head {
    seq: u64,
    name: String,
}

/// Parses one line into a record; `None` for anything that is not a whole
/// event record (torn, invalid UTF-8, not JSON, no seq or name).
pub fn parse_line(line: &[u8]) -> Option<Record> {
    let head: Head = serde_json::from_slice(line).ok()?;
    // from_slice validated the UTF-8 of every string; this cannot fail then.
    let text = std::str::from_utf8(line).ok()?;
    Some(Record {
        seq: head.seq,
        name: head.name.into(),
        text: text.into(),
    })
}

/// `events.jsonl` is segment 0 (and the only one of older versions).
pub fn segment_path(dir: &Path, id: u64) -> PathBuf {
    if id == 0 {
        dir.join("events.jsonl")
    } else {
        dir.join(format!("events-{id:06}.jsonl"))
    }
}

/// The segment number of an events log file name.
pub fn segment_id(file_name: &str) -> Option<u64> {
    if file_name == "events.jsonl" {
        return Some(0);
    }
    let digits = file_name.strip_prefix("events-")?.strip_suffix(".jsonl")?;
    (digits.len() >= 6 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
        .filter(|&n| n > 0)
}

#[derive(Debug, Clone)]
struct Segment {
    id: u64,
    /// The first readable seq in it; 0 while it holds none.
    first_seq: u64,
    bytes: u64,
    /// Sparse index: (seq, byte offset of the line that holds it), in
    /// order. Noted by the writer as it appends, and by scans of segments
    /// written before this start.
    index: Vec<(u64, u64)>,
    /// The writer notes its next record at or after this offset.
    next_index_at: u64,
}

impl Segment {
    fn new(id: u64, first_seq: u64, bytes: u64) -> Segment {
        Segment {
            id,
            first_seq,
            bytes,
            index: Vec::new(),
            next_index_at: bytes,
        }
    }

    /// Where to start reading for numbers after `after`: the last indexed
    /// line at or before `after + 1` (seqs only grow within a segment).
    fn seek_for(&self, after: u64) -> u64 {
        let i = self.index.partition_point(|&(seq, _)| seq <= after + 1);
        if i == 0 {
            0
        } else {
            self.index[i - 1].1
        }
    }

    /// Adds what a scan noted, where the index has nothing within half a
    /// spacing, so scans from many cursors cannot grow it past ~2 entries
    /// per `INDEX_EVERY`.
    fn merge_index(&mut self, found: &[(u64, u64)]) {
        for &(seq, off) in found {
            let i = self.index.partition_point(|&(_, o)| o < off);
            let near = |j: usize| {
                self.index
                    .get(j)
                    .is_some_and(|&(_, o)| o.abs_diff(off) < INDEX_EVERY / 2)
            };
            if !(near(i) || i > 0 && near(i - 1)) {
                self.index.insert(i, (seq, off));
            }
        }
    }
}

/// Collects a read's answer: event lines, and `lost` markers for every
/// range of numbers that is gone, up to a count and a byte budget (at least
/// one item is always taken).
pub struct Collect<'a> {
    pub items: Vec<String>,
    /// The seq of the last item taken (a marker counts with its `to_seq`).
    pub last: Option<u64>,
    bytes: usize,
    limit: usize,
    max_bytes: usize,
    names: &'a [String],
}

impl<'a> Collect<'a> {
    pub fn new(names: &'a [String], limit: usize, max_bytes: usize) -> Self {
        Collect {
            items: Vec::new(),
            last: None,
            bytes: 0,
            limit: limit.max(1),
            max_bytes,
            names,
        }
    }

    pub fn full(&self) -> bool {
        self.items.len() >= self.limit || self.bytes >= self.max_bytes
    }

    /// Offers one event; taken if its name passes the filter. False when
    /// there is no room (nothing taken).
    pub fn offer(&mut self, seq: u64, name: &str, text: &str) -> bool {
        if !self.names.is_empty() && !self.names.iter().any(|n| n == name) {
            return true;
        }
        self.take(seq, text.to_string())
    }

    fn take(&mut self, seq: u64, text: String) -> bool {
        if !self.items.is_empty() && self.bytes + text.len() > self.max_bytes {
            self.bytes = self.max_bytes;
            return false;
        }
        if self.items.len() >= self.limit {
            return false;
        }
        self.bytes += text.len() + 1;
        self.items.push(text);
        self.last = Some(seq);
        true
    }

    /// Reports `from..=to` as gone, whatever the name filter (the human's
    /// answer may have been among them). False when there is no room.
    pub fn lost(&mut self, from: u64, to: u64, reason: &str) -> bool {
        self.take(to, lost_marker(from, to, reason))
    }
}

/// The marker for events that can no longer be read: `type` and `name` are
/// `"lost"` (a page cannot send that name), `seq` is `to_seq` so a client
/// that takes the last `seq` as its cursor moves past the gap.
pub fn lost_marker(from: u64, to: u64, reason: &str) -> String {
    json!({"type": "lost", "name": "lost", "seq": to, "from_seq": from, "to_seq": to,
           "count": to - from + 1, "reason": reason})
    .to_string()
}

/// The segment table, shared by the writer and readers. Readers copy it
/// under the lock and read files after.
pub struct EventLog {
    dir: PathBuf,
    quota: Quota,
    table: Mutex<Vec<Segment>>,
}

/// What start-up found: the log, the newest records (within the memory
/// budget, oldest first) and the highest seq on disk.
pub struct Opened {
    pub log: Arc<EventLog>,
    pub tail: Vec<Record>,
    pub last_seq: u64,
}

impl EventLog {
    /// Opens the log in `dir`: lists the segments, enforces the quota, ends a
    /// torn last line, and reads the tail back. Never reads whole files
    /// except to find the highest seq when the tail holds none.
    pub fn open(dir: &Path, quota: Quota) -> io::Result<Opened> {
        let mut ids: Vec<u64> = fs::read_dir(dir)?
            .flatten()
            .filter_map(|e| segment_id(e.file_name().to_str()?))
            .collect();
        ids.sort_unstable();
        if ids.is_empty() {
            ids.push(0);
        }
        let active = *ids.last().expect("at least one segment");
        // Not fatal: the next append fails and says why, the log still reads.
        if let Err(e) = util::seal_torn_line(&segment_path(dir, active)) {
            util::log_event(
                "disk_error",
                json!({"segment": active, "error": e.to_string()}),
            );
        }
        let mut table: Vec<Segment> = ids
            .iter()
            .map(|&id| {
                let path = segment_path(dir, id);
                let bytes = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                Segment::new(id, first_seq(&path), bytes)
            })
            .collect();
        let log = EventLog {
            dir: dir.to_path_buf(),
            quota,
            table: Mutex::new(Vec::new()),
        };
        // A single segment over the whole quota (an old, unbounded
        // events.jsonl): keep its newest part in a new segment, then let the
        // quota drop the rest.
        if let Some(last) = table.last().cloned() {
            if table.len() == 1 && last.bytes > quota.max_bytes {
                let keep = quota.segment_bytes.min(quota.max_bytes / 2);
                match log.copy_tail(&last, keep) {
                    Ok(seg) => table.push(seg),
                    // Kept whole for now; the quota drops it once newer
                    // segments exist.
                    Err(e) => util::log_event(
                        "disk_error",
                        json!({"segment": last.id, "error": e.to_string(), "while": "cutting an oversized segment"}),
                    ),
                }
            }
        }
        *log.lock() = table;
        log.delete(log.over_quota());

        let tail = log.read_tail(quota.memory_bytes);
        let mut last_seq = tail.iter().map(|r| r.seq).max().unwrap_or(0);
        if last_seq == 0 {
            last_seq = log.highest_seq();
        }
        Ok(Opened {
            log: Arc::new(log),
            tail,
            last_seq,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Segment>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// Bytes in every segment (what the quota bounds).
    pub fn bytes_on_disk(&self) -> u64 {
        self.lock().iter().map(|s| s.bytes).sum()
    }

    /// The lowest seq still on disk (0 when none is).
    pub fn floor(&self) -> u64 {
        self.lock()
            .iter()
            .find(|s| s.first_seq != 0)
            .map(|s| s.first_seq)
            .unwrap_or(0)
    }

    fn copy_tail(&self, seg: &Segment, keep: u64) -> io::Result<Segment> {
        let mut f = File::open(segment_path(&self.dir, seg.id))?;
        let start = seg.bytes.saturating_sub(keep);
        f.seek(SeekFrom::Start(start))?;
        let mut lines = Lines::new(BufReader::new(f), MAX_LINE);
        if start > 0 {
            lines.skip_partial()?;
        }
        let mut out = Vec::new();
        let mut first = 0;
        while let Some(line) = lines.next_line()? {
            if let Some(rec) = line.and_then(parse_line) {
                if first == 0 {
                    first = rec.seq;
                }
                out.extend_from_slice(rec.text.as_bytes());
                out.push(b'\n');
            }
        }
        let id = seg.id + 1;
        util::write_atomic(&segment_path(&self.dir, id), &out, 0o600)?;
        util::log_event(
            "events_oversized_segment",
            json!({"segment": seg.id, "bytes": seg.bytes, "kept_bytes": out.len(), "into": id}),
        );
        Ok(Segment::new(id, first, out.len() as u64))
    }

    /// Takes the oldest segments off the table until the total fits the
    /// quota (the newest always stays); the caller deletes their files
    /// outside the lock.
    fn over_quota(&self) -> Vec<Segment> {
        let mut t = self.lock();
        let mut total: u64 = t.iter().map(|s| s.bytes).sum();
        let mut gone = Vec::new();
        while total > self.quota.max_bytes && t.len() > 1 {
            let s = t.remove(0);
            total -= s.bytes;
            gone.push(s);
        }
        gone
    }

    fn delete(&self, gone: Vec<Segment>) {
        for s in gone {
            let path = segment_path(&self.dir, s.id);
            match fs::remove_file(&path) {
                Ok(()) => util::log_event(
                    "events_segment_dropped",
                    json!({"segment": s.id, "bytes": s.bytes, "first_seq": s.first_seq}),
                ),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => util::log_event(
                    "disk_error",
                    json!({"file": path.display().to_string(), "error": e.to_string()}),
                ),
            }
        }
    }

    /// The newest records in at most `budget` bytes of the newest segments.
    fn read_tail(&self, budget: usize) -> Vec<Record> {
        let segs = self.lock().clone();
        let mut left = budget as u64;
        let mut tail: Vec<Record> = Vec::new();
        for s in segs.iter().rev() {
            if left == 0 {
                break;
            }
            let start = s.bytes.saturating_sub(left);
            left -= s.bytes - start;
            let mut recs = read_records(&segment_path(&self.dir, s.id), start);
            recs.append(&mut tail);
            tail = recs;
        }
        tail
    }

    /// The highest seq in any segment, scanning newest first until one
    /// holds a readable record (only when the tail held none).
    fn highest_seq(&self) -> u64 {
        let segs = self.lock().clone();
        for s in segs.iter().rev() {
            let recs = read_records(&segment_path(&self.dir, s.id), 0);
            if let Some(max) = recs.iter().map(|r| r.seq).max() {
                return max;
            }
        }
        0
    }

    /// Offers to `out` every number after `after` and before `before`, in
    /// order, from disk: events as stored, and a `lost` marker for each
    /// range that is not there (dropped by the quota, or unreadable).
    /// Returns the highest seq accounted for; stops early when `out` is full.
    pub fn scan(&self, after: u64, before: u64, out: &mut Collect) -> u64 {
        let segs = self.lock().clone();
        let floor = segs
            .iter()
            .find(|s| s.first_seq != 0)
            .map(|s| s.first_seq)
            .unwrap_or(before);
        let reason = |to: u64| if to < floor { "quota" } else { "unreadable" };
        // Start in the last segment that begins at or before the wanted seq.
        let start = segs
            .iter()
            .rposition(|s| s.first_seq != 0 && s.first_seq <= after + 1)
            .unwrap_or(0);
        let mut pos = after;
        let mut bad = 0usize;
        let mut noted: Vec<(u64, Vec<(u64, u64)>)> = Vec::new();
        'segments: for (k, s) in segs[start..].iter().enumerate() {
            // Deleted by the quota since the copy was taken: its numbers
            // become part of the next gap.
            let Ok(mut f) = File::open(segment_path(&self.dir, s.id)) else {
                continue;
            };
            let base = if k == 0 { s.seek_for(after) } else { 0 };
            if base > 0 && f.seek(SeekFrom::Start(base)).is_err() {
                continue;
            }
            let mut lines = Lines::new(BufReader::with_capacity(64 << 10, f), MAX_LINE);
            noted.push((s.id, Vec::new()));
            let mut note_at = base;
            loop {
                let at = base + lines.offset;
                let line = match lines.next_line() {
                    Ok(Some(l)) => l,
                    Ok(None) => break,
                    Err(e) => {
                        util::log_event(
                            "disk_error",
                            json!({"segment": s.id, "error": e.to_string()}),
                        );
                        break;
                    }
                };
                let Some(rec) = line.and_then(parse_line) else {
                    if line.is_none_or(|l| !l.is_empty()) {
                        bad += 1;
                    }
                    continue;
                };
                if at >= note_at && at < s.next_index_at {
                    if let Some((_, n)) = noted.last_mut() {
                        n.push((rec.seq, at));
                    }
                    note_at = at + INDEX_EVERY;
                }
                if rec.seq <= pos {
                    continue;
                }
                if rec.seq >= before {
                    break 'segments;
                }
                if rec.seq > pos + 1 {
                    if !out.lost(pos + 1, rec.seq - 1, reason(rec.seq - 1)) {
                        break 'segments;
                    }
                    pos = rec.seq - 1;
                }
                if !out.offer(rec.seq, &rec.name, &rec.text) {
                    break 'segments;
                }
                pos = rec.seq;
                if out.full() {
                    break 'segments;
                }
            }
        }
        if bad > 0 {
            util::log_event(
                "events_skipped_lines",
                json!({"lines": bad, "while": "scan"}),
            );
        }
        let mut t = self.lock();
        for (id, found) in noted {
            if let Some(s) = t.iter_mut().find(|s| s.id == id) {
                s.merge_index(&found);
            }
        }
        drop(t);
        if pos + 1 < before && !out.full() && out.lost(pos + 1, before - 1, reason(before - 1)) {
            pos = before - 1;
        }
        pos
    }
}

/// The first readable seq of a segment (reads only until one is found).
fn first_seq(path: &Path) -> u64 {
    let Ok(f) = File::open(path) else { return 0 };
    let mut lines = Lines::new(BufReader::new(f), MAX_LINE);
    while let Ok(Some(line)) = lines.next_line() {
        if let Some(rec) = line.and_then(parse_line) {
            return rec.seq;
        }
    }
    0
}

/// Every readable record of a file from byte `start`, line by line: a torn
/// or invalid line is skipped and counted in the log, never fatal.
fn read_records(path: &Path, start: u64) -> Vec<Record> {
    let mut out = Vec::new();
    let Ok(mut f) = File::open(path) else {
        return out;
    };
    if f.seek(SeekFrom::Start(start)).is_err() {
        return out;
    }
    let mut lines = Lines::new(BufReader::new(f), MAX_LINE);
    if start > 0 && lines.skip_partial().is_err() {
        return out;
    }
    let mut bad = 0;
    loop {
        match lines.next_line() {
            Ok(Some(Some([]))) => {}
            Ok(Some(line)) => match line.and_then(parse_line) {
                Some(rec) => out.push(rec),
                None => bad += 1,
            },
            Ok(None) => break,
            Err(e) => {
                util::log_event(
                    "disk_error",
                    json!({"file": path.display().to_string(), "error": e.to_string()}),
                );
                break;
            }
        }
    }
    if bad > 0 {
        util::log_event(
            "events_skipped_lines",
            json!({"file": path.display().to_string(), "lines": bad}),
        );
    }
    out
}

/// The one appender, owned by the disk thread: writes whole records to the
/// newest segment, starts a new one when it is full, fsyncs before it
/// reports success, and cuts a failed write back off so no torn line stays.
pub struct Writer {
    log: Arc<EventLog>,
    file: Option<(u64, File)>,
}

impl Writer {
    pub fn new(log: Arc<EventLog>) -> Self {
        Writer { log, file: None }
    }

    /// Appends `recs` in order. `Ok(n)`: all n are on disk. `Err((k, e))`:
    /// the first k are on disk, the rest are not (and left no bytes behind).
    pub fn append(&mut self, recs: &[Record]) -> Result<usize, (usize, io::Error)> {
        let mut done = 0;
        while done < recs.len() {
            let (mut id, mut used) = {
                let t = self.log.lock();
                let s = t.last().expect("the table always has a segment");
                (s.id, s.bytes)
            };
            let seg_max = self.log.quota.segment_bytes;
            if used >= seg_max {
                id = self.start_segment(id + 1);
                used = 0;
            }
            // As many records as fit in this segment (at least one).
            let mut buf = Vec::new();
            let mut n = 0;
            for r in &recs[done..] {
                if n > 0 && used + (buf.len() + r.text.len() + 1) as u64 > seg_max {
                    break;
                }
                buf.extend_from_slice(r.text.as_bytes());
                buf.push(b'\n');
                n += 1;
            }
            if let Err(e) = self.write_chunk(id, &buf) {
                return Err((done, e));
            }
            {
                let mut t = self.log.lock();
                if let Some(s) = t.last_mut().filter(|s| s.id == id) {
                    let mut off = s.bytes;
                    for r in &recs[done..done + n] {
                        if off >= s.next_index_at {
                            s.index.push((r.seq, off));
                            s.next_index_at = off + INDEX_EVERY;
                        }
                        off += r.text.len() as u64 + 1;
                    }
                    s.bytes = off;
                    if s.first_seq == 0 {
                        s.first_seq = recs[done].seq;
                    }
                }
            }
            done += n;
        }
        let gone = self.log.over_quota();
        self.log.delete(gone);
        Ok(done)
    }

    /// Adds segment `id` to the table; its file is created by the next write.
    fn start_segment(&mut self, id: u64) -> u64 {
        self.log.lock().push(Segment::new(id, 0, 0));
        self.file = None;
        id
    }

    fn write_chunk(&mut self, id: u64, buf: &[u8]) -> io::Result<()> {
        util::injected_write_failure()?;
        if self.file.as_ref().is_none_or(|(fid, _)| *fid != id) {
            let path = segment_path(&self.log.dir, id);
            let new = !path.exists();
            let f = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&path)?;
            if new {
                // The new file's name must survive a power cut too.
                File::open(&self.log.dir)?.sync_all()?;
            }
            self.file = Some((id, f));
        }
        let (_, f) = self.file.as_mut().expect("opened above");
        let before = f.metadata()?.len();
        let written = f.write_all(buf).and_then(|()| f.sync_data());
        if written.is_err() {
            // Leave no partial record for the next append to glue onto.
            let _ = f.set_len(before);
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, name: &str) -> Record {
        let text = json!({"seq": seq, "name": name, "data": "x".repeat(40)}).to_string();
        Record {
            seq,
            name: name.into(),
            text: text.into(),
        }
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "wb-eventlog-{tag}-{}-{}",
            std::process::id(),
            util::now_ms()
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_id("events.jsonl"), Some(0));
        assert_eq!(segment_id("events-000012.jsonl"), Some(12));
        assert_eq!(segment_id("events-12.jsonl"), None);
        assert_eq!(segment_id("events-000000.jsonl"), None);
        assert_eq!(segment_id("events-00001a.jsonl"), None);
        let d = Path::new("/x");
        assert_eq!(segment_path(d, 3), Path::new("/x/events-000003.jsonl"));
    }

    #[test]
    fn segments_rotate_the_quota_drops_the_oldest_and_reads_report_it() {
        let dir = tmpdir("rotate");
        let quota = Quota {
            max_bytes: 4000,
            segment_bytes: 1000,
            memory_bytes: 500,
        };
        let opened = EventLog::open(&dir, quota).unwrap();
        assert_eq!(opened.last_seq, 0);
        let mut w = Writer::new(opened.log.clone());
        let recs: Vec<Record> = (1..=200).map(|i| rec(i, "tick")).collect();
        assert_eq!(w.append(&recs).unwrap(), 200);
        let log = &opened.log;
        assert!(log.bytes_on_disk() <= 4000, "{}", log.bytes_on_disk());
        let floor = log.floor();
        assert!(floor > 1, "old segments were dropped");
        // From the start: a lost marker for 1..floor-1, then the events.
        let mut out = Collect::new(&[], 1000, 1 << 20);
        let pos = log.scan(0, 201, &mut out);
        assert_eq!(pos, 200);
        let first: serde_json::Value = serde_json::from_str(&out.items[0]).unwrap();
        assert_eq!(first["type"], "lost");
        assert_eq!(first["from_seq"], 1);
        assert_eq!(first["to_seq"], floor - 1);
        assert_eq!(first["count"], floor - 1);
        assert_eq!(first["reason"], "quota");
        assert_eq!(out.items.len() as u64, 1 + 200 - floor + 1);
        // Reopening continues from the highest seq and keeps the tail small.
        let again = EventLog::open(&dir, quota).unwrap();
        assert_eq!(again.last_seq, 200);
        let tail_bytes: usize = again.tail.iter().map(|r| r.text.len()).sum();
        assert!(tail_bytes <= 500, "{tail_bytes}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_lines_are_skipped_and_become_an_unreadable_gap() {
        let dir = tmpdir("bad");
        let mut text = String::new();
        for i in 1..=5 {
            if i == 3 {
                text.push_str("{\"seq\":3,\"na\u{7f}\n");
            } else {
                text.push_str(&rec(i, "a").text);
                text.push('\n');
            }
        }
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(b"\xff\xfe garbage\n");
        bytes.extend_from_slice(rec(6, "b").text.as_bytes());
        bytes.extend_from_slice(b"\n{\"seq\":7,\"name\":\"torn");
        fs::write(dir.join("events.jsonl"), &bytes).unwrap();
        let opened = EventLog::open(&dir, Quota::default()).unwrap();
        assert_eq!(opened.last_seq, 6, "the torn record is not counted");
        let seqs: Vec<u64> = opened.tail.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![1, 2, 4, 5, 6]);
        let mut out = Collect::new(&[], 100, 1 << 20);
        opened.log.scan(0, 7, &mut out);
        let v: Vec<serde_json::Value> = out
            .items
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect();
        assert_eq!(v[2]["type"], "lost");
        assert_eq!(v[2]["from_seq"], 3);
        assert_eq!(v[2]["reason"], "unreadable");
        assert_eq!(v.len(), 6);
        // The torn last line was ended: the next append is a line of its own.
        let mut w = Writer::new(opened.log.clone());
        w.append(&[rec(7, "c")]).unwrap();
        let again = EventLog::open(&dir, Quota::default()).unwrap();
        assert_eq!(again.last_seq, 7);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_sparse_index_seeks_near_an_old_cursor() {
        let dir = tmpdir("index");
        // Written before this start: no index until a scan notes one.
        let mut text = String::new();
        for i in 1..=3000 {
            text.push_str(&rec(i, "a").text);
            text.push('\n');
        }
        fs::write(dir.join("events.jsonl"), &text).unwrap();
        let quota = Quota {
            max_bytes: 1 << 30,
            segment_bytes: 1 << 30,
            memory_bytes: 1000,
        };
        let opened = EventLog::open(&dir, quota).unwrap();
        let log = &opened.log;
        assert!(log.lock()[0].index.is_empty());
        let read = |after: u64| {
            let mut out = Collect::new(&[], 3, 1 << 20);
            log.scan(after, 1 << 40, &mut out);
            out.items
                .iter()
                .map(|t| {
                    serde_json::from_str::<serde_json::Value>(t).unwrap()["seq"]
                        .as_u64()
                        .unwrap()
                })
                .collect::<Vec<u64>>()
        };
        assert_eq!(read(0), vec![1, 2, 3]);
        // A scan to the end notes entries; later reads use them and agree.
        let mut all = Collect::new(&[], 100_000, 1 << 30);
        log.scan(0, 1 << 40, &mut all);
        let noted = log.lock()[0].index.clone();
        assert!(noted.len() > 2, "{noted:?}");
        for after in [0, 1, 999, 1500, 2997] {
            assert_eq!(
                read(after),
                vec![after + 1, after + 2, after + 3],
                "{after}"
            );
        }
        let start = log.lock()[0].seek_for(2500);
        assert!(start > 0 && start < text.len() as u64);
        // Scanning again does not grow the index.
        log.scan(0, 1 << 40, &mut Collect::new(&[], 100_000, 1 << 30));
        assert_eq!(log.lock()[0].index.len(), noted.len());
        // The writer notes entries for what it appends.
        let mut w = Writer::new(opened.log.clone());
        let more: Vec<Record> = (3001..=5000).map(|i| rec(i, "b")).collect();
        w.append(&more).unwrap();
        assert!(log.lock()[0].index.len() > noted.len());
        assert_eq!(read(4500), vec![4501, 4502, 4503]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_filter_events_but_never_lost_markers() {
        let names = vec!["reading".to_string()];
        let mut c = Collect::new(&names, 10, 1 << 20);
        assert!(c.offer(1, "tick", "{}"));
        assert!(c.items.is_empty());
        assert!(c.lost(2, 5, "quota"));
        assert!(c.offer(6, "reading", "{\"seq\":6}"));
        assert_eq!(c.items.len(), 2);
        assert_eq!(c.last, Some(6));
    }

    #[test]
    fn an_oversized_single_segment_keeps_its_newest_part() {
        let dir = tmpdir("big");
        let mut text = String::new();
        for i in 1..=300 {
            text.push_str(&rec(i, "a").text);
            text.push('\n');
        }
        fs::write(dir.join("events.jsonl"), text).unwrap();
        let quota = Quota {
            max_bytes: 6000,
            segment_bytes: 2000,
            memory_bytes: 1000,
        };
        let opened = EventLog::open(&dir, quota).unwrap();
        assert_eq!(opened.last_seq, 300);
        assert!(!dir.join("events.jsonl").exists());
        assert!(dir.join("events-000001.jsonl").exists());
        assert!(opened.log.bytes_on_disk() <= 2000);
        assert!(opened.log.floor() > 250);
        fs::remove_dir_all(&dir).unwrap();
    }
}
