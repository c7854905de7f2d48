//! Where the relay's lasting state goes: the small interface the hub writes
//! every acknowledged change through ([`Store`]), memory only
//! ([`Ephemeral`], `--ephemeral`, 0.3.0's behaviour) or a journal in a data
//! directory ([`Journal`], the default). docs/relay-state.md is the user's
//! side of this file: what survives what, the fsync policy, damaged files.
//!
//! The journal is a text file of records, one per line:
//! `<crc32 of the rest, 8 hex digits> <kind> <JSON payload>\n`, starting with
//! a `journal` header record that names the format. The hub appends a record
//! with one write(2) under its lock, *before* it queues the frames that
//! acknowledge the change: the order on disk is the order clients saw, and
//! once any client has seen an answer its record is in the page cache, so a
//! kill -9 of the relay cannot lose it (a power cut can, per `--fsync`).
//! Why under the lock: the write is one small append into the page cache
//! (a few µs, measured in BENCHMARKS.md), and doing it there keeps the
//! journal order and each channel's delivery order one and the same without
//! a second sequencing mechanism.
//!
//! Compaction: once the current journal outgrows `compact_at` (and the last
//! snapshot), the hub hands over its whole state as records; the journal
//! moves to a new generation file at once (under the lock, one create), and
//! the snapshot is written, fsynced and renamed into place after the lock
//! is released. Loading takes the newest snapshot and every journal of its
//! generation or later, so a crash at any step of that loses nothing.
//!
//! Not here: what the records mean (the hub applies them), and the Redis
//! cluster store (issue 14 §2), which would be a second `Store`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

use crate::util::{hex, log_event};

/// The journal format this build writes and reads. A file naming a higher
/// one was written by a newer workbench and is refused, never guessed at.
pub const FORMAT: u64 = 1;
/// Journal bytes before a compaction, by default (`--compact-at`).
pub const COMPACT_AT: u64 = 16 << 20;
/// How often `--fsync interval` flushes, by default.
pub const FSYNC_INTERVAL: Duration = Duration::from_secs(1);

/// When appended records are forced to the disk itself (`--fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// fdatasync after every record, before its answer: survives a power
    /// cut; every change waits for the disk (under the hub's lock).
    Always,
    /// A flusher thread fdatasyncs at most this long after a write: a power
    /// cut (or kernel crash) may lose the changes of that last interval. A
    /// kill -9 of the relay loses nothing.
    Interval(Duration),
    /// Left to the kernel's writeback (typically within 30 s).
    Never,
}

impl Fsync {
    pub fn parse(s: &str) -> Option<Fsync> {
        match s {
            "always" => Some(Fsync::Always),
            "interval" => Some(Fsync::Interval(FSYNC_INTERVAL)),
            "never" => Some(Fsync::Never),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::Interval(_) => "interval",
            Fsync::Never => "never",
        }
    }
}

/// One change to lasting state, as the hub writes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Record<'a> {
    /// A created channel (the defaults are never written as such).
    Channel {
        name: &'a str,
        invite_only: bool,
        creator: Option<&'a str>,
    },
    Invite {
        channel: &'a str,
        agent: &'a str,
    },
    /// A created channel freed for idleness.
    Drop {
        channel: &'a str,
    },
    /// A channel message as broadcast (its MSG frame text, `to` the
    /// channel): an entry of that channel's replay buffer.
    Msg {
        frame: &'a str,
    },
    /// A proposal as it stands after a change (its whole history).
    Proposal(Value),
    /// An id bound to the first key that held it (issue 12).
    Bind {
        id: &'a str,
        key: &'a [u8; 32],
    },
}

impl Record<'_> {
    /// `<kind> <payload>`, without the checksum or the newline.
    fn encode_body(&self, out: &mut Vec<u8>) {
        let (kind, payload) = match self {
            Record::Channel {
                name,
                invite_only,
                creator,
            } => (
                "chan",
                json!({"name": name, "invite_only": invite_only, "creator": creator}).to_string(),
            ),
            Record::Invite { channel, agent } => (
                "invite",
                json!({"channel": channel, "agent": agent}).to_string(),
            ),
            Record::Drop { channel } => ("drop", json!({ "channel": channel }).to_string()),
            Record::Msg { frame } => {
                out.extend_from_slice(b"msg ");
                out.extend_from_slice(frame.as_bytes());
                return;
            }
            Record::Proposal(v) => ("prop", v.to_string()),
            Record::Bind { id, key } => ("bind", json!({"id": id, "key": hex(*key)}).to_string()),
        };
        out.extend_from_slice(kind.as_bytes());
        out.push(b' ');
        out.extend_from_slice(payload.as_bytes());
    }

    /// The whole line: checksum, body, newline.
    pub fn encode_line(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(b"00000000 ");
        self.encode_body(out);
        let crc = crc32(&out[start + 9..]);
        out[start..start + 8].copy_from_slice(format!("{crc:08x}").as_bytes());
        out.push(b'\n');
    }
}

/// A record read back from disk.
#[derive(Debug, Clone, PartialEq)]
pub enum Loaded {
    Channel {
        name: String,
        invite_only: bool,
        creator: Option<String>,
    },
    Invite {
        channel: String,
        agent: String,
    },
    Drop {
        channel: String,
    },
    Msg(Value),
    Proposal(Value),
    Bind {
        id: String,
        key: [u8; 32],
    },
}

fn decode(kind: &str, payload: &str) -> Result<Loaded, String> {
    let v: Value = serde_json::from_str(payload).map_err(|e| format!("bad JSON ({e})"))?;
    let s = |k: &str| -> Result<String, String> {
        v[k].as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("{kind} record without \"{k}\""))
    };
    Ok(match kind {
        "chan" => Loaded::Channel {
            name: s("name")?,
            invite_only: v["invite_only"].as_bool().unwrap_or(false),
            creator: v["creator"].as_str().map(str::to_string),
        },
        "invite" => Loaded::Invite {
            channel: s("channel")?,
            agent: s("agent")?,
        },
        "drop" => Loaded::Drop {
            channel: s("channel")?,
        },
        "msg" => Loaded::Msg(v),
        "prop" => Loaded::Proposal(v),
        "bind" => Loaded::Bind {
            id: s("id")?,
            key: unhex32(&s("key")?).ok_or("bind record with a bad key")?,
        },
        other => return Err(format!("unknown record kind {other:?}")),
    })
}

/// Records encoded by [`Record::encode_line`], without a header (a cluster
/// snapshot, relay/hub/replica.rs), checksums verified.
pub fn decode_lines(data: &[u8]) -> Result<Vec<Loaded>, String> {
    let mut out = Vec::new();
    for (i, line) in data.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let (kind, payload) = parse_line(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        out.push(decode(kind, payload).map_err(|e| format!("line {}: {e}", i + 1))?);
    }
    Ok(out)
}

/// Where lasting state goes. The hub calls it under its lock, so every
/// method is quick: an append is one write(2) (plus fdatasync only under
/// `--fsync always`).
pub trait Store: Send {
    /// Writes one record; `Ok` means it is as durable as the policy says,
    /// and only then may the change be acknowledged.
    fn append(&mut self, rec: &Record<'_>) -> io::Result<()>;
    /// True when the journal should be compacted: the hub then calls
    /// [`Store::rotate`] with its whole state. Never, by default.
    fn wants_snapshot(&self) -> bool {
        false
    }
    /// Starts a new journal generation after `snapshot` (the state now, as
    /// whole encoded lines). Returns the slow part (writing the snapshot
    /// file) for the caller to run after it releases its lock.
    fn rotate(&mut self, _snapshot: Vec<u8>) -> io::Result<Option<SnapshotJob>> {
        Ok(None)
    }
    /// For the logs and /health: mode and where.
    fn describe(&self) -> Value;
}

/// `--ephemeral`: nothing is kept.
pub struct Ephemeral;

impl Store for Ephemeral {
    fn append(&mut self, _rec: &Record<'_>) -> io::Result<()> {
        Ok(())
    }
    fn describe(&self) -> Value {
        json!({"mode": "ephemeral"})
    }
}

/// What `workbench relay` was asked for.
#[derive(Debug, Clone)]
pub struct JournalConfig {
    pub dir: PathBuf,
    pub fsync: Fsync,
    pub compact_at: u64,
}

/// The default data directory: `$XDG_STATE_HOME/workbench/relay`, else
/// `~/.local/state/workbench/relay`.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
        let p = PathBuf::from(x);
        if p.is_absolute() {
            return Some(p.join("workbench").join("relay"));
        }
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".local/state/workbench/relay"))
}

/// The durable store: a journal (and its last snapshot) in a directory
/// this process holds an exclusive lock on.
pub struct Journal {
    cfg: JournalConfig,
    gen: u64,
    file: Arc<File>,
    /// Bytes in the current journal file.
    bytes: u64,
    /// Size of the last snapshot (compaction waits until the journal has
    /// outgrown it too, so each compaction writes at most one snapshot
    /// byte per journal byte).
    snapshot_bytes: u64,
    buf: Vec<u8>,
    flusher: Option<Flusher>,
    compacting: Arc<AtomicBool>,
    /// Log lines from opening (a dropped torn record), for the caller to
    /// write once it has logged `listening` (always the first line).
    notes: Vec<(&'static str, Value)>,
    _lock: File,
}

/// `--fsync interval`: a thread that sleeps only while something is
/// unflushed (idle is idle), then fdatasyncs the journal.
struct Flusher {
    dirty: Arc<AtomicBool>,
    tx: mpsc::Sender<Arc<File>>,
}

impl Flusher {
    fn start(every: Duration) -> io::Result<Flusher> {
        let dirty = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<Arc<File>>();
        let d = dirty.clone();
        thread::Builder::new()
            .name("relay-fsync".into())
            .spawn(move || {
                while let Ok(file) = rx.recv() {
                    thread::sleep(every);
                    // Cleared before the sync: a write after this point
                    // schedules another round.
                    d.store(false, Ordering::SeqCst);
                    if let Err(e) = file.sync_data() {
                        log_event("journal_fsync_failed", json!({"error": e.to_string()}));
                    }
                }
            })?;
        Ok(Flusher { dirty, tx })
    }

    fn note_write(&self, file: &Arc<File>) {
        if !self.dirty.swap(true, Ordering::SeqCst) {
            let _ = self.tx.send(file.clone());
        }
    }
}

/// Why the data directory could not be opened. The message says what to
/// do; `main` turns it into a non-zero exit.
#[derive(Debug)]
pub struct OpenError(pub String);

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn journal_name(gen: u64) -> String {
    format!("journal.{gen}")
}

fn snapshot_name(gen: u64) -> String {
    format!("snapshot.{gen}")
}

/// The generations present: (snapshots, journals), each ascending.
fn generations(dir: &Path) -> io::Result<(Vec<u64>, Vec<u64>)> {
    let (mut snaps, mut journals) = (Vec::new(), Vec::new());
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(g) = name.strip_prefix("snapshot.").and_then(|g| g.parse().ok()) {
            snaps.push(g);
        } else if let Some(g) = name.strip_prefix("journal.").and_then(|g| g.parse().ok()) {
            journals.push(g);
        }
    }
    snaps.sort_unstable();
    journals.sort_unstable();
    Ok((snaps, journals))
}

/// What loading one file found.
struct FileRead {
    records: Vec<Loaded>,
    /// Length of the intact prefix (where a torn tail starts).
    good_len: u64,
    torn: Option<u64>,
}

fn damaged(path: &Path, offset: u64, why: &str, snapshot: bool) -> OpenError {
    let p = path.display();
    let after = if snapshot {
        "a snapshot is written whole, so this is not a write torn by a crash"
    } else {
        "it is not the last record, so this is not a write torn by a crash"
    };
    OpenError(format!(
        "relay data damaged: {p}: the record at byte offset {offset} is unreadable ({why}); \
         {after}. Nothing was loaded and nothing was changed. To recover: restore the data \
         directory from a backup; or keep what comes before the damage with \
         `truncate -s {offset} {p}` (the changes recorded from there on are lost); or move \
         the data directory aside to start empty (or run with --ephemeral)."
    ))
}

/// Reads one journal or snapshot. `last` allows a torn final record (a
/// crash mid-append); anywhere else a bad record is damage.
fn read_file(path: &Path, last: bool, snapshot: bool) -> Result<FileRead, OpenError> {
    let data = fs::read(path)
        .map_err(|e| OpenError(format!("relay data: cannot read {}: {e}", path.display())))?;
    let mut records = Vec::new();
    let mut offset = 0usize;
    let mut seen_header = false;
    while offset < data.len() {
        let rest = &data[offset..];
        let (line, next) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], offset + i + 1),
            None => (rest, data.len()),
        };
        let complete = next <= data.len() && data.get(next - 1) == Some(&b'\n');
        let parsed = parse_line(line);
        let is_tail = next >= data.len();
        match parsed {
            Ok(_) if !complete && last => {
                // A whole record whose newline never made it: still torn.
                return Ok(FileRead {
                    records,
                    good_len: offset as u64,
                    torn: Some(offset as u64),
                });
            }
            Ok((kind, payload)) => {
                if !seen_header {
                    if kind != "journal" {
                        return Err(damaged(path, 0, "no journal header", snapshot));
                    }
                    check_header(path, payload, snapshot)?;
                    seen_header = true;
                } else {
                    let rec = decode(kind, payload)
                        .map_err(|e| damaged(path, offset as u64, &e, snapshot))?;
                    records.push(rec);
                }
            }
            Err(_) if is_tail && last => {
                return Ok(FileRead {
                    records,
                    good_len: offset as u64,
                    torn: Some(offset as u64),
                });
            }
            Err(why) => return Err(damaged(path, offset as u64, why, snapshot)),
        }
        offset = next;
    }
    Ok(FileRead {
        records,
        good_len: data.len() as u64,
        torn: None,
    })
}

/// `<crc> <kind> <payload>` with the checksum verified.
fn parse_line(line: &[u8]) -> Result<(&str, &str), &'static str> {
    if line.len() < 10 || line[8] != b' ' {
        return Err("not a record");
    }
    let crc = std::str::from_utf8(&line[..8])
        .ok()
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or("bad checksum field")?;
    let body = &line[9..];
    if crc32(body) != crc {
        return Err("checksum mismatch");
    }
    let body = std::str::from_utf8(body).map_err(|_| "not UTF-8")?;
    Ok(body.split_once(' ').unwrap_or((body, "")))
}

fn check_header(path: &Path, payload: &str, snapshot: bool) -> Result<(), OpenError> {
    let v: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
    let format = v["format"].as_u64().unwrap_or(0);
    if format > FORMAT {
        return Err(OpenError(format!(
            "relay data: {} was written by a newer workbench ({}, journal format {format}); \
             this one ({}) reads format {FORMAT} only. Run the newer workbench, or move \
             the data directory aside to start empty.",
            path.display(),
            v["writer"].as_str().unwrap_or("unknown version"),
            env!("CARGO_PKG_VERSION"),
        )));
    }
    if format == 0 {
        return Err(damaged(path, 0, "bad journal header", snapshot));
    }
    Ok(())
}

fn header_line(gen: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let start = out.len();
    out.extend_from_slice(b"00000000 journal ");
    let head = json!({"format": FORMAT, "writer": concat!("workbench ", env!("CARGO_PKG_VERSION")),
                      "gen": gen});
    out.extend_from_slice(head.to_string().as_bytes());
    let crc = crc32(&out[start + 9..]);
    out[start..start + 8].copy_from_slice(format!("{crc:08x}").as_bytes());
    out.push(b'\n');
    out
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

impl Journal {
    /// Locks `cfg.dir` (creating it, 0700), loads the newest snapshot and
    /// every journal after it, drops a torn final record (with a log line),
    /// and returns the store with the records to apply, oldest first.
    pub fn open(cfg: JournalConfig) -> Result<(Journal, Vec<Loaded>), OpenError> {
        let dir = cfg.dir.clone();
        let d = dir.display();
        fs::create_dir_all(&dir)
            .map_err(|e| OpenError(format!("relay data directory {d}: cannot create it: {e}")))?;
        if let Ok(meta) = fs::metadata(&dir) {
            if meta.permissions().mode() & 0o077 != 0 {
                let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
            }
        }
        let lock_path = dir.join("lock");
        let mut lock = match crate::sys::try_lock_file(&lock_path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let pid = fs::read_to_string(&lock_path).unwrap_or_default();
                let pid = pid.trim();
                let who = if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                };
                return Err(OpenError(format!(
                    "relay data directory {d} is in use by another relay{who}: two relays \
                     cannot share one directory. Stop that relay, or give this one its own \
                     --data-dir (or --ephemeral)."
                )));
            }
            Err(e) => return Err(OpenError(format!("relay data directory {d}: lock: {e}"))),
        };
        let _ = lock.set_len(0);
        let _ = writeln!(lock, "{}", std::process::id());

        let io_err = |e: io::Error| OpenError(format!("relay data directory {d}: {e}"));
        let (snaps, journals) = generations(&dir).map_err(io_err)?;
        let snap = snaps.last().copied();
        let mut records = Vec::new();
        let mut notes = Vec::new();
        let mut snapshot_bytes = 0;
        if let Some(s) = snap {
            let path = dir.join(snapshot_name(s));
            let r = read_file(&path, false, true)?;
            snapshot_bytes = r.good_len;
            records.extend(r.records);
        }
        let base = snap.unwrap_or(0);
        let live: Vec<u64> = journals.iter().copied().filter(|g| *g >= base).collect();
        let mut current = None;
        for (i, g) in live.iter().enumerate() {
            let path = dir.join(journal_name(*g));
            let last = i + 1 == live.len();
            let r = read_file(&path, last, false)?;
            if let Some(at) = r.torn {
                let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                notes.push((
                    "journal_torn_record_dropped",
                    json!({"file": path.display().to_string(), "offset": at,
                           "bytes_dropped": len.saturating_sub(at),
                           "why": "the last record was cut short, as by a crash mid-write; \
                                   it was never acknowledged"}),
                ));
                let f = OpenOptions::new().write(true).open(&path).map_err(io_err)?;
                f.set_len(r.good_len).map_err(io_err)?;
                f.sync_all().map_err(io_err)?;
            }
            records.extend(r.records);
            if last {
                current = Some((*g, r.good_len));
            }
        }
        // Leftovers of a compaction interrupted before its cleanup.
        for g in snaps.iter().filter(|g| Some(**g) != snap) {
            let _ = fs::remove_file(dir.join(snapshot_name(*g)));
        }
        for g in journals.iter().filter(|g| **g < base) {
            let _ = fs::remove_file(dir.join(journal_name(*g)));
        }
        let (gen, mut bytes) = current.unwrap_or((base.max(1), 0));
        let path = dir.join(journal_name(gen));
        let file = open_append(&path).map_err(io_err)?;
        if bytes == 0 {
            // New, or torn inside its header: start it over.
            file.set_len(0).map_err(io_err)?;
            let head = header_line(gen);
            (&file).write_all(&head).map_err(io_err)?;
            file.sync_data().map_err(io_err)?;
            sync_dir(&dir);
            bytes = head.len() as u64;
        }
        let flusher = match cfg.fsync {
            Fsync::Interval(every) => Some(Flusher::start(every).map_err(io_err)?),
            _ => None,
        };
        Ok((
            Journal {
                cfg,
                gen,
                file: Arc::new(file),
                bytes,
                snapshot_bytes,
                buf: Vec::with_capacity(4096),
                flusher,
                compacting: Arc::new(AtomicBool::new(false)),
                notes,
                _lock: lock,
            },
            records,
        ))
    }

    /// What opening found worth a log line (see `notes`).
    pub fn take_notes(&mut self) -> Vec<(&'static str, Value)> {
        std::mem::take(&mut self.notes)
    }

    fn write_buf(&mut self) -> io::Result<()> {
        crate::util::injected_write_failure()?;
        if let Err(e) = (&*self.file).write_all(&self.buf) {
            // A part-written record (a full disk) is cut off, so the next
            // append does not glue onto it.
            let _ = self.file.set_len(self.bytes);
            return Err(e);
        }
        self.bytes += self.buf.len() as u64;
        match self.cfg.fsync {
            Fsync::Always => self.file.sync_data()?,
            Fsync::Interval(_) => {
                if let Some(f) = &self.flusher {
                    f.note_write(&self.file);
                }
            }
            Fsync::Never => {}
        }
        Ok(())
    }
}

impl Store for Journal {
    fn append(&mut self, rec: &Record<'_>) -> io::Result<()> {
        self.buf.clear();
        rec.encode_line(&mut self.buf);
        self.write_buf()
    }

    fn wants_snapshot(&self) -> bool {
        self.bytes >= self.cfg.compact_at.max(self.snapshot_bytes)
            && !self.compacting.load(Ordering::SeqCst)
    }

    fn rotate(&mut self, snapshot: Vec<u8>) -> io::Result<Option<SnapshotJob>> {
        let r = self.start_generation(snapshot);
        if r.is_err() {
            // Not again on the very next record: wait for as much again.
            self.snapshot_bytes = self.bytes.saturating_mul(2);
        }
        r
    }

    fn describe(&self) -> Value {
        json!({"mode": "durable", "data_dir": self.cfg.dir.display().to_string(),
               "fsync": self.cfg.fsync.as_str(), "compact_at": self.cfg.compact_at})
    }
}

impl Journal {
    fn start_generation(&mut self, snapshot: Vec<u8>) -> io::Result<Option<SnapshotJob>> {
        let gen = self.gen + 1;
        let path = self.cfg.dir.join(journal_name(gen));
        let file = open_append(&path)?;
        file.set_len(0)?;
        let head = header_line(gen);
        (&file).write_all(&head)?;
        let old = std::mem::replace(&mut self.file, Arc::new(file));
        self.gen = gen;
        self.bytes = head.len() as u64;
        self.snapshot_bytes = snapshot.len() as u64;
        self.compacting.store(true, Ordering::SeqCst);
        let mut data = header_line(gen);
        data.extend_from_slice(&snapshot);
        Ok(Some(SnapshotJob {
            dir: self.cfg.dir.clone(),
            gen,
            data,
            old,
            fsync: self.cfg.fsync != Fsync::Never,
            done: self.compacting.clone(),
        }))
    }
}

/// The slow half of a compaction, run after the hub's lock is released:
/// write `snapshot.<gen>` (temp file, fsync, rename), then remove the older
/// generation's files. Until the rename, loading uses the old snapshot and
/// both journals, so a crash here loses nothing.
pub struct SnapshotJob {
    dir: PathBuf,
    gen: u64,
    data: Vec<u8>,
    /// The previous journal, synced before it is removed (its records are
    /// in the snapshot, but the snapshot is only safe once renamed).
    old: Arc<File>,
    fsync: bool,
    done: Arc<AtomicBool>,
}

impl SnapshotJob {
    pub fn run(self) {
        let path = self.dir.join(snapshot_name(self.gen));
        let written = if self.fsync {
            crate::util::write_atomic(&path, &self.data, 0o600)
        } else {
            crate::util::write_replace(&path, &self.data, 0o600)
        };
        match written {
            Ok(()) => {
                sync_dir(&self.dir);
                let _ = self.old.sync_data();
                if let Ok((snaps, journals)) = generations(&self.dir) {
                    for g in snaps.into_iter().filter(|g| *g < self.gen) {
                        let _ = fs::remove_file(self.dir.join(snapshot_name(g)));
                    }
                    for g in journals.into_iter().filter(|g| *g < self.gen) {
                        let _ = fs::remove_file(self.dir.join(journal_name(g)));
                    }
                }
                // Free for the next compaction before saying this one is
                // done (a test waits for the line, then writes more).
                self.done.store(false, Ordering::SeqCst);
                log_event(
                    "journal_compacted",
                    json!({"snapshot": path.display().to_string(), "bytes": self.data.len()}),
                );
            }
            // The older files stay, so nothing is lost: the next start
            // loads them and the newer journal.
            Err(e) => {
                self.done.store(false, Ordering::SeqCst);
                log_event(
                    "journal_compaction_failed",
                    json!({"snapshot": path.display().to_string(), "error": e.to_string()}),
                );
            }
        }
    }
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC-32 (IEEE 802.3, as zlib and `cksum -a crc32b` compute it): catches
/// torn and flipped bytes; not a defence against deliberate edits.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for b in data {
        c = CRC_TABLE[((c ^ u32::from(*b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn records_round_trip_through_a_line() {
        let key = [7u8; 32];
        let recs = [
            Record::Channel {
                name: "#x",
                invite_only: true,
                creator: Some("@a"),
            },
            Record::Invite {
                channel: "#x",
                agent: "@b",
            },
            Record::Drop { channel: "#x" },
            Record::Msg {
                frame: r##"{"type":"MSG","from":"@a","to":"#x","content":"hi\nthere","ts":7}"##,
            },
            Record::Bind {
                id: "@a",
                key: &key,
            },
        ];
        for r in &recs {
            let mut line = Vec::new();
            r.encode_line(&mut line);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
            let (kind, payload) = parse_line(&line[..line.len() - 1]).unwrap();
            assert!(decode(kind, payload).is_ok(), "{kind}");
        }
        let mut line = Vec::new();
        recs[4].encode_line(&mut line);
        let (k, p) = parse_line(&line[..line.len() - 1]).unwrap();
        assert_eq!(
            decode(k, p).unwrap(),
            Loaded::Bind {
                id: "@a".into(),
                key
            }
        );
        // One flipped byte fails the checksum.
        line[12] ^= 1;
        assert_eq!(
            parse_line(&line[..line.len() - 1]),
            Err("checksum mismatch")
        );
    }
}
