//! A relay socket as its reader and the WebSocket handshake see it: plain
//! TCP (`ws://`) or a TLS session over it (`wss://`). Both the server's
//! connections and the CLI client use it, so neither cares which it has.
//! Not here: TLS itself (`crate::tls`) or who writes (`writer`, the client).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use super::frame::SharedStream;
use crate::tls::TlsStream;

#[derive(Clone)]
pub enum Stream {
    Plain(SharedStream),
    Tls(TlsStream),
}

impl Stream {
    /// The socket underneath: timeouts, shutdown, the writer's epoll.
    pub fn tcp(&self) -> &Arc<TcpStream> {
        match self {
            Stream::Plain(s) => &s.0,
            Stream::Tls(t) => t.tcp(),
        }
    }

    /// Wakes the reader and writer if they are blocked; both then fail.
    pub fn shutdown(&self) {
        let _ = self.tcp().shutdown(std::net::Shutdown::Both);
    }

    /// The handle the hub keeps to shut the socket.
    pub fn shared(&self) -> SharedStream {
        SharedStream(self.tcp().clone())
    }

    /// The TLS session, which the writer must seal every frame with.
    pub fn tls(&self) -> Option<&TlsStream> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(t) => Some(t),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => read_tls(t, buf),
        }
    }
}

/// Kept out of line: rustls' read path has large stack frames, and inlined
/// here they would make every plain connection's idle reader, blocked in
/// `read`, hold two more stack pages (20 KiB per idle connection instead of
/// 12; `trim_stack` in relay/conn.rs, guarded by tests/relay_idle_rss.rs).
#[inline(never)]
fn read_tls(t: &mut TlsStream, buf: &mut [u8]) -> io::Result<usize> {
    t.read(buf)
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
        }
    }
}
