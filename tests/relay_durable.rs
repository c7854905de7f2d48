//! Issue 14 §1 and §3 against the real relay: state kept in a data
//! directory across restarts and kill -9, damaged files, the directory
//! lock, compaction, `--ephemeral`, and `GET /health` on the relay port.
//! Every relay runs on loopback with a temp data directory; every read has
//! a timeout; nothing asserts on timing.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use support::{keyed, now_ms, watchdog, Key, Relay, TempHome, Ws, BIN, FAST};

/// A data directory removed on drop.
struct DataDir(PathBuf);

impl DataDir {
    fn new(tag: &str) -> DataDir {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "wb-durable-{tag}-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            now_ms()
        ));
        DataDir(p)
    }
    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
    fn journal(&self) -> PathBuf {
        let mut js: Vec<(u64, PathBuf)> = std::fs::read_dir(&self.0)
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_str()?.to_string();
                Some((n.strip_prefix("journal.")?.parse().ok()?, e.path()))
            })
            .collect();
        js.sort();
        js.pop().expect("a journal file").1
    }
    fn bytes(&self) -> u64 {
        std::fs::read_dir(&self.0)
            .unwrap()
            .flatten()
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(dir: &DataDir, extra: &[&str]) -> Relay {
    let mut args = vec!["--data-dir", dir.arg()];
    args.extend_from_slice(extra);
    Relay::start(&args)
}

/// SIGTERM, and wait for the relay to exit.
fn stop(mut relay: Relay) {
    relay.child.kill().ok();
    relay.child.wait().ok();
}

fn kill9(relay: &mut Relay) {
    // Child::kill is SIGKILL: no shutdown code runs.
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();
}

fn until(ws: &mut Ws, kind: &str) -> Value {
    ws.until(kind)
}

fn replay_of(ws: &mut Ws, channel: &str) -> (Value, Vec<Value>) {
    let joined = ws.join(channel);
    ws.ping_collect(joined)
}

trait Collect {
    fn ping_collect(&mut self, joined: Value) -> (Value, Vec<Value>);
}

impl Collect for Ws {
    /// Everything up to the PONG of a PING sent now: the replay that
    /// followed a JOINED (the relay answers in order).
    fn ping_collect(&mut self, joined: Value) -> (Value, Vec<Value>) {
        self.send(json!({"type": "PING"}));
        let mut out = Vec::new();
        for _ in 0..100_000 {
            let v = self.recv();
            if v["type"] == "PONG" {
                return (joined, out);
            }
            out.push(v);
        }
        panic!("no PONG");
    }
}

#[test]
fn a_restart_keeps_channels_invites_replay_proposals_and_bindings() {
    let _w = watchdog(Duration::from_secs(90));
    let dir = DataDir::new("restart");
    let relay = start(&dir, &["--buffer-size", "5"]);
    let (ka, kb) = (Key::new(), Key::new());
    let mut a = keyed(&relay, "alice", &ka);
    let mut b = keyed(&relay, "bob", &kb);
    a.send(json!({"type":"CREATE_CHANNEL","channel":"#priv","invite_only":true}));
    a.expect("JOINED");
    a.send(json!({"type":"INVITE","channel":"#priv","agent":kb.id}));
    until(&mut b, "MSG");
    for i in 0..7 {
        a.send(ka.msg("#priv", &format!("m{i}")));
        assert_eq!(a.expect("MSG")["content"], format!("m{i}"));
    }
    // A proposal accepted, and one left pending.
    a.send(ka.proposal(&kb.id, "first task", 600));
    let p1 = a.expect("PROPOSAL")["id"].as_str().unwrap().to_string();
    until(&mut b, "PROPOSAL");
    b.send(kb.act("ACCEPT", &p1, "payment_code", Some("pay-bob")));
    b.expect("ACCEPT");
    a.send(ka.proposal(&kb.id, "second task", 600));
    let p2 = a.until("PROPOSAL")["id"].as_str().unwrap().to_string();
    drop((a, b));
    stop(relay);

    let relay = start(&dir, &["--buffer-size", "5"]);
    let restored = relay.wait_log("state_restored");
    assert!(restored.contains("\"proposals\":2"), "{restored}");
    let mut a = keyed(&relay, "alice", &ka);
    let mut b = keyed(&relay, "bob", &kb);
    // The channel exists, is invite-only, and bob is still invited.
    a.send(json!({"type":"CREATE_CHANNEL","channel":"#priv"}));
    a.expect_error("CHANNEL_EXISTS");
    let (mut outsider, _) = relay.agent("outsider");
    outsider.send(json!({"type":"JOIN","channel":"#priv"}));
    outsider.expect_error("NOT_INVITED");
    outsider.send(json!({"type":"LIST_CHANNELS"}));
    let list = outsider.expect("CHANNELS");
    assert!(
        !list.to_string().contains("#priv"),
        "invite-only stays hidden: {list}"
    );
    // The creator is still invited too; bob gets the last 5 in order.
    let (joined, replay) = replay_of(&mut b, "#priv");
    assert_eq!(joined["channel"], "#priv");
    let contents: Vec<_> = replay.iter().map(|v| v["content"].clone()).collect();
    assert_eq!(contents, ["m2", "m3", "m4", "m5", "m6"].map(|s| json!(s)));
    assert!(replay
        .iter()
        .all(|v| v["replay"] == true && v["from"] == ka.id.as_str()));
    assert!(replay
        .iter()
        .all(|v| v["sig"].is_string() && v["sig_ts"].is_u64()));
    let (_, _) = replay_of(&mut a, "#priv");
    // p1 is still accepted: it completes; accepting it again is refused.
    b.send(kb.act("ACCEPT", &p1, "payment_code", None));
    let e = b.until("ERROR");
    assert_eq!(e["code"], "INVALID_PROPOSAL");
    assert!(
        e["message"].as_str().unwrap().contains("NOT_PENDING"),
        "{e}"
    );
    a.send(ka.act("COMPLETE", &p1, "proof", Some("done")));
    let c = a.expect("COMPLETE");
    assert_eq!(c["status"], "completed");
    // p2 is still pending: bob rejects it.
    b.send(kb.act("REJECT", &p2, "reason", Some("busy")));
    assert_eq!(b.until("REJECT")["status"], "rejected");
    // A resent PROPOSAL (captured before the restart) is still a replay.
    a.send(ka.proposal(&kb.id, "first task", 600));
    let e = a.until("ERROR");
    assert!(e["message"].as_str().unwrap().contains("REPLAYED"), "{e}");
    drop((a, b));
    stop(relay);

    // And the completion itself survives the next restart.
    let relay = start(&dir, &["--buffer-size", "5"]);
    let mut b = keyed(&relay, "bob", &kb);
    b.send(kb.act("ACCEPT", &p1, "payment_code", None));
    let e = b.expect_error("INVALID_PROPOSAL");
    assert!(
        e["message"].as_str().unwrap().contains("NOT_PENDING"),
        "{e}"
    );
}

#[test]
fn an_id_stays_bound_to_its_first_key_across_a_restart() {
    let _w = watchdog(Duration::from_secs(60));
    let dir = DataDir::new("bind");
    let v: Value = serde_json::from_str(include_str!("vectors/colliding_keys.json")).unwrap();
    let load = |i: usize| {
        let pem = v["keys"][i]["privkey"].as_str().unwrap();
        Key::from_signing(SigningKey::from_pkcs8_pem(pem).unwrap())
    };
    let (first, second) = (load(0), load(1));
    assert_eq!(first.id, second.id, "the fixture's ids collide");
    let relay = start(&dir, &[]);
    drop(keyed(&relay, "first", &first));
    stop(relay);
    let relay = start(&dir, &[]);
    let mut other = relay.client();
    other.send(json!({"type":"IDENTIFY","name":"second","pubkey":second.pem}));
    other.expect_error("IDENTITY_COLLISION");
    drop(keyed(&relay, "first", &first));
}

/// The client sends a stream of messages and proposals, the relay is
/// killed with SIGKILL part-way, and everything the client saw
/// acknowledged (its echo) is there after the restart.
#[test]
fn kill_9_during_a_stream_loses_nothing_acknowledged() {
    let _w = watchdog(Duration::from_secs(120));
    let dir = DataDir::new("kill9");
    let mut flags = vec![
        "--buffer-size",
        "5000",
        "--max-pending",
        "10000",
        "--outbox",
        "100000",
    ];
    flags.extend_from_slice(&FAST);
    let mut relay = start(&dir, &flags);
    let (ka, kb) = (Key::new(), Key::new());
    let mut a = keyed(&relay, "alice", &ka);
    let _b = keyed(&relay, "bob", &kb);
    a.join("#general");
    // Pipelined: many in flight when the kill lands.
    let total = 3000;
    let mut acked = Vec::new();
    let mut proposals = Vec::new();
    let mut sent = 0;
    let mut killed = false;
    while sent < total {
        let batch = 50.min(total - sent);
        for j in 0..batch {
            let n = sent + j;
            let r = if n % 10 == 9 {
                a.ws.send(tungstenite::Message::text(
                    ka.proposal(&kb.id, &format!("task {n}"), 600).to_string(),
                ))
            } else {
                a.ws.send(tungstenite::Message::text(
                    ka.msg("#general", &format!("n{n}")).to_string(),
                ))
            };
            if r.is_err() {
                break;
            }
        }
        sent += batch;
        if !killed && sent >= total / 2 {
            kill9(&mut relay);
            killed = true;
        }
        // Read what came back for this batch (or until the socket dies).
        for _ in 0..batch {
            match a.ws.read() {
                Ok(tungstenite::Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    match v["type"].as_str() {
                        Some("MSG") => acked.push(v["content"].as_str().unwrap().to_string()),
                        Some("PROPOSAL") => proposals.push(v["id"].as_str().unwrap().to_string()),
                        _ => panic!("unexpected {v}"),
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if killed {
            break;
        }
    }
    assert!(killed);
    assert!(
        acked.len() > 100,
        "the stream was acknowledged before the kill: {}",
        acked.len()
    );
    drop(a);

    let relay = start(&dir, &flags);
    let mut c = relay.client();
    c.identify("checker");
    let (_, replay) = replay_of(&mut c, "#general");
    let got: Vec<String> = replay
        .iter()
        .map(|v| v["content"].as_str().unwrap().to_string())
        .collect();
    // Every acknowledged one is there, in the order it was acknowledged.
    let mut it = got.iter();
    for want in &acked {
        assert!(
            it.any(|g| g == want),
            "acknowledged {want} lost after kill -9"
        );
    }
    // And every acknowledged proposal: bob can act on each.
    let mut b = keyed(&relay, "bob", &kb);
    for id in &proposals {
        b.send(kb.act("REJECT", id, "reason", Some("no")));
        let v = b.until("REJECT");
        assert_eq!(v["proposal_id"], id.as_str());
    }
}

#[test]
fn a_torn_last_record_is_dropped_with_a_log_line() {
    let _w = watchdog(Duration::from_secs(60));
    let dir = DataDir::new("torn");
    let relay = start(&dir, &[]);
    let (mut a, _) = relay.agent("a");
    a.send(json!({"type":"CREATE_CHANNEL","channel":"#kept"}));
    a.expect("JOINED");
    drop(a);
    stop(relay);
    let journal = dir.journal();
    let before = std::fs::metadata(&journal).unwrap().len();
    // Half a record, as a crash mid-write leaves it.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .unwrap();
    f.write_all(b"0badc0de chan {\"name\":\"#torn\",\"inv")
        .unwrap();
    drop(f);
    let relay = start(&dir, &[]);
    let log = relay.wait_log("journal_torn_record_dropped");
    assert!(log.contains(&format!("\"offset\":{before}")), "{log}");
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), before);
    let (mut a, _) = relay.agent("a");
    a.send(json!({"type":"CREATE_CHANNEL","channel":"#kept"}));
    a.expect_error("CHANNEL_EXISTS");
    a.send(json!({"type":"CREATE_CHANNEL","channel":"#torn"}));
    a.expect("JOINED");
}

#[test]
fn damage_mid_file_stops_the_relay_naming_the_file_and_offset() {
    let _w = watchdog(Duration::from_secs(60));
    let dir = DataDir::new("corrupt");
    let relay = start(&dir, &[]);
    let (mut a, _) = relay.agent("a");
    for ch in ["#one", "#two", "#three"] {
        a.send(json!({"type":"CREATE_CHANNEL","channel":ch}));
        a.expect("JOINED");
    }
    drop(a);
    stop(relay);
    let journal = dir.journal();
    let mut data = std::fs::read(&journal).unwrap();
    // Flip one byte inside the record for #two (not the last record).
    let at = data
        .windows(6)
        .position(|w| w == b"#two\"}" || w == b"\"#two\"")
        .unwrap();
    let line_start = data[..at].iter().rposition(|b| *b == b'\n').unwrap() + 1;
    data[at + 2] ^= 0x01;
    std::fs::write(&journal, &data).unwrap();
    let err = match Relay::try_start(&["--data-dir", dir.arg()]) {
        Ok(_) => panic!("a damaged journal was loaded"),
        Err(e) => e,
    };
    assert_ne!(err.0, Some(0), "{err:?}");
    let text = err.1;
    assert!(text.contains(journal.to_str().unwrap()), "{text}");
    assert!(
        text.contains(&format!("byte offset {line_start}")),
        "{text}"
    );
    assert!(text.contains("truncate -s"), "says how to recover: {text}");
    // Nothing was changed: the damaged file is as it was.
    assert_eq!(std::fs::read(&journal).unwrap(), data);
}

#[test]
fn a_journal_from_a_newer_version_is_refused() {
    let _w = watchdog(Duration::from_secs(30));
    let dir = DataDir::new("newer");
    std::fs::create_dir_all(&dir.0).unwrap();
    let body = r#"journal {"format":2,"writer":"workbench 9.0.0","gen":1}"#;
    let line = format!(
        "{:08x} {body}\n",
        workbench::relay::store::crc32(body.as_bytes())
    );
    std::fs::write(dir.0.join("journal.1"), line).unwrap();
    let err = match Relay::try_start(&["--data-dir", dir.arg()]) {
        Ok(_) => panic!("a newer journal was loaded"),
        Err(e) => e,
    };
    assert_ne!(err.0, Some(0));
    assert!(err.1.contains("newer workbench"), "{}", err.1);
    assert!(err.1.contains("workbench 9.0.0"), "{}", err.1);
}

#[test]
fn a_second_relay_on_the_same_directory_is_refused() {
    let _w = watchdog(Duration::from_secs(30));
    let dir = DataDir::new("lock");
    let first = start(&dir, &[]);
    let err = match Relay::try_start(&["--data-dir", dir.arg()]) {
        Ok(_) => panic!("two relays share one data directory"),
        Err(e) => e,
    };
    assert_ne!(err.0, Some(0));
    assert!(err.1.contains("in use by another relay"), "{}", err.1);
    assert!(
        err.1.contains(&first.child.id().to_string()),
        "names the pid: {}",
        err.1
    );
    // The first is unharmed; once it is gone the directory is free.
    let (mut a, _) = first.agent("a");
    a.ping();
    drop(a);
    stop(first);
    drop(start(&dir, &[]));
}

#[test]
fn compaction_keeps_the_data_directory_bounded() {
    let _w = watchdog(Duration::from_secs(90));
    let dir = DataDir::new("compact");
    let mut flags = vec!["--buffer-size", "5", "--compact-at", "8192"];
    flags.extend_from_slice(&FAST);
    let relay = start(&dir, &flags);
    let (mut a, _) = relay.agent("a");
    a.join("#general");
    let filler = "x".repeat(200);
    let n = 1000;
    for i in 0..n {
        a.msg("#general", &format!("{i} {filler}"));
        a.expect("MSG");
    }
    settle_compaction(&relay, &dir);
    // One more change after the last compaction settled: if the journal
    // was over the mark, this one starts (and settles) a last compaction.
    a.msg("#general", &format!("{n} {filler}"));
    a.expect("MSG");
    settle_compaction(&relay, &dir);
    // 1000 records of ~300 bytes went through; what is kept is about one
    // snapshot (5 messages) plus at most one journal's worth.
    let bytes = dir.bytes();
    let files: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .flatten()
        .map(|e| (e.file_name(), e.metadata().map(|m| m.len()).unwrap_or(0)))
        .collect();
    assert!(
        bytes < 3 * 8192 + 4096,
        "data directory holds {bytes} bytes: {files:?}"
    );
    drop(a);
    stop(relay);
    let relay = start(&dir, &flags);
    let mut c = relay.client();
    c.identify("c");
    let (_, replay) = replay_of(&mut c, "#general");
    let got: Vec<String> = replay
        .iter()
        .map(|v| {
            v["content"]
                .as_str()
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(got, ["996", "997", "998", "999", "1000"]);
}

/// The newest journal generation in `dir`.
fn newest_gen(dir: &DataDir) -> u64 {
    let j = dir.journal();
    let name = j.file_name().unwrap().to_str().unwrap();
    name.strip_prefix("journal.").unwrap().parse().unwrap()
}

/// Once a change is acknowledged, any compaction it started has moved the
/// journal to its new generation (under the hub's lock, before the
/// answer). Waits for that generation's snapshot to be written.
fn settle_compaction(relay: &Relay, dir: &DataDir) {
    let gen = newest_gen(dir);
    assert!(gen > 1, "no compaction happened");
    let needle = format!("snapshot.{gen}\"");
    let log = relay.wait_log(&needle);
    let line = log.lines().find(|l| l.contains(&needle)).unwrap_or("");
    assert!(line.contains("journal_compacted"), "{line}");
}

#[test]
fn ephemeral_keeps_nothing_and_writes_nothing() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("ephemeral");
    let run = |home: &Path| {
        let mut cmd = Command::new(BIN);
        cmd.args(["relay", "--ephemeral", "--port", "0", "--host", "127.0.0.1"])
            .env("HOME", home)
            .env_remove("XDG_STATE_HOME")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        support::die_with_parent(&mut cmd);
        support::Relay::from_child(cmd.spawn().unwrap())
    };
    let relay = run(&home.path);
    assert!(relay.log_text().contains("\"mode\":\"ephemeral\""));
    let (mut a, _) = relay.agent("a");
    a.send(json!({"type":"CREATE_CHANNEL","channel":"#gone"}));
    a.expect("JOINED");
    drop(a);
    stop(relay);
    let relay = run(&home.path);
    let (mut a, _) = relay.agent("a");
    a.send(json!({"type":"CREATE_CHANNEL","channel":"#gone"}));
    a.expect("JOINED");
    drop(a);
    stop(relay);
    let left: Vec<_> = std::fs::read_dir(&home.path).unwrap().flatten().collect();
    assert!(left.is_empty(), "--ephemeral wrote {left:?}");
}

#[test]
fn the_default_data_directory_is_under_xdg_state_home_or_home() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("defaultdir");
    let spawn = |env: &[(&str, &Path)]| {
        let mut cmd = Command::new(BIN);
        cmd.args(["relay", "--port", "0", "--host", "127.0.0.1"])
            .env_remove("XDG_STATE_HOME")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        support::die_with_parent(&mut cmd);
        support::Relay::from_child(cmd.spawn().unwrap())
    };
    let relay = spawn(&[("HOME", &home.path)]);
    let want = home.path.join(".local/state/workbench/relay");
    assert!(want.join("journal.1").is_file());
    assert!(relay.log_text().contains(want.to_str().unwrap()));
    stop(relay);
    let xdg = home.path.join("xdg");
    let relay = spawn(&[("HOME", &home.path), ("XDG_STATE_HOME", &xdg)]);
    assert!(xdg.join("workbench/relay/journal.1").is_file());
    stop(relay);
}

#[test]
fn bad_state_flags_are_usage_errors() {
    let _w = watchdog(Duration::from_secs(30));
    for args in [
        vec!["--ephemeral", "--data-dir", "/tmp/x"],
        vec!["--ephemeral", "--fsync", "always"],
        vec!["--fsync", "sometimes"],
        vec!["--compact-at", "10"],
        vec!["--data-dir", ""],
    ] {
        let out = Command::new(BIN)
            .arg("relay")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn fsync_always_keeps_state_too() {
    let _w = watchdog(Duration::from_secs(60));
    let dir = DataDir::new("always");
    let mut relay = start(&dir, &["--fsync", "always"]);
    assert!(relay.log_text().contains("\"fsync\":\"always\""));
    let (mut a, _) = relay.agent("a");
    a.join("#general");
    a.msg("#general", "kept");
    a.expect("MSG");
    drop(a);
    kill9(&mut relay);
    let relay = start(&dir, &["--fsync", "never"]);
    let mut c = relay.client();
    c.identify("c");
    let (_, replay) = replay_of(&mut c, "#general");
    assert_eq!(replay[0]["content"], "kept");
}

#[test]
fn get_health_answers_on_the_relay_port_and_websockets_still_work() {
    let _w = watchdog(Duration::from_secs(30));
    let dir = DataDir::new("health");
    let relay = start(&dir, &[]);
    let mut s = TcpStream::connect(("127.0.0.1", relay.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["ok"], true);
    assert_eq!(body["mode"], "durable");
    assert_eq!(body["node"], "test-relay");
    assert_eq!(body["data_dir"], dir.arg());
    // A WebSocket on the same port, before and after.
    let (mut a, _) = relay.agent("a");
    a.ping();
    // Other plain HTTP is not health: the handshake refuses it, and the
    // relay keeps serving.
    let mut s = TcpStream::connect(("127.0.0.1", relay.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /other HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    assert!(!text.contains("200 OK"), "{text}");
    a.ping();
    // The logs name the mode and the node on every line.
    let log = relay.log_text();
    assert!(log
        .lines()
        .all(|l| l.contains("\"mode\":\"durable\"") && l.contains("\"node\":\"test-relay\"")));
}
