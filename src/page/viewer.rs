//! `GET /ws`: the WebSocket handshake on a tiny_http request and the viewer
//! loop. The socket is push-only (tiny_http's upgraded stream cannot be split
//! into a reader and a writer), so this thread is its one and only writer: it
//! blocks on the viewer's outbox and writes, and pings when idle so a viewer
//! that vanished is noticed (the listener's TCP_USER_TIMEOUT turns an
//! unanswered ping into a write error). The page talks back over HTTP.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::json;
use sha1::{Digest, Sha1};
use tungstenite::protocol::{frame::coding::CloseCode, CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use super::Shared;
use crate::util::log_event;

/// RFC 6455 §1.3: the GUID appended to Sec-WebSocket-Key.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(WS_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

fn header<'a>(req: &'a tiny_http::Request, name: &str) -> Option<&'a str> {
    req.headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

/// How often an idle viewer is pinged.
fn ping_interval() -> Duration {
    let secs = std::env::var("WORKBENCH_PING_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10u64);
    Duration::from_secs(secs.clamp(1, 60))
}

/// Upgrades the request (or answers 400) and runs the viewer until it leaves.
pub fn handle(shared: Arc<Shared>, req: tiny_http::Request) {
    let is_upgrade = header(&req, "Upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = header(&req, "Sec-WebSocket-Key").map(str::to_owned);
    let (true, Some(key)) = (is_upgrade, key) else {
        let body = r#"{"ok":false,"error":"this is the page's WebSocket endpoint; connect with a WebSocket client"}"#;
        let _ = req.respond(super::routes::json_response(400, body.to_string()));
        return;
    };
    let addr = req.remote_addr().map(|a| a.to_string()).unwrap_or_default();
    let response = tiny_http::Response::empty(101).with_header(
        tiny_http::Header::from_bytes("Sec-WebSocket-Accept", accept_key(&key))
            .expect("valid header"),
    );
    let stream = req.upgrade("websocket", response);
    // Browsers never send us big frames (the page answers over HTTP).
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 10))
        .max_frame_size(Some(64 << 10));
    let stream = Rc::new(RefCell::new(stream));
    let new_ws = || WebSocket::from_raw_socket(Socket(stream.clone()), Role::Server, Some(config));

    let outbox = shared.hub.attach();
    let id = outbox.id;
    log_event(
        "viewer_connect",
        json!({"viewer": id, "addr": addr, "viewers": shared.hub.viewers()}),
    );
    let reason = run(&new_ws, &outbox, ping_interval());
    shared.hub.detach(id);
    log_event(
        "viewer_disconnect",
        json!({"viewer": id, "reason": reason, "viewers": shared.hub.viewers()}),
    );
}

/// The upgraded stream behind a handle the viewer thread can wrap again.
/// tungstenite never shrinks its write buffer, so after a big message the
/// viewer starts a fresh `WebSocket` on the same stream (everything written,
/// nothing pending: the server side keeps no other state on a push-only
/// socket) and the old one's buffer is freed.
struct Socket(Rc<RefCell<Box<dyn tiny_http::ReadWrite + Send>>>);

impl std::io::Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

impl std::io::Write for Socket {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.borrow_mut().flush()
    }
}

/// Messages above this size make the viewer drop its grown write buffer.
const BIG_MESSAGE: usize = 1 << 20;

fn run<S: std::io::Read + std::io::Write>(
    new_ws: &dyn Fn() -> WebSocket<S>,
    outbox: &super::hub::Outbox,
    ping_every: Duration,
) -> &'static str {
    let mut ws = new_ws();
    loop {
        if outbox.dropped.load(Ordering::Relaxed) {
            let _ = ws.close(Some(CloseFrame {
                code: CloseCode::Again,
                reason: "too slow; reconnect".into(),
            }));
            let _ = ws.flush();
            return "too slow";
        }
        match outbox.rx.recv_timeout(ping_every) {
            Ok(msg) => {
                // Write this and whatever else is already queued, then flush once.
                let mut written = 0;
                let mut biggest = 0;
                let mut next = Some(msg);
                while let Some(m) = next {
                    written += m.len();
                    biggest = biggest.max(m.len());
                    if ws.write(m).is_err() {
                        return "write failed";
                    }
                    next = outbox.rx.try_recv().ok();
                }
                if ws.flush().is_err() {
                    return "write failed";
                }
                if biggest > BIG_MESSAGE {
                    ws = new_ws();
                }
                outbox.queued.fetch_sub(
                    written.min(outbox.queued.load(Ordering::Relaxed)),
                    Ordering::Relaxed,
                );
            }
            Err(RecvTimeoutError::Timeout) => {
                if ws.send(Message::Ping(Default::default())).is_err() {
                    return "gone (ping failed)";
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                let _ = ws.close(Some(CloseFrame {
                    code: CloseCode::Away,
                    reason: "server stopping".into(),
                }));
                let _ = ws.flush();
                return "server closed";
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn accept_key_matches_rfc6455_example() {
        // RFC 6455 §1.3 worked example.
        assert_eq!(
            super::accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
