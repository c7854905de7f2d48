//! workbench patch: TLS on rustls 0.23 (ring), rewritten from upstream's
//! `Mutex<StreamOwned>` (see WORKBENCH-PATCH.md).
//!
//! * **No lock across I/O.** Upstream locked the whole rustls stream for a
//!   blocking read, so a response could not be written while the connection
//!   thread waited for the next request. Here every clone has its own
//!   socket handle (a dup'd fd); the socket is read and written without the
//!   lock, and the lock guards only rustls' memory (decrypt what was read,
//!   encrypt what is to be sent). The same design as workbench's
//!   `src/tls.rs`, which this crate cannot depend on.
//! * **The handshake runs on the connection's own thread** (on its first
//!   read), never in the accept loop, within `HANDSHAKE_LIMIT` overall, so a
//!   client stalling in it delays nobody else.
//! * **Plain HTTP only from loopback.** The first byte decides: a TLS
//!   record (0x16) gets the handshake; anything else is served as plain
//!   HTTP if the peer is on this machine (the owner's own tools keep talking
//!   to their server over loopback) and closed otherwise, so nothing crosses
//!   the network in clear text.

use crate::connection::Connection;
use crate::util::refined_tcp_stream::Stream as RefinedStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::error::Error;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// How long a TLS handshake may take, start to finish.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// What the first byte from the client decided.
enum Session {
    Tls(Mutex<rustls::ServerConnection>),
    /// Plain HTTP from a loopback peer.
    Plain,
}

struct Shared {
    config: Arc<rustls::ServerConfig>,
    session: OnceLock<Result<Session, String>>,
}

pub(crate) struct RustlsStream {
    sock: Connection,
    shared: Arc<Shared>,
}

fn tcp(sock: &Connection) -> Option<&std::net::TcpStream> {
    match sock {
        Connection::Tcp(s) => Some(s),
        #[cfg(unix)]
        Connection::Unix(_) => None,
    }
}

impl RustlsStream {
    pub(crate) fn peer_addr(&mut self) -> std::io::Result<Option<SocketAddr>> {
        self.sock.peer_addr()
    }

    pub(crate) fn shutdown(&mut self, how: Shutdown) -> std::io::Result<()> {
        self.sock.shutdown(how)
    }

    fn session(&mut self) -> io::Result<&Session> {
        if self.shared.session.get().is_none() {
            // Only the connection thread's first read gets here: nothing can
            // be written before a request has been read.
            let decided = decide(&mut self.sock, &self.shared.config);
            let _ = self.shared.session.set(decided);
        }
        match self.shared.session.get() {
            Some(Ok(s)) => Ok(s),
            Some(Err(e)) => Err(io::Error::new(io::ErrorKind::ConnectionAborted, e.clone())),
            None => Err(io::Error::other("TLS session not decided")),
        }
    }

    fn lock(conn: &Mutex<rustls::ServerConnection>) -> MutexGuard<'_, rustls::ServerConnection> {
        conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Peeks at the first byte, then runs the handshake or allows plain HTTP
/// from loopback. Blocking I/O on the connection's own thread.
fn decide(sock: &mut Connection, config: &Arc<rustls::ServerConfig>) -> Result<Session, String> {
    let Some(s) = tcp(sock) else {
        return Ok(Session::Plain); // a Unix socket is this machine
    };
    let before = s.read_timeout().ok().flatten();
    let _ = s.set_read_timeout(Some(HANDSHAKE_LIMIT));
    let mut first = [0u8; 1];
    let n = s.peek(&mut first).map_err(|e| e.to_string())?;
    let result = if n == 0 {
        Err("closed before sending anything".to_string())
    } else if first[0] != 0x16 {
        let loopback = s.peer_addr().map(|a| a.ip().is_loopback()).unwrap_or(false);
        if loopback {
            Ok(Session::Plain)
        } else {
            let _ = s.shutdown(Shutdown::Both);
            Err("plain HTTP on an HTTPS port from another machine".to_string())
        }
    } else {
        handshake(s, config).map(|c| Session::Tls(Mutex::new(c)))
    };
    let _ = s.set_read_timeout(before);
    result
}

fn handshake(
    mut s: &std::net::TcpStream,
    config: &Arc<rustls::ServerConfig>,
) -> Result<rustls::ServerConnection, String> {
    let mut conn = rustls::ServerConnection::new(config.clone()).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + HANDSHAKE_LIMIT;
    while conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("TLS handshake timed out".into());
        }
        let _ = s.set_read_timeout(Some(left));
        let _ = s.set_write_timeout(Some(left));
        conn.complete_io(&mut s).map_err(|e| e.to_string())?;
    }
    while conn.wants_write() {
        conn.write_tls(&mut s).map_err(|e| e.to_string())?;
    }
    let _ = s.set_write_timeout(None);
    Ok(conn)
}

impl Clone for RustlsStream {
    fn clone(&self) -> Self {
        Self {
            sock: self.sock.try_clone().expect("dup a connection's socket"),
            shared: self.shared.clone(),
        }
    }
}

impl Read for RustlsStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if matches!(self.session()?, Session::Plain) {
            return self.sock.read(buf);
        }
        let shared = self.shared.clone();
        let Some(Ok(Session::Tls(conn))) = shared.session.get() else {
            return Err(io::Error::other("TLS session lost"));
        };
        loop {
            match Self::lock(conn).reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
            let mut raw = [0u8; 4096];
            let n = self.sock.read(&mut raw)?;
            let mut c = Self::lock(conn);
            let mut rest = &raw[..n];
            loop {
                c.read_tls(&mut rest)?;
                c.process_new_packets().map_err(io::Error::other)?;
                if rest.is_empty() {
                    break;
                }
            }
        }
    }
}

impl Write for RustlsStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let shared = self.shared.clone();
        let conn = match shared.session.get() {
            Some(Ok(Session::Plain)) => return self.sock.write(buf),
            Some(Ok(Session::Tls(c))) => c,
            _ => return Err(io::Error::new(io::ErrorKind::NotConnected, "no TLS session")),
        };
        let mut records = Vec::with_capacity(buf.len() + 64);
        {
            let mut c = Self::lock(conn);
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
        self.sock.write_all(&records)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.sock.flush()
    }
}

pub(crate) struct RustlsContext(Arc<rustls::ServerConfig>);

impl RustlsContext {
    pub(crate) fn from_pem(
        certificates: Vec<u8>,
        private_key: Zeroizing<Vec<u8>>,
    ) -> Result<Self, Box<dyn Error + Send + Sync>> {
        let chain = CertificateDer::pem_slice_iter(&certificates).collect::<Result<Vec<_>, _>>()?;
        if chain.is_empty() {
            return Err("Couldn't extract certificate chain from config.".into());
        }
        let key = PrivateKeyDer::from_pem_slice(&private_key)?;
        // workbench installs its provider (src/tls.rs) before building a
        // server; referring to ring's default_provider() here would link
        // the suites it leaves out.
        let provider = rustls::crypto::CryptoProvider::get_default()
            .cloned()
            .ok_or("no rustls crypto provider installed")?;
        let tls_conf = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        Ok(Self(Arc::new(tls_conf)))
    }

    /// Only wraps the socket: the handshake happens on the connection's own
    /// thread, at its first read.
    pub(crate) fn accept(
        &self,
        stream: Connection,
    ) -> Result<RustlsStream, Box<dyn Error + Send + Sync + 'static>> {
        Ok(RustlsStream {
            sock: stream,
            shared: Arc::new(Shared {
                config: self.0.clone(),
                session: OnceLock::new(),
            }),
        })
    }
}

impl From<RustlsStream> for RefinedStream {
    fn from(stream: RustlsStream) -> Self {
        Self::Https(stream)
    }
}
