//! The read half of a split WebSocket (RFC 6455 §5). tungstenite's
//! `WebSocket::read` answers pings and closes by writing to its own stream,
//! which would give a socket a second writer; so the reading side parses
//! frames here and hands control frames to whoever owns the writing side.
//! Writing stays with tungstenite. This is not a general WebSocket library:
//! no extensions, and messages over the size cap are skipped, not buffered.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;

use tungstenite::Bytes;

/// One TCP socket shared by its reader and its single writer without a
/// second file descriptor: `&TcpStream` implements both `Read` and `Write`.
#[derive(Clone)]
pub struct SharedStream(pub Arc<TcpStream>);

impl SharedStream {
    pub fn new(s: TcpStream) -> Self {
        SharedStream(Arc::new(s))
    }
    /// Wakes the reader and writer if they are blocked; both then fail.
    pub fn shutdown(&self) {
        let _ = self.0.shutdown(Shutdown::Both);
    }
}

impl Read for SharedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Write for SharedStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        (&*self.0).flush()
    }
}

/// An encoded, unmasked server frame (servers must not mask, RFC 6455
/// §5.1), so the same bytes can be written to every peer: a broadcast is
/// framed once and each recipient's queue holds a reference-counted clone.
#[derive(Debug, Clone)]
pub struct ServerFrame {
    wire: Bytes,
    head: usize,
}

impl ServerFrame {
    /// Frames `payload` as one final frame with `opcode` (§5.2).
    pub fn new(opcode: u8, payload: &[u8]) -> ServerFrame {
        let mut wire = Vec::with_capacity(payload.len() + 10);
        wire.push(0x80 | opcode);
        match payload.len() {
            n if n < 126 => wire.push(n as u8),
            n if n <= u16::MAX as usize => {
                wire.push(126);
                wire.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                wire.push(127);
                wire.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let head = wire.len();
        wire.extend_from_slice(payload);
        ServerFrame {
            wire: Bytes::from(wire),
            head,
        }
    }

    /// A text frame (opcode 1).
    pub fn text(s: &str) -> ServerFrame {
        ServerFrame::new(0x1, s.as_bytes())
    }

    /// A pong echoing a ping's payload (§5.5.3).
    pub fn pong(payload: &[u8]) -> ServerFrame {
        ServerFrame::new(0xA, payload)
    }

    /// A close frame with a status code and reason (§5.5.1).
    pub fn close(code: u16, reason: &str) -> ServerFrame {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason.as_bytes());
        ServerFrame::new(0x8, &p)
    }

    /// The whole frame as it goes on the wire.
    pub fn wire(&self) -> &Bytes {
        &self.wire
    }

    /// The payload of a text frame. Every text frame is built from a `str`
    /// (`From<String>`, [`ServerFrame::text`]); the check is for the other kinds.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.wire[self.head..]).unwrap_or("")
    }
}

impl From<String> for ServerFrame {
    fn from(s: String) -> Self {
        ServerFrame::text(&s)
    }
}

/// Which end we are: a server requires masked frames, a client requires
/// unmasked ones (RFC 6455 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

/// What the reader saw. Data messages are whole (fragments reassembled).
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    /// A binary message (the protocol is text-only); its payload is skipped.
    Binary,
    /// A text message that was not valid UTF-8.
    BadUtf8,
    /// A message longer than the cap; its payload was read and discarded.
    TooBig(u64),
    Ping(Vec<u8>),
    Pong,
    /// The peer's close frame: code and reason if it sent them.
    Close(Option<(u16, String)>),
}

/// A frame that breaks RFC 6455: the connection must be closed (1002).
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    Protocol(&'static str),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Protocol(m) => write!(f, "protocol error: {m}"),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Binary,
}

/// The message being reassembled from fragments.
struct Partial {
    kind: Kind,
    /// Total payload length seen so far, kept or not.
    len: u64,
    /// Past the cap or binary: the rest is read and dropped.
    skipping: bool,
}

pub struct FrameReader<R> {
    src: BufReader<R>,
    role: Role,
    max_message: usize,
    partial: Option<Partial>,
    buf: Vec<u8>,
}

impl<R: Read> FrameReader<R> {
    pub fn new(src: R, role: Role, max_message: usize) -> Self {
        FrameReader {
            // Small: an idle connection should cost little memory (most
            // AgentChat messages fit); larger frames are read straight
            // through it.
            src: BufReader::with_capacity(1024, src),
            role,
            max_message,
            partial: None,
            buf: Vec::new(),
        }
    }

    /// The buffered source, for the opening handshake: what a peer sends
    /// after its HTTP head stays buffered for the first frame.
    pub fn buffered(&mut self) -> &mut BufReader<R> {
        &mut self.src
    }

    /// Whether bytes are already buffered, so the next read may not block.
    pub fn has_buffered(&self) -> bool {
        !self.src.buffer().is_empty()
    }

    /// Blocks until the next complete message or control frame. An orderly
    /// end of stream is `UnexpectedEof`.
    pub fn next_message(&mut self) -> Result<Incoming, ReadError> {
        loop {
            if let Some(msg) = self.read_frame()? {
                return Ok(msg);
            }
        }
    }

    /// Reads one frame; returns a message when it completes one.
    fn read_frame(&mut self) -> Result<Option<Incoming>, ReadError> {
        let mut head = [0u8; 2];
        self.src.read_exact(&mut head)?;
        let fin = head[0] & 0x80 != 0;
        if head[0] & 0x70 != 0 {
            // No extension was negotiated, so RSV bits must be 0 (§5.2).
            return Err(ReadError::Protocol("reserved bits set"));
        }
        let opcode = head[0] & 0x0f;
        let masked = head[1] & 0x80 != 0;
        match (self.role, masked) {
            (Role::Server, false) => return Err(ReadError::Protocol("unmasked client frame")),
            (Role::Client, true) => return Err(ReadError::Protocol("masked server frame")),
            _ => {}
        }
        let len = match head[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                self.src.read_exact(&mut b)?;
                u16::from_be_bytes(b) as u64
            }
            127 => {
                let mut b = [0u8; 8];
                self.src.read_exact(&mut b)?;
                let n = u64::from_be_bytes(b);
                if n >> 63 != 0 {
                    return Err(ReadError::Protocol("frame length has its top bit set"));
                }
                n
            }
            n => n as u64,
        };
        let mut mask = [0u8; 4];
        if masked {
            self.src.read_exact(&mut mask)?;
        }

        if opcode >= 8 {
            // Control frames: short, never fragmented (§5.5).
            if len > 125 || !fin {
                return Err(ReadError::Protocol("bad control frame"));
            }
            let mut payload = vec![0u8; len as usize];
            self.src.read_exact(&mut payload)?;
            if masked {
                unmask(&mut payload, mask, 0);
            }
            return match opcode {
                0x8 => Ok(Some(Incoming::Close(parse_close(&payload)))),
                0x9 => Ok(Some(Incoming::Ping(payload))),
                0xA => Ok(Some(Incoming::Pong)),
                _ => Err(ReadError::Protocol("unknown control opcode")),
            };
        }

        let mut partial = match (opcode, self.partial.take()) {
            (0x0, Some(p)) => p,
            (0x0, None) => return Err(ReadError::Protocol("continuation without a message")),
            (0x1 | 0x2, Some(_)) => {
                return Err(ReadError::Protocol("new message inside a fragmented one"))
            }
            (0x1 | 0x2, None) => {
                let kind = if opcode == 0x1 {
                    Kind::Text
                } else {
                    Kind::Binary
                };
                Partial {
                    kind,
                    len: 0,
                    skipping: kind == Kind::Binary,
                }
            }
            _ => return Err(ReadError::Protocol("unknown data opcode")),
        };

        partial.len = partial.len.saturating_add(len);
        if !partial.skipping && partial.len > self.max_message as u64 {
            partial.skipping = true;
            self.buf = Vec::new();
        }
        if partial.skipping {
            // Through the BufReader's own buffer: `io::copy` would put an
            // 8 KiB buffer on the stack, and its stack probe would keep those
            // pages resident under every idle reader.
            let mut left = len;
            while left > 0 {
                let buf = self.src.fill_buf()?;
                if buf.is_empty() {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
                }
                let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                self.src.consume(n);
                left -= n as u64;
            }
        } else {
            let start = self.buf.len();
            self.buf.resize(start + len as usize, 0);
            self.src.read_exact(&mut self.buf[start..])?;
            if masked {
                unmask(&mut self.buf[start..], mask, 0);
            }
        }

        if !fin {
            self.partial = Some(partial);
            return Ok(None);
        }
        let data = std::mem::take(&mut self.buf);
        Ok(Some(match (partial.kind, partial.skipping) {
            (Kind::Binary, _) => Incoming::Binary,
            (Kind::Text, true) => Incoming::TooBig(partial.len),
            (Kind::Text, false) => match String::from_utf8(data) {
                Ok(s) => Incoming::Text(s),
                Err(_) => Incoming::BadUtf8,
            },
        }))
    }
}

fn unmask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[(offset + i) % 4];
    }
}

fn parse_close(payload: &[u8]) -> Option<(u16, String)> {
    if payload.len() < 2 {
        return None;
    }
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    Some((code, String::from_utf8_lossy(&payload[2..]).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked with a fixed key.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= u16::MAX as usize => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        let mut p = payload.to_vec();
        unmask(&mut p, mask, 0);
        out.extend_from_slice(&p);
        out
    }

    fn read_all(bytes: Vec<u8>, max: usize) -> Vec<Incoming> {
        let mut r = FrameReader::new(io::Cursor::new(bytes), Role::Server, max);
        let mut out = Vec::new();
        while let Ok(m) = r.next_message() {
            out.push(m);
        }
        out
    }

    #[test]
    fn reassembles_fragments_around_control_frames() {
        let mut b = frame(false, 1, b"hel");
        b.extend(frame(true, 9, b"p"));
        b.extend(frame(true, 0, b"lo"));
        assert_eq!(
            read_all(b, 100),
            vec![
                Incoming::Ping(b"p".to_vec()),
                Incoming::Text("hello".into())
            ]
        );
    }

    #[test]
    fn skips_oversized_and_binary_and_keeps_going() {
        let mut b = frame(true, 1, &vec![b'x'; 70_000]);
        b.extend(frame(true, 2, b"\x00\x01"));
        b.extend(frame(true, 1, &[0xff, 0xfe]));
        b.extend(frame(true, 1, b"ok"));
        b.extend(frame(true, 8, &[0x03, 0xe8, b'b', b'y', b'e']));
        assert_eq!(
            read_all(b, 65_536),
            vec![
                Incoming::TooBig(70_000),
                Incoming::Binary,
                Incoming::BadUtf8,
                Incoming::Text("ok".into()),
                Incoming::Close(Some((1000, "bye".into())))
            ]
        );
    }

    #[test]
    fn server_frames_are_unmasked_with_the_shortest_length() {
        assert_eq!(&ServerFrame::text("hi").wire()[..], b"\x81\x02hi");
        assert_eq!(ServerFrame::text("hi").as_str(), "hi");
        assert_eq!(
            &ServerFrame::close(1000, "").wire()[..],
            b"\x88\x02\x03\xe8"
        );
        let long = ServerFrame::text(&"x".repeat(300));
        assert_eq!(&long.wire()[..4], b"\x81\x7e\x01\x2c");
        let huge = ServerFrame::text(&"x".repeat(70_000));
        assert_eq!(&huge.wire()[..10], b"\x81\x7f\0\0\0\0\0\x01\x11\x70");
        // Our own reader (client role) reads them back.
        let mut r = FrameReader::new(io::Cursor::new(long.wire().to_vec()), Role::Client, 1000);
        assert_eq!(r.next_message().ok(), Some(Incoming::Text("x".repeat(300))));
    }

    #[test]
    fn unmasked_client_frames_are_protocol_errors() {
        let mut r = FrameReader::new(io::Cursor::new(vec![0x81, 0x01, b'a']), Role::Server, 10);
        assert!(matches!(r.next_message(), Err(ReadError::Protocol(_))));
    }
}
