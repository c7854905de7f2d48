//! The WebSocket opening handshake (RFC 6455 §4), both sides, on a buffered
//! reader: the relay accepting a client (§4.2) and our CLI and chat sessions
//! connecting to a relay (§4.1). Bytes a peer sends right after its head stay
//! in the reader, which then goes on reading frames (`frame::FrameReader`).
//!
//! Why not tungstenite's: the relay and its clients use their own frame
//! reader and writer already; tungstenite's handshake module and the `http`
//! crate it needs were ~80 KB of the static binary, more than the 4 MiB limit
//! allowed once the Redis cluster came in (BENCHMARKS.md, "Release size").
//! Not here: framing, TLS, or what a relay says after the upgrade.

use std::io::{self, BufRead, Read, Write};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::util::ws_accept_key;

/// The most a head (request or response line and headers) may take.
const MAX_HEAD: usize = 8 * 1024;
/// The most of a refusal's body a client reads.
const MAX_BODY: u64 = 4 * 1024;

/// Reads an HTTP head: its lines without their CRLF, up to the empty line.
fn read_head(r: &mut impl BufRead) -> io::Result<Vec<String>> {
    let mut lines = Vec::new();
    let mut used = 0usize;
    loop {
        let mut line = Vec::new();
        let left = (MAX_HEAD - used) as u64;
        let n = r.by_ref().take(left).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        used += n;
        if line.last() != Some(&b'\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("HTTP head over {MAX_HEAD} bytes"),
            ));
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            return Ok(lines);
        }
        lines.push(text.to_string());
    }
}

/// The value of header `name` (case-insensitive), if present.
fn header<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head.iter().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// True when the comma-separated header `name` lists `token`.
fn lists(head: &[String], name: &str, token: &str) -> bool {
    header(head, name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Why a client's upgrade request was refused, and the status it got.
fn check_request(head: &[String]) -> Result<String, (&'static str, String)> {
    let bad = |why: &str| ("400 Bad Request", why.to_string());
    let mut first = head
        .first()
        .map(|l| l.split(' '))
        .ok_or_else(|| bad("empty request"))?;
    let (method, _path, version) = (first.next(), first.next(), first.next());
    if method != Some("GET") || !version.is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(bad("a WebSocket upgrade is a GET request over HTTP/1.1"));
    }
    if !lists(head, "upgrade", "websocket") || !lists(head, "connection", "upgrade") {
        return Err(bad("missing Upgrade: websocket / Connection: Upgrade"));
    }
    if header(head, "sec-websocket-version") != Some("13") {
        return Err((
            "426 Upgrade Required",
            "only WebSocket version 13 is spoken here".into(),
        ));
    }
    let key = header(head, "sec-websocket-key").unwrap_or("");
    if STANDARD.decode(key).map(|k| k.len()) != Ok(16) {
        return Err(bad("Sec-WebSocket-Key must be 16 bytes in base64"));
    }
    Ok(key.to_string())
}

/// The server side: reads the client's upgrade request and answers 101, or
/// answers 400/426 with the reason as text and returns it.
pub fn accept(r: &mut impl BufRead, w: &mut impl Write) -> Result<(), String> {
    let head = read_head(r).map_err(|e| format!("reading the upgrade request: {e}"))?;
    match check_request(&head) {
        Ok(key) => {
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                ws_accept_key(&key)
            );
            w.write_all(answer.as_bytes())
                .and_then(|()| w.flush())
                .map_err(|e| format!("writing the upgrade answer: {e}"))
        }
        Err((status, why)) => {
            let body = format!("{why}\n");
            let answer = format!(
                "HTTP/1.1 {status}\r\nSec-WebSocket-Version: 13\r\nContent-Type: text/plain\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = w.write_all(answer.as_bytes()).and_then(|()| w.flush());
            Err(why)
        }
    }
}

/// Why a client handshake failed.
#[derive(Debug)]
pub enum ConnectError {
    Io(io::Error),
    /// The server answered HTTP, not an upgrade: its status and body text.
    Http {
        status: String,
        body: String,
    },
    /// It answered something that is not a valid upgrade.
    Protocol(String),
}

/// The client side: sends the upgrade request for `path` on `host` (the
/// URL's authority) and checks the 101 answer. `nonce` is 16 random bytes.
pub fn connect(
    r: &mut impl BufRead,
    w: &mut impl Write,
    host: &str,
    path: &str,
    nonce: [u8; 16],
) -> Result<(), ConnectError> {
    let key = STANDARD.encode(nonce);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    w.write_all(request.as_bytes())
        .and_then(|()| w.flush())
        .map_err(ConnectError::Io)?;
    let head = read_head(r).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidData => ConnectError::Protocol(e.to_string()),
        _ => ConnectError::Io(e),
    })?;
    let mut first = head[0].splitn(3, ' ');
    let (version, status) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    if !version.starts_with("HTTP/1.") || status.len() != 3 {
        let mut line = head[0].clone();
        crate::util::truncate_utf8(&mut line, 60);
        return Err(ConnectError::Protocol(format!(
            "not an HTTP answer: {line:?}"
        )));
    }
    if status != "101" {
        let len: u64 = header(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = Vec::new();
        let _ = r.take(len.min(MAX_BODY)).read_to_end(&mut body);
        return Err(ConnectError::Http {
            status: head[0].split_once(' ').map_or("", |(_, s)| s).to_string(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    if !lists(&head, "upgrade", "websocket") || !lists(&head, "connection", "upgrade") {
        return Err(ConnectError::Protocol(
            "101 without Upgrade: websocket".into(),
        ));
    }
    if header(&head, "sec-websocket-accept") != Some(ws_accept_key(&key).as_str()) {
        return Err(ConnectError::Protocol("wrong Sec-WebSocket-Accept".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const REQUEST: &str = "GET /x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn accept_answers_101_and_leaves_what_follows_the_head() {
        let mut r = Cursor::new(format!("{REQUEST}\u{81}"));
        let mut out = Vec::new();
        accept(&mut r, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("HTTP/1.1 101 "), "{out}");
        assert!(out.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, "\u{81}".as_bytes());
    }

    #[test]
    fn accept_refuses_what_is_not_an_upgrade() {
        for (req, status) in [
            ("GET / HTTP/1.1\r\nHost: h\r\n\r\n", "400"),
            ("POST / HTTP/1.1\r\n\r\n", "400"),
            (&REQUEST.replace("Version: 13", "Version: 8"), "426"),
            (&REQUEST.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"), "400"),
        ] {
            let mut out = Vec::new();
            assert!(
                accept(&mut Cursor::new(req.to_string()), &mut out).is_err(),
                "{req}"
            );
            assert!(String::from_utf8(out)
                .unwrap()
                .starts_with(&format!("HTTP/1.1 {status}")));
        }
        // A head that never ends is cut off at MAX_HEAD.
        let endless = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
        let err = accept(&mut Cursor::new(endless), &mut Vec::new()).unwrap_err();
        assert!(err.contains("over"), "{err}");
        let err = accept(&mut Cursor::new("GET / HTTP/1.1\r\n"), &mut Vec::new()).unwrap_err();
        assert!(err.contains("reading"), "{err}");
    }

    #[test]
    fn connect_checks_the_answer() {
        let nonce = *b"the sample nonce";
        let ok =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
            Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        let mut sent = Vec::new();
        connect(&mut Cursor::new(ok), &mut sent, "h:1", "/", nonce).unwrap();
        let sent = String::from_utf8(sent).unwrap();
        assert!(
            sent.contains("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
            "{sent}"
        );
        let wrong = ok.replace("s3pP", "AAAA");
        assert!(matches!(
            connect(&mut Cursor::new(wrong), &mut Vec::new(), "h", "/", nonce),
            Err(ConnectError::Protocol(_))
        ));
        let refused =
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 12\r\n\r\nERROR X: yo\nmore";
        match connect(&mut Cursor::new(refused), &mut Vec::new(), "h", "/", nonce) {
            Err(ConnectError::Http { status, body }) => {
                assert_eq!(status, "503 Service Unavailable");
                assert_eq!(body, "ERROR X: yo\n");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            connect(
                &mut Cursor::new("SSH-2.0-x\r\n\r\n"),
                &mut Vec::new(),
                "h",
                "/",
                nonce
            ),
            Err(ConnectError::Protocol(_))
        ));
        assert!(matches!(
            connect(&mut Cursor::new(""), &mut Vec::new(), "h", "/", nonce),
            Err(ConnectError::Io(_))
        ));
    }
}
