//! One relay connection: the WebSocket handshake, then a reader loop on
//! this thread. Writing belongs to the relay's single writer thread
//! (`writer`): this reader queues its pongs, close replies and refusals on
//! the connection's outbox like any other outgoing message, so the socket
//! keeps exactly one writer. Not here: what messages mean (`hub`) or how
//! they are spelled (`protocol`).

use std::io::ErrorKind;
use std::net::{IpAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::frame::{FrameReader, Incoming, ReadError, Role, SharedStream};
use super::hub::{ConnId, Hub};
use super::outbox::{Outgoing, SendQueue};
use super::protocol::{ClientMsg, Refusal};
use super::transport::Stream;
use super::writer::{PeerQueue, Writer};
use crate::util::{log_event, now_ms};

/// How long a client may take to send its upgrade request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Stack trimming before a blocking read: after each of the first
/// `TRIM_FIRST` messages, then after every `TRIM_EVERY`th.
const TRIM_FIRST: u64 = 8;
const TRIM_EVERY: u64 = 256;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest text message accepted, in bytes (`--max-frame`).
    pub max_message: usize,
    /// Outbox depth: messages queued for a peer before it is dropped.
    pub outbox: usize,
}

/// Runs one accepted connection to completion on the calling thread.
///
/// **The stack rule** (idle memory, issue 13): an idle connection costs a
/// reader thread, and that thread's resident stack is whatever its deepest
/// call ever touched, unless it is given back. So `read_loop` calls
/// `sys::trim_stack` before it blocks, which drops every stack page below
/// the loop's own frame. That only helps if the deep work happens *below*
/// that frame: every step here (`handshake`, `open`, `read_loop`,
/// `handle_incoming`, `close`, and `Hub::handle`) is a separate
/// `#[inline(never)]` function, so an optimising build cannot fold their
/// locals into the loop's frame, where no trim can reach them. Keep new
/// per-message work inside `handle_incoming` or deeper. Guarded by
/// tests/relay_idle_rss.rs: one test holds 2,000 idle agents and checks the
/// relay's RSS growth per connection against a budget, another checks that
/// these functions keep their markers.
///
/// With `tls` (`--cert/--key`) the TLS handshake runs first, inside
/// `handshake`, on the connection's own thread, so a client stalling in it
/// delays nobody else; it has [`crate::tls::HANDSHAKE_LIMIT`], and a client
/// that does not speak TLS (plain `ws://`, HTTP) fails it and is dropped.
pub fn serve(
    hub: Arc<Hub>,
    writer: &Writer,
    stream: TcpStream,
    limits: Limits,
    tls: Option<&Arc<rustls::ServerConfig>>,
) {
    let Some((shared, reader, peer, ip)) = handshake(stream, tls, limits.max_message) else {
        return;
    };
    let (id, outbox) = open(&hub, writer, &shared, peer, ip, limits);
    let reason = read_loop(&hub, id, shared, reader, &outbox, limits);
    close(&hub, id, reason, &outbox);
}

/// Hands the socket's write side to the writer and registers with the hub.
#[inline(never)]
fn open(
    hub: &Hub,
    writer: &Writer,
    shared: &Stream,
    peer: String,
    ip: Option<IpAddr>,
    limits: Limits,
) -> (ConnId, PeerQueue) {
    let outbox = writer.add_tls(shared.tcp().clone(), shared.tls().cloned(), limits.outbox);
    let id = hub.register(outbox.clone(), Some(shared.shared()), ip);
    log_event("connect", json!({"conn": id, "peer": peer}));
    (id, outbox)
}

/// Why a read loop ended when the client sent a close frame.
const CLOSED_BY_CLIENT: &str = "closed by client";

#[inline(never)]
fn close(hub: &Hub, id: ConnId, reason: &'static str, outbox: &PeerQueue) {
    hub.disconnect(id, reason);
    // Echo a client's close only now: a client that waits for the echo (our
    // CLI does) can reconnect with the same identity at once without being
    // refused as "already connected".
    if reason == CLOSED_BY_CLIENT {
        let _ = outbox.try_send(Outgoing::Close(1000, ""));
    }
    outbox.finish();
}

/// The HTTP upgrade (RFC 6455 §4.2, `handshake::accept`). The 101 answer
/// is written on this thread, before the writer thread knows the socket.
/// The request is read through the connection's frame reader, so anything
/// the client sent after it is its first frame. Not inlined, so its deep
/// frames are gone (and can be trimmed) by the time the read loop starts.
#[inline(never)]
fn handshake(
    stream: TcpStream,
    tls: Option<&Arc<rustls::ServerConfig>>,
    max_message: usize,
) -> Option<(Stream, FrameReader<Stream>, String, Option<IpAddr>)> {
    let addr = stream.peer_addr().ok();
    let peer = addr.map(|a| a.to_string()).unwrap_or_default();
    let _ = stream.set_nodelay(true);
    let shared = match tls {
        None => Stream::Plain(SharedStream::new(stream)),
        Some(config) => match crate::tls::accept(stream, config, crate::tls::HANDSHAKE_LIMIT) {
            Ok(t) => Stream::Tls(t),
            Err(e) => {
                log_event(
                    "tls_handshake_failed",
                    json!({"peer": peer, "error": crate::tls::describe(&e)}),
                );
                return None;
            }
        },
    };
    let _ = shared.tcp().set_read_timeout(Some(HANDSHAKE_TIMEOUT));
    let mut reader = FrameReader::new(shared.clone(), Role::Server, max_message);
    if let Err(e) = super::handshake::accept(reader.buffered(), &mut shared.clone()) {
        log_event("handshake_failed", json!({"peer": peer, "error": e}));
        return None;
    }
    let _ = shared.tcp().set_read_timeout(None);
    Some((shared, reader, peer, addr.map(|a| a.ip())))
}

/// Reads until the peer leaves or breaks the protocol; returns why.
#[inline(never)]
fn read_loop(
    hub: &Hub,
    id: ConnId,
    stream: Stream,
    mut reader: FrameReader<Stream>,
    outbox: &PeerQueue,
    limits: Limits,
) -> &'static str {
    let mut handled: u64 = 0;
    // Until it has identified, a connection may only stay so long (the
    // IDENTIFY deadline, or its CHALLENGE's expiry): reads time out then.
    let mut deadline = hub.deadline(id);
    loop {
        if let Some(at) = deadline {
            let left = at.saturating_sub(now_ms());
            if left == 0 {
                if hub.expire(id) {
                    return "identify deadline";
                }
                deadline = hub.deadline(id);
                continue;
            }
            // A few ms past it, so the timeout never fires just before.
            let _ = stream
                .tcp()
                .set_read_timeout(Some(Duration::from_millis(left + 5)));
        }
        // About to block: give back stack pages the last handler touched.
        // Always for a connection's first messages (IDENTIFY, JOIN: an
        // agent that then idles keeps only its shallow frames), then only
        // now and then, so a busy connection does not pay a syscall and
        // page faults per message.
        if !reader.has_buffered() && (handled < TRIM_FIRST || handled.is_multiple_of(TRIM_EVERY)) {
            crate::sys::trim_stack();
        }
        handled += 1;
        let incoming = match reader.next_message() {
            Ok(m) => m,
            Err(ReadError::Io(e))
                if deadline.is_some()
                    && matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                // A timed-out read may have consumed part of a frame, so the
                // connection cannot go on reading: it ends if still unidentified.
                if hub.expire(id) {
                    return "identify deadline";
                }
                return "read timed out";
            }
            Err(ReadError::Io(_)) => return "connection closed",
            Err(ReadError::Protocol(what)) => {
                let _ = outbox.try_send(Outgoing::Close(1002, what));
                return "protocol error";
            }
        };
        if let Err(reason) = handle_incoming(hub, id, incoming, outbox, limits) {
            return reason;
        }
        if deadline.is_some() {
            deadline = hub.deadline(id);
            if deadline.is_none() {
                let _ = stream.tcp().set_read_timeout(None);
            }
        }
    }
}

/// Acts on one message or control frame; `Err` ends the connection with
/// that reason. Not inlined, so the read loop's own frame stays shallow.
#[inline(never)]
fn handle_incoming(
    hub: &Hub,
    id: ConnId,
    incoming: Incoming,
    outbox: &PeerQueue,
    limits: Limits,
) -> Result<(), &'static str> {
    let refusal = match incoming {
        Incoming::Text(text) => match ClientMsg::parse(&text) {
            Ok(msg) => {
                hub.handle_text(id, &text, msg);
                None
            }
            Err(r) => Some(r),
        },
        Incoming::Binary => Some(Refusal::invalid(
            "Binary frames are not supported; send JSON text frames",
        )),
        Incoming::BadUtf8 => Some(Refusal::invalid("Text frame is not valid UTF-8")),
        Incoming::TooBig(n) => Some(Refusal::invalid(format!(
            "Message of {n} bytes exceeds the {} byte limit",
            limits.max_message
        ))),
        Incoming::Ping(payload) => {
            if outbox.try_send(Outgoing::Pong(payload.into())).is_err() {
                return Err("outbox full");
            }
            None
        }
        Incoming::Pong => None,
        // The close echo (RFC 6455 §5.5.1) is sent by `close`, after the
        // hub has forgotten this agent.
        Incoming::Close(_) => return Err(CLOSED_BY_CLIENT),
    };
    if let Some(r) = refusal {
        // Through the hub, so it is logged like every refusal; a full
        // outbox there dooms this connection and its reads then fail.
        hub.refuse(id, &r);
    }
    Ok(())
}
