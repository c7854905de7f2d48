//! `workbench chat-session <name>`: the detached process that holds one
//! identity on one relay for as long as it runs. It keeps the WebSocket,
//! proves its key when it holds one (`Client::identify` answers the
//! CHALLENGE), reconnects and re-joins with
//! backoff when the relay or the network goes away, and appends every
//! frame it receives to the inbox, numbered, without the duplicates a
//! relay replays on re-join. Local processes (`workbench mcp`, one or
//! many) use it through its loopback API (`api`).
//!
//! One loop owns the session state and the only writer of the relay
//! socket; a reader thread per connection, the API's connection threads
//! and the signal thread send it `Event`s. Inbox reads never go through
//! the loop: they wait on the inbox's condition variable.

use std::collections::{HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tungstenite::{Message, WebSocket};

use super::inbox::{self, Inbox, InboxWriter, ReadError};
use super::{api, Config, SessionDir, SessionInfo, SessionName};
use crate::relay::client::{self, Client};
use crate::relay::frame::{FrameReader, Incoming};
use crate::relay::identity::Identity;
use crate::relay::signing;
use crate::relay::transport::Stream;
use crate::{sys, util};

/// Bounds each step of connecting (TCP, WebSocket, IDENTIFY, each JOIN).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// With nothing heard for this long, ping the relay…
const IDLE_PING: Duration = Duration::from_secs(30);
/// …and call the connection dead if that ping is not answered in time.
const PING_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an API caller waits for the loop to answer a relay request.
const RELAY_ANSWER: Duration = Duration::from_secs(15);
/// Reconnect backoff: from the first to the largest delay, doubling.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Channel-message keys remembered to drop replayed duplicates.
const RECENT_KEYS: usize = 4096;
/// A channel the relay did not have at re-join (its creator has not
/// re-created it yet, after a restart without state) is tried again after
/// 1, 2, 4, … s, this many times.
const REJOIN_TRIES: u32 = 6;
/// Largest inbox batch the API returns, in bytes of JSON.
const MAX_BATCH: usize = 1 << 20;
/// Longest a `wait` request may block.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// API connections served at once (each is a thread); more are refused.
const MAX_API_CONNS: usize = 64;

type Reply = Sender<Result<Vec<Value>, String>>;

/// Everything the loop reacts to.
enum Event {
    /// A frame from connection number `gen`.
    Frame(u64, Value),
    Ping(u64, Vec<u8>),
    Lost(u64, String),
    /// An API caller's frame to send, answered with the relay's reply.
    Relay(Value, Reply),
    /// Stop (from the API, with an acknowledgement, or from a signal).
    Stop(Option<Sender<()>>),
}

/// Runs the session in the foreground until it is stopped. Fails (exit 1,
/// reason on stderr) if the first connection to the relay fails: a relay
/// that is down at connect is the caller's to fix, not ours to retry.
pub fn run(name: SessionName) -> Result<(), String> {
    // First, before any thread exists: signals become events.
    let signals = sys::shutdown_signals();
    let dir = SessionDir::new(name);
    if !dir.exists() {
        return Err(format!(
            "no chat session '{}' (no config.json in {}); chat_connect creates sessions",
            dir.name,
            dir.dir.display()
        ));
    }
    let _run_lock = sys::try_lock_file(&dir.path(".run.lock"))
        .map_err(|e| format!("chat session '{}' is already running ({e})", dir.name))?;
    let cfg = Config::load(&dir)?;
    let identity = match &cfg.identity {
        Some(p) => Some(Identity::load(p).map_err(|e| e.to_string())?),
        None => None,
    };
    let (inbox, writer, recent_entries) = inbox::open(&dir.inbox())
        .map_err(|e| format!("cannot open {}: {e}", dir.inbox().display()))?;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| format!("cannot listen on loopback: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let token: Arc<str> = Arc::from(util::random_hex(32).map_err(|e| e.to_string())?);

    let (tx, rx) = mpsc::channel();
    let mut recent = Recent::default();
    for e in &recent_entries {
        if let Some(k) = msg_key(e) {
            recent.insert(k);
        }
    }
    let mut s = Session {
        url: cfg.server.clone(),
        dir: dir.clone(),
        cfg,
        identity,
        writer,
        recent,
        tx: tx.clone(),
        link: None,
        gen: 0,
        pending: VecDeque::new(),
        agent_id: None,
        down: None,
        reconnects: 0,
        last_heard: Instant::now(),
        ping_sent: None,
        shared: Arc::new(Mutex::new(Value::Null)),
        rejoin: None,
    };
    let report = s.open_link()?;
    s.note(json!({"event": "connected", "agent_id": report.agent_id,
        "channels": report.joined, "failed": report.failed}));
    let info = SessionInfo {
        pid: std::process::id(),
        port,
        token: token.to_string(),
        started: util::rfc3339_now(),
        version: crate::VERSION.to_string(),
    };
    info.save(&dir)
        .map_err(|e| format!("cannot write {}: {e}", dir.info_file().display()))?;
    util::log_event(
        "session_ready",
        json!({"session": dir.name.as_str(), "server": s.url, "agent_id": report.agent_id, "port": port}),
    );
    // The one stdout line: whoever started us reads it and closes the
    // pipe, so nothing may be printed to stdout after it.
    println!(
        "chat session {} ready: agent {} on {}",
        dir.name, report.agent_id, s.url
    );
    let _ = std::io::stdout().flush();

    s.publish();
    let api = Arc::new(Api {
        token,
        tx: tx.clone(),
        inbox,
        status: s.shared.clone(),
    });
    std::thread::Builder::new()
        .name("chat-api".into())
        .spawn(move || serve_api(listener, api))
        .map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("chat-signals".into())
        .spawn(move || {
            if let Ok(sig) = signals.recv() {
                util::log_event("signal", json!({"signal": sig}));
                let _ = tx.send(Event::Stop(None));
            }
        })
        .map_err(|e| e.to_string())?;
    s.run_loop(rx);
    super::remove_info_if_pid(&dir, std::process::id());
    util::log_event("session_end", json!({"session": dir.name.as_str()}));
    Ok(())
}

/// The connection to the relay while it is up: the only writer.
struct Link {
    ws: WebSocket<Stream>,
}

/// While disconnected: since when, and when to try again.
struct Down {
    since_ms: u64,
    attempts: u32,
    next_try: Instant,
    why: String,
}

/// A request sent to the relay and not yet closed by its PONG.
struct Pending {
    /// None for our own keep-alive pings.
    reply: Option<Reply>,
    got: Vec<Value>,
    /// A CREATE_CHANNEL's channel and invite-only flag, remembered on success.
    creates: Option<(String, bool)>,
    /// A JOIN retried after a failed re-join.
    rejoin: Option<String>,
}

/// Channels whose re-join found no channel, to be tried again.
struct Rejoin {
    channels: Vec<String>,
    tries: u32,
    next_try: Instant,
}

struct ConnectReport {
    agent_id: String,
    joined: Vec<String>,
    failed: Vec<Value>,
}

struct Session {
    dir: SessionDir,
    cfg: Config,
    url: String,
    identity: Option<Identity>,
    writer: InboxWriter,
    recent: Recent,
    tx: Sender<Event>,
    link: Option<Link>,
    /// Numbers connections, so events from an old reader are ignored.
    gen: u64,
    pending: VecDeque<Pending>,
    agent_id: Option<String>,
    down: Option<Down>,
    reconnects: u64,
    last_heard: Instant,
    ping_sent: Option<Instant>,
    /// The latest status, for the API.
    shared: Arc<Mutex<Value>>,
    rejoin: Option<Rejoin>,
}

impl Session {
    fn run_loop(&mut self, rx: Receiver<Event>) {
        loop {
            self.publish();
            let timeout = self
                .next_deadline()
                .saturating_duration_since(Instant::now());
            match rx.recv_timeout(timeout) {
                Ok(Event::Frame(gen, v)) if gen == self.gen => self.on_frame(v),
                Ok(Event::Ping(gen, p)) if gen == self.gen => self.on_ping(p),
                Ok(Event::Lost(gen, why)) if gen == self.gen && self.link.is_some() => {
                    self.on_lost(why)
                }
                Ok(Event::Frame(..) | Event::Ping(..) | Event::Lost(..)) => {}
                Ok(Event::Relay(frame, reply)) => self.on_relay(frame, reply),
                Ok(Event::Stop(ack)) => {
                    self.goodbye(&rx);
                    if let Some(ack) = ack {
                        let _ = ack.send(());
                    }
                    return;
                }
                Err(RecvTimeoutError::Timeout) => self.on_timer(),
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// When the loop must wake with no event: to ping an idle relay, to
    /// give up on an unanswered ping, or to try reconnecting.
    fn next_deadline(&self) -> Instant {
        match (&self.link, &self.down, self.ping_sent) {
            (Some(_), _, Some(sent)) => sent + PING_TIMEOUT,
            (Some(_), _, None) => {
                let ping = self.last_heard + IDLE_PING;
                self.rejoin.as_ref().map_or(ping, |r| r.next_try.min(ping))
            }
            (None, Some(d), _) => d.next_try,
            (None, None, _) => Instant::now() + Duration::from_secs(3600),
        }
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if self.link.is_some() {
            let ping_sent = self.ping_sent;
            match ping_sent {
                Some(sent) if now >= sent + PING_TIMEOUT => {
                    self.drop_link();
                    self.on_lost(format!(
                        "the relay did not answer a ping within {} s",
                        PING_TIMEOUT.as_secs()
                    ));
                }
                None if now >= self.last_heard + IDLE_PING
                    && self.write(&[json!({"type": "PING"})]).is_ok() =>
                {
                    self.ping_sent = Some(now);
                    self.pending.push_back(Pending {
                        reply: None,
                        got: Vec::new(),
                        creates: None,
                        rejoin: None,
                    });
                }
                _ if self.rejoin.as_ref().is_some_and(|r| now >= r.next_try) => self.retry_joins(),
                _ => {}
            }
        } else if self.down.as_ref().is_some_and(|d| now >= d.next_try) {
            self.try_reconnect();
        }
    }

    /// Writes frames (then flushes once) on the only writer; a failure
    /// means the connection is gone.
    fn write(&mut self, frames: &[Value]) -> Result<(), String> {
        let Some(link) = self.link.as_mut() else {
            return Err("not connected".into());
        };
        let mut r = Ok(());
        for f in frames {
            r = r.and_then(|_| link.ws.write(Message::text(f.to_string())));
        }
        match r.and_then(|_| link.ws.flush()) {
            Ok(()) => Ok(()),
            Err(e) => {
                let why = format!("cannot write to the relay: {e}");
                self.drop_link();
                self.on_lost(why.clone());
                Err(why)
            }
        }
    }

    fn drop_link(&mut self) {
        if let Some(link) = &self.link {
            link.ws.get_ref().shutdown();
        }
    }

    fn on_frame(&mut self, v: Value) {
        self.last_heard = Instant::now();
        self.ping_sent = None;
        if v["type"] == "PONG" {
            if let Some(p) = self.pending.pop_front() {
                self.finish(p);
            }
            return;
        }
        if let Some(p) = self
            .pending
            .front_mut()
            .filter(|p| p.reply.is_some() || p.rejoin.is_some())
        {
            p.got.push(v.clone());
            // A refusal is the caller's answer, not news for the inbox.
            if v["type"] == "ERROR" {
                return;
            }
        }
        self.record(v);
    }

    fn finish(&mut self, p: Pending) {
        let refused = p.got.iter().any(|v| v["type"] == "ERROR");
        if let (Some((channel, invite_only)), false) = (&p.creates, refused) {
            if !self.cfg.created.iter().any(|(c, _)| c == channel) {
                self.cfg.created.push((channel.clone(), *invite_only));
                self.save_config();
            }
        }
        if let Some(ch) = &p.rejoin {
            let err = p.got.iter().find(|v| v["type"] == "ERROR");
            self.rejoined(ch, err);
        }
        if let Some(reply) = p.reply {
            let _ = reply.send(Ok(p.got));
        }
    }

    /// Sends a JOIN for every channel waiting to be re-joined.
    fn retry_joins(&mut self) {
        let Some(r) = self.rejoin.as_mut() else {
            return;
        };
        r.tries += 1;
        r.next_try = Instant::now() + Duration::from_secs(1 << r.tries.min(10));
        let channels = std::mem::take(&mut r.channels);
        for ch in channels {
            if self
                .write(&[
                    json!({"type": "JOIN", "channel": ch}),
                    json!({"type": "PING"}),
                ])
                .is_err()
            {
                return;
            }
            self.pending.push_back(Pending {
                reply: None,
                got: Vec::new(),
                creates: None,
                rejoin: Some(ch),
            });
        }
    }

    /// The answer to a retried JOIN: joined (JOINED put it in the channel
    /// list), or refused again, to be retried or given up.
    fn rejoined(&mut self, ch: &str, err: Option<&Value>) {
        let Some(r) = self.rejoin.as_mut() else {
            return;
        };
        match err {
            None => {
                let tries = r.tries;
                self.note(json!({"event": "rejoined", "channel": ch, "tries": tries}));
            }
            Some(_) if r.tries < REJOIN_TRIES => r.channels.push(ch.to_string()),
            Some(e) => {
                let note = json!({"event": "rejoin_abandoned", "channel": ch, "code": e["code"],
                    "message": e["message"], "tries": r.tries});
                self.note(note);
            }
        }
        if self.rejoin.as_ref().is_some_and(|r| r.channels.is_empty())
            && !self.pending.iter().any(|p| p.rejoin.is_some())
        {
            self.rejoin = None;
        }
    }

    fn on_ping(&mut self, payload: Vec<u8>) {
        self.last_heard = Instant::now();
        let Some(link) = self.link.as_mut() else {
            return;
        };
        if let Err(e) = link.ws.send(Message::Pong(payload.into())) {
            let why = format!("cannot answer the relay's ping: {e}");
            self.drop_link();
            self.on_lost(why);
        }
    }

    /// Keeps track of membership, drops replayed duplicates, and appends
    /// the rest to the inbox. Query answers (PONG, CHANNELS, AGENTS) go
    /// only to the caller that asked.
    fn record(&mut self, v: Value) {
        let kind = v["type"].as_str().unwrap_or("");
        let channel = v["channel"].as_str().map(str::to_string);
        match (kind, channel) {
            ("JOINED", Some(ch)) if !self.cfg.channels.contains(&ch) => {
                self.cfg.channels.push(ch);
                self.save_config();
            }
            ("LEFT", Some(ch)) if self.cfg.channels.contains(&ch) => {
                self.cfg.channels.retain(|c| *c != ch);
                self.save_config();
            }
            _ => {}
        }
        if matches!(kind, "PONG" | "CHANNELS" | "AGENTS") {
            return;
        }
        if let Some(k) = msg_key(&v) {
            let fresh = self.recent.insert(k);
            if !fresh && v["replay"] == true {
                return;
            }
        }
        if let Value::Object(obj) = v {
            self.writer.append(obj);
        }
    }

    /// A session event in the inbox, so a reader learns of gaps.
    fn note(&mut self, fields: Value) {
        let mut obj = Map::new();
        obj.insert("type".into(), json!("SESSION"));
        if let Value::Object(f) = fields {
            obj.extend(f);
        }
        self.writer.append(obj);
    }

    fn save_config(&self) {
        if let Err(e) = self.cfg.save(&self.dir) {
            util::log_event("config_write_failed", json!({"error": e.to_string()}));
        }
    }

    fn on_relay(&mut self, mut frame: Value, reply: Reply) {
        if self.link.is_none() {
            let _ = reply.send(Err(self.down_message()));
            return;
        }
        if let Err(e) = sign(&mut frame, self.identity.as_ref()) {
            let _ = reply.send(Err(e));
            return;
        }
        let creates = (frame["type"] == "CREATE_CHANNEL")
            .then(|| frame["channel"].as_str().map(str::to_string))
            .flatten()
            .map(|c| (c, frame["invite_only"] == true));
        if let Err(why) = self.write(&[frame, json!({"type": "PING"})]) {
            let _ = reply.send(Err(format!(
                "{why}; the session is reconnecting: check chat_read for whether it arrived, then try again"
            )));
            return;
        }
        self.pending.push_back(Pending {
            reply: Some(reply),
            got: Vec::new(),
            creates,
            rejoin: None,
        });
    }

    fn down_message(&self) -> String {
        match &self.down {
            Some(d) => format!(
                "the session is not connected to the relay ({}); it is reconnecting (attempt {}, next in {:.1} s): try again shortly",
                d.why,
                d.attempts + 1,
                d.next_try.saturating_duration_since(Instant::now()).as_secs_f64()
            ),
            None => "the session is not connected to the relay".into(),
        }
    }

    fn on_lost(&mut self, why: String) {
        self.link = None;
        self.ping_sent = None;
        for p in self.pending.drain(..) {
            if let Some(reply) = p.reply {
                let _ = reply.send(Err(format!(
                    "the connection to the relay was lost before it answered ({why}); the session is reconnecting: check chat_read for whether it arrived, then try again"
                )));
            }
        }
        util::log_event("disconnected", json!({"why": why}));
        self.note(json!({"event": "disconnected", "why": why}));
        self.down = Some(Down {
            since_ms: util::now_ms(),
            attempts: 0,
            next_try: Instant::now() + backoff(0),
            why,
        });
    }

    fn try_reconnect(&mut self) {
        let previous = self.agent_id.clone();
        match self.open_link() {
            Ok(report) => {
                let down = self.down.take();
                self.reconnects += 1;
                let down_ms = down.as_ref().map_or(0, |d| util::now_ms() - d.since_ms);
                util::log_event(
                    "reconnected",
                    json!({"agent_id": report.agent_id, "down_ms": down_ms}),
                );
                let changed = previous.as_deref() != Some(report.agent_id.as_str());
                self.note(json!({
                    "event": "reconnected",
                    "agent_id": report.agent_id,
                    "previous_agent_id": if changed { json!(previous) } else { Value::Null },
                    "down_ms": down_ms,
                    "attempts": down.as_ref().map_or(0, |d| d.attempts + 1),
                    "rejoined": report.joined,
                    "failed": report.failed,
                    "gap": "frames sent to this agent while it was disconnected were not delivered, except channel messages the relay replayed on re-join (those are in the inbox, without duplicates)",
                }));
            }
            Err(e) => {
                if let Some(d) = self.down.as_mut() {
                    d.attempts += 1;
                    d.next_try = Instant::now() + backoff(d.attempts);
                    d.why = e.clone();
                    util::log_event(
                        "reconnect_failed",
                        json!({"error": e, "attempts": d.attempts}),
                    );
                }
            }
        }
    }

    /// Connects, identifies (answering a CHALLENGE), and joins (or, for a
    /// channel this session created and the relay forgot, re-creates) every
    /// channel, then hands the socket to a reader thread.
    fn open_link(&mut self) -> Result<ConnectReport, String> {
        let mut c = Client::connect(&self.url).map_err(|e| e.to_string())?;
        c.set_timeout(Some(HANDSHAKE_TIMEOUT));
        // With a key, `identify` proves it (`prove: true`, CHALLENGE answered).
        let id = c
            .identify(&self.cfg.name, self.identity.as_ref())
            .map_err(|e| e.to_string())?;
        self.agent_id = Some(id.clone());
        let mut joined = Vec::new();
        let mut failed = Vec::new();
        let mut missing = Vec::new();
        for ch in self.cfg.channels.clone() {
            let (frames, mut err) = exchange(&mut c, &json!({"type": "JOIN", "channel": ch}))?;
            self.record_all(frames);
            let created = self.cfg.created.iter().find(|(c, _)| *c == ch).cloned();
            if let (Some(e), Some((_, invite_only))) = (&err, created) {
                if e["code"] == "CHANNEL_NOT_FOUND" {
                    let create = json!({"type": "CREATE_CHANNEL", "channel": ch, "invite_only": invite_only});
                    let (frames, e2) = exchange(&mut c, &create)?;
                    self.record_all(frames);
                    err = e2;
                }
            }
            match err {
                None => joined.push(ch),
                Some(e) => {
                    self.cfg.channels.retain(|c| *c != ch);
                    if e["code"] == "CHANNEL_NOT_FOUND" {
                        missing.push(ch.clone());
                    }
                    failed.push(
                        json!({"channel": ch, "code": e["code"], "message": e["message"],
                        "retrying": e["code"] == "CHANNEL_NOT_FOUND"}),
                    );
                }
            }
        }
        if !failed.is_empty() {
            self.save_config();
        }
        self.rejoin = (!missing.is_empty()).then(|| Rejoin {
            channels: missing,
            tries: 0,
            next_try: Instant::now() + Duration::from_secs(1),
        });
        c.set_timeout(None);
        let (reader, ws) = c.split();
        let _ = ws
            .get_ref()
            .tcp()
            .set_write_timeout(Some(Duration::from_secs(10)));
        self.gen += 1;
        let gen = self.gen;
        let tx = self.tx.clone();
        std::thread::Builder::new()
            .name(format!("chat-relay-{gen}"))
            .spawn(move || read_relay(gen, reader, tx))
            .map_err(|e| format!("cannot start the reader thread: {e}"))?;
        self.link = Some(Link { ws });
        self.last_heard = Instant::now();
        self.ping_sent = None;
        Ok(ConnectReport {
            agent_id: id,
            joined,
            failed,
        })
    }

    fn record_all(&mut self, frames: Vec<Value>) {
        for f in frames {
            self.record(f);
        }
    }

    /// Updates the status the API answers without asking the loop, so a
    /// status call is answered even while the loop is busy reconnecting.
    fn publish(&self) {
        let v = self.status();
        *self.shared.lock().unwrap_or_else(|p| p.into_inner()) = v;
    }

    fn status(&self) -> Value {
        json!({
            "ok": true,
            "session": self.dir.name.as_str(),
            "agent_id": self.agent_id,
            "connected": self.link.is_some(),
            "channels": self.cfg.channels,
            "server": self.url,
            "name": self.cfg.name,
            "keyed": self.identity.is_some(),
            "identity": self.cfg.identity,

            "reconnects": self.reconnects,
            "down": self.down.as_ref().map(|d| json!({"since": d.since_ms, "attempts": d.attempts, "why": d.why})),
        })
    }

    /// Ends the session politely: a close frame, then (up to 2 s) the
    /// relay's echo, sent only once it has forgotten this agent, so a
    /// session started again at once is not refused as already connected.
    fn goodbye(&mut self, rx: &Receiver<Event>) {
        let Some(mut link) = self.link.take() else {
            return;
        };
        let _ = link.ws.close(None);
        let _ = link.ws.flush();
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Ok(ev) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            match ev {
                Event::Lost(gen, _) if gen == self.gen => break,
                Event::Relay(_, reply) => {
                    let _ = reply.send(Err("the session is stopping".into()));
                }
                _ => {}
            }
        }
        link.ws.get_ref().shutdown();
    }
}

fn backoff(attempt: u32) -> Duration {
    let base = BACKOFF_FIRST
        .saturating_mul(1u32 << attempt.min(10))
        .min(BACKOFF_MAX);
    // Up to 25% jitter, so sessions of one relay do not all retry at once.
    let jitter = (util::now_ms() % 1000) as u32 * base.as_millis() as u32 / 4000;
    base + Duration::from_millis(jitter as u64)
}

/// Sends `msg` then a PING; returns what came back before the PONG, and
/// the first ERROR (the relay answers one connection in order).
fn exchange(c: &mut Client, msg: &Value) -> Result<(Vec<Value>, Option<Value>), String> {
    c.send(msg).map_err(|e| e.to_string())?;
    c.send(&json!({"type": "PING"}))
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut err = None;
    loop {
        let v = c.recv().map_err(|e| e.to_string())?;
        match v["type"].as_str() {
            Some("PONG") => return Ok((got, err)),
            Some("ERROR") if err.is_none() => err = Some(v),
            _ => got.push(v),
        }
    }
}

/// Signs what a keyed agent must sign, as 0.3.0's client does: MSG (with
/// `ts`) when there is a key; proposals always, so without a key they are
/// refused here with what to do.
fn sign(frame: &mut Value, identity: Option<&Identity>) -> Result<(), String> {
    let kind = frame["type"].as_str().unwrap_or("").to_string();
    match kind.as_str() {
        "MSG" => {
            if let Some(id) = identity {
                client::sign_msg(frame, id);
            }
            Ok(())
        }
        "PROPOSAL" | "ACCEPT" | "REJECT" | "COMPLETE" | "DISPUTE" => {
            let id = identity.ok_or(
                "proposals are signed, and this session has no identity: chat_disconnect it and chat_connect again with identity=<identity file> (`workbench identity --generate` makes one)",
            )?;
            let obj = frame.as_object_mut().ok_or("a frame must be an object")?;
            let text = signing::signing_text(obj).ok_or("this frame cannot be signed")?;
            obj.insert("sig".into(), json!(id.sign(&text)));
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The reader thread of connection `gen`: frames to the loop, until the
/// connection ends.
fn read_relay(gen: u64, mut reader: FrameReader<Stream>, tx: Sender<Event>) {
    loop {
        let ev = match reader.next_message() {
            Ok(Incoming::Text(t)) => match serde_json::from_str::<Value>(&t) {
                Ok(v) if v.is_object() => Event::Frame(gen, v),
                _ => {
                    util::log_event("bad_frame", json!({"why": "not a JSON object"}));
                    continue;
                }
            },
            Ok(Incoming::Ping(p)) => Event::Ping(gen, p),
            Ok(Incoming::Close(_)) => Event::Lost(gen, "the relay closed the connection".into()),
            Ok(_) => continue,
            Err(e) => Event::Lost(gen, format!("connection lost: {e}")),
        };
        let last = matches!(ev, Event::Lost(..));
        if tx.send(ev).is_err() || last {
            return;
        }
    }
}

/// What identifies one channel message, replayed or not: a relay replays
/// its ring with the original sender, target, content, signature and `ts`.
fn msg_key(v: &Value) -> Option<u64> {
    if v["type"] != "MSG" || !v["to"].as_str()?.starts_with('#') {
        return None;
    }
    let mut h = DefaultHasher::new();
    for k in ["from", "to", "content", "sig"] {
        v[k].as_str().unwrap_or("").hash(&mut h);
    }
    v["ts"].as_u64().hash(&mut h);
    Some(h.finish())
}

/// A bounded set of recent message keys (oldest forgotten first).
#[derive(Default)]
struct Recent {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Recent {
    /// True when `k` was not there yet.
    fn insert(&mut self, k: u64) -> bool {
        if !self.set.insert(k) {
            return false;
        }
        self.order.push_back(k);
        if self.order.len() > RECENT_KEYS {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

// ---------- the loopback API ----------

/// What the API's connection threads share.
struct Api {
    token: Arc<str>,
    tx: Sender<Event>,
    inbox: Arc<Inbox>,
    status: Arc<Mutex<Value>>,
}

fn serve_api(listener: TcpListener, api: Arc<Api>) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                util::log_event("api_accept_failed", json!({"error": e.to_string()}));
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_API_CONNS {
            active.fetch_sub(1, Ordering::SeqCst);
            let busy = json!({"ok": false, "error": format!("the session is serving {MAX_API_CONNS} calls already; try again")});
            let _ = (&stream).write_all(format!("{busy}\n").as_bytes());
            continue;
        }
        let (api, done) = (api.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("chat-api-conn".into())
            .spawn(move || {
                handle_api(stream, &api);
                done.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            active.fetch_sub(1, Ordering::SeqCst);
            util::log_event("api_thread_failed", json!({"error": e.to_string()}));
        }
    }
}

fn handle_api(stream: TcpStream, api: &Api) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_nodelay(true);
    let mut line = String::new();
    let read = BufReader::new((&stream).take(api::MAX_REQUEST as u64 + 1)).read_line(&mut line);
    let answer = match read {
        Err(e) => Err(format!("cannot read the request: {e}")),
        Ok(_) if line.len() > api::MAX_REQUEST => {
            Err(format!("request over the {}-byte limit", api::MAX_REQUEST))
        }
        Ok(_) => match serde_json::from_str::<Value>(&line) {
            Err(e) => Err(format!("the request is not JSON: {e}")),
            Ok(req) => {
                let given = req["token"].as_str().unwrap_or("");
                if util::constant_time_eq(given.as_bytes(), api.token.as_bytes()) {
                    handle_request(&req, api)
                } else {
                    Err("token not accepted".into())
                }
            }
        },
    };
    let mut text = match answer {
        Ok(body) => body,
        Err(e) => json!({"ok": false, "error": e}).to_string(),
    };
    text.push('\n');
    let _ = (&stream).write_all(text.as_bytes());
}

/// One API request to its answer line (JSON text, with `"ok": true`).
fn handle_request(req: &Value, api: &Api) -> Result<String, String> {
    let gone = || "the session is stopping".to_string();
    let (tx, inbox) = (&api.tx, &api.inbox);
    match req["op"].as_str().unwrap_or("") {
        "status" => {
            let mut v = api.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
            v["last_seq"] = json!(inbox.last_seq());
            Ok(v.to_string())
        }
        op @ ("read" | "wait") => {
            let since = match &req["since"] {
                Value::Null => 0,
                v => v.as_u64().ok_or("since must be a cursor ≥ 0")?,
            };
            let limit = req["limit"].as_u64().unwrap_or(100).clamp(1, 1000) as usize;
            let wait = if op == "wait" {
                Duration::from_millis(req["timeout_ms"].as_u64().unwrap_or(0)).min(MAX_WAIT)
            } else {
                Duration::ZERO
            };
            let b = inbox
                .read(since, limit, MAX_BATCH, wait)
                .map_err(|ReadError::AheadOfInbox { since, last_seq }| {
                    format!("since={since} is ahead of this session's inbox (its last message is {last_seq}); pass the cursor a chat_read or chat_wait returned, or 0")
                })?;
            let dropped = b.dropped.map(|(from, to)| json!({"from": from, "to": to}));
            let mut out = String::from("{\"ok\":true,\"messages\":[");
            out.push_str(&b.lines.join(","));
            out.push_str(&format!(
                "],\"cursor\":{},\"last_seq\":{},\"dropped\":{}}}",
                b.cursor,
                b.last_seq,
                dropped.unwrap_or(Value::Null)
            ));
            Ok(out)
        }
        "relay" => {
            let frame = req["frame"].clone();
            match frame["type"].as_str() {
                None => return Err("relay needs a frame object with a type".into()),
                Some("IDENTIFY" | "VERIFY_IDENTITY") => {
                    return Err("the session identifies itself; it cannot be sent IDENTIFY".into())
                }
                Some(_) => {}
            }
            let (rtx, rrx) = mpsc::channel();
            tx.send(Event::Relay(frame, rtx)).map_err(|_| gone())?;
            let frames = rrx
                .recv_timeout(RELAY_ANSWER)
                .map_err(|_| "the relay did not answer within 15 s".to_string())??;
            Ok(json!({"ok": true, "frames": frames}).to_string())
        }
        "stop" => {
            let (rtx, rrx) = mpsc::channel();
            tx.send(Event::Stop(Some(rtx))).map_err(|_| gone())?;
            let _ = rrx.recv_timeout(Duration::from_secs(5));
            Ok(json!({"ok": true, "stopped": true}).to_string())
        }
        other => Err(format!(
            "unknown op '{other}' (status, read, wait, relay, stop)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replayed_channel_messages_share_a_key_with_the_original() {
        let live = json!({"type":"MSG","from":"@a","to":"#r","content":"hi","ts":5});
        let mut replay = live.clone();
        replay["replay"] = json!(true);
        assert_eq!(msg_key(&live), msg_key(&replay));
        assert_ne!(
            msg_key(&live),
            msg_key(&json!({"type":"MSG","from":"@a","to":"#r","content":"hi","ts":6}))
        );
        assert_eq!(
            msg_key(&json!({"type":"MSG","from":"@a","to":"@b","content":"hi","ts":5})),
            None,
            "DMs are never replayed"
        );
        let mut r = Recent::default();
        assert!(r.insert(1));
        assert!(!r.insert(1));
        for k in 2..(RECENT_KEYS as u64 + 10) {
            r.insert(k);
        }
        assert!(r.set.len() <= RECENT_KEYS);
        assert!(r.insert(1), "the oldest keys are forgotten");
    }

    #[test]
    fn backoff_doubles_to_a_cap() {
        assert!(backoff(0) >= BACKOFF_FIRST && backoff(0) < BACKOFF_FIRST * 2);
        assert!(backoff(30) <= BACKOFF_MAX + BACKOFF_MAX / 4);
        assert!(backoff(3) >= BACKOFF_FIRST * 8);
    }

    #[test]
    fn proposals_need_a_key_and_msgs_are_signed_with_one() {
        let mut p = json!({"type":"PROPOSAL","to":"@b","task":"t"});
        assert!(sign(&mut p, None).unwrap_err().contains("identity"));
        let id = Identity::generate("t").unwrap();
        sign(&mut p, Some(&id)).unwrap();
        assert!(p["sig"].is_string());
        let mut m = json!({"type":"MSG","to":"#r","content":"x"});
        sign(&mut m, None).unwrap();
        assert!(m.get("sig").is_none());
        sign(&mut m, Some(&id)).unwrap();
        assert!(m["sig"].is_string() && m["ts"].is_u64());
    }
}
