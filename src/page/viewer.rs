//! `GET /ws`: the WebSocket handshake on a tiny_http request and the viewer
//! loop. The socket is push-only (tiny_http's upgraded stream cannot be split
//! into a reader and a writer), so this thread is its one and only writer: it
//! blocks on the viewer's outbox and writes, and pings when idle so a viewer
//! that vanished is noticed (the listener's TCP_USER_TIMEOUT turns an
//! unanswered ping into a write error). The page talks back over HTTP.
//!
//! Frames are encoded once by the hub (`relay::frame::ServerFrame`, unmasked
//! as RFC 6455 §5.1 requires of servers) and written here as they are: no
//! per-viewer copy of a push, however big, and no write buffer that grows.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::http::{reply_error, respond, Head};
use super::hub::{Outbox, Refused};
use super::Shared;
use crate::relay::frame::ServerFrame;
use crate::util::log_event;

/// RFC 6455 §1.3: the GUID appended to Sec-WebSocket-Key.
/// How often an idle viewer is pinged.
fn ping_interval() -> Duration {
    let secs = std::env::var("WORKBENCH_PING_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10u64);
    Duration::from_secs(secs.clamp(1, 60))
}

/// Upgrades an admitted request (the route table checked Host and Origin)
/// or answers 400/503, and runs the viewer until it leaves.
pub fn handle(shared: Arc<Shared>, req: tiny_http::Request, head: &Head) {
    let is_upgrade = head
        .header("Upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let (true, Some(key)) = (is_upgrade, head.header("Sec-WebSocket-Key")) else {
        let mut r = reply_error(
            400,
            "this is the page's WebSocket endpoint; connect with a WebSocket client",
        );
        r.close = true;
        return respond(req, r);
    };
    let outbox = match shared.hub.attach(head.remote) {
        Ok(o) => o,
        Err(why) => {
            let msg = match why {
                Refused::TooManyViewers(n) => format!("this page already has {n} viewers"),
                Refused::TooManyFromClient(n) => {
                    format!("this address already has {n} viewers open")
                }
            };
            log_event("viewer_refused", json!({"addr": head.remote, "why": msg}));
            let mut r = reply_error(503, msg);
            r.close = true;
            return respond(req, r);
        }
    };
    let response = tiny_http::Response::empty(101).with_header(
        tiny_http::Header::from_bytes("Sec-WebSocket-Accept", crate::util::ws_accept_key(key))
            .expect("valid header"),
    );
    let mut stream = req.upgrade("websocket", response);
    let id = outbox.id;
    log_event(
        "viewer_connect",
        json!({"viewer": id, "addr": head.remote, "viewers": shared.hub.viewers()}),
    );
    let reason = run(&mut stream, &outbox, ping_interval());
    shared.hub.detach(id);
    log_event(
        "viewer_disconnect",
        json!({"viewer": id, "reason": reason, "viewers": shared.hub.viewers()}),
    );
}

fn run(ws: &mut dyn Write, outbox: &Outbox, ping_every: Duration) -> &'static str {
    let close = |ws: &mut dyn Write, code: u16, reason: &str| {
        let _ = ws.write_all(ServerFrame::close(code, reason).wire());
        let _ = ws.flush();
    };
    loop {
        if outbox.dropped.load(Ordering::Relaxed) {
            // 1013 Try Again Later (RFC 6455 §7.4, IANA registry).
            close(ws, 1013, "too slow; reconnect");
            return "too slow";
        }
        match outbox.rx.recv_timeout(ping_every) {
            Ok(frame) => {
                // Write this and whatever else is already queued, then flush once.
                let mut written = 0;
                let mut next = Some(frame);
                while let Some(f) = next {
                    written += f.wire().len();
                    if ws.write_all(f.wire()).is_err() {
                        return "write failed";
                    }
                    drop(f);
                    next = outbox.rx.try_recv().ok();
                }
                if ws.flush().is_err() {
                    return "write failed";
                }
                outbox.queued.fetch_sub(
                    written.min(outbox.queued.load(Ordering::Relaxed)),
                    Ordering::Relaxed,
                );
            }
            Err(RecvTimeoutError::Timeout) => {
                let ping = ServerFrame::new(0x9, b"");
                if ws.write_all(ping.wire()).and_then(|_| ws.flush()).is_err() {
                    return "gone (ping failed)";
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                close(ws, 1001, "server stopping");
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
            crate::util::ws_accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
