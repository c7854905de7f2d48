//! A minimal blocking HTTP/1.1 client for talking to our own page servers on
//! loopback (`workbench mcp`, `list`, `stop`, `doctor`). `request` is one
//! request per connection (`Connection: close`); a `Conn` keeps its
//! connection alive for the next request, which is what the MCP hop uses.
//! Answers with Content-Length, chunked bodies, or read-to-EOF are all
//! understood.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::Value;

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
    /// The server may take another request on this connection.
    keep_alive: bool,
}

impl HttpResponse {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Largest response body we accept (our servers cap theirs well below this).
const MAX_RESPONSE: usize = 64 << 20;

/// One request on a fresh connection, closed after the answer.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<HttpResponse> {
    let mut conn = Conn::open(addr, timeout)?;
    conn.send(method, path, token, body, timeout, false)
}

/// A kept-alive connection to one server: requests go out one at a time.
pub struct Conn {
    addr: String,
    stream: BufReader<TcpStream>,
    timeout: Option<Duration>,
    usable: bool,
}

impl Conn {
    pub fn open(addr: &str, timeout: Duration) -> io::Result<Conn> {
        let sock = addr.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot resolve {addr}"),
            )
        })?;
        let stream = TcpStream::connect_timeout(&sock, timeout.min(Duration::from_secs(5)))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            addr: addr.to_string(),
            stream: BufReader::new(stream),
            timeout: None,
            usable: true,
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// True when the last answer left the connection open for another request.
    pub fn keeps_alive(&self) -> bool {
        self.usable
    }

    /// True when the connection can take a request: the last answer kept it
    /// alive and the server has not closed it since (an idle connection the
    /// server closed reads as EOF; nothing else may be waiting on it).
    pub fn is_usable(&self) -> bool {
        if !self.usable || !self.stream.buffer().is_empty() {
            return false;
        }
        crate::sys::nothing_to_read(std::os::fd::AsFd::as_fd(self.stream.get_ref()))
    }

    /// One request, keeping the connection open for the next.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> io::Result<HttpResponse> {
        self.send(method, path, token, body, timeout, true)
    }

    fn send(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
        timeout: Duration,
        keep_alive: bool,
    ) -> io::Result<HttpResponse> {
        // Marked unusable until a whole answer has been read.
        self.usable = false;
        if self.timeout != Some(timeout) {
            let s = self.stream.get_ref();
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            self.timeout = Some(timeout);
        }
        let addr = &self.addr;
        let connection = if keep_alive { "keep-alive" } else { "close" };
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: {connection}\r\n");
        if let Some(t) = token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if let Some(b) = body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        if let Some(b) = body {
            out.extend_from_slice(b);
        }
        // One write, so a server that answers early never sees half a request.
        self.stream.get_mut().write_all(&out)?;
        let r = read_response(&mut self.stream)?;
        self.usable = keep_alive && r.keep_alive;
        Ok(r)
    }
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

fn read_response<R: BufRead>(mut r: R) -> io::Result<HttpResponse> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before an answer",
        ));
    }
    let http11 = line.starts_with("HTTP/1.1 ");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("not an HTTP response"))?;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut close = false;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("connection closed inside the headers"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("content-length") {
                length = v.parse().ok();
            } else if k.eq_ignore_ascii_case("transfer-encoding")
                && v.eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            } else if k.eq_ignore_ascii_case("connection") {
                close = v.eq_ignore_ascii_case("close");
            }
        }
    }
    let mut body = Vec::new();
    let keep_alive = http11 && !close && (chunked || length.is_some());
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                break;
            }
            if body.len() + size > MAX_RESPONSE {
                return Err(bad("response too large"));
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else if let Some(n) = length {
        if n > MAX_RESPONSE {
            return Err(bad("response too large"));
        }
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.take(MAX_RESPONSE as u64).read_to_end(&mut body)?;
    }
    Ok(HttpResponse {
        status,
        body,
        keep_alive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_and_chunked() {
        let r = read_response(&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"[..]).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hi"[..]));
        let r = read_response(&b"HTTP/1.1 404 X\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"[..]).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"abcde"[..]));
        assert!(read_response(&b"garbage\r\n\r\n"[..]).is_err());
        assert!(read_response(&b""[..]).is_err());
    }

    #[test]
    fn knows_when_a_connection_can_be_reused() {
        let r = read_response(&b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"[..]).unwrap();
        assert!(r.keep_alive);
        let r = read_response(
            &b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"[..],
        )
        .unwrap();
        assert!(!r.keep_alive);
        let r = read_response(&b"HTTP/1.1 200 OK\r\n\r\nuntil EOF"[..]).unwrap();
        assert!(!r.keep_alive, "a body read to EOF ends the connection");
        let r = read_response(&b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"[..]).unwrap();
        assert!(!r.keep_alive);
    }
}
