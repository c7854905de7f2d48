//! A small blocking AgentChat client shared by the CLI commands (`send`,
//! `listen`, `channels`, …). It uses the same split as the server: frames are
//! read with [`FrameReader`], and one `WebSocket` does all the writing, so a
//! ping from the relay is answered by whoever owns the writer. Not a general
//! client library. `wss://` verifies the relay's certificate against the
//! system's trust store plus any `--ca` file ([`set_extra_ca`]); there is no
//! way to skip verification.
//!
//! Proof of key (issue 12): [`Client::identify`] with an identity asks for
//! a CHALLENGE (`prove: true`) and answers it with VERIFY_IDENTITY, so every
//! caller works against a relay in either mode (docs/relay-trust.md). A
//! relay's text in errors is escaped for terminals (`display`).

use std::fmt;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

use super::display::terminal_safe;
use super::frame::{FrameReader, Incoming, ReadError, Role, SharedStream};
use super::handshake;
use super::identity::Identity;
use super::signing;
use super::transport::Stream;
use rustls::pki_types::CertificateDer;

/// Certificates the CLI's `--ca FILE` added to the system's trust store,
/// set once by the command line before any command connects.
static EXTRA_CA: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
/// The client TLS config, built on first `wss://` use.
static TLS_CONFIG: OnceLock<std::result::Result<Arc<rustls::ClientConfig>, String>> =
    OnceLock::new();

/// Trusts `certs` (a private CA, or a self-signed relay's certificate) in
/// addition to the system's store for every `wss://` connection this
/// process makes. Only the first call counts.
pub fn set_extra_ca(certs: Vec<CertificateDer<'static>>) {
    let _ = EXTRA_CA.set(certs);
}

fn tls_config() -> std::result::Result<Arc<rustls::ClientConfig>, String> {
    TLS_CONFIG
        .get_or_init(|| crate::tls::client_config(EXTRA_CA.get().map_or(&[], Vec::as_slice)))
        .clone()
}

/// Default port of the relay (as AgentChat 0.3.0).
pub const DEFAULT_PORT: u16 = 6667;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The relay never sends frames bigger than this to a client.
const MAX_INCOMING: usize = 1 << 20;

/// Why a client operation failed; each renders as one line for stderr.
#[derive(Debug)]
pub enum ClientError {
    /// Bad server address.
    Address(String),
    /// Could not reach the relay or finish the WebSocket handshake.
    Connect { url: String, why: String },
    /// The relay answered ERROR.
    Refused { code: String, message: String },
    /// The relay closed the connection (or it broke).
    Closed(String),
    /// The relay sent something we did not expect.
    Unexpected(String),
    /// The address answered, but not as an AgentChat relay.
    NotARelay { url: String, why: String },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Everything here may hold bytes a relay (or a typo'd address) sent:
        // escaped, so a terminal shows them and never obeys them.
        let t = terminal_safe;
        match self {
            ClientError::Address(m) => write!(f, "{}", t(m)),
            ClientError::Connect { url, why } => {
                write!(f, "cannot connect to {}: {}", t(url), t(why))
            }
            ClientError::Refused { code, message } => {
                write!(f, "relay refused: {}: {}", t(code), t(message))
            }
            ClientError::Closed(why) => write!(f, "connection to relay lost: {}", t(why)),
            ClientError::Unexpected(m) => write!(f, "unexpected answer from relay: {}", t(m)),
            ClientError::NotARelay { url, why } => write!(
                f,
                "{} is not an AgentChat relay: {} (check the address and port)",
                t(url),
                t(why)
            ),
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// Accepts `ws://host:port[/path]`, `wss://host:port[/path]` (TLS; port
/// 443 if none), or a bare `host[:port]` (ws://, port 6667).
pub fn normalize_url(server: &str) -> Result<String> {
    let url = if server.starts_with("ws://") || server.starts_with("wss://") {
        server.to_string()
    } else if server.contains("://") {
        return Err(ClientError::Address(format!(
            "'{server}' is not a ws:// or wss:// URL"
        )));
    } else if server.contains(':') {
        format!("ws://{server}")
    } else {
        format!("ws://{server}:{DEFAULT_PORT}")
    };
    parse_url(&url)
        .map_err(|why| ClientError::Address(format!("bad server address '{server}': {why}")))?;
    Ok(url)
}

/// A `ws://` or `wss://` URL's parts.
struct Url<'a> {
    secure: bool,
    /// As written, what the `Host` header carries.
    authority: &'a str,
    /// Without IPv6 brackets, what is resolved and what TLS checks.
    host: &'a str,
    port: u16,
    /// With its query; `/` if none.
    path: &'a str,
}

/// Splits a `ws://` or `wss://` URL. Its port as written (1–65535), or the
/// scheme's default, 80 or 443, when there is none (a bare `host` was
/// already given 6667). A port that does not fit is an error, never
/// silently the default.
fn parse_url(url: &str) -> std::result::Result<Url<'_>, String> {
    let (secure, rest) = if let Some(r) = url.strip_prefix("wss://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("ws://") {
        (false, r)
    } else {
        return Err("not a ws:// or wss:// URL".into());
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let tail = tail.split('#').next().unwrap_or("");
    let path = if tail.is_empty() { "/" } else { tail };
    if authority.contains('@') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a user name, spaces or control characters in the URL".into());
    }
    let host_end = if authority.starts_with('[') {
        authority
            .find(']')
            .map(|i| i + 1)
            .ok_or("an IPv6 address without its ']'")?
    } else {
        authority.find(':').unwrap_or(authority.len())
    };
    let (host, port_text) = authority.split_at(host_end);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("no host".into());
    }
    let port = match port_text.strip_prefix(':') {
        None if port_text.is_empty() => {
            if secure {
                443
            } else {
                80
            }
        }
        Some(text) => match text.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("invalid port '{text}' (must be 1 to 65535)")),
        },
        None => return Err(format!("unexpected '{port_text}' after the host")),
    };
    Ok(Url {
        secure,
        authority,
        host,
        port,
        path,
    })
}

/// Why a handshake failed, in words that say what the address is.
fn handshake_error(url: &str, e: handshake::ConnectError) -> ClientError {
    let not_relay = |why: String| ClientError::NotARelay {
        url: url.to_string(),
        why,
    };
    match e {
        handshake::ConnectError::Http { status, body } => {
            // Our relay refuses over-limit connections before the
            // handshake, with `ERROR CODE: message` as the body.
            if let Some((code, message)) = body
                .trim()
                .strip_prefix("ERROR ")
                .and_then(|b| b.split_once(": "))
            {
                return ClientError::Refused {
                    code: code.to_string(),
                    message: message.to_string(),
                };
            }
            not_relay(format!(
                "it answered HTTP {status} instead of a WebSocket upgrade"
            ))
        }
        handshake::ConnectError::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            not_relay(format!(
                "no WebSocket handshake answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            ))
        }
        handshake::ConnectError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            not_relay("it closed the connection during the WebSocket handshake".into())
        }
        handshake::ConnectError::Protocol(p) => not_relay(format!(
            "it did not answer with a WebSocket handshake ({p})"
        )),
        handshake::ConnectError::Io(other) => ClientError::Connect {
            url: url.to_string(),
            why: format!("WebSocket handshake failed: {other}"),
        },
    }
}

/// An ERROR frame as a [`ClientError`], anything else as itself.
pub fn check(v: Value) -> Result<Value> {
    if v["type"] == "ERROR" {
        return Err(ClientError::Refused {
            code: v["code"].as_str().unwrap_or("?").to_string(),
            message: v["message"].as_str().unwrap_or("").to_string(),
        });
    }
    Ok(v)
}

pub struct Client {
    url: String,
    stream: Stream,
    reader: FrameReader<Stream>,
    writer: WebSocket<Stream>,
    agent_id: Option<String>,
}

/// What `recv_event` yields: a relay message, or a ping to answer.
pub enum Event {
    Msg(Value),
    Ping(Vec<u8>),
}

impl Client {
    /// Connects and completes the WebSocket handshake.
    pub fn connect(server: &str) -> Result<Client> {
        let url = normalize_url(server)?;
        let fail = |why: String| ClientError::Connect {
            url: url.clone(),
            why,
        };
        let parts = parse_url(&url).map_err(ClientError::Address)?;
        let (host, secure, port) = (parts.host, parts.secure, parts.port);
        let addrs = (host, port)
            .to_socket_addrs()
            .map_err(|e| fail(format!("cannot resolve {host}: {e}")))?;
        let mut last = String::from("no address");
        let mut tcp = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        let tcp = tcp.ok_or_else(|| fail(last))?;
        let _ = tcp.set_nodelay(true);
        let stream = if secure {
            let config = tls_config().map_err(|e| fail(e.clone()))?;
            let tls = crate::tls::connect(tcp, &config, host, CONNECT_TIMEOUT)
                .map_err(|e| fail(format!("TLS to {host}: {}", crate::tls::describe(&e))))?;
            Stream::Tls(tls)
        } else {
            Stream::Plain(SharedStream::new(tcp))
        };
        let _ = stream.tcp().set_read_timeout(Some(CONNECT_TIMEOUT));
        let mut reader = FrameReader::new(stream.clone(), Role::Client, MAX_INCOMING);
        let mut nonce = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .map_err(|_| fail("no randomness for the WebSocket key".into()))?;
        handshake::connect(
            reader.buffered(),
            &mut stream.clone(),
            parts.authority,
            parts.path,
            nonce,
        )
        .map_err(|e| handshake_error(&url, e))?;
        let config = WebSocketConfig::default().read_buffer_size(1024);
        let writer = WebSocket::from_raw_socket(
            stream.clone(),
            tungstenite::protocol::Role::Client,
            Some(config),
        );
        let _ = stream.tcp().set_read_timeout(None);
        Ok(Client {
            url,
            stream,
            reader,
            writer,
            agent_id: None,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Our `@id` once identified.
    pub fn agent_id(&self) -> Option<&str> {
        self.agent_id.as_deref()
    }

    /// Bounds how long a `recv` may block (`None`: forever).
    pub fn set_timeout(&self, t: Option<Duration>) {
        let _ = self.stream.tcp().set_read_timeout(t);
    }

    pub fn send(&mut self, v: &Value) -> Result<()> {
        self.writer
            .send(Message::text(v.to_string()))
            .map_err(|e| ClientError::Closed(e.to_string()))
    }

    /// The next relay message or ping.
    pub fn recv_event(&mut self) -> Result<Event> {
        loop {
            match self.reader.next_message() {
                Ok(Incoming::Text(t)) => match serde_json::from_str(&t) {
                    Ok(v) => return Ok(Event::Msg(v)),
                    Err(_) => {
                        return Err(ClientError::NotARelay {
                            url: self.url.clone(),
                            why: "it sent a text frame that is not JSON".into(),
                        })
                    }
                },
                Ok(Incoming::Ping(p)) => return Ok(Event::Ping(p)),
                Ok(Incoming::Close(c)) => {
                    let why = c.map(|(code, r)| format!("closed ({code} {r})"));
                    return Err(ClientError::Closed(why.unwrap_or_else(|| "closed".into())));
                }
                Ok(Incoming::Pong) => {}
                Ok(Incoming::Binary | Incoming::BadUtf8 | Incoming::TooBig(_)) => {
                    return Err(ClientError::Unexpected(
                        "a non-text or oversized frame".into(),
                    ))
                }
                Err(ReadError::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(ClientError::Closed(
                        "timed out waiting for the relay".into(),
                    ))
                }
                Err(e) => return Err(ClientError::Closed(e.to_string())),
            }
        }
    }

    /// The next relay message; pings are answered on the way.
    pub fn recv(&mut self) -> Result<Value> {
        loop {
            match self.recv_event()? {
                Event::Msg(v) => return Ok(v),
                Event::Ping(p) => {
                    let _ = self.writer.send(Message::Pong(p.into()));
                }
            }
        }
    }

    /// IDENTIFY, with an identity's public key if given (the relay then
    /// derives our stable id from it and checks our signatures), and wait
    /// for WELCOME; returns our `@id`.
    ///
    /// With an identity this also proves we hold its private key: the
    /// IDENTIFY carries `prove: true`, and a CHALLENGE (which a relay in
    /// `--require-proof` mode sends in any case) is answered with
    /// VERIFY_IDENTITY, a signature over
    /// `AGENTCHAT_AUTH|<nonce>|<challenge_id>|<timestamp>`. A 0.3.0 relay
    /// ignores `prove` and welcomes at once. Every caller gets this.
    pub fn identify(&mut self, name: &str, identity: Option<&Identity>) -> Result<String> {
        let mut msg = json!({"type": "IDENTIFY", "name": name});
        if let Some(id) = identity {
            msg["pubkey"] = json!(id.pubkey);
            msg["prove"] = json!(true);
        }
        self.send(&msg)?;
        let not_relay = |url: &str, why: String| ClientError::NotARelay {
            url: url.to_string(),
            why,
        };
        loop {
            let v = match self.recv() {
                Err(ClientError::Closed(why)) if why.starts_with("timed out") => {
                    return Err(not_relay(
                        &self.url,
                        "it did not answer IDENTIFY with WELCOME".into(),
                    ))
                }
                other => other?,
            };
            match v["type"].as_str() {
                Some("WELCOME") => {
                    let id = v["agent_id"]
                        .as_str()
                        .ok_or_else(|| ClientError::Unexpected("WELCOME without agent_id".into()))?
                        .to_string();
                    self.agent_id = Some(id.clone());
                    return Ok(id);
                }
                Some("ERROR") => {
                    check(v)?;
                }
                Some("CHALLENGE") => {
                    let Some(key) = identity else {
                        return Err(ClientError::Unexpected(
                            "the relay sent a CHALLENGE to a client without a key".into(),
                        ));
                    };
                    self.send(&answer_challenge(&v, key)?)?;
                }
                // The relay may speak before WELCOME only with these.
                _ => {
                    let shown: String = v.to_string().chars().take(80).collect();
                    return Err(not_relay(
                        &self.url,
                        format!("it answered IDENTIFY with {shown}"),
                    ));
                }
            }
        }
    }

    /// Sends `msg` and then a PING, and returns everything the relay sent
    /// before the PONG. The relay answers one connection's messages in
    /// order, so an ERROR caused by `msg` arrives before the PONG: that is
    /// how commands with no positive answer (INVITE) learn they worked.
    pub fn request(&mut self, msg: &Value) -> Result<Vec<Value>> {
        self.send(msg)?;
        self.send(&json!({"type": "PING"}))?;
        let mut got = Vec::new();
        loop {
            let v = check(self.recv()?)?;
            if v["type"] == "PONG" {
                return Ok(got);
            }
            got.push(v);
        }
    }

    /// Sends a close frame and waits (up to 2 s) for the relay's echo, the
    /// end of the closing handshake (RFC 6455 §7.1.1). The relay echoes only
    /// after it has forgotten this agent, so a next command with the same
    /// identity is not refused as already connected. Errors are moot here.
    pub fn close(mut self) {
        let _ = self.writer.close(None);
        let _ = self.writer.flush();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        self.set_timeout(Some(Duration::from_secs(2)));
        while let Ok(m) = self.reader.next_message() {
            if matches!(m, Incoming::Close(_)) || std::time::Instant::now() >= deadline {
                break;
            }
        }
    }

    /// Closes cleanly whatever `result` is, then hands it back: a command
    /// that got an ERROR must end its session as politely as one that
    /// succeeded, or the relay may still hold its identity when the next
    /// command connects.
    pub fn close_with<T>(self, result: Result<T>) -> Result<T> {
        self.close();
        result
    }

    /// Splits into the read half and the (only) writer, for programs that
    /// read and write from different threads (`workbench connect`).
    pub fn split(self) -> (FrameReader<Stream>, WebSocket<Stream>) {
        (self.reader, self.writer)
    }
}

/// The VERIFY_IDENTITY that answers a CHALLENGE frame with `key`.
pub fn answer_challenge(challenge: &Value, key: &Identity) -> Result<Value> {
    let field = |k: &str| {
        challenge[k]
            .as_str()
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or_else(|| ClientError::Unexpected(format!("a CHALLENGE without {k}")))
    };
    let (challenge_id, nonce) = (field("challenge_id")?, field("nonce")?);
    let timestamp = crate::util::now_ms();
    let text = format!("AGENTCHAT_AUTH|{nonce}|{challenge_id}|{timestamp}");
    Ok(json!({
        "type": "VERIFY_IDENTITY",
        "challenge_id": challenge_id,
        "signature": key.sign(&text),
        "timestamp": timestamp,
    }))
}

/// Connects and identifies as `name`, with `identity`'s public key if given
/// (`--identity F`): what most commands start with.
pub fn open(server: &str, name: &str, identity: Option<&Identity>) -> Result<Client> {
    let mut c = Client::connect(server)?;
    c.set_timeout(Some(Duration::from_secs(10)));
    c.identify(name, identity)?;
    Ok(c)
}

/// A MSG as AgentChat 0.3.0's client builds it: with an identity it adds
/// `ts` (now, Unix ms) and `sig` over `JSON.stringify({to, content, ts})`.
pub fn msg(to: &str, content: &str, identity: Option<&Identity>) -> Value {
    let mut m = json!({"type": "MSG", "to": to, "content": content});
    if let Some(id) = identity {
        sign_msg(&mut m, id);
    }
    m
}

/// Adds `ts` (now) and `sig` to a MSG, as 0.3.0's client does when it has
/// an identity.
pub fn sign_msg(m: &mut Value, identity: &Identity) {
    let ts = crate::util::now_ms();
    m["ts"] = json!(ts);
    if let Some(obj) = m.as_object() {
        if let Some(text) = signing::signing_text(obj) {
            m["sig"] = json!(identity.sign(&text));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalised() {
        assert_eq!(normalize_url("ws://h:1").ok(), Some("ws://h:1".into()));
        assert_eq!(normalize_url("h:2").ok(), Some("ws://h:2".into()));
        assert_eq!(normalize_url("h").ok(), Some("ws://h:6667".into()));
        assert_eq!(normalize_url("wss://h:1").ok(), Some("wss://h:1".into()));
        assert!(normalize_url("http://h").is_err());
        for bad in [
            "ws://h:99999",
            "h:99999",
            "ws://h:0",
            "h:65536",
            "ws://h:-1",
        ] {
            let e = normalize_url(bad).unwrap_err().to_string();
            assert!(
                e.contains("port") || e.contains("bad server address"),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            normalize_url("ws://h:65535").ok(),
            Some("ws://h:65535".into())
        );
        for bad in [
            "ws://",
            "ws://:1",
            "ws://u@h:1",
            "ws://[::1",
            "ws://h:1x",
            "ws://h/a b",
        ] {
            assert!(normalize_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_split_into_what_the_handshake_needs() {
        let u = parse_url("wss://[::1]:7443/relay?x=1#frag").unwrap();
        assert!(u.secure);
        assert_eq!(
            (u.authority, u.host, u.port, u.path),
            ("[::1]:7443", "::1", 7443, "/relay?x=1")
        );
        let u = parse_url("ws://relay.lab").unwrap();
        assert_eq!((u.host, u.port, u.path), ("relay.lab", 80, "/"));
        assert_eq!(parse_url("wss://relay.lab").unwrap().port, 443);
    }

    #[test]
    fn signed_msgs_verify() {
        let id = Identity::generate("t").unwrap();
        let m = msg("#general", "héllo \"x\"", Some(&id));
        let text = signing::signing_text(m.as_object().unwrap()).unwrap();
        let key = crate::relay::identity::parse_pubkey(&id.pubkey).unwrap();
        assert!(crate::relay::identity::verify(
            &key,
            &text,
            m["sig"].as_str().unwrap()
        ));
        let plain = msg("#general", "hi", None);
        assert!(plain.get("sig").is_none() && plain.get("ts").is_none());
    }
}
