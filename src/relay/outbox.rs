//! What the hub and a connection's reader hand to the writer side of a
//! socket: an [`Outgoing`] frame, queued on a [`SendQueue`] that never
//! blocks. The hub only knows this interface; the writer thread
//! (`writer::PeerQueue`) and in-process tests (a `SyncSender`) implement
//! it. Not here: how bytes reach the socket (`writer`) or what they mean
//! (`hub`).

use std::sync::mpsc::SyncSender;

use tungstenite::Bytes;

use super::frame::ServerFrame;

/// One frame a connection's writer is asked to put on the wire.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// A whole text frame, already framed; cloning shares the bytes, so a
    /// broadcast is encoded and framed once.
    Text(ServerFrame),
    /// The answer to a WebSocket ping (RFC 6455 §5.5.3: same payload).
    Pong(Bytes),
    /// Send a close frame and stop writing.
    Close(u16, &'static str),
}

/// A connection's bounded queue of outgoing frames, in front of the one
/// thing that writes that socket. `try_send` never blocks; an error means
/// full or closed, and the hub drops that peer.
pub trait SendQueue: Send {
    fn try_send(&self, out: Outgoing) -> Result<(), QueueFull>;
}

/// The queue was full or its writer is gone.
#[derive(Debug)]
pub struct QueueFull;

/// A plain channel as a send queue (in-process tests).
impl SendQueue for SyncSender<Outgoing> {
    fn try_send(&self, out: Outgoing) -> Result<(), QueueFull> {
        SyncSender::try_send(self, out).map_err(|_| QueueFull)
    }
}
