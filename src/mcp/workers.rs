//! The threads that run tool calls. A call runs on its own thread (so a
//! long `workbench_wait` never delays a `ping`), but threads are kept between
//! calls: handing a call to an idle one costs a wake-up, not a thread start.
//! When every thread is busy a new one starts; one idle for a minute ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send>;

const IDLE_LIFETIME: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Workers {
    tx: Sender<Job>,
    rx: Arc<Mutex<Receiver<Job>>>,
    /// Threads waiting for a job, less jobs sent to them not yet taken.
    idle: Arc<AtomicUsize>,
    started: Arc<AtomicUsize>,
}

impl Workers {
    pub fn new() -> Workers {
        let (tx, rx) = mpsc::channel();
        Workers {
            tx,
            rx: Arc::new(Mutex::new(rx)),
            idle: Arc::new(AtomicUsize::new(0)),
            started: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Runs `job` on an idle thread, or on a new one when none is idle.
    pub fn run(&self, job: Job) -> std::io::Result<()> {
        if take_one(&self.idle) {
            // An idle thread is waiting (or about to) and takes it.
            return self
                .tx
                .send(job)
                .map_err(|_| std::io::ErrorKind::BrokenPipe.into());
        }
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        let me = self.clone();
        std::thread::Builder::new()
            .name(format!("tool-{n}"))
            .spawn(move || me.work(job))
            .map(drop)
    }

    fn work(self, first: Job) {
        let mut job = first;
        loop {
            job();
            self.idle.fetch_add(1, Ordering::SeqCst);
            job = loop {
                // Only the receiver is guarded; a poisoned lock still holds it.
                let rx = self.rx.lock().unwrap_or_else(|e| e.into_inner());
                match rx.recv_timeout(IDLE_LIFETIME) {
                    Ok(j) => break j,
                    Err(RecvTimeoutError::Disconnected) => return,
                    Err(RecvTimeoutError::Timeout) => {
                        // Leave only if no job was promised to an idle thread meanwhile.
                        if take_one(&self.idle) {
                            return;
                        }
                    }
                }
            };
        }
    }
}

/// Takes one idle token if there is one.
fn take_one(idle: &AtomicUsize) -> bool {
    idle.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_idle(w: &Workers, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while w.idle.load(Ordering::SeqCst) != n {
            assert!(std::time::Instant::now() < deadline, "workers never idle");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn reuses_idle_threads_and_starts_more_when_busy() {
        let w = Workers::new();
        let (done_tx, done_rx) = mpsc::channel();
        for _ in 0..5 {
            let d = done_tx.clone();
            w.run(Box::new(move || d.send(()).unwrap())).unwrap();
            done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
            wait_idle(&w, 1);
        }
        assert_eq!(
            w.started.load(Ordering::SeqCst),
            1,
            "one thread did all five"
        );

        // Three jobs that each wait until all three run: only possible if
        // new threads start while the first is busy.
        let (started_tx, started_rx) = mpsc::channel();
        let mut releases = Vec::new();
        for _ in 0..3 {
            let (rel_tx, rel_rx) = mpsc::channel::<()>();
            releases.push(rel_tx);
            let s = started_tx.clone();
            w.run(Box::new(move || {
                s.send(()).unwrap();
                let _ = rel_rx.recv_timeout(Duration::from_secs(10));
            }))
            .unwrap();
        }
        for _ in 0..3 {
            started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        assert_eq!(w.started.load(Ordering::SeqCst), 3);
        drop(releases);
        wait_idle(&w, 3);
    }
}
