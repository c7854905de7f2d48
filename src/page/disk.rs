//! The project's disk writer: one thread owns every write to the project
//! folder (state.json, session logs, events), so request threads never do
//! file I/O while holding a lock and appends land in push order. Consecutive
//! state snapshots are coalesced: only the newest is written.
//!
//! Every write reports its result: an answer waits for its own writes
//! (`sync`) and a failed one (a full disk, EIO) becomes an error status,
//! never 200. Events are numbered here, written and fsynced as one group per
//! batch, and only then made readable (`Events::commit`).

use std::cell::RefCell;
use std::io;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;

use serde_json::{json, Value};

use super::eventlog::{Record, Writer};
use super::events::Events;
use crate::project::Project;
use crate::util;

pub enum DiskOp {
    /// The whole merged state, to replace state.json atomically (shared
    /// with the hub: reference counts, serialised here, off every lock).
    State(super::hub::StateSnapshot),
    /// A session log entry `{ts, level, message, source}`.
    Log(Value),
}

/// A page event waiting for its number: `{seq, ts, name, data, from}`.
struct NewEvent {
    name: String,
    data: Value,
    from: Value,
    done: SyncSender<io::Result<u64>>,
}

enum Msg {
    Op(DiskOp, SyncSender<io::Result<()>>),
    Event(NewEvent),
    /// Answered once everything queued before it has been handled.
    Barrier(SyncSender<()>),
}

thread_local! {
    /// Results this thread is owed for the ops it queued (`send`), waited
    /// for by its next `sync`. Request threads are one per request, so
    /// "this thread's writes" are exactly "this request's writes".
    static OWED: RefCell<Vec<Receiver<io::Result<()>>>> = const { RefCell::new(Vec::new()) };
}

#[derive(Clone)]
pub struct DiskSender(Sender<Msg>);

/// The HTTP status for a failed write: 507 Insufficient Storage when the
/// disk (or quota) is full, 500 otherwise.
pub fn error_status(e: &io::Error) -> u16 {
    match e.raw_os_error() {
        Some(28) | Some(122) => 507,
        _ => 500,
    }
}

fn writer_gone() -> io::Error {
    io::Error::other("the disk writer has stopped")
}

impl DiskSender {
    /// Queues a write; the calling thread's next `sync` waits for its result.
    pub fn send(&self, op: DiskOp) {
        let (tx, rx) = mpsc::sync_channel(1);
        OWED.with(|o| o.borrow_mut().push(rx));
        // The writer only exits after every sender is gone.
        let _ = self.0.send(Msg::Op(op, tx));
    }

    /// Blocks until every write this thread queued is done; the first
    /// failure, if any.
    pub fn sync(&self) -> io::Result<()> {
        let owed = OWED.with(|o| std::mem::take(&mut *o.borrow_mut()));
        let mut first = Ok(());
        for rx in owed {
            let r = rx.recv().unwrap_or_else(|_| Err(writer_gone()));
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    /// Blocks until everything queued by any thread so far is handled
    /// (shutdown).
    pub fn flush(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.0.send(Msg::Barrier(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// Numbers, stores and fsyncs one page event; its seq once it is on
    /// disk and readable, or the write's error (no number is used up).
    pub fn append_event(&self, name: &str, data: Value, from: Value) -> io::Result<u64> {
        let (tx, rx) = mpsc::sync_channel(1);
        let ev = NewEvent {
            name: name.to_string(),
            data,
            from,
            done: tx,
        };
        self.0.send(Msg::Event(ev)).map_err(|_| writer_gone())?;
        rx.recv().unwrap_or_else(|_| Err(writer_gone()))
    }
}

/// Starts the writer thread. It lives as long as the process; callers
/// `flush` before exiting so nothing queued is lost. `events` receives
/// every stored event; `writer` appends them to the log.
pub fn start(project: &Project, events: Arc<Events>, writer: Writer) -> DiskSender {
    let (tx, rx) = mpsc::channel();
    let files = Files {
        state: project.path("state.json"),
        jsonl: project.path("session.jsonl"),
        md: project.path("session.md"),
    };
    let next_seq = events.last_seq() + 1;
    let mut w = EventWriter {
        events,
        writer,
        next_seq,
    };
    std::thread::Builder::new()
        .name("disk-writer".into())
        .spawn(move || run(files, &mut w, rx))
        .expect("spawn disk writer");
    DiskSender(tx)
}

struct Files {
    state: PathBuf,
    jsonl: PathBuf,
    md: PathBuf,
}

struct EventWriter {
    events: Arc<Events>,
    writer: Writer,
    next_seq: u64,
}

impl EventWriter {
    /// Numbers the batch's events from the next free seq, appends them in
    /// one fsynced group, makes the stored ones readable, answers each.
    fn write(&mut self, batch: Vec<NewEvent>) {
        if batch.is_empty() {
            return;
        }
        let recs: Vec<Record> = batch
            .iter()
            .enumerate()
            .map(|(i, ev)| {
                let seq = self.next_seq + i as u64;
                let text = json!({"seq": seq, "ts": util::rfc3339_now(), "name": ev.name,
                                  "data": ev.data, "from": ev.from})
                .to_string();
                Record {
                    seq,
                    name: ev.name.as_str().into(),
                    text: text.into(),
                }
            })
            .collect();
        let (stored, err) = match self.writer.append(&recs) {
            Ok(n) => (n, None),
            Err((n, e)) => (n, Some(e)),
        };
        self.next_seq += stored as u64;
        let seqs: Vec<u64> = recs.iter().map(|r| r.seq).collect();
        let mut recs = recs;
        recs.truncate(stored);
        self.events.commit(recs);
        if let Some(e) = &err {
            util::log_event(
                "disk_error",
                json!({"file": "events", "error": e.to_string(), "refused": batch.len() - stored}),
            );
        }
        for (i, ev) in batch.into_iter().enumerate() {
            let r = if i < stored {
                Ok(seqs[i])
            } else {
                Err(copy_err(err.as_ref().expect("a shortfall has an error")))
            };
            let _ = ev.done.send(r);
        }
    }
}

/// A copy of an error for each waiter, keeping its errno (and so its status).
fn copy_err(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(n) => io::Error::from_raw_os_error(n),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

fn run(files: Files, ev: &mut EventWriter, rx: Receiver<Msg>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut events = Vec::new();
        let mut barriers = Vec::new();
        // Each State op carries the full merged state: only the last is
        // written, and its result answers every state push of the batch.
        let mut states: Vec<SyncSender<io::Result<()>>> = Vec::new();
        let mut last_state = None;
        for msg in batch {
            match msg {
                Msg::Op(DiskOp::State(state), done) => {
                    last_state = Some(state);
                    states.push(done);
                }
                Msg::Op(DiskOp::Log(entry), done) => {
                    let r = append_log(&files, &entry);
                    report("session log", &r);
                    let _ = done.send(r);
                }
                Msg::Event(e) => events.push(e),
                Msg::Barrier(done) => barriers.push(done),
            }
        }
        if let Some(state) = last_state {
            let r = util::write_replace(&files.state, state.to_json().as_bytes(), 0o600);
            report("state.json", &r);
            for done in states {
                let _ = done.send(match &r {
                    Ok(()) => Ok(()),
                    Err(e) => Err(copy_err(e)),
                });
            }
        }
        ev.write(events);
        for done in barriers {
            let _ = done.send(());
        }
    }
}

fn report(file: &str, r: &io::Result<()>) {
    if let Err(e) = r {
        util::log_event("disk_error", json!({"file": file, "error": e.to_string()}));
    }
}

fn append_log(files: &Files, entry: &Value) -> std::io::Result<()> {
    util::append_line(&files.jsonl, &entry.to_string())?;
    util::append_line(&files.md, &markdown_line(entry))
}

/// `- 10:32:01 **warn** message` — one line whatever the message holds.
pub fn markdown_line(entry: &Value) -> String {
    let ts = entry["ts"].as_str().unwrap_or("");
    let time = ts.get(11..19).unwrap_or(ts);
    let level = entry["level"].as_str().unwrap_or("info");
    let source = entry["source"].as_str().unwrap_or("ai");
    let message = entry["message"]
        .as_str()
        .unwrap_or("")
        .replace(['\r', '\n'], " ");
    let tag = if level == "info" {
        String::new()
    } else {
        format!("**{level}** ")
    };
    let who = if source == "ai" {
        String::new()
    } else {
        format!("[{source}] ")
    };
    format!("- {time} {tag}{who}{message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_line_is_one_line() {
        let e =
            json!({"ts":"2026-11-24T03:52:01.000Z","level":"warn","message":"a\nb","source":"ai"});
        assert_eq!(markdown_line(&e), "- 03:52:01 **warn** a b");
    }
}
