//! workbench patch: the reading and the writing half of a connection share
//! one socket through an `Arc` instead of a `try_clone`d descriptor. Upstream
//! cloned (two descriptors per connection) and unwrapped the clone, so
//! running out of descriptors panicked, and with `panic = "abort"` killed the
//! process. Now a connection costs one descriptor and nothing here can fail.
//!
//! The socket also carries the connection's admission permit (freed when the
//! last half is dropped, upgraded streams included), its read deadline, and a
//! `closing` flag that ends the connection after the current response.
//!
//! workbench patch (HTTPS pages): a socket may also carry a TLS layer
//! (`Tls`). The first byte the connection thread reads decides: a TLS
//! record (0x16) gets the rustls handshake, on that thread, within
//! `HANDSHAKE_LIMIT`; anything else is served as plain HTTP only if the peer
//! is on this machine (loopback), and closed otherwise. After the
//! handshake, no lock is held across I/O: the socket is read and written
//! without it, the lock guards only rustls' memory (decrypt what was read,
//! seal what is to be sent). Every limit above (permit, head caps, idle
//! timeout and deadlines) applies to the decrypted stream unchanged.

use std::io::Result as IoResult;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::connection::Connection;
use crate::limits::Permit;

struct Timing {
    /// Reads fail at this instant (header or body deadline).
    deadline: Option<Instant>,
    /// The SO_RCVTIMEO last set, to skip redundant setsockopt calls.
    applied: Option<Duration>,
}

/// How long a TLS handshake may take, first byte to finished.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// What the first byte from the client decided.
enum Session {
    Tls(Mutex<rustls::ServerConnection>),
    /// Plain HTTP from a loopback peer.
    Plain,
}

pub(crate) struct Tls {
    config: Arc<rustls::ServerConfig>,
    session: OnceLock<Result<Session, String>>,
}

impl Tls {
    pub(crate) fn new(config: Arc<rustls::ServerConfig>) -> Tls {
        Tls {
            config,
            session: OnceLock::new(),
        }
    }
}

fn lock(c: &Mutex<rustls::ServerConnection>) -> MutexGuard<'_, rustls::ServerConnection> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

/// Peeks at the first byte, then runs the handshake or allows plain HTTP
/// from loopback. Blocking I/O on the connection's own thread.
fn decide(conn: &Connection, config: &Arc<rustls::ServerConfig>) -> Result<Session, String> {
    let s = match conn {
        Connection::Tcp(s) => s,
        #[cfg(unix)]
        Connection::Unix(_) => return Ok(Session::Plain), // this machine
    };
    let deadline = Instant::now() + HANDSHAKE_LIMIT;
    s.set_read_timeout(Some(HANDSHAKE_LIMIT)).map_err(|e| e.to_string())?;
    let mut first = [0u8; 1];
    let n = s.peek(&mut first).map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("closed before sending anything".into());
    }
    if first[0] != 0x16 {
        let loopback = s.peer_addr().map(|a| a.ip().is_loopback()).unwrap_or(false);
        return if loopback {
            Ok(Session::Plain)
        } else {
            Err("plain HTTP on an HTTPS port from another machine".into())
        };
    }
    let mut tls = rustls::ServerConnection::new(config.clone()).map_err(|e| e.to_string())?;
    let mut io = s;
    while tls.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("TLS handshake timed out".into());
        }
        let _ = s.set_read_timeout(Some(left));
        let _ = s.set_write_timeout(Some(left));
        tls.complete_io(&mut io).map_err(|e| e.to_string())?;
    }
    while tls.wants_write() {
        tls.write_tls(&mut io).map_err(|e| e.to_string())?;
    }
    let _ = s.set_write_timeout(None);
    Ok(Session::Tls(Mutex::new(tls)))
}

pub(crate) struct Socket {
    conn: Connection,
    tls: Option<Tls>,
    idle: Duration,
    timing: Mutex<Timing>,
    closing: AtomicBool,
    _permit: Option<Permit>,
}

impl Socket {
    pub(crate) fn new(
        conn: Connection,
        idle: Duration,
        permit: Option<Permit>,
        tls: Option<Tls>,
    ) -> Arc<Socket> {
        Arc::new(Socket {
            conn,
            tls,
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

    /// The TLS session, decided (handshake and all) at the first read.
    fn session<'a>(&self, tls: &'a Tls) -> IoResult<Option<&'a Mutex<rustls::ServerConnection>>> {
        let decided = tls.session.get_or_init(|| {
            let d = decide(&self.conn, &tls.config);
            // decide() set SO_RCVTIMEO itself: re-arm ours at the next read.
            self.timing().applied = None;
            if d.is_err() {
                let _ = self.conn.shutdown(Shutdown::Both);
            }
            d
        });
        match decided {
            Ok(Session::Plain) => Ok(None),
            Ok(Session::Tls(c)) => Ok(Some(c)),
            Err(e) => Err(io::Error::new(ErrorKind::ConnectionAborted, e.clone())),
        }
    }

    fn read(&self, buf: &mut [u8]) -> IoResult<usize> {
        if self.is_closing() {
            return Ok(0);
        }
        let Some(tls) = &self.tls else {
            return self.raw_read(buf);
        };
        let Some(conn) = self.session(tls)? else {
            return self.raw_read(buf);
        };
        loop {
            match lock(conn).reader().read(buf) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                other => return other,
            }
            let mut raw = [0u8; 4096];
            let n = self.raw_read(&mut raw)?;
            if n == 0 {
                return Ok(0);
            }
            let mut c = lock(conn);
            let mut rest = &raw[..n];
            while !rest.is_empty() {
                c.read_tls(&mut rest)?;
                c.process_new_packets().map_err(io::Error::other)?;
            }
        }
    }

    fn write(&self, buf: &[u8]) -> IoResult<usize> {
        let Some(tls) = &self.tls else {
            return (&self.conn).write(buf);
        };
        let conn = match tls.session.get() {
            Some(Ok(Session::Plain)) => return (&self.conn).write(buf),
            Some(Ok(Session::Tls(c))) => c,
            _ => return Err(io::Error::new(ErrorKind::NotConnected, "no TLS session")),
        };
        let mut records = Vec::with_capacity(buf.len() + 64);
        {
            let mut c = lock(conn);
            let mut rest = buf;
            while !rest.is_empty() {
                let n = c.writer().write(rest)?;
                rest = &rest[n..];
                while c.wants_write() {
                    c.write_tls(&mut records)?;
                }
                if n == 0 && !rest.is_empty() {
                    return Err(io::Error::other("TLS session refused more data"));
                }
            }
        }
        (&self.conn).write_all(&records)?;
        Ok(buf.len())
    }

    fn raw_read(&self, buf: &mut [u8]) -> IoResult<usize> {
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
        self.socket.write(buf)
    }

    fn flush(&mut self) -> IoResult<()> {
        (&self.socket.conn).flush()
    }
}
