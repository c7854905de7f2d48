//! workbench patch: the reading and the writing half of a connection share
//! one socket through an `Arc` instead of a `try_clone`d descriptor. Upstream
//! cloned (two descriptors per connection) and unwrapped the clone, so
//! running out of descriptors panicked, and with `panic = "abort"` killed the
//! process. Now a connection costs one descriptor and nothing here can fail.
//!
//! The socket also carries the connection's admission permit (freed when the
//! last half is dropped, upgraded streams included), its read deadline, and a
//! `closing` flag that ends the connection after the current response.

use std::io::Result as IoResult;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::connection::Connection;
use crate::limits::Permit;

struct Timing {
    /// Reads fail at this instant (header or body deadline).
    deadline: Option<Instant>,
    /// The SO_RCVTIMEO last set, to skip redundant setsockopt calls.
    applied: Option<Duration>,
}

pub(crate) struct Socket {
    conn: Connection,
    idle: Duration,
    timing: Mutex<Timing>,
    closing: AtomicBool,
    _permit: Option<Permit>,
}

impl Socket {
    pub(crate) fn new(conn: Connection, idle: Duration, permit: Option<Permit>) -> Arc<Socket> {
        Arc::new(Socket {
            conn,
            idle: idle.max(Duration::from_millis(1)),
            timing: Mutex::new(Timing {
                deadline: None,
                applied: None,
            }),
            closing: AtomicBool::new(false),
            _permit: permit,
        })
    }

    fn timing(&self) -> std::sync::MutexGuard<'_, Timing> {
        self.timing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads after `at` fail with `TimedOut` (None: only the idle timeout).
    pub(crate) fn set_deadline(&self, at: Option<Instant>) {
        self.timing().deadline = at;
    }

    /// Ends the connection: reads return end-of-file from now on and the
    /// peer gets a FIN after what was already written.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let _ = self.conn.shutdown(Shutdown::Both);
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    pub(crate) fn peer_addr(&self) -> IoResult<Option<SocketAddr>> {
        self.conn.peer_addr()
    }

    fn read(&self, buf: &mut [u8]) -> IoResult<usize> {
        if self.is_closing() {
            return Ok(0);
        }
        {
            let mut t = self.timing();
            let timeout = match t.deadline {
                Some(d) => {
                    let now = Instant::now();
                    if d <= now {
                        return Err(io::Error::new(ErrorKind::TimedOut, "read deadline passed"));
                    }
                    (d - now).min(self.idle).max(Duration::from_millis(1))
                }
                None => self.idle,
            };
            if t.applied != Some(timeout) {
                self.conn.set_read_timeout(Some(timeout))?;
                t.applied = Some(timeout);
            }
        }
        match (&self.conn).read(buf) {
            // SO_RCVTIMEO expiring shows up as EAGAIN.
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                Err(io::Error::new(ErrorKind::TimedOut, "read timed out"))
            }
            r => r,
        }
    }
}

pub struct RefinedTcpStream {
    socket: Arc<Socket>,
    close_read: bool,
    close_write: bool,
}

impl RefinedTcpStream {
    pub(crate) fn new(socket: &Arc<Socket>) -> (RefinedTcpStream, RefinedTcpStream) {
        let read = RefinedTcpStream {
            socket: socket.clone(),
            close_read: true,
            close_write: false,
        };
        let write = RefinedTcpStream {
            socket: socket.clone(),
            close_read: false,
            close_write: true,
        };
        (read, write)
    }

    #[inline]
    pub(crate) fn secure(&self) -> bool {
        false
    }

    pub(crate) fn peer_addr(&mut self) -> IoResult<Option<SocketAddr>> {
        self.socket.peer_addr()
    }
}

impl Drop for RefinedTcpStream {
    fn drop(&mut self) {
        if self.close_read {
            self.socket.conn.shutdown(Shutdown::Read).ok();
        }
        if self.close_write {
            self.socket.conn.shutdown(Shutdown::Write).ok();
        }
    }
}

impl Read for RefinedTcpStream {
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        self.socket.read(buf)
    }
}

impl Write for RefinedTcpStream {
    fn write(&mut self, buf: &[u8]) -> IoResult<usize> {
        (&self.socket.conn).write(buf)
    }

    fn flush(&mut self) -> IoResult<()> {
        (&self.socket.conn).flush()
    }
}
