use ascii::AsciiString;

use std::io::Error as IoError;
use std::io::Result as IoResult;
use std::io::{BufReader, BufWriter, ErrorKind, Read};

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use crate::common::{HTTPVersion, Method};
use crate::limits::Limits;
use crate::util::refined_tcp_stream::Socket;
use crate::util::RefinedTcpStream;
use crate::util::{SequentialReader, SequentialReaderBuilder, SequentialWriterBuilder};
use crate::Request;

/// A ClientConnection is an object that will store a socket to a client
/// and return Request objects.
pub struct ClientConnection {
    // address of the client
    remote_addr: IoResult<Option<SocketAddr>>,

    // sequence of Readers to the stream, so that the data is not read in
    //  the wrong order
    source: SequentialReaderBuilder<BufReader<RefinedTcpStream>>,

    // sequence of Writers to the stream, to avoid writing response #2 before
    //  response #1
    sink: SequentialWriterBuilder<BufWriter<RefinedTcpStream>>,

    // Reader to read the next header from
    next_header_source: SequentialReader<BufReader<RefinedTcpStream>>,

    // set to true if we know that the previous request is the last one
    no_more_requests: bool,

    // true if the connection goes through SSL
    secure: bool,

    // workbench patch: the shared socket (deadlines, closing) and the caps
    // the request head is read against.
    socket: Option<Arc<Socket>>,
    limits: Limits,
}

/// Error that can happen when reading a request.
#[derive(Debug)]
enum ReadError {
    WrongRequestLine,
    WrongHeader(HTTPVersion),
    /// the client sent an unrecognized `Expect` header
    ExpectationFailed(HTTPVersion),
    ReadIoError(IoError),
    // workbench patch:
    /// Request line, header block or header count over its cap → 431.
    HeadTooLarge,
    /// Headers not complete within `header_timeout`, or cut off → 408.
    HeadTimeout,
    /// Nothing of a next request arrived: close without a word.
    Idle,
    /// Duplicate, conflicting or invalid Content-Length → 400.
    BadLength(HTTPVersion),
}

impl ClientConnection {
    /// Creates a new `ClientConnection` that takes ownership of the `TcpStream`.
    pub(crate) fn new(socket: Arc<Socket>, limits: Limits) -> ClientConnection {
        let (mut read_socket, write_socket) = RefinedTcpStream::new(&socket);
        let remote_addr = read_socket.peer_addr();
        let secure = read_socket.secure();

        let mut source = SequentialReaderBuilder::new(BufReader::with_capacity(1024, read_socket));
        let first_header = source.next().unwrap();

        ClientConnection {
            source,
            sink: SequentialWriterBuilder::new(BufWriter::with_capacity(1024, write_socket)),
            remote_addr,
            next_header_source: first_header,
            no_more_requests: false,
            secure,
            socket: Some(socket),
            limits,
        }
    }

    /// true if the connection is HTTPS
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// Reads the next line from self.next_header_source.
    ///
    /// Reads until `CRLF` is reached. The next read will start
    ///  at the first byte of the new line.
    /// Reads one CRLF-terminated line of the request head, at most `max`
    /// bytes. `started` is set at the first byte of the request: from then
    /// on reads are bounded by the header deadline (workbench patch).
    fn read_next_line(
        &mut self,
        max: usize,
        started: &mut Option<Instant>,
    ) -> Result<AsciiString, ReadError> {
        let mut buf = Vec::new();
        let mut prev_byte_was_cr = false;

        loop {
            let byte = self.next_header_source.by_ref().bytes().next();

            let byte = match byte {
                Some(Ok(b)) => b,
                Some(Err(e)) if e.kind() == ErrorKind::TimedOut => {
                    return Err(if started.is_some() {
                        ReadError::HeadTimeout
                    } else {
                        ReadError::Idle
                    })
                }
                Some(Err(e)) => return Err(ReadError::ReadIoError(e)),
                None if started.is_none() => return Err(ReadError::Idle),
                None => {
                    return Err(ReadError::ReadIoError(IoError::new(
                        ErrorKind::ConnectionAborted,
                        "Unexpected EOF",
                    )))
                }
            };
            if started.is_none() {
                // A response that ended the connection wins over bytes the
                // client kept sending after it.
                if self.socket.as_ref().is_some_and(|s| s.is_closing()) {
                    return Err(ReadError::Idle);
                }
                let now = Instant::now();
                *started = Some(now);
                if let Some(s) = &self.socket {
                    s.set_deadline(Some(now + self.limits.header_timeout));
                }
            }

            if byte == b'\n' && prev_byte_was_cr {
                buf.pop(); // removing the '\r'
                return AsciiString::from_ascii(buf).map_err(|_| {
                    ReadError::ReadIoError(IoError::new(
                        ErrorKind::InvalidInput,
                        "Header is not in ASCII",
                    ))
                });
            }

            prev_byte_was_cr = byte == b'\r';

            buf.push(byte);
            if buf.len() > max {
                return Err(ReadError::HeadTooLarge);
            }
        }
    }

    fn read(&mut self) -> Result<Request, ReadError> {
        let mut started = None;
        let (method, path, version, headers) = {
            // reading the request line
            let (method, path, version) = {
                let max = self.limits.max_request_line;
                let line = self.read_next_line(max, &mut started)?;

                parse_request_line(
                    line.as_str().trim(), // TODO: remove this conversion
                )?
            };

            // getting all headers
            let headers = {
                let mut headers = Vec::new();
                let mut header_bytes = 0usize;
                loop {
                    let left = self.limits.max_header_bytes.saturating_sub(header_bytes);
                    let line = self.read_next_line(left, &mut started)?;
                    header_bytes += line.len() + 2;

                    if line.is_empty() {
                        break;
                    };
                    if headers.len() >= self.limits.max_headers {
                        return Err(ReadError::HeadTooLarge);
                    }
                    headers.push(match FromStr::from_str(line.as_str().trim()) {
                        // TODO: remove this conversion
                        Ok(h) => h,
                        _ => return Err(ReadError::WrongHeader(version)),
                    });
                }

                headers
            };

            (method, path, version, headers)
        };
        // The head is complete: the body is read under the application's
        // deadline (Request::set_read_deadline), or only the idle timeout.
        if let Some(s) = &self.socket {
            s.set_deadline(None);
        }

        // building the writer for the request
        let writer = self.sink.next().expect("the writer builder never ends");

        // follow-up for next potential request
        let mut data_source = self.source.next().expect("the reader builder never ends");
        std::mem::swap(&mut self.next_header_source, &mut data_source);

        // a peer whose address could not be read is served without one
        // (upstream unwrapped it)
        let remote_addr = self.remote_addr.as_ref().ok().copied().flatten();

        // building the next reader
        let request = crate::request::new_request(
            self.secure,
            method,
            path,
            version.clone(),
            headers,
            remote_addr,
            data_source,
            writer,
            self.socket.clone(),
        )
        .map_err(|e| {
            use crate::request;
            match e {
                request::RequestCreationError::CreationIoError(e) => ReadError::ReadIoError(e),
                request::RequestCreationError::ExpectationFailed => {
                    ReadError::ExpectationFailed(version.clone())
                }
                request::RequestCreationError::BadLength => ReadError::BadLength(version.clone()),
            }
        })?;

        // return the request
        Ok(request)
    }

    /// Answers an error with an empty body and ends the connection.
    fn refuse(&mut self, status: u16, ver: HTTPVersion) {
        use crate::{Header, Response, StatusCode};
        let writer = self.sink.next().expect("the writer builder never ends");
        let close = Header::from_bytes(&b"Connection"[..], &b"close"[..]).expect("valid header");
        let response = Response::new_empty(StatusCode(status)).with_header(close);
        response.raw_print(writer, ver, &[], false, None).ok();
    }
}

impl Iterator for ClientConnection {
    type Item = Request;

    /// Blocks until the next Request is available.
    /// Returns None when no new Requests will come from the client.
    fn next(&mut self) -> Option<Request> {
        use crate::{Response, StatusCode};

        // the client sent a "connection: close" header in this previous request
        //  or is using HTTP 1.0, meaning that no new request will come
        if self.no_more_requests {
            return None;
        }

        loop {
            let rq = match self.read() {
                // we don't know where the next request would start, so
                // every error closes the connection
                Err(ReadError::WrongRequestLine) => {
                    self.refuse(400, HTTPVersion(1, 1));
                    return None;
                }
                Err(ReadError::WrongHeader(ver)) | Err(ReadError::BadLength(ver)) => {
                    self.refuse(400, ver);
                    return None;
                }
                Err(ReadError::HeadTooLarge) => {
                    self.refuse(431, HTTPVersion(1, 1));
                    return None;
                }
                Err(ReadError::HeadTimeout) => {
                    self.refuse(408, HTTPVersion(1, 1));
                    return None;
                }
                Err(ReadError::ExpectationFailed(ver)) => {
                    self.refuse(417, ver);
                    return None;
                }
                Err(ReadError::Idle) | Err(ReadError::ReadIoError(_)) => return None,

                Ok(rq) => rq,
            };

            // checking HTTP version
            if *rq.http_version() > (1, 1) {
                let writer = self.sink.next().expect("the writer builder never ends");
                let response = Response::from_string(
                    "This server only supports HTTP versions 1.0 and 1.1".to_owned(),
                )
                .with_status_code(StatusCode(505));
                response
                    .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                    .ok();
                continue;
            }

            // updating the status of the connection
            let connection_header = rq
                .headers()
                .iter()
                .find(|h| h.field.equiv("Connection"))
                .map(|h| h.value.as_str());

            let lowercase = connection_header.map(|h| h.to_ascii_lowercase());

            match lowercase {
                Some(ref val) if val.contains("close") => self.no_more_requests = true,
                Some(ref val) if val.contains("upgrade") => self.no_more_requests = true,
                Some(ref val)
                    if !val.contains("keep-alive") && *rq.http_version() == HTTPVersion(1, 0) =>
                {
                    self.no_more_requests = true
                }
                None if *rq.http_version() == HTTPVersion(1, 0) => self.no_more_requests = true,
                _ => (),
            };

            // returning the request
            return Some(rq);
        }
    }
}

/// Parses a "HTTP/1.1" string.
fn parse_http_version(version: &str) -> Result<HTTPVersion, ReadError> {
    let (major, minor) = match version {
        "HTTP/0.9" => (0, 9),
        "HTTP/1.0" => (1, 0),
        "HTTP/1.1" => (1, 1),
        "HTTP/2.0" => (2, 0),
        "HTTP/3.0" => (3, 0),
        _ => return Err(ReadError::WrongRequestLine),
    };

    Ok(HTTPVersion(major, minor))
}

/// Parses the request line of the request.
/// eg. GET / HTTP/1.1
fn parse_request_line(line: &str) -> Result<(Method, String, HTTPVersion), ReadError> {
    let mut parts = line.split(' ');

    let method = parts.next().and_then(|w| w.parse().ok());
    let path = parts.next().map(ToOwned::to_owned);
    let version = parts.next().and_then(|w| parse_http_version(w).ok());

    method
        .and_then(|method| Some((method, path?, version?)))
        .ok_or(ReadError::WrongRequestLine)
}

#[cfg(test)]
mod test {
    #[test]
    fn test_parse_request_line() {
        let (method, path, ver) = super::parse_request_line("GET /hello HTTP/1.1").unwrap();

        assert!(method == crate::Method::Get);
        assert!(path == "/hello");
        assert!(ver == crate::common::HTTPVersion(1, 1));

        assert!(super::parse_request_line("GET /hello").is_err());
        assert!(super::parse_request_line("qsd qsd qsd").is_err());
    }
}
