//! The page server's clients: `workbench serve` on 127.0.0.1 with a port
//! chosen by the OS, plain HTTP through `workbench::httpc`, raw requests,
//! and a WebSocket viewer.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tungstenite::{Message, WebSocket};
use workbench::httpc;

use super::{Proc, TempHome};

/// A running `workbench serve` on 127.0.0.1 with a port chosen by the OS.
pub struct Server {
    pub proc: Proc,
    pub port: u16,
    pub token: String,
    pub info: Value,
    pub dir: PathBuf,
}

impl Server {
    pub fn start(home: &TempHome, name: &str, extra: &[&str]) -> Server {
        Self::start_on(home, name, 0, extra)
    }

    pub fn start_on(home: &TempHome, name: &str, port: u16, extra: &[&str]) -> Server {
        Self::start_env(home, name, port, extra, &[])
    }

    /// Like `start_on`, with extra environment variables for the server.
    pub fn start_env(
        home: &TempHome,
        name: &str,
        port: u16,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut child = home
            .cmd()
            .envs(env.iter().copied())
            .args([
                "serve",
                name,
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn workbench serve");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        // The server prints its URL once it listens and .server.json exists.
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(line.contains("serving"), "unexpected first line: {line:?}");
        let dir = home.project(name);
        let info: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(".server.json")).unwrap())
                .unwrap();
        Server {
            port: info["port"].as_u64().unwrap() as u16,
            token: info["token"].as_str().unwrap().to_string(),
            info,
            dir,
            proc: Proc {
                child,
                stdout: Some(stdout),
            },
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        http(&self.addr(), "GET", path, None, None)
    }

    pub fn get_auth(&self, path: &str) -> (u16, Value) {
        http(&self.addr(), "GET", path, Some(&self.token), None)
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        http(
            &self.addr(),
            "POST",
            path,
            Some(&self.token),
            Some(body.to_string().as_bytes()),
        )
    }

    pub fn post_raw(&self, path: &str, token: Option<&str>, body: &[u8]) -> (u16, Value) {
        http(&self.addr(), "POST", path, token, Some(body))
    }

    pub fn viewer(&self) -> Viewer {
        Viewer::connect(self.port)
    }

    pub fn health(&self) -> Value {
        let (s, v) = self.get("/health");
        assert_eq!(s, 200);
        v
    }
}

pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> (u16, Value) {
    let r = httpc::request(addr, method, path, token, body, Duration::from_secs(30))
        .expect("http request");
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

/// Sends raw bytes as an HTTP request and returns the status code.
pub fn raw_status(port: u16, request: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A WebSocket viewer of a page, reading with a timeout.
pub struct Viewer {
    pub ws: WebSocket<TcpStream>,
}

impl Viewer {
    pub fn connect(port: u16) -> Viewer {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let (ws, _) =
            tungstenite::client(format!("ws://127.0.0.1:{port}/ws"), stream).expect("ws handshake");
        Viewer { ws }
    }

    /// The next JSON text message (pings are skipped).
    pub fn next(&mut self) -> Value {
        loop {
            let read = match self.ws.read() {
                // A signal can interrupt a read with a timeout; just retry.
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                    continue
                }
                other => other,
            };
            match read.expect("viewer read") {
                Message::Text(t) => return serde_json::from_str(t.as_str()).expect("json message"),
                Message::Close(f) => panic!("viewer closed: {f:?}"),
                _ => continue,
            }
        }
    }

    /// Reads the connect preamble: HELLO, the full STATE, then `logs` replayed LOGs.
    pub fn preamble(&mut self, logs: usize) -> (Value, Vec<Value>) {
        assert_eq!(self.next()["type"], "HELLO");
        let state = self.next();
        assert_eq!(state["type"], "STATE");
        assert_eq!(state["full"], true);
        let replayed = (0..logs).map(|_| self.next()).collect();
        (state, replayed)
    }
}
