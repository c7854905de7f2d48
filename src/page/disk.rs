//! The project's disk writer: one thread owns every write to the project
//! folder (state.json, session logs, events), so request threads never do
//! file I/O while holding a lock and appends land in push order. Consecutive
//! state snapshots are coalesced: only the newest is written.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};

use serde_json::{json, Map, Value};

use crate::project::Project;
use crate::util;

pub enum DiskOp {
    /// The whole merged state, to replace state.json atomically.
    State(Map<String, Value>),
    /// A session log entry `{ts, level, message, source}`.
    Log(Value),
    /// A page event `{seq, ts, name, data, from}`.
    Event(Value),
    /// Answered once everything queued before it is on disk.
    Sync(SyncSender<()>),
}

#[derive(Clone)]
pub struct DiskSender(Sender<DiskOp>);

impl DiskSender {
    pub fn send(&self, op: DiskOp) {
        // The writer only exits after every sender is gone.
        let _ = self.0.send(op);
    }

    #[cfg(test)]
    pub fn for_tests(tx: Sender<DiskOp>) -> Self {
        DiskSender(tx)
    }

    /// Blocks until everything queued so far has been written.
    pub fn sync(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(DiskOp::Sync(tx));
        let _ = rx.recv();
    }
}

/// Starts the writer thread. It lives as long as the process; callers
/// `sync` before exiting so nothing queued is lost.
pub fn start(project: &Project) -> DiskSender {
    let (tx, rx) = mpsc::channel();
    let files = Files {
        state: project.path("state.json"),
        jsonl: project.path("session.jsonl"),
        md: project.path("session.md"),
        events: project.path("events.jsonl"),
    };
    std::thread::Builder::new()
        .name("disk-writer".into())
        .spawn(move || run(files, rx))
        .expect("spawn disk writer");
    DiskSender(tx)
}

struct Files {
    state: PathBuf,
    jsonl: PathBuf,
    md: PathBuf,
    events: PathBuf,
}

fn run(files: Files, rx: Receiver<DiskOp>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        // Each State op carries the full merged state: only the last counts.
        let last_state = batch.iter().rposition(|op| matches!(op, DiskOp::State(_)));
        for (i, op) in batch.into_iter().enumerate() {
            let result = match op {
                DiskOp::State(state) if Some(i) == last_state => {
                    let text = serde_json::to_vec(&state).unwrap_or_default();
                    util::write_replace(&files.state, &text, 0o644)
                }
                DiskOp::State(_) => Ok(()),
                DiskOp::Log(entry) => append_log(&files, &entry),
                DiskOp::Event(ev) => util::append_line(&files.events, &ev.to_string()),
                DiskOp::Sync(done) => {
                    let _ = done.send(());
                    Ok(())
                }
            };
            if let Err(e) = result {
                util::log_event("disk_error", json!({"error": e.to_string()}));
            }
        }
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
