//! The relay chat tools of `workbench mcp` against a real `workbench relay`:
//! MCP agents (our pipe client, and the official MCP Python SDK), a 0.3.0
//! style Node client, restarts of every process involved, and bad input.
//! Everything runs on 127.0.0.1; every test has a watchdog.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{die_with_parent, watchdog, Mcp, Relay, TempHome, Ws, BIN};

// ---------- helpers ----------

/// A temp home (whose Drop also ends the chat sessions under it), with
/// the chat helpers.
struct Home(TempHome);

impl Home {
    fn new(tag: &str) -> Home {
        Home(TempHome::new(tag))
    }

    fn session_dir(&self, name: &str) -> PathBuf {
        self.0.path.join(".chat").join(name)
    }

    fn session_pid(&self, name: &str) -> Option<u32> {
        let text = std::fs::read_to_string(self.session_dir(name).join(".session.json")).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        v["pid"].as_u64().map(|p| p as u32)
    }

    /// A new identity file (mode 0600) and the agent id it gives.
    fn identity(&self, name: &str) -> (PathBuf, String) {
        self.0.identity(name)
    }

    fn mcp(&self) -> Mcp {
        let mut m = Mcp::start(&self.0);
        m.initialize();
        m
    }
}

fn kill(relay: &mut Relay) {
    let _ = relay.child.kill();
    let _ = relay.child.wait();
}

fn messages(v: &Value) -> Vec<Value> {
    v["messages"].as_array().cloned().unwrap_or_default()
}

/// chat_wait until an entry matches `pred`; moves `cursor` past it.
fn wait_for(m: &mut Mcp, session: &str, cursor: &mut u64, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(40);
    while Instant::now() < deadline {
        let r = m.ok(
            "chat_wait",
            json!({"session": session, "since": *cursor, "timeout_seconds": 5}),
        );
        for e in messages(&r) {
            *cursor = e["seq"].as_u64().unwrap();
            if pred(&e) {
                return e;
            }
        }
        *cursor = r["cursor"].as_u64().unwrap();
    }
    panic!("{session} never saw the expected entry");
}

/// Every inbox entry of a session, from the beginning.
fn read_all(m: &mut Mcp, session: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = 0;
    loop {
        let r = m.ok(
            "chat_read",
            json!({"session": session, "since": cursor, "limit": 1000}),
        );
        let batch = messages(&r);
        if batch.is_empty() {
            return out;
        }
        cursor = r["cursor"].as_u64().unwrap();
        out.extend(batch);
    }
}

fn contents_from(entries: &[Value], to: &str) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e["type"] == "MSG" && e["to"] == to)
        .map(|e| e["content"].as_str().unwrap().to_string())
        .collect()
}

fn is_msg(e: &Value, to: &str, content: &str) -> bool {
    e["type"] == "MSG" && e["to"] == to && e["content"] == content
}

fn connect(
    m: &mut Mcp,
    relay: &str,
    name: &str,
    identity: Option<&Path>,
    channels: &[&str],
) -> Value {
    let mut a = json!({"server": relay, "name": name, "channels": channels});
    if let Some(p) = identity {
        a["identity"] = json!(p);
    }
    m.ok("chat_connect", a)
}

/// The seqs are 1, 2, 3, … with no gap and no repeat.
fn assert_numbered(entries: &[Value]) {
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e["seq"], json!(i as u64 + 1), "entry {i}: {e}");
    }
}

// ---------- two agents over MCP, one of them the official Python SDK ----------

/// The Python with the official MCP SDK: the venv `.ci/run` makes for it
/// (tests/mcp_http/.venv), else the machine's python3.
fn python() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_http/.venv/bin/python3");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

fn python_has_mcp_sdk() -> bool {
    Command::new(python())
        .args(["-c", "import mcp.client.stdio"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn two_mcp_agents_talk_dm_and_settle_a_proposal_one_through_the_python_sdk() {
    let _w = watchdog(Duration::from_secs(150));
    if !python_has_mcp_sdk() {
        assert!(
            std::env::var("WORKBENCH_REQUIRE_MCP_SDK").as_deref() != Ok("1"),
            "the MCP Python SDK is required (pip install mcp, see .ci/run)"
        );
        eprintln!(
            "SKIPPED: no python3 with the `mcp` package (pip install mcp==2.3.0, or see .ci/run)"
        );
        return;
    }
    let home = Home::new("chat-sdk");
    let relay = Relay::start(&[]);
    let (alice_id_file, alice_id) = home.identity("alice");
    let (bob_id_file, bob_id) = home.identity("bob");

    let mut a = home.mcp();
    let c = connect(&mut a, &relay.url(), "alice", Some(&alice_id_file), &[]);
    assert_eq!(c["agent_id"], alice_id.as_str());
    let created = a.ok(
        "chat_create",
        json!({"session": "alice", "channel": "#lab"}),
    );
    assert_eq!(created["channel"], "#lab");
    let mut cursor = c["last_seq"].as_u64().unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chat_sdk/agent_b.py");
    let mut cmd = Command::new(python());
    cmd.arg(script)
        .arg(BIN)
        .arg(relay.url())
        .arg(&bob_id_file)
        .arg(&home.0.path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    die_with_parent(&mut cmd);
    let mut b = cmd.spawn().unwrap();
    let mut b_out = BufReader::new(b.stdout.take().unwrap());
    let mut line = String::new();
    b_out.read_line(&mut line).unwrap();
    let ready: Value = serde_json::from_str(&line).unwrap_or_else(|_| {
        let mut err = String::new();
        let _ = b.stderr.take().unwrap().read_to_string(&mut err);
        panic!("agent B did not get ready: {line:?} {err}")
    });
    assert_eq!(ready["agent_id"], bob_id.as_str());

    // The channel both ways.
    a.ok(
        "chat_send",
        json!({"session": "alice", "to": "#lab", "content": "hello from A"}),
    );
    let hello = wait_for(&mut a, "alice", &mut cursor, |e| {
        is_msg(e, "#lab", "hello from B")
    });
    assert_eq!(hello["from"], bob_id.as_str());
    assert!(hello["sig"].is_string(), "a keyed session signs: {hello}");

    // A DM both ways.
    let sent = a.ok(
        "chat_send",
        json!({"session": "alice", "to": bob_id, "content": "psst"}),
    );
    assert_eq!(sent["sent"], true);
    let dm = wait_for(&mut a, "alice", &mut cursor, |e| {
        e["type"] == "MSG" && e["to"] == alice_id.as_str() && e["from"] == bob_id.as_str()
    });
    assert_eq!(dm["content"], "dm to A: got psst");

    // A full proposal lifecycle: propose → accepted (by B) → completed.
    let p = a.ok(
        "chat_propose",
        json!({"session": "alice", "to": bob_id, "task": "review PR 12", "amount": 5, "currency": "USDC"}),
    );
    assert_eq!(p["status"], "pending");
    let id = p["proposal_id"].as_str().unwrap().to_string();
    let acc = wait_for(&mut a, "alice", &mut cursor, |e| {
        e["type"] == "ACCEPT" && e["proposal_id"] == id.as_str()
    });
    assert_eq!(acc["status"], "accepted");
    assert_eq!(acc["payment_code"], "pc-bob");
    let done = a.ok(
        "chat_complete",
        json!({"session": "alice", "proposal_id": id, "proof": "merged"}),
    );
    assert_eq!(done["status"], "completed");
    assert_eq!(done["proposal_id"], id.as_str());

    line.clear();
    b_out.read_line(&mut line).unwrap();
    let status = b.wait().unwrap();
    let mut err = String::new();
    let _ = b.stderr.take().unwrap().read_to_string(&mut err);
    assert!(status.success(), "agent B failed: {err}");
    let fin: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(fin["event"], "done");
    assert_eq!(fin["proposal_id"], id.as_str());
    assert_eq!(
        (fin["accepted"].as_str(), fin["completed"].as_str()),
        (Some("accepted"), Some("completed"))
    );
    assert_eq!(fin["task"], "review PR 12");
    assert_eq!(fin["alice"], alice_id.as_str());
    // Settling again is refused with the relay's reason, as a tool error.
    let (err, text) = a.call(
        "chat_complete",
        json!({"session": "alice", "proposal_id": id}),
    );
    assert!(
        err && text.as_str().unwrap().contains("INVALID_PROPOSAL"),
        "{text}"
    );
}

// ---------- a 0.3.0-style Node client in the same channel ----------

#[test]
fn a_node_0_3_0_client_and_an_mcp_agent_see_each_others_messages() {
    let _w = watchdog(Duration::from_secs(90));
    let compat = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/node_modules/ws");
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node_ok || !compat.exists() {
        assert!(
            std::env::var("WORKBENCH_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "node and tests/compat's ws are required (npm ci in tests/compat)"
        );
        eprintln!("SKIPPED: node or tests/compat/node_modules/ws missing");
        return;
    }
    let home = Home::new("chat-node");
    let relay = Relay::start(&[]);
    let mut a = home.mcp();
    let c = connect(&mut a, &relay.url(), "mcpagent", None, &["#general"]);
    let me = c["agent_id"].as_str().unwrap().to_string();
    let mut cursor = c["last_seq"].as_u64().unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chat_sdk/node_peer.mjs");
    let mut cmd = Command::new("node");
    cmd.arg(script)
        .arg(relay.url())
        .arg("#general")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    die_with_parent(&mut cmd);
    let mut node = cmd.spawn().unwrap();
    let mut out = BufReader::new(node.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let ready: Value = serde_json::from_str(&line).expect("node peer ready line");
    let node_id = ready["agent_id"].as_str().unwrap().to_string();

    a.ok(
        "chat_send",
        json!({"session": "mcpagent", "to": "#general", "content": "from mcp"}),
    );
    let got = wait_for(&mut a, "mcpagent", &mut cursor, |e| {
        is_msg(e, "#general", "from node")
    });
    assert_eq!(got["from"], node_id.as_str());
    a.ok(
        "chat_send",
        json!({"session": "mcpagent", "to": "#general", "content": "ack node"}),
    );
    line.clear();
    out.read_line(&mut line).unwrap();
    let status = node.wait().unwrap();
    let mut err = String::new();
    let _ = node.stderr.take().unwrap().read_to_string(&mut err);
    assert!(status.success(), "node peer failed: {err}");
    let done: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(done["seen"], json!(["from mcp", "ack node"]));
    assert_eq!(done["from"], me.as_str());
}

// ---------- restarts ----------

#[test]
fn a_message_sent_while_the_mcp_process_restarts_is_in_the_next_wait() {
    let _w = watchdog(Duration::from_secs(90));
    let home = Home::new("chat-mcp-restart");
    let relay = Relay::start(&[]);
    let mut a = home.mcp();
    let ca = connect(&mut a, &relay.url(), "alice", None, &["#general"]);
    let mut b = home.mcp();
    let cb = connect(&mut b, &relay.url(), "bob", None, &["#general"]);
    let bob_id = cb["agent_id"].as_str().unwrap().to_string();
    let cursor = b.ok("chat_read", json!({"session": "bob", "since": 0}))["last_seq"]
        .as_u64()
        .unwrap();

    // B's MCP process dies (as when the AI CLI restarts); its session stays.
    let _ = b.proc.child.kill();
    let _ = b.proc.child.wait();
    drop(b);
    a.ok(
        "chat_send",
        json!({"session": "alice", "to": bob_id, "content": "while you were out"}),
    );
    a.ok(
        "chat_send",
        json!({"session": "alice", "to": "#general", "content": "channel too"}),
    );

    let mut b2 = home.mcp();
    let again = connect(&mut b2, &relay.url(), "bob", None, &[]);
    assert_eq!(again["reused"], true);
    assert_eq!(
        again["agent_id"],
        bob_id.as_str(),
        "an ephemeral id lasts while the session is connected"
    );
    let r = b2.ok(
        "chat_wait",
        json!({"session": "bob", "since": cursor, "timeout_seconds": 10}),
    );
    assert_eq!(r["status"], "messages");
    let got = messages(&r);
    assert!(
        got.iter().any(|e| is_msg(e, &bob_id, "while you were out")),
        "{r}"
    );
    assert_eq!(
        got[0]["seq"],
        json!(cursor + 1),
        "the first entry after the cursor"
    );
    let mut c = cursor;
    wait_for(&mut b2, "bob", &mut c, |e| {
        is_msg(e, "#general", "channel too")
    });
    assert_eq!(ca["reused"], false);

    // A wait with a progress token gets keep-alives and ends 'pending'.
    let r = b2.request(
        "tools/call",
        json!({"name": "chat_wait", "arguments": {"session": "bob", "since": c, "timeout_seconds": 7},
               "_meta": {"progressToken": "p1"}}),
    );
    assert_eq!(r["result"]["structuredContent"]["status"], "pending");
    assert_eq!(r["result"]["structuredContent"]["cursor"], json!(c));
    assert!(
        b2.notifications.iter().any(
            |n| n["method"] == "notifications/progress" && n["params"]["progressToken"] == "p1"
        ),
        "no progress keep-alive: {:?}",
        b2.notifications
    );
}

#[test]
fn a_relay_restart_mid_conversation_loses_nothing_that_was_delivered() {
    // The relay has no durable mode yet (issue 14): this restarts the
    // ephemeral relay, so nothing sent while it is down can exist anywhere.
    let _w = watchdog(Duration::from_secs(120));
    let home = Home::new("chat-relay-restart");
    let mut relay = Relay::start(&[]);
    let port = relay.port;
    let (alice_file, alice_id) = home.identity("alice");
    let (bob_file, bob_id) = home.identity("bob");
    let mut a = home.mcp();
    let mut b = home.mcp();
    let mut ca = connect(
        &mut a,
        &relay.url(),
        "alice",
        Some(&alice_file),
        &["#general"],
    )["last_seq"]
        .as_u64()
        .unwrap();
    let mut cb = connect(&mut b, &relay.url(), "bob", Some(&bob_file), &["#general"])["last_seq"]
        .as_u64()
        .unwrap();
    for i in 0..3 {
        a.ok(
            "chat_send",
            json!({"session": "alice", "to": "#general", "content": format!("before {i}")}),
        );
    }
    wait_for(&mut b, "bob", &mut cb, |e| {
        is_msg(e, "#general", "before 2")
    });

    kill(&mut relay);
    wait_for(&mut a, "alice", &mut ca, |e| {
        e["type"] == "SESSION" && e["event"] == "disconnected"
    });
    wait_for(&mut b, "bob", &mut cb, |e| {
        e["type"] == "SESSION" && e["event"] == "disconnected"
    });
    let (err, text) = a.call(
        "chat_send",
        json!({"session": "alice", "to": "#general", "content": "x"}),
    );
    assert!(
        err && text.as_str().unwrap().contains("reconnecting"),
        "{text}"
    );
    let status = home.0.cmd().arg("list").output().unwrap();
    assert!(String::from_utf8_lossy(&status.stdout).contains("offline"));

    let _relay2 = Relay::start_on(port, &[]);
    for (m, s, c, id) in [
        (&mut a, "alice", &mut ca, &alice_id),
        (&mut b, "bob", &mut cb, &bob_id),
    ] {
        let r = wait_for(m, s, c, |e| {
            e["type"] == "SESSION" && e["event"] == "reconnected"
        });
        assert_eq!(r["agent_id"], id.as_str(), "a keyed session keeps its id");
        assert_eq!(r["rejoined"], json!(["#general"]));
        assert!(r["down_ms"].as_u64().unwrap() > 0);
    }
    // B may re-join after A's first message; send until B has one, then more.
    a.ok(
        "chat_send",
        json!({"session": "alice", "to": "#general", "content": "after 0"}),
    );
    b.ok(
        "chat_send",
        json!({"session": "bob", "to": "#general", "content": "bob after"}),
    );
    wait_for(&mut a, "alice", &mut ca, |e| {
        is_msg(e, "#general", "bob after")
    });
    a.ok(
        "chat_send",
        json!({"session": "alice", "to": "#general", "content": "after 1"}),
    );
    wait_for(&mut b, "bob", &mut cb, |e| is_msg(e, "#general", "after 1"));

    let all = read_all(&mut b, "bob");
    assert_numbered(&all);
    let got = contents_from(&all, "#general");
    for want in ["before 0", "before 1", "before 2", "after 1", "bob after"] {
        assert_eq!(
            got.iter().filter(|c| *c == want).count(),
            1,
            "{want} once in {got:?}"
        );
    }
}

#[test]
fn a_channel_the_relay_forgot_is_rejoined_once_its_creator_makes_it_again() {
    let _w = watchdog(Duration::from_secs(90));
    let home = Home::new("chat-rejoin");
    let mut relay = Relay::start(&[]);
    let port = relay.port;
    let mut x = Ws::connect(&relay.url());
    x.identify("xavier");
    x.send(json!({"type": "CREATE_CHANNEL", "channel": "#lab"}));
    x.expect("JOINED");
    let mut b = home.mcp();
    let c = connect(&mut b, &relay.url(), "bob", None, &["#lab"]);
    assert_eq!(c["channels"], json!(["#lab"]));
    let mut cursor = c["last_seq"].as_u64().unwrap();

    // An ephemeral relay restarts: #lab is gone until xavier makes it again.
    kill(&mut relay);
    drop(x);
    wait_for(&mut b, "bob", &mut cursor, |e| {
        e["type"] == "SESSION" && e["event"] == "disconnected"
    });
    let relay2 = Relay::start_on(port, &[]);
    let r = wait_for(&mut b, "bob", &mut cursor, |e| {
        e["type"] == "SESSION" && e["event"] == "reconnected"
    });
    assert_eq!(r["rejoined"], json!([]));
    assert_eq!(r["failed"][0]["channel"], "#lab");
    assert_eq!(r["failed"][0]["code"], "CHANNEL_NOT_FOUND");
    assert_eq!(r["failed"][0]["retrying"], true);

    let mut x = Ws::connect(&relay2.url());
    x.identify("xavier");
    x.send(json!({"type": "CREATE_CHANNEL", "channel": "#lab"}));
    x.expect("JOINED");
    let back = wait_for(&mut b, "bob", &mut cursor, |e| {
        e["type"] == "SESSION" && e["event"] == "rejoined"
    });
    assert_eq!(back["channel"], "#lab");
    x.msg("#lab", "welcome back");
    wait_for(&mut b, "bob", &mut cursor, |e| {
        is_msg(e, "#lab", "welcome back")
    });
    let again = connect(&mut b, &relay2.url(), "bob", None, &[]);
    assert_eq!(again["channels"], json!(["#lab"]));
}

/// A TCP proxy between a session and the relay: `cut` drops every
/// connection (a network failure), `hold` refuses new ones until `release`.
struct Proxy {
    port: u16,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    held: Arc<AtomicBool>,
}

impl Proxy {
    fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let held = Arc::new(AtomicBool::new(false));
        let (c2, h2) = (conns.clone(), held.clone());
        thread::spawn(move || {
            for inbound in listener.incoming().flatten() {
                if h2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let mut list = c2.lock().unwrap();
                list.push(inbound.try_clone().unwrap());
                list.push(outbound.try_clone().unwrap());
                for (mut from, mut to) in [
                    (inbound.try_clone().unwrap(), outbound.try_clone().unwrap()),
                    (outbound, inbound),
                ] {
                    thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, conns, held }
    }

    fn cut(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

#[test]
fn a_network_drop_rejoins_and_the_replay_adds_only_what_was_missed() {
    let _w = watchdog(Duration::from_secs(90));
    let home = Home::new("chat-drop");
    let relay = Relay::start(&[]);
    let proxy = Proxy::start(relay.port);
    let mut a = home.mcp();
    let c = connect(
        &mut a,
        &format!("ws://127.0.0.1:{}", proxy.port),
        "alice",
        None,
        &["#general"],
    );
    let alice_id = c["agent_id"].as_str().unwrap().to_string();
    let mut cursor = c["last_seq"].as_u64().unwrap();

    let mut x = Ws::connect(&relay.url());
    x.identify("xavier");
    x.join("#general");
    x.msg("#general", "m1");
    x.msg("#general", "m2");
    wait_for(&mut a, "alice", &mut cursor, |e| {
        is_msg(e, "#general", "m2")
    });

    proxy.held.store(true, Ordering::SeqCst);
    proxy.cut();
    // The relay has seen alice leave before m3 is sent: she misses it live.
    loop {
        let v = x.recv();
        if v["type"] == "AGENT_LEFT" && v["agent"] == alice_id.as_str() {
            break;
        }
    }
    x.msg("#general", "m3");
    wait_for(&mut a, "alice", &mut cursor, |e| {
        e["type"] == "SESSION" && e["event"] == "disconnected"
    });
    proxy.held.store(false, Ordering::SeqCst);
    let r = wait_for(&mut a, "alice", &mut cursor, |e| {
        e["type"] == "SESSION" && e["event"] == "reconnected"
    });
    assert_eq!(
        r["previous_agent_id"],
        alice_id.as_str(),
        "an ephemeral id changes only on reconnect"
    );

    let all = read_all(&mut a, "alice");
    assert_numbered(&all);
    let got = contents_from(&all, "#general");
    assert_eq!(
        got,
        vec!["m1", "m2", "m3"],
        "m3 came from the replay; m1 and m2 were not duplicated"
    );
    let m3 = all.iter().find(|e| is_msg(e, "#general", "m3")).unwrap();
    assert_eq!(m3["replay"], true);
}

#[test]
fn kill_9_of_the_session_is_reported_and_chat_connect_restarts_it_with_the_same_inbox() {
    let _w = watchdog(Duration::from_secs(90));
    let home = Home::new("chat-kill9");
    let relay = Relay::start(&[]);
    let (file, id) = home.identity("alice");
    let mut a = home.mcp();
    let c = connect(&mut a, &relay.url(), "alice", Some(&file), &["#general"]);
    assert_eq!(
        (c["agent_id"].as_str(), c["reused"].as_bool()),
        (Some(id.as_str()), Some(false))
    );
    a.ok(
        "chat_send",
        json!({"session": "alice", "to": "#general", "content": "one"}),
    );
    let mut cursor = 0;
    wait_for(&mut a, "alice", &mut cursor, |e| {
        is_msg(e, "#general", "one")
    });
    let before = read_all(&mut a, "alice");

    let pid = home.session_pid("alice").unwrap();
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(workbench::sys::wait_pid_exit(pid, Duration::from_secs(5)));
    for (tool, args) in [
        ("chat_read", json!({"session": "alice", "since": cursor})),
        (
            "chat_send",
            json!({"session": "alice", "to": "#general", "content": "two"}),
        ),
    ] {
        let (err, text) = a.call(tool, args);
        let text = text.as_str().unwrap().to_string();
        assert!(
            err && text.contains("is gone") && text.contains("chat_connect"),
            "{tool}: {text}"
        );
    }
    let list = home.0.cmd().args(["list", "--json"]).output().unwrap();
    let row: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(
        (row["session"].as_str(), row["running"].as_bool()),
        (Some("alice"), Some(false))
    );

    // Restarted: the same id, the same channels, the old entries, the cursor still good.
    let c2 = connect(&mut a, &relay.url(), "alice", Some(&file), &[]);
    assert_eq!(
        (c2["agent_id"].as_str(), c2["reused"].as_bool()),
        (Some(id.as_str()), Some(false))
    );
    assert_eq!(c2["channels"], json!(["#general"]));
    a.ok(
        "chat_send",
        json!({"session": "alice", "to": "#general", "content": "two"}),
    );
    let two = wait_for(&mut a, "alice", &mut cursor, |e| {
        is_msg(e, "#general", "two")
    });
    assert!(two["seq"].as_u64().unwrap() > before.len() as u64);
    let after = read_all(&mut a, "alice");
    assert_numbered(&after);
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "the old inbox is kept as it was"
    );
    assert_eq!(
        contents_from(&after, "#general"),
        vec!["one", "two"],
        "the re-join replay is not duplicated"
    );

    let d = a.ok("chat_disconnect", json!({"session": "alice"}));
    assert_eq!(
        (d["stopped"].as_bool(), d["was_running"].as_bool()),
        (Some(true), Some(true))
    );
    let (err, text) = a.call("chat_read", json!({"session": "alice"}));
    assert!(err && text.as_str().unwrap().contains("is gone"), "{text}");
}

#[test]
fn two_mcp_processes_on_one_session_read_and_send_without_loss_or_duplicates() {
    let _w = watchdog(Duration::from_secs(90));
    let home = Home::new("chat-shared");
    let relay = Relay::start(&[]);
    let mut x = Ws::connect(&relay.url());
    x.identify("xavier");
    x.join("#general");

    let mut m1 = home.mcp();
    let mut m2 = home.mcp();
    // Both connect at once: exactly one session process starts.
    let (t1, t2) = {
        let url = relay.url();
        let h1 = thread::spawn({
            let url = url.clone();
            move || {
                let r = connect(&mut m1, &url, "shared", None, &["#general"]);
                (m1, r)
            }
        });
        let h2 = thread::spawn(move || {
            let r = connect(&mut m2, &url, "shared", None, &["#general"]);
            (m2, r)
        });
        (h1.join().unwrap(), h2.join().unwrap())
    };
    let (m1, r1) = t1;
    let (m2, r2) = t2;
    assert_eq!(r1["agent_id"], r2["agent_id"]);
    assert_ne!(
        r1["reused"], r2["reused"],
        "one started it, the other reattached"
    );

    let senders: Vec<_> = [("p", m1), ("q", m2)]
        .into_iter()
        .map(|(tag, mut m)| {
            thread::spawn(move || {
                for i in 0..4 {
                    m.ok("chat_send", json!({"session": "shared", "to": "#general", "content": format!("{tag}{i}")}));
                }
                m
            })
        })
        .collect();
    let mut ms: Vec<Mcp> = senders.into_iter().map(|h| h.join().unwrap()).collect();
    for i in 0..3 {
        x.msg("#general", &format!("x{i}"));
    }
    let mut seen = Vec::new();
    while seen.len() < 11 {
        let v = x.recv();
        if v["type"] == "MSG" {
            seen.push(v["content"].as_str().unwrap().to_string());
        }
    }
    seen.sort();
    let want: Vec<String> = [
        "p0", "p1", "p2", "p3", "q0", "q1", "q2", "q3", "x0", "x1", "x2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(seen, want, "the relay got each message once");

    let mut c = 0;
    wait_for(&mut ms[0], "shared", &mut c, |e| {
        is_msg(e, "#general", "x2")
    });
    let a = read_all(&mut ms[0], "shared");
    let b = read_all(&mut ms[1], "shared");
    assert_eq!(a, b, "both readers see the same numbered inbox");
    assert_numbered(&a);
    let mut got = contents_from(&a, "#general");
    got.sort();
    assert_eq!(got, want, "every message once, none lost");
}

// ---------- trust: answering a CHALLENGE ----------

/// A stand-in relay that demands proof of possession (`--require-proof` of
/// issue 12, later AgentChat versions) and checks the answer's signature.
fn challenging_relay() -> (u16, mpsc::Receiver<Result<String, String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut ws = tungstenite::accept(stream).unwrap();
        let ident = loop {
            match ws.read() {
                Ok(tungstenite::Message::Text(t)) => {
                    break serde_json::from_str::<Value>(&t).unwrap()
                }
                Ok(_) => continue,
                Err(e) => panic!("no IDENTIFY: {e}"),
            }
        };
        let pem = ident["pubkey"].as_str().unwrap_or("").to_string();
        let challenge =
            json!({"type": "CHALLENGE", "challenge_id": "ch_1", "nonce": "n0nce", "expires_at": 0});
        ws.send(tungstenite::Message::text(challenge.to_string()))
            .unwrap();
        let answer = loop {
            match ws.read() {
                Ok(tungstenite::Message::Text(t)) => {
                    break serde_json::from_str::<Value>(&t).unwrap()
                }
                Ok(_) => continue,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            }
        };
        let key = workbench::relay::identity::parse_pubkey(&pem).unwrap();
        let text = format!("AGENTCHAT_AUTH|n0nce|ch_1|{}", answer["timestamp"]);
        let ok = answer["type"] == "VERIFY_IDENTITY"
            && answer["challenge_id"] == "ch_1"
            && workbench::relay::identity::verify(
                &key,
                &text,
                answer["signature"].as_str().unwrap_or(""),
            );
        let id = format!("@{}", workbench::relay::identity::agent_id(&pem));
        if !ok {
            let _ = tx.send(Err(format!("bad answer {answer}")));
            let err =
                json!({"type": "ERROR", "code": "VERIFICATION_FAILED", "message": "bad signature"});
            let _ = ws.send(tungstenite::Message::text(err.to_string()));
            return;
        }
        let _ = tx.send(Ok(id.clone()));
        ws.send(tungstenite::Message::text(
            json!({"type": "WELCOME", "agent_id": id, "server": "fake"}).to_string(),
        ))
        .unwrap();
        // Then a minimal relay: JOINED for JOIN, PONG for PING, until closed.
        loop {
            let v = match ws.read() {
                Ok(tungstenite::Message::Text(t)) => serde_json::from_str::<Value>(&t).unwrap(),
                Ok(_) => continue,
                Err(_) => return,
            };
            let reply = match v["type"].as_str() {
                Some("JOIN") => json!({"type": "JOINED", "channel": v["channel"], "agents": [id]}),
                Some("PING") => json!({"type": "PONG"}),
                _ => continue,
            };
            if ws
                .send(tungstenite::Message::text(reply.to_string()))
                .is_err()
            {
                return;
            }
        }
    });
    (port, rx)
}

#[test]
fn a_keyed_session_answers_the_relays_challenge() {
    let _w = watchdog(Duration::from_secs(60));
    let home = Home::new("chat-challenge");
    let (port, verdict) = challenging_relay();
    let (file, id) = home.identity("alice");
    let mut a = home.mcp();
    let c = connect(
        &mut a,
        &format!("ws://127.0.0.1:{port}"),
        "alice",
        Some(&file),
        &["#general"],
    );
    assert_eq!(
        verdict.recv_timeout(Duration::from_secs(10)).unwrap(),
        Ok(id.clone())
    );
    assert_eq!(c["agent_id"], id.as_str());
    assert_eq!(c["channels"], json!(["#general"]));
    assert_eq!(c["connected"], true);

    // And the real relay in --require-proof mode: keyed sessions prove
    // their key and talk; signed messages get through.
    let relay = Relay::start(&["--require-proof"]);
    let (file_b, id_b) = home.identity("bob");
    let c = connect(&mut a, &relay.url(), "bob", Some(&file_b), &["#general"]);
    assert_eq!(c["agent_id"], id_b.as_str());
    let mut cursor = c["last_seq"].as_u64().unwrap();
    a.ok(
        "chat_send",
        json!({"session": "bob", "to": "#general", "content": "proven"}),
    );
    let m = wait_for(&mut a, "bob", &mut cursor, |e| {
        is_msg(e, "#general", "proven")
    });
    assert_eq!(m["from"], id_b.as_str());
}

// ---------- bad input and faults ----------

#[test]
fn bad_input_gets_errors_the_ai_can_act_on_and_the_server_keeps_serving() {
    let _w = watchdog(Duration::from_secs(90));
    let home = Home::new("chat-bad");
    let relay = Relay::start(&[]);
    let mut m = home.mcp();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let missing = home.0.path.join("nope.json");
    let (open_file, _) = home.identity("loose");
    std::fs::set_permissions(&open_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let garbage = home.0.path.join("garbage.json");
    std::fs::write(&garbage, "{not json").unwrap();
    std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o600)).unwrap();

    let url = relay.url();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "chat_read",
            json!({"session": "ghost"}),
            "no chat session 'ghost'",
        ),
        (
            "chat_send",
            json!({"session": "ghost", "to": "#general", "content": "x"}),
            "chat_connect",
        ),
        (
            "chat_connect",
            json!({"server": format!("ws://127.0.0.1:{closed_port}"), "name": "down"}),
            "Connection refused",
        ),
        (
            "chat_connect",
            json!({"server": url, "name": "m", "identity": missing}),
            "no identity file at",
        ),
        (
            "chat_connect",
            json!({"server": url, "name": "m", "identity": open_file}),
            "chmod 600",
        ),
        (
            "chat_connect",
            json!({"server": url, "name": "m", "identity": garbage}),
            "not usable",
        ),
        (
            "chat_connect",
            json!({"server": "http://x", "name": "m"}),
            "ws://",
        ),
        (
            "chat_connect",
            json!({"server": url, "name": "bad name"}),
            "bad agent name",
        ),
        (
            "chat_connect",
            json!({"server": url, "name": "m", "channels": ["general"]}),
            "bad channel",
        ),
        (
            "chat_connect",
            json!({"server": url, "name": "m", "colour": "red"}),
            "bad arguments",
        ),
    ];
    for (tool, args, want) in cases {
        let (err, text) = m.call(tool, args.clone());
        let text = text.as_str().unwrap_or("").to_string();
        assert!(err && text.contains(want), "{tool} {args}: {text}");
    }
    // A refused connect leaves no process behind.
    assert!(home.session_pid("down").is_none());

    let c = connect(&mut m, &url, "eve", None, &[]);
    assert_eq!(c["channels"], json!(["#general"]));
    let big = "é".repeat(4097);
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "chat_send",
            json!({"session": "eve", "to": "#general", "content": big}),
            "limit is 4096",
        ),
        (
            "chat_send",
            json!({"session": "eve", "to": "#agents", "content": "hi"}),
            "NOT_INVITED",
        ),
        (
            "chat_send",
            json!({"session": "eve", "to": "@nobody1", "content": "hi"}),
            "AGENT_NOT_FOUND",
        ),
        (
            "chat_send",
            json!({"session": "eve", "to": "general", "content": "hi"}),
            "#channel or @agent_id",
        ),
        (
            "chat_send",
            json!({"session": "eve", "to": "#general", "content": ""}),
            "empty",
        ),
        (
            "chat_join",
            json!({"session": "eve", "channel": "#nothere"}),
            "CHANNEL_NOT_FOUND",
        ),
        (
            "chat_create",
            json!({"session": "eve", "channel": "#general"}),
            "CHANNEL_EXISTS",
        ),
        (
            "chat_read",
            json!({"session": "eve", "since": -1}),
            "since must be a cursor",
        ),
        (
            "chat_read",
            json!({"session": "eve", "since": 999}),
            "ahead of this session's inbox",
        ),
        (
            "chat_propose",
            json!({"session": "eve", "to": "@x", "task": "t"}),
            "identity=",
        ),
        (
            "chat_accept",
            json!({"session": "eve", "proposal_id": "p", "proof": "x"}),
            "takes only",
        ),
        (
            "chat_dispute",
            json!({"session": "eve", "proposal_id": "p", "reason": ""}),
            "needs a reason",
        ),
        (
            "chat_connect",
            json!({"server": "ws://127.0.0.1:1", "name": "eve"}),
            "chat_disconnect(session='eve') first",
        ),
    ];
    for (tool, args, want) in cases {
        let (err, text) = m.call(tool, args.clone());
        let text = text.as_str().unwrap_or("").to_string();
        assert!(err && text.contains(want), "{tool}: {text}");
    }
    // Still serving, and the session too.
    assert_eq!(m.request("ping", json!({}))["result"], json!({}));
    let ok = m.ok(
        "chat_send",
        json!({"session": "eve", "to": "#general", "content": "still here"}),
    );
    assert_eq!(ok["sent"], true);
    let chans = m.ok("chat_channels", json!({"session": "eve"}));
    assert!(chans["channels"].to_string().contains("#general"));
    let agents = m.ok(
        "chat_agents",
        json!({"session": "eve", "channel": "#general"}),
    );
    assert_eq!(agents["agents"], json!([c["agent_id"]]));

    // The session's own API refuses a wrong token and junk, and keeps serving.
    let info: Value = serde_json::from_str(
        &std::fs::read_to_string(home.session_dir("eve").join(".session.json")).unwrap(),
    )
    .unwrap();
    let port = info["port"].as_u64().unwrap() as u16;
    for line in [
        "{\"op\":\"status\",\"token\":\"wrong\"}\n",
        "not json\n",
        "{\"op\":\"status\"}\n",
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(line.as_bytes()).unwrap();
        let mut answer = String::new();
        BufReader::new(s).read_line(&mut answer).unwrap();
        let v: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(v["ok"], false, "{line}: {answer}");
    }
    // Callers that connect and say nothing hold a thread each, up to a cap;
    // past it a call is refused at once, and the session serves again after.
    let idle: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let token = info["token"].as_str().unwrap();
    let _ = s.write_all(format!("{}\n", json!({"op": "status", "token": token})).as_bytes());
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).unwrap();
    assert!(answer.contains("try again"), "{answer}");
    drop(idle);
    // Their threads end as they see the close; then calls are served again.
    assert!(support::eventually(Duration::from_secs(10), || !m
        .call("chat_read", json!({"session": "eve"}))
        .0));
    let r = m.ok("chat_read", json!({"session": "eve"}));
    assert!(messages(&r)
        .iter()
        .any(|e| is_msg(e, "#general", "still here")));
}

#[test]
fn list_shows_sessions_and_stop_ends_one() {
    let _w = watchdog(Duration::from_secs(60));
    let home = Home::new("chat-list");
    let relay = Relay::start(&[]);
    let help = home
        .0
        .cmd()
        .args(["chat-session", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).starts_with("usage: workbench chat-session"));
    let mut m = home.mcp();
    let c = connect(&mut m, &relay.url(), "lister", None, &["#agents"]);
    let id = c["agent_id"].as_str().unwrap().to_string();
    assert_eq!(c["channels"], json!(["#agents"]));
    let out = home.0.cmd().arg("list").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("lister") && text.contains(&id) && text.contains("#agents"),
        "{text}"
    );
    let json_out = home.0.cmd().args(["list", "--json"]).output().unwrap();
    let row: Value = serde_json::from_slice(&json_out.stdout).unwrap();
    assert_eq!(row["session"], "lister");
    assert_eq!(row["running"], true);
    let pid = row["pid"].as_u64().unwrap() as u32;

    let stop = home.0.cmd().args(["stop", "lister"]).output().unwrap();
    assert!(stop.status.success());
    assert!(String::from_utf8_lossy(&stop.stdout).contains("stopped chat session 'lister'"));
    assert!(workbench::sys::wait_pid_exit(pid, Duration::from_secs(5)));
    let again = home
        .0
        .cmd()
        .args(["stop", "--chat", "lister"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("was not running"));
    let none = home
        .0
        .cmd()
        .args(["stop", "--chat", "nobody"])
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(1));
    // The relay has forgotten the agent: the close was a real goodbye.
    let mut x = Ws::connect(&relay.url());
    x.identify("x");
    x.send(json!({"type": "LIST_AGENTS", "channel": "#agents"}));
    let agents = x.expect("AGENTS");
    assert_eq!(agents["list"], json!([]), "{agents}");
}
