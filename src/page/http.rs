//! The tiny_http adapter: turns a tiny_http request into a `Head` (and, once
//! the route table has admitted it, an `Incoming` with its body), and a
//! `Reply` into bytes on the wire. The one home of header lookup and
//! percent-decoding for the page server. Routing and auth are in `routes`;
//! this file knows nothing about which path does what.

use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A request line and its headers, before any body byte is read.
#[derive(Debug, Clone, Default)]
pub struct Head {
    /// Upper-case method.
    pub method: String,
    /// The raw path, without the query.
    pub path: String,
    pub query: HashMap<String, String>,
    pub headers: Vec<(String, String)>,
    pub remote: Option<IpAddr>,
}

impl Head {
    /// The first header called `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }

    /// How many headers called `name` there are.
    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .count()
    }

    /// The token of `Authorization: Bearer <token>`.
    pub fn bearer(&self) -> Option<&str> {
        self.header("Authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
    }

    /// `Content-Length`; tiny_http has already refused duplicates and junk.
    pub fn content_length(&self) -> Option<usize> {
        self.header("Content-Length")
            .and_then(|v| v.trim().parse().ok())
    }

    pub fn content_type_is_json(&self) -> bool {
        self.header("Content-Type").is_some_and(|c| {
            c.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        })
    }
}

/// The one header lookup: first `name` in `headers`, case-insensitively.
pub fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A request with its body read.
#[derive(Debug, Clone, Default)]
pub struct Incoming {
    pub head: Head,
    pub body: Vec<u8>,
}

pub enum Body {
    Bytes(Vec<u8>),
    File(std::fs::File, Option<usize>),
}

pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Body,
    /// Run after the reply is on the wire (used by /api/stop).
    pub then_stop: bool,
    /// End the connection after this reply (the body was not read).
    pub close: bool,
    /// More headers (`/files/`: nosniff, sandbox, disposition).
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn json(status: u16, v: Value) -> Reply {
        Reply::bytes(status, "application/json", v.to_string().into_bytes())
    }

    pub fn bytes(status: u16, content_type: &'static str, body: Vec<u8>) -> Reply {
        Reply {
            status,
            content_type,
            body: Body::Bytes(body),
            then_stop: false,
            close: false,
            headers: Vec::new(),
        }
    }

    /// The body as text (tests and logs; files read as empty).
    pub fn text(&self) -> &str {
        match &self.body {
            Body::Bytes(b) => std::str::from_utf8(b).unwrap_or(""),
            Body::File(..) => "",
        }
    }
}

/// An error answered as `{"ok":false,"error":…}` with the given status.
pub fn reply_error(status: u16, msg: impl Into<String>) -> Reply {
    Reply::json(status, json!({"ok": false, "error": msg.into()}))
}

/// Percent-decoding (RFC 3986 §2.1); `plus_is_space` for query strings
/// (application/x-www-form-urlencoded), not for paths. None if malformed or
/// not UTF-8.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Splits `/a/b?x=1&y=2` into a raw path and decoded query pairs.
pub fn split_url(url: &str) -> (String, HashMap<String, String>) {
    let (path, q) = url.split_once('?').unwrap_or((url, ""));
    let query = q
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect();
    (path.to_string(), query)
}

/// The head of a tiny_http request.
pub fn head_of(req: &tiny_http::Request) -> Head {
    let (path, query) = split_url(req.url());
    Head {
        method: req.method().as_str().to_ascii_uppercase(),
        path,
        query,
        headers: req
            .headers()
            .iter()
            .map(|h| (h.field.as_str().to_string(), h.value.as_str().to_string()))
            .collect(),
        remote: req.remote_addr().map(|a| a.ip()),
    }
}

/// Reads the body of an admitted request: at most `limit` bytes (the route
/// table has already compared `Content-Length` with it), all of it within
/// `deadline`. A stalled or dripping client gets 408 and loses the
/// connection; memory grows only with bytes actually received.
pub fn read_body(
    req: &mut tiny_http::Request,
    limit: usize,
    deadline: Duration,
) -> Result<Vec<u8>, Reply> {
    let expected = req.body_length().unwrap_or(0);
    if expected == 0 {
        return Ok(Vec::new());
    }
    req.set_read_deadline(Some(Instant::now() + deadline));
    let mut body = Vec::new();
    let result = req
        .as_reader()
        .take(limit as u64 + 1)
        .read_to_end(&mut body);
    req.set_read_deadline(None);
    let fail = |status: u16, msg: String| {
        let mut r = reply_error(status, msg);
        r.close = true;
        r
    };
    match result {
        Err(e) if e.kind() == ErrorKind::TimedOut => Err(fail(
            408,
            format!(
                "the request body did not arrive within {} s",
                deadline.as_secs()
            ),
        )),
        Err(e) => Err(fail(400, format!("could not read the request body: {e}"))),
        Ok(_) if body.len() > limit => Err(fail(
            413,
            format!("request body is larger than the limit of {limit} bytes"),
        )),
        Ok(_) if body.len() < expected => Err(fail(
            400,
            "the connection closed before the whole body arrived".into(),
        )),
        Ok(_) => Ok(body),
    }
}

/// The whole request path: decide from the headers, then read the body
/// (never before), dispatch, respond, maybe stop. `/ws` leaves for the
/// viewer loop once admitted.
pub fn serve_request(shared: &std::sync::Arc<super::Shared>, mut req: tiny_http::Request) {
    let head = head_of(&req);
    let admitted = match super::routes::admit(shared, &head) {
        Ok(a) => a,
        Err(r) => return finish(shared, req, &head, r),
    };
    if let super::routes::Action::Upgrade = admitted.route.action {
        return super::viewer::handle(shared.clone(), req, &head);
    }
    if let super::routes::Action::Stream(f) = admitted.route.action {
        let reply = f(shared, &head, &mut req);
        return finish(shared, req, &head, reply);
    }
    let body = match read_body(&mut req, admitted.limit, shared.limits.body_timeout) {
        Ok(b) => b,
        Err(r) => return finish(shared, req, &head, r),
    };
    let inc = Incoming { head, body };
    let reply = super::routes::dispatch(shared, &admitted, &inc);
    finish(shared, req, &inc.head, reply);
}

fn finish(shared: &super::Shared, req: tiny_http::Request, head: &Head, reply: Reply) {
    if reply.status >= 400 {
        // Under a flood of bad requests, server.log must not grow with it.
        if let Some(suppressed) = shared.error_log.admit() {
            crate::util::log_event(
                "http_error",
                json!({"method": head.method, "path": head.path, "status": reply.status, "addr": head.remote, "suppressed_before": suppressed}),
            );
        }
    }
    let stop = reply.then_stop;
    respond(req, reply);
    if stop {
        let _ = shared.stop.send(super::Stop::Api);
    }
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name, value).expect("valid header")
}

/// Writes a reply; a client that went away is not an error worth logging.
pub fn respond(req: tiny_http::Request, reply: Reply) {
    let mut headers = vec![
        header("Content-Type", reply.content_type),
        header("Cache-Control", "no-store"),
    ];
    if reply.close {
        headers.push(header("Connection", "close"));
    }
    for (k, v) in &reply.headers {
        if let Ok(h) = tiny_http::Header::from_bytes(*k, v.as_bytes()) {
            headers.push(h);
        }
    }
    let status = tiny_http::StatusCode(reply.status);
    let _ = match reply.body {
        Body::Bytes(b) => {
            let len = b.len();
            req.respond(tiny_http::Response::new(
                status,
                headers,
                std::io::Cursor::new(b),
                Some(len),
                None,
            ))
        }
        Body::File(f, len) => req.respond(tiny_http::Response::new(status, headers, f, len, None)),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_paths_and_queries() {
        assert_eq!(percent_decode("a%20b+c", true).as_deref(), Some("a b c"));
        assert_eq!(percent_decode("a%20b+c", false).as_deref(), Some("a b+c"));
        assert_eq!(percent_decode("%zz", false), None);
        assert_eq!(percent_decode("%4", false), None);
        assert_eq!(percent_decode("%ff", false), None); // not UTF-8
        let (p, q) = split_url("/api/events?since=3&names=a%2Cb&x");
        assert_eq!(p, "/api/events");
        assert_eq!(q["since"], "3");
        assert_eq!(q["names"], "a,b");
        assert_eq!(q["x"], "");
    }

    #[test]
    fn header_lookup_is_case_insensitive_and_json_type_is_parsed() {
        let head = Head {
            headers: vec![
                (
                    "content-TYPE".into(),
                    "Application/JSON; charset=utf-8".into(),
                ),
                ("Authorization".into(), "Bearer  abc ".into()),
            ],
            ..Head::default()
        };
        assert!(head.content_type_is_json());
        assert_eq!(head.bearer(), Some("abc"));
        assert_eq!(head.header("x-missing"), None);
        let plain = Head {
            headers: vec![("Content-Type".into(), "text/plain;application/json".into())],
            ..Head::default()
        };
        assert!(!plain.content_type_is_json());
    }
}
