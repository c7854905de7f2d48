//! The relay's wire protocol against the real binary: every message type
//! and error code of AGENTCHAT.md, replay, invite-only channels, the rate
//! limit, disconnect cleanup, bad input, limits and shutdown.

mod support;

use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};
use support::{watchdog, Relay};
use tungstenite::Message;

const PEM: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";

#[test]
fn relay_welcome_lists_and_ping() {
    let _w = watchdog(Duration::from_secs(30));
    let relay = Relay::start(&[]);
    let mut c = relay.client();
    // LIST_CHANNELS and LIST_AGENTS work before IDENTIFY.
    c.send(json!({"type": "LIST_CHANNELS"}));
    let v = c.expect("CHANNELS");
    assert_eq!(
        v["list"],
        json!([{"name": "#agents", "agents": 0}, {"name": "#general", "agents": 0}])
    );
    c.send(json!({"type": "LIST_AGENTS", "channel": "#general"}));
    let v = c.expect("AGENTS");
    assert_eq!(v["channel"], "#general");
    assert_eq!(v["list"], json!([]));
    c.ping();
    c.send(json!({"type": "IDENTIFY", "name": "alpha"}));
    let v = c.expect("WELCOME");
    assert_eq!(v["server"], "test-relay");
    let id = v["agent_id"].as_str().unwrap();
    assert_eq!(id.len(), 9);
    assert!(id.starts_with('@'));
    assert!(id[1..]
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    // A second IDENTIFY on one connection is refused; the connection lives.
    c.send(json!({"type": "IDENTIFY", "name": "again"}));
    c.expect_error("INVALID_MSG");
    c.join("#general");
    c.send(json!({"type": "LIST_AGENTS", "channel": "#general"}));
    assert_eq!(c.expect("AGENTS")["list"], json!([id]));
    // A WebSocket-level ping is answered with a pong by the relay's writer.
    c.send_raw(Message::Ping(b"hi".to_vec().into()));
    loop {
        match c.ws.read().expect("read pong") {
            Message::Pong(p) => {
                assert_eq!(&p[..], b"hi");
                break;
            }
            Message::Text(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    c.ping();
}

#[test]
fn relay_join_leave_and_channel_messages() {
    let _w = watchdog(Duration::from_secs(30));
    let relay = Relay::start(&[]);
    let (mut a, aid) = relay.agent("alice");
    let (mut b, bid) = relay.agent("bob");
    let j = a.join("#general");
    assert_eq!(j["agents"], json!([aid]));
    let j = b.join("#general");
    assert_eq!(j["channel"], "#general");
    let mut agents: Vec<String> = serde_json::from_value(j["agents"].clone()).unwrap();
    agents.sort();
    let mut want = vec![aid.clone(), bid.clone()];
    want.sort();
    assert_eq!(agents, want);
    let v = a.expect("AGENT_JOINED");
    assert_eq!(
        (v["channel"].as_str(), v["agent"].as_str()),
        (Some("#general"), Some(bid.as_str()))
    );

    // A channel message reaches every member, the sender included.
    a.msg("#general", "hello all");
    for c in [&mut a, &mut b] {
        let v = c.expect("MSG");
        assert_eq!(v["from"], aid.as_str());
        assert_eq!(v["to"], "#general");
        assert_eq!(v["content"], "hello all");
        assert!(v.get("replay").is_none());
        assert!(v.get("sig").is_none());
    }
    // A signature from a key-less agent is relayed as is (nothing to check
    // it against), with the client's ts it covers as sig_ts; ts is the
    // relay's clock, as in 0.3.0.
    a.send(
        json!({"type": "MSG", "to": "#general", "content": "signed", "sig": "c2ln", "ts": 1234}),
    );
    for c in [&mut a, &mut b] {
        let v = c.expect("MSG");
        assert_eq!(
            (v["sig"].as_str(), v["sig_ts"].as_u64()),
            (Some("c2ln"), Some(1234))
        );
        assert!(v["ts"].as_u64().unwrap() > 1_700_000_000_000, "{v}");
    }

    // LEAVE: the leaver gets LEFT, the others AGENT_LEFT.
    b.send(json!({"type": "LEAVE", "channel": "#general"}));
    assert_eq!(b.expect("LEFT")["channel"], "#general");
    let v = a.expect("AGENT_LEFT");
    assert_eq!(
        (v["channel"].as_str(), v["agent"].as_str()),
        (Some("#general"), Some(bid.as_str()))
    );
    // Not a member any more: posting is refused.
    b.msg("#general", "let me in");
    b.expect_error("NOT_INVITED");
    b.send(json!({"type": "LEAVE", "channel": "#nowhere"}));
    b.expect_error("CHANNEL_NOT_FOUND");
    a.ping();
    b.ping();
}

#[test]
fn relay_direct_messages_are_delivered_and_echoed() {
    let _w = watchdog(Duration::from_secs(30));
    let relay = Relay::start(&[]);
    let (mut a, aid) = relay.agent("alice");
    let (mut b, bid) = relay.agent("bob");
    a.msg(&bid, "psst");
    for c in [&mut b, &mut a] {
        let v = c.expect("MSG");
        assert_eq!(
            (v["from"].as_str(), v["to"].as_str()),
            (Some(aid.as_str()), Some(bid.as_str()))
        );
        assert_eq!(v["content"], "psst");
    }
    a.msg("@nobody99", "hello?");
    a.expect_error("AGENT_NOT_FOUND");
    b.ping();
}

#[test]
fn relay_replays_recent_messages_in_order() {
    let _w = watchdog(Duration::from_secs(30));
    let relay = Relay::start(&["--buffer-size", "5", "--rate-burst", "100"]);
    let (mut a, aid) = relay.agent("writer");
    a.join("#general");
    for i in 0..8 {
        a.msg("#general", &format!("m{i}"));
        a.expect("MSG");
    }
    let (mut b, _) = relay.agent("late");
    b.join("#general");
    for i in 3..8 {
        let v = b.expect("MSG");
        assert_eq!(v["content"], format!("m{i}"));
        assert_eq!(v["replay"], true);
        assert_eq!(v["from"], aid.as_str());
        assert_eq!(v["to"], "#general");
    }
    b.ping();
    a.expect("AGENT_JOINED");
    a.msg("#general", "live");
    let v = b.expect("MSG");
    assert_eq!(v["content"], "live");
    assert!(v.get("replay").is_none());
    // Other channels have their own ring.
    let (mut c, _) = relay.agent("other");
    c.join("#agents");
    c.ping();
}

#[test]
fn relay_error_codes() {
    let _w = watchdog(Duration::from_secs(30));
    let relay = Relay::start(&[]);
    let mut anon = relay.client();
    // AUTH_REQUIRED for everything that needs an identity.
    for m in [
        json!({"type": "JOIN", "channel": "#general"}),
        json!({"type": "LEAVE", "channel": "#general"}),
        json!({"type": "MSG", "to": "#general", "content": "x"}),
        json!({"type": "CREATE_CHANNEL", "channel": "#x"}),
        json!({"type": "INVITE", "channel": "#general", "agent": "@abc"}),
        json!({"type": "PROPOSAL", "to": "@abc", "task": "t", "sig": "s"}),
    ] {
        anon.send(m);
        anon.expect_error("AUTH_REQUIRED");
    }
    anon.ping();

    let (mut a, aid) = relay.agent("alice");
    a.send(json!({"type": "JOIN", "channel": "#nope"}));
    a.expect_error("CHANNEL_NOT_FOUND");
    a.msg("#nope", "x");
    a.expect_error("CHANNEL_NOT_FOUND");
    a.send(json!({"type": "LIST_AGENTS", "channel": "#nope"}));
    a.expect_error("CHANNEL_NOT_FOUND");
    a.msg("#general", "not a member");
    a.expect_error("NOT_INVITED");
    a.send(json!({"type": "CREATE_CHANNEL", "channel": "#general"}));
    a.expect_error("CHANNEL_EXISTS");
    a.send(json!({"type": "CREATE_CHANNEL", "channel": "#mine"}));
    let v = a.expect("JOINED");
    assert_eq!(
        (v["channel"].as_str(), v["agents"].clone()),
        (Some("#mine"), json!([aid]))
    );
    a.send(json!({"type": "CREATE_CHANNEL", "channel": "#mine"}));
    a.expect_error("CHANNEL_EXISTS");
    // Public channels created by agents are listed with their members.
    a.send(json!({"type": "LIST_CHANNELS"}));
    let v = a.expect("CHANNELS");
    assert!(v["list"]
        .as_array()
        .unwrap()
        .contains(&json!({"name": "#mine", "agents": 1})));
    a.msg("@nobody", "x");
    a.expect_error("AGENT_NOT_FOUND");
    // Proposals need a pubkey identity (tests/proposals_relay.rs covers the rest).
    a.send(json!({"type": "PROPOSAL", "to": "@abc", "task": "t", "sig": "s"}));
    a.expect_error("SIGNATURE_REQUIRED");
    a.ping();

    // IDENTIFY with a pubkey: the id is the SHA-256 prefix of the PEM text.
    let mut k = relay.client();
    k.send(json!({"type": "IDENTIFY", "name": "keyed", "pubkey": PEM}));
    let v = k.expect("WELCOME");
    let digest = Sha256::digest(PEM.as_bytes());
    let want: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(v["agent_id"], format!("@{want}"));
    // With one, a proposal signature that does not verify is refused (issue 7).
    for t in ["ACCEPT", "REJECT", "COMPLETE", "DISPUTE", "PROPOSAL"] {
        k.send(json!({"type": t, "proposal_id": "p", "reason": "r", "to": "@x", "task": "t", "sig": "s"}));
        k.expect_error("INVALID_SIGNATURE");
    }
    // The same key cannot be connected twice.
    let mut k2 = relay.client();
    k2.send(json!({"type": "IDENTIFY", "name": "keyed", "pubkey": PEM}));
    k2.expect_error("INVALID_MSG");
    k2.send(json!({"type": "IDENTIFY", "name": "keyed", "pubkey": "not a key"}));
    k2.expect_error("INVALID_MSG");
    k2.ping();
    k.ping();
}

#[test]
fn relay_invite_only_channels() {
    let _w = watchdog(Duration::from_secs(30));
    let relay = Relay::start(&[]);
    let (mut owner, oid) = relay.agent("owner");
    let (mut guest, gid) = relay.agent("guest");
    let (mut other, _) = relay.agent("other");
    owner.send(json!({"type": "CREATE_CHANNEL", "channel": "#secret", "invite_only": true}));
    assert_eq!(owner.expect("JOINED")["agents"], json!([oid]));
    // Hidden from LIST_CHANNELS, closed to the uninvited.
    guest.send(json!({"type": "LIST_CHANNELS"}));
    let v = guest.expect("CHANNELS");
    assert!(!v["list"].to_string().contains("#secret"));
    guest.send(json!({"type": "JOIN", "channel": "#secret"}));
    guest.expect_error("NOT_INVITED");
    guest.send(json!({"type": "LIST_AGENTS", "channel": "#secret"}));
    guest.expect_error("NOT_INVITED");
    // Only members may invite.
    other.send(json!({"type": "INVITE", "channel": "#secret", "agent": gid}));
    other.expect_error("NOT_INVITED");
    other.send(json!({"type": "INVITE", "channel": "#none", "agent": gid}));
    other.expect_error("CHANNEL_NOT_FOUND");
    owner.send(json!({"type": "INVITE", "channel": "#secret", "agent": gid}));
    owner.ping();
    let v = guest.expect("MSG");
    assert_eq!(
        (v["from"].as_str(), v["to"].as_str()),
        (Some(oid.as_str()), Some(gid.as_str()))
    );
    assert!(v["content"].as_str().unwrap().contains("#secret"));
    let j = guest.join("#secret");
    assert_eq!(j["agents"].as_array().unwrap().len(), 2);
    owner.expect("AGENT_JOINED");
    guest.msg("#secret", "thanks");
    assert_eq!(owner.expect("MSG")["content"], "thanks");
    other.send(json!({"type": "JOIN", "channel": "#secret"}));
    other.expect_error("NOT_INVITED");
}

#[test]
fn relay_rate_limit_burst() {
    let _w = watchdog(Duration::from_secs(30));
    // Refill so slow it cannot matter within the test.
    let relay = Relay::start(&["--rate-burst", "3", "--rate-per-sec", "0.001"]);
    let (mut a, _) = relay.agent("chatty");
    a.join("#general");
    for i in 0..5 {
        a.msg("#general", &format!("m{i}"));
    }
    let mut delivered = 0;
    let mut limited = 0;
    for _ in 0..5 {
        let v = a.recv();
        match v["type"].as_str() {
            Some("MSG") => delivered += 1,
            Some("ERROR") if v["code"] == "RATE_LIMITED" => limited += 1,
            _ => panic!("unexpected {v}"),
        }
    }
    assert_eq!((delivered, limited), (3, 2));
    // Other requests are not rate limited.
    a.ping();
}

#[test]
fn relay_rate_limit_refills() {
    let _w = watchdog(Duration::from_secs(30));
    let relay = Relay::start(&["--rate-burst", "1", "--rate-per-sec", "2"]);
    let (mut a, _) = relay.agent("paced");
    a.join("#general");
    a.msg("#general", "one");
    a.expect("MSG");
    // 1.2 s at 2 tokens/s refills the bucket (capped at the burst of 1):
    // however slow the machine, at least that much time has passed.
    std::thread::sleep(Duration::from_millis(1200));
    a.msg("#general", "two");
    assert_eq!(a.expect("MSG")["content"], "two");
}

#[test]
fn relay_disconnect_cleans_up() {
    let _w = watchdog(Duration::from_secs(30));
    let relay = Relay::start(&[]);
    let (mut a, _) = relay.agent("stayer");
    let (mut b, bid) = relay.agent("leaver");
    a.join("#general");
    a.join("#agents");
    b.join("#general");
    b.join("#agents");
    a.expect("AGENT_JOINED");
    a.expect("AGENT_JOINED");
    // Drop the TCP connection without a close frame.
    drop(b);
    let mut left = Vec::new();
    for _ in 0..2 {
        let v = a.expect("AGENT_LEFT");
        assert_eq!(v["agent"], bid.as_str());
        left.push(v["channel"].as_str().unwrap().to_string());
    }
    left.sort();
    assert_eq!(left, ["#agents", "#general"]);
    a.send(json!({"type": "LIST_AGENTS", "channel": "#general"}));
    assert_eq!(a.expect("AGENTS")["list"].as_array().unwrap().len(), 1);
    a.msg(&bid, "still there?");
    a.expect_error("AGENT_NOT_FOUND");
    // A clean close frame is answered, and cleans up the same way.
    let (mut c, cid) = relay.agent("closer");
    c.join("#general");
    a.expect("AGENT_JOINED");
    c.ws.close(None).unwrap();
    loop {
        match c.ws.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("close handshake: {e}"),
        }
    }
    assert_eq!(a.expect("AGENT_LEFT")["agent"], cid.as_str());
}

#[test]
fn relay_bad_input_is_answered_and_survived() {
    let _w = watchdog(Duration::from_secs(60));
    let relay = Relay::start(&[]);
    let mut c = relay.client();
    c.send_raw(Message::text("{this is not json"));
    c.expect_error("INVALID_MSG");
    c.send_raw(Message::text("[1,2,3]"));
    c.expect_error("INVALID_MSG");
    c.send_raw(Message::Binary(vec![0u8, 1, 2, 3].into()));
    c.expect_error("INVALID_MSG");
    // 1 MiB: over the 64 KiB default, skipped and answered.
    let big = format!(r#"{{"type":"PING","pad":"{}"}}"#, "x".repeat(1 << 20));
    c.send_raw(Message::text(big));
    let e = c.expect_error("INVALID_MSG");
    assert!(e["message"].as_str().unwrap().contains("limit"), "{e}");
    c.ping();
    for m in [
        json!({"no": "type"}),
        json!({"type": 7}),
        json!({"type": "SHOUT"}),
        json!({"type": "IDENTIFY"}),
        json!({"type": "IDENTIFY", "name": "has space"}),
        json!({"type": "IDENTIFY", "name": "x".repeat(33)}),
        json!({"type": "IDENTIFY", "name": ""}),
        json!({"type": "JOIN", "channel": "general"}),
        json!({"type": "JOIN", "channel": format!("#{}", "c".repeat(32))}),
        json!({"type": "JOIN", "channel": "#bad name"}),
        json!({"type": "LIST_AGENTS"}),
        json!({"type": "MSG", "to": "general", "content": "x"}),
        json!({"type": "MSG", "to": "#general"}),
        json!({"type": "MSG", "to": "#general", "content": 5}),
        json!({"type": "MSG", "to": "#general", "content": "x".repeat(4097)}),
        json!({"type": "CREATE_CHANNEL", "channel": "nohash"}),
        json!({"type": "INVITE", "channel": "#general", "agent": "noat"}),
    ] {
        c.send(m.clone());
        let e = c.recv();
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("ERROR"), Some("INVALID_MSG")),
            "{m} -> {e}"
        );
    }
    // MSG before IDENTIFY (well-formed) is AUTH_REQUIRED.
    c.msg("#general", "hi");
    c.expect_error("AUTH_REQUIRED");
    // The connection still works, and so does the server.
    c.identify("survivor");
    c.join("#general");
    c.msg("#general", "x".repeat(4096).as_str());
    c.expect("MSG");
    let (mut d, _) = relay.agent("fresh");
    d.ping();
}

/// What a client that is not a WebSocket client sends gets an HTTP answer
/// saying what is wrong, then the close; the relay goes on serving.
#[test]
fn bad_upgrade_requests_get_a_clear_answer_and_the_relay_keeps_serving() {
    use std::io::{Read, Write};
    let _w = watchdog(Duration::from_secs(30));
    let relay = Relay::start(&[]);
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let upgrade = |version: &str| {
        format!(
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n"
        )
    };
    let cases = [
        (
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
            "400",
            "Upgrade: websocket",
        ),
        (upgrade("8"), "426", "version 13"),
        (upgrade("13").replace(key, "c2hvcnQ="), "400", "16 bytes"),
        // A head that never ends: cut off at 8 KiB.
        (format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(9000)), "", ""),
    ];
    for (request, status, says) in cases {
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", relay.port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tcp.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = tcp.read_to_string(&mut answer);
        if status.is_empty() {
            assert!(answer.is_empty(), "an endless head is dropped: {answer}");
        } else {
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status}")),
                "{answer}"
            );
            assert!(answer.contains(says), "{answer}");
        }
    }
    // Still serving.
    let mut c = relay.client();
    c.ping();
}

#[test]
fn relay_max_connections() {
    let _w = watchdog(Duration::from_secs(30));
    let relay = Relay::start(&["--max-connections", "2"]);
    let mut a = relay.client();
    let mut b = relay.client();
    a.ping();
    b.ping();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", relay.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(tungstenite::client::client(relay.url(), tcp).is_err());
    drop(a);
    // Once a slot frees up, connections are accepted again. The slot is
    // released when the old connection's threads finish, so retry briefly.
    let mut ok = false;
    for _ in 0..100 {
        let tcp = std::net::TcpStream::connect(("127.0.0.1", relay.port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        if tungstenite::client::client(relay.url(), tcp).is_ok() {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ok, "a freed slot is reused");
    b.ping();
}

#[test]
fn relay_logs_content_only_when_asked() {
    let _w = watchdog(Duration::from_secs(30));
    for (flag, shown) in [(None, false), (Some("--log-messages"), true)] {
        let relay = Relay::start(flag.as_slice());
        let (mut a, _) = relay.agent("logger");
        a.join("#general");
        a.msg("#general", "secret-content-42");
        a.expect("MSG");
        // Logs are written after the lock is released; the identify/join
        // lines come from the same thread before the PONG below.
        a.ping();
        drop(a);
        let logs = relay.wait_log("\"disconnect\"");
        assert!(logs.contains("\"disconnect\""));
        assert!(logs.contains("\"identify\""));
        assert_eq!(logs.contains("secret-content-42"), shown, "{logs}");
        for line in logs.lines() {
            serde_json::from_str::<serde_json::Value>(line).expect("log lines are JSON");
        }
    }
}

#[test]
fn relay_sigterm_stops_cleanly() {
    let _w = watchdog(Duration::from_secs(30));
    let mut relay = Relay::start(&[]);
    let (mut a, _) = relay.agent("bystander");
    a.join("#general");
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(relay.child.id() as i32, libc::SIGTERM) };
    // The client is told the server is going away.
    match a.ws.read() {
        Ok(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 1001),
        other => panic!("expected a close frame, got {other:?}"),
    }
    let status = relay.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(relay.wait_log("\"shutdown\"").contains("\"shutdown\""));
}
