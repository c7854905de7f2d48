//! The relay's one writer thread: it owns the write side of every relay
//! socket, so each socket has exactly one writer. Hub handlers and readers
//! queue already-framed bytes ([`PeerQueue::try_send`], never blocking);
//! the writer copies nothing, writes each peer's queue with one vectored,
//! non-blocking `sendmsg`, and asks epoll to tell it when a full kernel
//! buffer drains. A peer that stops reading fills its own bounded queue and
//! is dropped by the hub; nobody else waits for it. Not here: reading
//! (`conn`, `frame`) or what the bytes mean (`hub`).
//!
//! TLS (`wss://`): the writer still owns the socket. It seals each queued
//! frame with the connection's [`TlsStream`] (encryption under that
//! session's lock, no I/O) and sends the records like plain bytes, so the
//! vectored non-blocking sends, epoll and the outbox caps are the same for
//! both. Alerts or key updates rustls queues while the reader decrypts go
//! out with the next sealed frame (a relay answers pings, so that is soon).
//!
//! Why one thread instead of one per connection: a broadcast to N peers
//! costs N `sendmsg` calls in one thread, not N futex wakes and context
//! switches, and an idle connection costs no writer stack.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;

use serde_json::json;
use tungstenite::Bytes;

use super::frame::ServerFrame;
use super::outbox::{Outgoing, QueueFull, SendQueue};
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
    /// An eventfd the writer sleeps on (through epoll) when `queue` is empty.
    wake: OwnedFd,
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
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
            unsafe {
                libc::write(
                    self.wake.as_raw_fd(),
                    &one as *const u64 as *const libc::c_void,
                    8,
                )
            };
        }
    }
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
    /// messages are queued and not yet written, sending through the outbox
    /// fails.
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
}

fn start_one(n: usize) -> io::Result<Arc<Shared>> {
    // SAFETY: plain syscalls; results are checked before use.
    let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if wake < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `wake` is a fresh descriptor we own.
    let wake = unsafe { OwnedFd::from_raw_fd(wake) };
    // SAFETY: as above.
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `epfd` is a fresh descriptor we own.
    let epfd = unsafe { OwnedFd::from_raw_fd(epfd) };
    epoll_ctl(
        epfd.as_raw_fd(),
        libc::EPOLL_CTL_ADD,
        wake.as_raw_fd(),
        libc::EPOLLIN as u32,
        WAKE,
    )?;
    let shared = Arc::new(Shared {
        queue: Mutex::new(Vec::new()),
        wake,
    });
    let loop_shared = shared.clone();
    thread::Builder::new()
        .name(format!("relay-writer-{n}"))
        .spawn(move || write_loop(&loop_shared, epfd))?;
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
    /// Registered with epoll for EPOLLOUT (its kernel buffer was full).
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

fn write_loop(shared: &Shared, epfd: OwnedFd) {
    let epfd = epfd.as_raw_fd();
    let mut peers = Peers::default();
    let mut dirty: Vec<Token> = Vec::new();
    let mut cmds: Vec<Cmd> = Vec::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    loop {
        // SAFETY: `events` outlives the call and its length is passed.
        let n = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            log_event("writer_failed", json!({"error": e.to_string()}));
            return;
        }
        for ev in &events[..n as usize] {
            if ev.u64 == WAKE {
                let mut v: u64 = 0;
                // SAFETY: reads 8 bytes into a live u64 (resets the eventfd).
                unsafe {
                    libc::read(
                        shared.wake.as_raw_fd(),
                        &mut v as *mut u64 as *mut libc::c_void,
                        8,
                    )
                };
            } else {
                dirty.push(ev.u64);
            }
        }
        std::mem::swap(&mut *shared.lock(), &mut cmds);
        for cmd in cmds.drain(..) {
            apply(epfd, &mut peers, &mut dirty, cmd);
        }
        for id in dirty.drain(..) {
            if let Some(p) = peers.get_mut(&id) {
                flush(epfd, id, p);
            }
        }
        // Give back the memory of a burst so an idle relay stays small.
        if cmds.capacity() > 4096 {
            cmds = Vec::new();
        }
    }
}

fn apply(epfd: RawFd, peers: &mut Peers, dirty: &mut Vec<Token>, cmd: Cmd) {
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
                    kill(epfd, id, p);
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
                    kill(epfd, id, p);
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
                    flush(epfd, id, &mut p);
                }
                kill(epfd, id, &mut p);
            }
        }
    }
}

/// Writes as much of `p.out` as the socket takes now.
fn flush(epfd: RawFd, id: Token, p: &mut Peer) {
    if p.dead {
        return;
    }
    while !p.out.is_empty() {
        match send_some(p) {
            Ok(n) => consume(p, n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && p.closing => {
                // A peer that does not read its close frame gets no wait.
                kill(epfd, id, p);
                return;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !p.polling {
                    let ev = libc::EPOLLOUT as u32;
                    if epoll_ctl(epfd, libc::EPOLL_CTL_ADD, p.stream.as_raw_fd(), ev, id).is_err() {
                        kill(epfd, id, p);
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
                kill(epfd, id, p);
                return;
            }
        }
    }
    if p.polling {
        let _ = epoll_ctl(epfd, libc::EPOLL_CTL_DEL, p.stream.as_raw_fd(), 0, id);
        p.polling = false;
    }
    if p.out.capacity() > 16 {
        p.out = VecDeque::new();
    }
    if p.closing {
        kill(epfd, id, p);
    }
}

/// One non-blocking vectored write of the front of the queue. The socket
/// itself stays blocking for its reader; `MSG_DONTWAIT` makes only this
/// call non-blocking, and `MSG_NOSIGNAL` turns a reset peer into an error
/// instead of SIGPIPE.
fn send_some(p: &Peer) -> io::Result<usize> {
    let mut iov: [libc::iovec; MAX_IOV] = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_IOV];
    let mut n = 0;
    for (i, chunk) in p.out.iter().take(MAX_IOV).enumerate() {
        let part = if i == 0 {
            &chunk[p.offset..]
        } else {
            &chunk[..]
        };
        iov[i] = libc::iovec {
            iov_base: part.as_ptr() as *mut libc::c_void,
            iov_len: part.len(),
        };
        n = i + 1;
    }
    // SAFETY: a zeroed msghdr is valid; it points at `iov`, whose entries
    // point into chunks that `p.out` keeps alive for the call.
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = n as _;
        libc::sendmsg(
            p.stream.as_raw_fd(),
            &msg,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

/// Drops the `n` bytes just written from the front of the queue.
fn consume(p: &mut Peer, mut n: usize) {
    while n > 0 {
        let Some(front) = p.out.front() else { return };
        let left = front.len() - p.offset;
        if n < left {
            p.offset += n;
            return;
        }
        n -= left;
        p.offset = 0;
        p.out.pop_front();
        p.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Shuts the socket (waking its reader) and discards what is queued.
fn kill(epfd: RawFd, id: Token, p: &mut Peer) {
    if p.polling {
        let _ = epoll_ctl(epfd, libc::EPOLL_CTL_DEL, p.stream.as_raw_fd(), 0, id);
        p.polling = false;
    }
    let _ = p.stream.shutdown(Shutdown::Both);
    p.dead = true;
    p.out = VecDeque::new();
    p.offset = 0;
}

fn epoll_ctl(epfd: RawFd, op: i32, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: `ev` lives for the call; the kernel copies it.
    if unsafe { libc::epoll_ctl(epfd, op, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
            match reader.next() {
                Ok(Incoming::Text(got)) => assert_eq!(got, msg),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(refused_at.is_some(), "the never-reading peer was refused");
        fast.try_send(text("after")).expect("still taken");
        assert_eq!(reader.next().ok(), Some(Incoming::Text("after".into())));
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
        assert_eq!(r.next().ok(), Some(Incoming::Text("one".into())));
        assert_eq!(r.next().ok(), Some(Incoming::Pong));
        assert_eq!(
            r.next().ok(),
            Some(Incoming::Close(Some((1001, "bye".into()))))
        );
        assert!(r.next().is_err(), "nothing after the close; socket shut");
        out.finish();
    }
}
