//! The relay's clients: start the real binary on 127.0.0.1 with port 0,
//! read the port back from its `listening` log line, and talk to it with
//! real tungstenite clients. Every relay started here keeps its state in a
//! temp data directory of its own (removed on drop) unless the test passes
//! `--ephemeral` or its own `--data-dir`: no test writes into the real home.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use super::{die_with_parent, BIN};

/// Flags that let one client send as fast as it likes.
pub const FAST: [&str; 10] = [
    "--rate-burst",
    "100000",
    "--rate-per-sec",
    "100000",
    "--ip-rate-burst",
    "1000000",
    "--channel-rate-burst",
    "1000000",
    "--connect-rate-burst",
    "1000",
];

/// How long any single read may block before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `workbench relay`, killed on drop.
pub struct Relay {
    pub child: Child,
    pub port: u16,
    /// Every stderr line after `listening`, and a condition variable
    /// notified per line (so a test can wait for one without polling).
    pub logs: Arc<(Mutex<Vec<String>>, Condvar)>,
    /// The temp data directory made for it, removed on drop.
    own_dir: Option<std::path::PathBuf>,
}

impl Relay {
    pub fn start(extra: &[&str]) -> Relay {
        Relay::start_on(0, extra)
    }

    /// On a given port (0: any), e.g. to restart a relay in place. Its
    /// state goes to a fresh temp data directory unless `extra` chooses.
    pub fn start_on(port: u16, extra: &[&str]) -> Relay {
        let chosen = extra.iter().any(|a| {
            *a == "--ephemeral"
                || *a == "--data-dir"
                || a.starts_with("--data-dir=")
                || *a == "--cluster"
        });
        if chosen {
            return Relay::spawn(port, extra, None);
        }
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wb-relay-data-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            workbench::util::now_ms()
        ));
        let dir_arg = dir.to_string_lossy().into_owned();
        let mut args: Vec<&str> = vec!["--data-dir", &dir_arg];
        args.extend_from_slice(extra);
        Relay::spawn(port, &args, Some(dir.clone()))
    }

    /// Starts a relay, or returns what it printed if it exits instead of
    /// listening (a refused data directory, a usage error).
    pub fn try_start(extra: &[&str]) -> Result<Relay, (Option<i32>, String)> {
        Relay::try_start_on(0, extra)
    }

    fn try_start_on(port: u16, extra: &[&str]) -> Result<Relay, (Option<i32>, String)> {
        let mut cmd = Command::new(BIN);
        cmd.args(["relay", "--port", &port.to_string(), "--host", "127.0.0.1"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        Relay::wait_listening(cmd.spawn().expect("spawn relay"))
    }

    /// A relay the test spawned itself (its own environment), stderr piped;
    /// panics if it does not listen.
    pub fn from_child(child: Child) -> Relay {
        match Relay::wait_listening(child) {
            Ok(r) => r,
            Err((code, text)) => panic!("relay did not start (exit {code:?}):\n{text}"),
        }
    }

    fn wait_listening(mut child: Child) -> Result<Relay, (Option<i32>, String)> {
        let stderr = child.stderr.take().expect("piped stderr");
        let logs = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let (port_tx, port_rx) = mpsc::channel();
        let sink = logs.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let port = serde_json::from_str::<Value>(&line)
                    .ok()
                    .filter(|v| v["event"] == "listening")
                    .map(|v| v["port"].as_u64().unwrap_or(0) as u16);
                // Kept before the port is announced: a test that started
                // the relay sees the listening line in its logs.
                sink.0.lock().unwrap().push(line);
                sink.1.notify_all();
                if let Some(p) = port {
                    let _ = port_tx.send(p);
                }
            }
        });
        // Ends early if the relay exits: the reader thread drops port_tx.
        match port_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(port) => Ok(Relay {
                child,
                port,
                logs,
                own_dir: None,
            }),
            Err(_) => {
                let code = child.wait().ok().and_then(|s| s.code());
                let text = logs.0.lock().unwrap().join("\n");
                Err((code, text))
            }
        }
    }

    fn spawn(port: u16, extra: &[&str], own_dir: Option<std::path::PathBuf>) -> Relay {
        let mut args = vec!["--name", "test-relay"];
        args.extend_from_slice(extra);
        match Relay::try_start_on(port, &args) {
            Ok(mut r) => {
                r.own_dir = own_dir;
                r
            }
            Err((code, text)) => panic!("relay did not start (exit {code:?}):\n{text}"),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    pub fn client(&self) -> Ws {
        Ws::connect(&self.url())
    }

    /// A client that has identified as `name`; returns it and its `@id`.
    pub fn agent(&self, name: &str) -> (Ws, String) {
        let mut ws = self.client();
        let id = ws.identify(name);
        (ws, id)
    }

    pub fn log_text(&self) -> String {
        self.logs.0.lock().unwrap().join("\n")
    }

    /// Blocks until a log line contains `needle` (10 s at most); returns
    /// all the log text. The relay logs a refusal after answering it, so a
    /// test that saw the answer may have to wait for the line.
    pub fn wait_log(&self, needle: &str) -> String {
        let (lock, cv) = &*self.logs;
        let (lines, _) = cv
            .wait_timeout_while(lock.lock().unwrap(), READ_TIMEOUT, |l| {
                !l.iter().any(|line| line.contains(needle))
            })
            .unwrap();
        lines.join("\n")
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(d) = &self.own_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A test client: a real tungstenite WebSocket with a read timeout.
pub struct Ws {
    pub ws: WebSocket<TcpStream>,
}

impl Ws {
    pub fn connect(url: &str) -> Ws {
        let addr = url.trim_start_matches("ws://");
        let tcp = TcpStream::connect(addr).expect("tcp connect to relay");
        tcp.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let (ws, _) = tungstenite::client::client(url, tcp).expect("websocket handshake");
        Ws { ws }
    }

    pub fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).expect("send");
    }

    pub fn send_raw(&mut self, m: Message) {
        self.ws.send(m).expect("send raw");
    }

    /// The next JSON message; panics on timeout or close.
    pub fn recv(&mut self) -> Value {
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    return serde_json::from_str(t.as_str()).expect("relay sends JSON")
                }
                Ok(_) => continue,
                // A signal can interrupt a read with a timeout; just retry.
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                    continue
                }
                Err(e) => panic!("reading from relay: {e}"),
            }
        }
    }

    /// The next message, which must be of type `kind`.
    pub fn expect(&mut self, kind: &str) -> Value {
        let v = self.recv();
        assert_eq!(v["type"], kind, "expected {kind}, got {v}");
        assert!(v["ts"].is_u64(), "every server message has ts: {v}");
        v
    }

    /// The next ERROR, which must carry `code`.
    pub fn expect_error(&mut self, code: &str) -> Value {
        let v = self.expect("ERROR");
        assert_eq!(v["code"], code, "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        v
    }

    /// Skips messages until one of type `kind` arrives.
    pub fn until(&mut self, kind: &str) -> Value {
        loop {
            let v = self.recv();
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// PING → PONG: proves the connection still works, and (since the relay
    /// answers in order) that nothing else is pending before it.
    pub fn ping(&mut self) {
        self.send(json!({"type": "PING"}));
        self.expect("PONG");
    }

    pub fn identify(&mut self, name: &str) -> String {
        self.send(json!({"type": "IDENTIFY", "name": name}));
        let v = self.expect("WELCOME");
        v["agent_id"].as_str().expect("agent_id").to_string()
    }

    /// JOIN and return the JOINED message.
    pub fn join(&mut self, channel: &str) -> Value {
        self.send(json!({"type": "JOIN", "channel": channel}));
        self.expect("JOINED")
    }

    pub fn msg(&mut self, to: &str, content: &str) {
        self.send(json!({"type": "MSG", "to": to, "content": content}));
    }
}
