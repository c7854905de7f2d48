//! One relay connection: the WebSocket handshake, then a reader loop (this
//! thread) and a writer thread joined by a bounded outbox. The writer is the
//! only code that writes to the socket; the reader sends it pongs and close
//! replies like any other outgoing message. Not here: what messages mean
//! (`hub`) or how they are spelled (`protocol`).

use std::net::TcpStream;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use serde_json::json;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, Utf8Bytes, WebSocket};

use super::frame::{FrameReader, Incoming, ReadError, Role, SharedStream};
use super::hub::{ConnId, Hub, Out};
use super::protocol::{ClientMsg, Refusal, ServerMsg};
use crate::util::{log_event, now_ms};

/// How long a client may take to send its upgrade request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest text message accepted, in bytes (`--max-frame`).
    pub max_message: usize,
    /// Outbox depth: messages queued for a peer before it is dropped.
    pub outbox: usize,
}

/// Runs one accepted connection to completion on the calling thread.
pub fn serve(hub: Arc<Hub>, stream: TcpStream, limits: Limits) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
    let shared = SharedStream::new(stream);
    // The writer never reads, so its read buffer can stay small; writes
    // coalesce up to 16 KiB between flushes.
    let config = WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(16 * 1024);
    let ws = match tungstenite::accept_with_config(shared.clone(), Some(config)) {
        Ok(ws) => ws,
        Err(e) => {
            log_event(
                "handshake_failed",
                json!({"peer": peer, "error": e.to_string()}),
            );
            return;
        }
    };
    let _ = shared.0.set_read_timeout(None);

    let (tx, rx) = sync_channel(limits.outbox);
    let id = hub.register(tx.clone(), Some(shared.clone()));
    log_event("connect", json!({"conn": id, "peer": peer}));

    let writer_stream = shared.clone();
    let writer = thread::Builder::new()
        .name(format!("relay-w-{id}"))
        .stack_size(128 * 1024)
        .spawn(move || {
            let _ = write_loop(ws, rx);
            // Wakes our reader if the peer went away while we wrote.
            writer_stream.shutdown();
        });
    let writer = match writer {
        Ok(w) => w,
        Err(e) => {
            log_event("spawn_failed", json!({"conn": id, "error": e.to_string()}));
            hub.disconnect(id, "no writer thread");
            shared.shutdown();
            return;
        }
    };

    let reason = read_loop(&hub, id, shared, &tx, limits);
    hub.disconnect(id, reason);
    drop(tx);
    let _ = writer.join();
}

/// Reads until the peer leaves or breaks the protocol; returns why.
fn read_loop(
    hub: &Hub,
    id: ConnId,
    stream: SharedStream,
    tx: &SyncSender<Out>,
    limits: Limits,
) -> &'static str {
    let mut reader = FrameReader::new(stream, Role::Server, limits.max_message);
    loop {
        let incoming = match reader.next() {
            Ok(m) => m,
            Err(ReadError::Io(_)) => return "connection closed",
            Err(ReadError::Protocol(what)) => {
                let _ = tx.try_send(Out::Close(1002, what));
                return "protocol error";
            }
        };
        let refusal = match incoming {
            Incoming::Text(text) => match ClientMsg::parse(&text) {
                Ok(msg) => {
                    hub.handle(id, msg);
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
                if tx.try_send(Out::Pong(payload.into())).is_err() {
                    return "outbox full";
                }
                None
            }
            Incoming::Pong => None,
            Incoming::Close(_) => {
                // Echo the close (RFC 6455 §5.5.1); the writer then stops.
                let _ = tx.try_send(Out::Close(1000, ""));
                return "closed by client";
            }
        };
        if let Some(r) = refusal {
            let text = ServerMsg::from(&r).encode(now_ms());
            if tx.try_send(Out::Text(text.into())).is_err() {
                return "outbox full";
            }
        }
    }
}

/// Writes everything queued for one peer. Drains what is already queued
/// before flushing, so a burst costs one syscall, not one per message.
fn write_loop(mut ws: WebSocket<SharedStream>, rx: Receiver<Out>) -> tungstenite::Result<()> {
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(out) = next {
            match out {
                Out::Text(text) => ws.write(Message::Text(text))?,
                Out::Pong(payload) => ws.write(Message::Pong(payload))?,
                Out::Close(code, reason) => {
                    let frame = CloseFrame {
                        code: CloseCode::from(code),
                        reason: Utf8Bytes::from_static(reason),
                    };
                    let _ = ws.close(Some(frame));
                    let _ = ws.flush();
                    return Ok(());
                }
            }
            next = rx.try_recv().ok();
        }
        ws.flush()?;
    }
    Ok(())
}
