//! The relay's writer threads: a few (one per core, `server`), each owning
//! the write side of its share of the relay's sockets, so each socket has
//! exactly one writer. Hub handlers and readers queue already-framed bytes
//! ([`PeerQueue::try_send`], never blocking); a writer copies nothing,
//! writes all of a peer's queued frames with one vectored, non-blocking
//! `sendmsg` (`sys::send_vectored_nonblocking`), and asks its epoll set to
//! tell it when a full kernel buffer drains. A peer that stops reading
//! fills its own bounded queue and is dropped by the hub; nobody else waits
//! for it. Not here: reading (`conn`, `frame`) or what the bytes mean
//! (`hub`). The system calls are `sys`'s safe wrappers.
//!
//! TLS (`wss://`): the writer still owns the socket. It seals each queued
//! frame with the connection's [`TlsStream`] (encryption under that
//! session's lock, no I/O) and sends the records like plain bytes, so the
//! vectored non-blocking sends, epoll and the outbox caps are the same for
//! both. Alerts or key updates rustls queues while the reader decrypts go
//! out with the next sealed frame (a relay answers pings, so that is soon).
//!
//! Why a few threads instead of one per connection: a broadcast to N peers
//! costs N `sendmsg` calls spread over the writers, not N futex wakes and
//! context switches, and an idle connection costs no writer stack.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;

use serde_json::json;
use tungstenite::Bytes;

use super::frame::ServerFrame;
use super::outbox::{Outgoing, QueueFull, SendQueue};
use crate::sys::{self, Epoll, EpollEvents, EventFd, Interest};
use crate::tls::TlsStream;
use crate::util::log_event;

/// The writer's name for a socket, also its epoll token.
type Token = u64;
/// epoll token of the wake-up eventfd; sockets count up from the next one.
const WAKE: Token = 0;
/// Chunks handed to one `sendmsg` (well under `IOV_MAX`).
const MAX_IOV: usize = 64;

/// Tokens are distinct small integers, so a multiplicative hash is enough;
/// the default SipHash showed up in profiles at one lookup per delivery.
#[derive(Default, Clone, Copy)]
struct TokenHasher(u64);

impl std::hash::Hasher for TokenHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type Peers = HashMap<Token, Peer, std::hash::BuildHasherDefault<TokenHasher>>;

/// A request to the writer thread, in the order it must happen.
enum Cmd {
    /// A new connection: from now on the writer owns its write side.
    Add(Token, Arc<TcpStream>, Arc<AtomicUsize>, Option<TlsStream>),
    /// One framed message.
    Send(Token, Bytes),
    /// A close frame: write what is queued and the frame, then shut the
    /// socket, which also wakes its reader.
    Close(Token, Bytes),
    /// The reader is done: write what is queued if the socket takes it now,
    /// shut the socket and forget it.
    Remove(Token),
}

struct Shared {
    queue: Mutex<Vec<Cmd>>,
    /// What the writer sleeps on (through epoll) when `queue` is empty.
    wake: EventFd,
    /// `sendmsg` calls made and frames fully written, published by the
    /// writer after each round (for the write-batching figure).
    sends: AtomicU64,
    frames: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<Cmd>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, cmd: Cmd) {
        let was_empty = {
            let mut q = self.lock();
            let was_empty = q.is_empty();
            q.push(cmd);
            was_empty
        };
        // Only the first command after the writer emptied the queue needs a
        // wake-up; the writer takes the whole queue each time it runs.
        if was_empty {
            self.wake.notify();
        }
    }
}

/// Totals over every writer thread since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// `sendmsg` calls, including ones refused with "would block".
    pub sends: u64,
    /// Frames fully handed to the kernel.
    pub frames: u64,
}

/// The handle to the writer threads; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    /// One per writer thread; a socket belongs to `shards[token % len]`.
    shards: Arc<[Arc<Shared>]>,
    next: Arc<AtomicU64>,
}

impl Writer {
    /// Starts `threads` writer threads (at least one). They run for the
    /// life of the process.
    pub fn start(threads: usize) -> io::Result<Writer> {
        let shards = (0..threads.max(1))
            .map(start_one)
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Writer {
            shards: shards.into(),
            next: Arc::new(AtomicU64::new(WAKE + 1)),
        })
    }

    /// Hands the write side of `stream` to a writer thread. Once `cap`
    /// messages are queued and not yet written, sending through the
    /// returned queue fails.
    pub fn add(&self, stream: Arc<TcpStream>, cap: usize) -> PeerQueue {
        self.add_tls(stream, None, cap)
    }

    /// As [`Writer::add`], for a socket that carries a TLS session: every
    /// frame is sealed with `tls` before it is sent.
    pub fn add_tls(&self, stream: Arc<TcpStream>, tls: Option<TlsStream>, cap: usize) -> PeerQueue {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let shared = self.shards[(id % self.shards.len() as u64) as usize].clone();
        let queued = Arc::new(AtomicUsize::new(0));
        shared.push(Cmd::Add(id, stream, queued.clone(), tls));
        PeerQueue {
            id,
            cap,
            queued,
            shared,
        }
    }

    /// What the writers have done so far.
    pub fn stats(&self) -> WriterStats {
        self.shards
            .iter()
            .fold(WriterStats::default(), |t, s| WriterStats {
                sends: t.sends + s.sends.load(Ordering::Relaxed),
                frames: t.frames + s.frames.load(Ordering::Relaxed),
            })
    }
}

fn start_one(n: usize) -> io::Result<Arc<Shared>> {
    let wake = EventFd::new()?;
    let epoll = Epoll::new()?;
    epoll.add(wake.as_fd(), Interest::Readable, WAKE)?;
    let shared = Arc::new(Shared {
        queue: Mutex::new(Vec::new()),
        wake,
        sends: AtomicU64::new(0),
        frames: AtomicU64::new(0),
    });
    let loop_shared = shared.clone();
    thread::Builder::new()
        .name(format!("relay-writer-{n}"))
        .spawn(move || write_loop(&loop_shared, epoll))?;
    Ok(shared)
}

/// One connection's bounded queue in front of the writer thread. The hub
/// and the connection's reader each hold a clone.
#[derive(Clone)]
pub struct PeerQueue {
    /// The writer's token for the socket (not the hub's connection id).
    id: Token,
    cap: usize,
    /// Messages queued and not yet fully handed to the kernel.
    queued: Arc<AtomicUsize>,
    shared: Arc<Shared>,
}

impl PeerQueue {
    /// The reader is done: write what is queued if the socket takes it now,
    /// then shut the socket and forget it.
    pub fn finish(&self) {
        self.shared.push(Cmd::Remove(self.id));
    }
}

impl SendQueue for PeerQueue {
    fn try_send(&self, out: Outgoing) -> Result<(), QueueFull> {
        // A close frame is always taken: it ends the connection either way.
        let full = self.queued.fetch_add(1, Ordering::Relaxed) >= self.cap;
        if full && !matches!(out, Outgoing::Close(..)) {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(QueueFull);
        }
        let cmd = match out {
            Outgoing::Text(frame) => Cmd::Send(self.id, frame.wire().clone()),
            Outgoing::Pong(payload) => {
                Cmd::Send(self.id, ServerFrame::pong(&payload).wire().clone())
            }
            Outgoing::Close(code, reason) => {
                Cmd::Close(self.id, ServerFrame::close(code, reason).wire().clone())
            }
        };
        self.shared.push(cmd);
        Ok(())
    }
}

/// The writer's own state for one socket.
struct Peer {
    stream: Arc<TcpStream>,
    /// Framed messages not yet fully written, oldest first.
    out: VecDeque<Bytes>,
    /// Bytes of `out[0]` already written.
    offset: usize,
    queued: Arc<AtomicUsize>,
    /// Registered with epoll for writability (its kernel buffer was full).
    polling: bool,
    /// A close frame is queued: shut the socket once it is written.
    closing: bool,
    /// Shut down; anything more for it is discarded.
    dead: bool,
    /// `wss://`: frames are sealed into TLS records before they are queued.
    tls: Option<TlsStream>,
}

/// The bytes that go on the wire for `frame`: itself, or its TLS records
/// (with a close_notify after a close frame). `None`: the session failed.
fn wire(p: &Peer, frame: Bytes, close: bool) -> Option<Bytes> {
    let Some(tls) = &p.tls else {
        return Some(frame);
    };
    let mut records = tls.seal(&frame).ok()?;
    if close {
        records.extend_from_slice(&tls.close_notify());
    }
    Some(Bytes::from(records))
}

/// The writer thread's side of the kernel: its epoll set, and counters.
struct Io {
    epoll: Epoll,
    sends: u64,
    frames: u64,
}

fn write_loop(shared: &Shared, epoll: Epoll) {
    let mut io = Io {
        epoll,
        sends: 0,
        frames: 0,
    };
    let mut peers = Peers::default();
    let mut dirty: Vec<Token> = Vec::new();
    let mut cmds: Vec<Cmd> = Vec::new();
    let mut events = EpollEvents::with_capacity(256);
    loop {
        match io.epoll.wait(&mut events, None) {
            Ok(ready) => {
                for token in ready {
                    if token == WAKE {
                        shared.wake.reset();
                    } else {
                        dirty.push(token);
                    }
                }
            }
            Err(e) => {
                log_event("writer_failed", json!({"error": e.to_string()}));
                return;
            }
        }
        std::mem::swap(&mut *shared.lock(), &mut cmds);
        // Every command of this round is applied before anything is
        // written, so frames queued for one socket meanwhile go out
        // together in one vectored write.
        for cmd in cmds.drain(..) {
            apply(&mut io, &mut peers, &mut dirty, cmd);
        }
        for id in dirty.drain(..) {
            if let Some(p) = peers.get_mut(&id) {
                io.flush(id, p);
            }
        }
        shared.sends.store(io.sends, Ordering::Relaxed);
        shared.frames.store(io.frames, Ordering::Relaxed);
        // Give back the memory of a burst so an idle relay stays small.
        if cmds.capacity() > 4096 {
            cmds = Vec::new();
        }
    }
}

fn apply(io: &mut Io, peers: &mut Peers, dirty: &mut Vec<Token>, cmd: Cmd) {
    match cmd {
        Cmd::Add(id, stream, queued, tls) => {
            peers.insert(
                id,
                Peer {
                    stream,
                    out: VecDeque::new(),
                    offset: 0,
                    queued,
                    polling: false,
                    closing: false,
                    dead: false,
                    tls,
                },
            );
        }
        Cmd::Send(id, _) | Cmd::Close(id, _)
            if peers.get(&id).is_some_and(|p| p.dead || p.closing) =>
        {
            // Nothing after a close frame (RFC 6455 §5.5.1), nor to a dead peer.
            if let Some(p) = peers.get(&id) {
                p.queued.fetch_sub(1, Ordering::Relaxed);
            }
        }
        Cmd::Send(id, bytes) => {
            if let Some(p) = peers.get_mut(&id) {
                let Some(bytes) = wire(p, bytes, false) else {
                    p.queued.fetch_sub(1, Ordering::Relaxed);
                    io.kill(p);
                    return;
                };
                if p.out.is_empty() {
                    dirty.push(id);
                }
                p.out.push_back(bytes);
            }
        }
        Cmd::Close(id, bytes) => {
            if let Some(p) = peers.get_mut(&id) {
                let Some(bytes) = wire(p, bytes, true) else {
                    p.queued.fetch_sub(1, Ordering::Relaxed);
                    io.kill(p);
                    return;
                };
                if p.out.is_empty() {
                    dirty.push(id);
                }
                p.out.push_back(bytes);
                p.closing = true;
            }
        }
        Cmd::Remove(id) => {
            if let Some(mut p) = peers.remove(&id) {
                if !p.dead {
                    p.closing = true;
                    io.flush(id, &mut p);
                }
                io.kill(&mut p);
            }
        }
    }
}

impl Io {
    /// Writes as much of `p.out` as the socket takes now.
    fn flush(&mut self, id: Token, p: &mut Peer) {
        if p.dead {
            return;
        }
        while !p.out.is_empty() {
            self.sends += 1;
            match send_some(p) {
                Ok(n) => self.frames += consume(p, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && p.closing => {
                    // A peer that does not read its close frame gets no wait.
                    self.kill(p);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !p.polling {
                        if self
                            .epoll
                            .add(p.stream.as_fd(), Interest::Writable, id)
                            .is_err()
                        {
                            self.kill(p);
                            return;
                        }
                        p.polling = true;
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // The peer is gone; its reader sees the shutdown and
                    // tells the hub.
                    self.kill(p);
                    return;
                }
            }
        }
        if p.polling {
            let _ = self.epoll.delete(p.stream.as_fd());
            p.polling = false;
        }
        if p.out.capacity() > 16 {
            p.out = VecDeque::new();
        }
        if p.closing {
            self.kill(p);
        }
    }

    /// Shuts the socket (waking its reader) and discards what is queued.
    fn kill(&mut self, p: &mut Peer) {
        if p.polling {
            let _ = self.epoll.delete(p.stream.as_fd());
            p.polling = false;
        }
        let _ = p.stream.shutdown(Shutdown::Both);
        p.dead = true;
        p.out = VecDeque::new();
        p.offset = 0;
    }
}

/// One non-blocking vectored write of the front of the queue: every queued
/// frame (up to `MAX_IOV`) goes to the kernel in one call.
fn send_some(p: &Peer) -> io::Result<usize> {
    let mut iov = [IoSlice::new(&[]); MAX_IOV];
    let mut n = 0;
    for (i, chunk) in p.out.iter().take(MAX_IOV).enumerate() {
        iov[i] = IoSlice::new(if i == 0 { &chunk[p.offset..] } else { chunk });
        n = i + 1;
    }
    sys::send_vectored_nonblocking(p.stream.as_fd(), &iov[..n])
}

/// Drops the `n` bytes just written from the front of the queue; returns
/// how many frames are now fully written.
fn consume(p: &mut Peer, mut n: usize) -> u64 {
    let mut done = 0;
    while n > 0 {
        let Some(front) = p.out.front() else { break };
        let left = front.len() - p.offset;
        if n < left {
            p.offset += n;
            break;
        }
        n -= left;
        p.offset = 0;
        p.out.pop_front();
        p.queued.fetch_sub(1, Ordering::Relaxed);
        done += 1;
    }
    done
}

#[cfg(test)]
mod tests {
    //! The writer over real loopback sockets, without the hub or a
    //! handshake: the bytes on the wire, a peer that never reads, and close.
    use super::*;
    use crate::relay::frame::{FrameReader, Incoming, Role};
    use std::net::TcpListener;

    /// (server side for the writer, client side for the test)
    fn pair() -> (Arc<TcpStream>, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (s, _) = l.accept().expect("accept");
        c.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .expect("timeout");
        (Arc::new(s), c)
    }

    fn text(s: &str) -> Outgoing {
        Outgoing::Text(ServerFrame::text(s))
    }

    #[test]
    fn a_peer_that_never_reads_fills_its_own_outbox_only() {
        let w = Writer::start(1).expect("writer");
        let (fast_s, fast_c) = pair();
        let (slow_s, _slow_c) = pair();
        let fast = w.add(fast_s, 16);
        let slow = w.add(slow_s, 16);
        let pad = "x".repeat(16 * 1024);
        let mut reader = FrameReader::new(fast_c, Role::Client, 1 << 20);
        let mut refused_at = None;
        for i in 0..10_000 {
            let msg = format!("{i}:{pad}");
            if slow.try_send(text(&msg)).is_err() {
                refused_at = Some(i);
                break;
            }
            fast.try_send(text(&msg))
                .expect("the reading peer never fills");
            // Read back in step, so only the slow peer can fall behind.
            match reader.next_message() {
                Ok(Incoming::Text(got)) => assert_eq!(got, msg),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(refused_at.is_some(), "the never-reading peer was refused");
        fast.try_send(text("after")).expect("still taken");
        assert_eq!(
            reader.next_message().ok(),
            Some(Incoming::Text("after".into()))
        );
    }

    #[test]
    fn frames_queued_for_one_socket_go_out_in_one_vectored_write() {
        let (s, c) = pair();
        let mut io = Io {
            epoll: Epoll::new().expect("epoll"),
            sends: 0,
            frames: 0,
        };
        let queued = Arc::new(AtomicUsize::new(10));
        let mut p = Peer {
            stream: s,
            out: (0..10)
                .map(|i| ServerFrame::text(&format!("m{i}")).wire().clone())
                .collect(),
            offset: 0,
            queued: queued.clone(),
            polling: false,
            closing: false,
            dead: false,
            tls: None,
        };
        io.flush(1, &mut p);
        assert_eq!((io.sends, io.frames), (1, 10), "one sendmsg, ten frames");
        assert_eq!(queued.load(Ordering::Relaxed), 0);
        assert!(p.out.is_empty());
        let mut r = FrameReader::new(c, Role::Client, 1024);
        for i in 0..10 {
            assert_eq!(r.next_message().ok(), Some(Incoming::Text(format!("m{i}"))));
        }
    }

    #[test]
    fn close_writes_queued_frames_then_the_close_and_shuts() {
        let w = Writer::start(1).expect("writer");
        let (s, c) = pair();
        let out = w.add(s, 16);
        out.try_send(text("one")).expect("queued");
        out.try_send(Outgoing::Pong(Bytes::from_static(b"p")))
            .expect("queued");
        out.try_send(Outgoing::Close(1001, "bye")).expect("queued");
        out.try_send(text("dropped"))
            .expect("queued, then discarded");
        let mut r = FrameReader::new(c, Role::Client, 1024);
        assert_eq!(r.next_message().ok(), Some(Incoming::Text("one".into())));
        assert_eq!(r.next_message().ok(), Some(Incoming::Pong));
        assert_eq!(
            r.next_message().ok(),
            Some(Incoming::Close(Some((1001, "bye".into()))))
        );
        assert!(
            r.next_message().is_err(),
            "nothing after the close; socket shut"
        );
        out.finish();
    }
}
