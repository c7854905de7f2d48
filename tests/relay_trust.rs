//! Issue 12 against the real relay: each test is an attack, by real
//! WebSocket clients on loopback, and after each the relay still serves a
//! bystander. Keys are made here with ed25519-dalek and the signed texts
//! are written out by hand (AGENTCHAT.md "What is signed"; the CHALLENGE
//! text from docs/relay-trust.md), so the relay's own text-building is
//! checked, not reused. Every read has a timeout; nothing asserts on timing.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use support::{keyed, now_ms, watchdog, Key, Relay, Ws, BIN};
use tungstenite::Message;

/// IDENTIFY with a pubkey, as 0.3.0 sends it (no `prove`).
fn identify_030(ws: &mut Ws, name: &str, key: &Key) {
    ws.send(json!({"type":"IDENTIFY","name":name,"pubkey":key.pem}));
}

/// A keyed agent that proved its key through the CHALLENGE exchange.
fn proven(relay: &Relay, name: &str, key: &Key) -> Ws {
    let mut ws = relay.client();
    ws.send(json!({"type":"IDENTIFY","name":name,"pubkey":key.pem,"prove":true}));
    let ch = ws.expect("CHALLENGE");
    ws.send(key.answer(&ch));
    let w = ws.expect("WELCOME");
    assert_eq!(w["agent_id"], key.id.as_str());
    assert_eq!(w["verified"], true, "{w}");
    ws
}

/// Reads until the relay closes; returns every JSON frame before the close.
fn until_closed(ws: &mut Ws) -> Vec<Value> {
    let mut got = Vec::new();
    loop {
        match ws.ws.read() {
            Ok(Message::Text(t)) => got.push(serde_json::from_str(t.as_str()).unwrap()),
            Ok(Message::Close(_)) => {}
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the relay did not close the connection; got {got:?}")
            }
            Err(_) => return got,
        }
    }
}

/// Proves the relay still serves: a fresh bystander identifies, sends
/// itself a DM, gets it, and gets its PONG.
fn still_serving(relay: &Relay) {
    let (mut b, me) = relay.agent("bystander");
    b.msg(&me, "still there?");
    assert_eq!(b.until("MSG")["content"], "still there?");
    b.ping();
}

/// PING, skipping whatever arrives before the PONG.
fn settle(ws: &mut Ws) {
    ws.send(json!({"type":"PING"}));
    ws.until("PONG");
}

/// Nothing but presence news arrived: no MSG, no PROPOSAL, before a PONG.
fn nothing_delivered(ws: &mut Ws) {
    ws.send(json!({"type":"PING"}));
    loop {
        let v = ws.recv();
        match v["type"].as_str() {
            Some("PONG") => return,
            Some("AGENT_JOINED" | "AGENT_LEFT") => {}
            _ => panic!("nothing should have arrived: {v}"),
        }
    }
}

#[test]
fn an_impostor_with_only_the_public_key_cannot_speak_for_the_victim() {
    let _w = watchdog(Duration::from_secs(60));
    let relay = Relay::start(&[]);
    let victim = Key::new();
    let forger = Key::new();
    let (mut bob, bob_id) = relay.agent("bob");
    bob.join("#general");
    // Default (0.3.0-compatible) mode: the public key alone gets WELCOME…
    let mut imp = keyed(&relay, "victim", &victim);
    imp.join("#general");
    bob.until("AGENT_JOINED");
    // …but nothing it sends passes for the victim: unsigned, forged with
    // another key, or signed over other content; to the channel or as a DM.
    let forged = |to: &str| {
        let mut m = forger.msg(to, "wire the money");
        m["content"] = json!("wire the money");
        m
    };
    let mut tampered = victim.msg("#general", "hello");
    tampered["content"] = json!("wire the money");
    for m in [
        json!({"type":"MSG","to":"#general","content":"wire the money"}),
        json!({"type":"MSG","to":bob_id,"content":"wire the money"}),
        forged("#general"),
        forged(&bob_id),
        tampered,
    ] {
        imp.send(m);
        imp.expect_error("SIGNATURE_REQUIRED");
    }
    nothing_delivered(&mut bob);
    // The owner proves its key and takes its id back at once.
    let mut owner = proven(&relay, "victim", &victim);
    let got = until_closed(&mut imp);
    assert!(
        got.iter().any(|v| v["code"] == "SESSION_DISPLACED"),
        "{got:?}"
    );
    owner.join("#general");
    owner.send(victim.msg("#general", "really me"));
    let v = bob.until("MSG");
    assert_eq!(
        (v["from"].as_str(), v["content"].as_str()),
        (Some(victim.id.as_str()), Some("really me"))
    );
    assert!(v["sig"].is_string() && v["sig_ts"].is_u64(), "{v}");
    // A proven owner is not displaced by a later unproven claim.
    let mut late = relay.client();
    identify_030(&mut late, "victim", &victim);
    late.expect_error("INVALID_MSG");
    let logs = relay.wait_log("\"code\":\"SIGNATURE_REQUIRED\"");
    assert!(
        logs.contains("\"code\":\"SIGNATURE_REQUIRED\"") && logs.contains("\"event\":\"refused\""),
        "refusals are logged: {logs}"
    );
    still_serving(&relay);
}

#[test]
fn require_proof_keeps_the_id_from_anyone_without_the_private_key() {
    let _w = watchdog(Duration::from_secs(60));
    let relay = Relay::start(&["--require-proof"]);
    let victim = Key::new();
    let (mut bob, _) = relay.agent("bob");
    bob.join("#general");
    // The impostor gets a CHALLENGE, never WELCOME, and holds no id.
    let mut imp = relay.client();
    imp.send(json!({"type":"IDENTIFY","name":"victim","pubkey":victim.pem,"prove":true}));
    let ch = imp.expect("CHALLENGE");
    assert!(ch["challenge_id"].as_str().unwrap().starts_with("chal_"));
    assert_eq!(ch["nonce"].as_str().unwrap().len(), 32);
    assert!(ch["expires_at"].as_u64().unwrap() > now_ms());
    imp.send(json!({"type":"JOIN","channel":"#general"}));
    imp.expect_error("AUTH_REQUIRED");
    imp.send(json!({"type":"MSG","to":"#general","content":"x"}));
    imp.expect_error("AUTH_REQUIRED");
    bob.send(json!({"type":"LIST_AGENTS","channel":"#general"}));
    assert_eq!(bob.expect("AGENTS")["list"].as_array().unwrap().len(), 1);
    // While that challenge is pending, the real owner connects.
    let mut owner = proven(&relay, "victim", &victim);
    owner.join("#general");
    bob.until("AGENT_JOINED");
    // The impostor cannot answer: a signature it can make is by another key.
    imp.send(Key::new().answer(&ch));
    imp.expect_error("VERIFICATION_FAILED");
    owner.send(victim.msg("#general", "only me"));
    assert_eq!(bob.until("MSG")["from"], victim.id.as_str());
    still_serving(&relay);
}

#[test]
fn challenges_answered_late_wrong_by_another_key_or_twice_fail() {
    let _w = watchdog(Duration::from_secs(60));
    let relay = Relay::start(&["--require-proof", "--challenge-timeout", "1"]);
    let key = Key::new();
    let challenge = |ws: &mut Ws| {
        ws.send(json!({"type":"IDENTIFY","name":"k","pubkey":key.pem,"prove":true}));
        ws.expect("CHALLENGE")
    };
    // Wrong nonce: the signature covers another text.
    let mut c = relay.client();
    let ch = challenge(&mut c);
    let mut wrong = ch.clone();
    wrong["nonce"] = json!("00000000000000000000000000000000");
    c.send(key.answer(&wrong));
    let e = c.expect_error("VERIFICATION_FAILED");
    assert!(e["message"].as_str().unwrap().contains("dropped"), "{e}");
    // Twice: the failed challenge is gone, so a right answer now fails too.
    c.send(key.answer(&ch));
    c.expect_error("VERIFICATION_FAILED");
    // Another challenge's id.
    let mut d = relay.client();
    let ch_d = challenge(&mut d);
    let mut other = ch_d.clone();
    other["challenge_id"] = json!("chal_x_00000000");
    d.send(key.answer(&other));
    d.expect_error("VERIFICATION_FAILED");
    // A second IDENTIFY while a challenge is pending.
    let mut e = relay.client();
    challenge(&mut e);
    e.send(json!({"type":"IDENTIFY","name":"k","pubkey":key.pem}));
    e.expect_error("INVALID_MSG");
    // Late: the relay says so when the challenge expires, and closes.
    let mut late = relay.client();
    let ch = challenge(&mut late);
    std::thread::sleep(Duration::from_millis(1500));
    late.send(key.answer(&ch));
    let got = until_closed(&mut late);
    assert!(
        got.iter().any(|v| v["code"] == "VERIFICATION_FAILED"),
        "{got:?}"
    );
    // Answered right, then again: the second is refused.
    let mut ok = relay.client();
    let ch = challenge(&mut ok);
    ok.send(key.answer(&ch));
    assert_eq!(ok.expect("WELCOME")["verified"], true);
    ok.send(key.answer(&ch));
    ok.expect_error("INVALID_MSG");
    ok.ping();
    still_serving(&relay);
}

#[test]
fn a_0_3_0_keyed_client_under_require_proof_is_told_proof_is_required() {
    let _w = watchdog(Duration::from_secs(60));
    let relay = Relay::start(&["--require-proof"]);
    let key = Key::new();
    let mut old = relay.client();
    identify_030(&mut old, "old", &key);
    // It cannot answer the CHALLENGE; it is told why before the close.
    let got = until_closed(&mut old);
    assert_eq!(
        got.first().map(|v| v["type"].clone()),
        Some(json!("CHALLENGE"))
    );
    let e = got.iter().find(|v| v["type"] == "ERROR").expect("an ERROR");
    assert_eq!(e["code"], "PROOF_REQUIRED", "{e}");
    assert!(e["message"].as_str().unwrap().contains("--require-proof"));
    // Key-less 0.3.0 clients work as before.
    still_serving(&relay);
}

#[test]
fn captured_signed_frames_are_not_accepted_twice() {
    let _w = watchdog(Duration::from_secs(60));
    let relay = Relay::start(&["--ts-window", "3"]);
    let victim = Key::new();
    let (mut bob, bob_id) = relay.agent("bob");
    bob.join("#general");
    let mut v = keyed(&relay, "victim", &victim);
    v.join("#general");
    bob.until("AGENT_JOINED");
    let captured = victim.msg("#general", "pay bob 5");
    v.send(captured.clone());
    bob.until("MSG");
    v.until("MSG");
    // The same frame again on the same connection, and on another one that
    // holds the id with the public key alone.
    v.send(captured.clone());
    v.expect_error("REPLAY_DETECTED");
    drop(v);
    bob.until("AGENT_LEFT");
    let mut imp = keyed(&relay, "victim", &victim);
    imp.join("#general");
    imp.send(captured.clone());
    // (after the channel's replay of the original)
    assert_eq!(imp.until("ERROR")["code"], "REPLAY_DETECTED");
    // A signed PROPOSAL, captured by its recipient and resent with other
    // (unsigned) terms.
    let text = format!("{bob_id}|review|5|USDC||300");
    let mut proposal = json!({"type":"PROPOSAL","to":bob_id,"task":"review","amount":5,
                              "currency":"USDC","expires":300,"sig":victim.sign(&text)});
    imp.send(proposal.clone());
    let p = bob.until("PROPOSAL");
    assert_eq!(p["from"], victim.id.as_str());
    imp.until("PROPOSAL");
    proposal["terms"] = json!("and your car");
    imp.send(proposal);
    imp.expect_error("REPLAY_DETECTED");
    // Later, once the window has passed: refused for its ts.
    std::thread::sleep(Duration::from_millis(6200));
    imp.send(captured);
    imp.expect_error("TIMESTAMP_OUT_OF_WINDOW");
    nothing_delivered(&mut bob);
    still_serving(&relay);
}

#[test]
fn one_key_per_id_and_only_the_standard_pem_layout() {
    let _w = watchdog(Duration::from_secs(60));
    let relay = Relay::start(&[]);
    // Two real keys whose ids collide (a birthday search, done once:
    // tests/vectors/colliding_keys.json).
    let v: Value =
        serde_json::from_str(include_str!("vectors/colliding_keys.json")).expect("vector file");
    let load = |i: usize| {
        let pem = v["keys"][i]["privkey"].as_str().unwrap();
        Key::from_signing(SigningKey::from_pkcs8_pem(pem).unwrap())
    };
    let (a, b) = (load(0), load(1));
    assert_eq!(a.id, b.id, "the fixture's ids collide");
    assert_ne!(a.pem, b.pem);
    assert_eq!(a.pem, v["keys"][0]["pubkey"].as_str().unwrap());
    let mut first = keyed(&relay, "first", &a);
    // The id is bound to the first key: the other is refused while it is
    // connected, after it left, and even with proof of its own key.
    let mut other = relay.client();
    identify_030(&mut other, "second", &b);
    other.expect_error("IDENTITY_COLLISION");
    first.ws.close(None).unwrap();
    until_closed(&mut first);
    identify_030(&mut other, "second", &b);
    let e = other.expect_error("IDENTITY_COLLISION");
    assert!(e["message"].as_str().unwrap().contains(&a.id), "{e}");
    other.send(json!({"type":"IDENTIFY","name":"second","pubkey":b.pem,"prove":true}));
    other.expect_error("IDENTITY_COLLISION");
    // The first key is welcome again.
    let again = keyed(&relay, "first", &a);
    drop(again);
    // Whitespace variants of a key are refused: they would be other ids.
    for variant in [
        format!("{}\n", a.pem),
        a.pem.replace('\n', "\r\n"),
        format!(" {}", a.pem),
        a.pem.trim_end().to_string(),
    ] {
        let mut c = relay.client();
        c.send(json!({"type":"IDENTIFY","name":"ws","pubkey":variant}));
        let e = c.expect_error("INVALID_MSG");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("standard PEM layout"),
            "{e}"
        );
    }
    still_serving(&relay);
}

#[test]
fn silent_connections_are_closed_at_the_identify_deadline() {
    let _w = watchdog(Duration::from_secs(60));
    let relay = Relay::start(&["--identify-timeout", "1"]);
    let mut silent = relay.client();
    // LIST_CHANNELS is fine before IDENTIFY, but does not extend the deadline.
    silent.send(json!({"type":"LIST_CHANNELS"}));
    silent.expect("CHANNELS");
    let got = until_closed(&mut silent);
    assert!(got.iter().any(|v| v["code"] == "AUTH_REQUIRED"), "{got:?}");
    // One that identifies in time stays.
    let (mut ok, _) = relay.agent("ok");
    std::thread::sleep(Duration::from_millis(1500));
    ok.ping();
    still_serving(&relay);
}

#[test]
fn channel_invite_and_proposal_quotas_refuse_with_codes() {
    let _w = watchdog(Duration::from_secs(60));
    let relay = Relay::start(&[
        "--max-channels",
        "5",
        "--channels-per-hour",
        "2",
        "--max-invites",
        "2",
        "--max-pending",
        "2",
        "--max-proposals",
        "3",
        "--channel-idle",
        "1",
    ]);
    let (mut a, _) = relay.agent("creator");
    let create = |ws: &mut Ws, ch: &str| ws.send(json!({"type":"CREATE_CHANNEL","channel":ch}));
    create(&mut a, "#c1");
    a.expect("JOINED");
    create(&mut a, "#c2");
    a.expect("JOINED");
    // Per agent per hour.
    create(&mut a, "#c3");
    a.expect_error("RATE_LIMITED");
    // In total (#general, #agents, #c1, #c2, #c4 = 5): then refused.
    let (mut b, _) = relay.agent("creator2");
    create(&mut b, "#c4");
    b.expect("JOINED");
    create(&mut b, "#c5");
    b.expect_error("LIMIT_REACHED");
    // A created channel nobody is in is freed after --channel-idle.
    a.send(json!({"type":"LEAVE","channel":"#c2"}));
    a.expect("LEFT");
    std::thread::sleep(Duration::from_millis(1300));
    create(&mut b, "#c5");
    b.expect("JOINED");
    a.send(json!({"type":"JOIN","channel":"#c2"}));
    a.expect_error("CHANNEL_NOT_FOUND");
    // Invitations per channel.
    for n in ["@i1", "@i2"] {
        a.send(json!({"type":"INVITE","channel":"#c1","agent":n}));
    }
    a.send(json!({"type":"INVITE","channel":"#c1","agent":"@i3"}));
    a.expect_error("LIMIT_REACHED");
    // Pending proposals per agent, and in total.
    let (p, q, r) = (Key::new(), Key::new(), Key::new());
    let mut pw = keyed(&relay, "p", &p);
    let mut qw = keyed(&relay, "q", &q);
    let mut rw = keyed(&relay, "r", &r);
    let propose = |ws: &mut Ws, key: &Key, to: &str, task: &str| {
        let text = format!("{to}|{task}||||60");
        ws.send(json!({"type":"PROPOSAL","to":to,"task":task,"expires":60,"sig":key.sign(&text)}));
    };
    for t in ["t1", "t2"] {
        propose(&mut pw, &p, &q.id, t);
        pw.until("PROPOSAL");
    }
    propose(&mut pw, &p, &q.id, "t3");
    let e = pw.expect_error("INVALID_PROPOSAL");
    assert_eq!(e["message"], "TOO_MANY_PENDING_PROPOSALS");
    propose(&mut rw, &r, &q.id, "r1");
    rw.until("PROPOSAL");
    propose(&mut rw, &r, &q.id, "r2");
    let e = rw.expect_error("INVALID_PROPOSAL");
    assert_eq!(e["message"], "TOO_MANY_PROPOSALS");
    settle(&mut qw);
    still_serving(&relay);
}

#[test]
fn limits_hold_across_many_connections_from_one_address() {
    let _w = watchdog(Duration::from_secs(60));
    let relay = Relay::start(&[
        "--max-per-ip",
        "6",
        "--ip-rate-burst",
        "8",
        "--ip-rate-per-sec",
        "0.001",
    ]);
    // Five connections, each far inside its own limit (burst 10), share
    // their address's budget of 8 messages.
    let mut conns: Vec<(Ws, String)> = (0..5).map(|i| relay.agent(&format!("s{i}"))).collect();
    for (c, _) in conns.iter_mut() {
        c.join("#general");
    }
    let (mut delivered, mut limited) = (0, 0);
    for round in 0..2 {
        for (c, me) in conns.iter_mut() {
            c.msg("#general", &format!("{me}-{round}"));
            c.send(json!({"type":"PING"}));
            loop {
                let v = c.recv();
                match v["type"].as_str() {
                    Some("PONG") => break,
                    Some("ERROR") => {
                        assert_eq!(v["code"], "RATE_LIMITED", "{v}");
                        assert!(v["message"].as_str().unwrap().contains("address"), "{v}");
                        limited += 1;
                    }
                    Some("MSG") if v["from"] == me.as_str() => delivered += 1,
                    _ => {}
                }
            }
        }
    }
    assert_eq!((delivered, limited), (8, 2), "10 messages, 8 allowed");
    // The sixth connection is the last one this address may hold.
    let _sixth = relay.client();
    let addr = format!("127.0.0.1:{}", relay.port);
    let tcp = std::net::TcpStream::connect(&addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    match tungstenite::client::client(relay.url(), tcp) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            assert_eq!(resp.status().as_u16(), 429);
            let body =
                String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).to_string();
            assert!(body.starts_with("ERROR TOO_MANY_CONNECTIONS"), "{body}");
        }
        Ok(_) => panic!("a seventh connection from one address was accepted"),
        Err(e) => panic!("unexpected handshake failure: {e}"),
    }
    assert!(relay
        .wait_log("TOO_MANY_CONNECTIONS")
        .contains("TOO_MANY_CONNECTIONS"));
    drop(_sixth);
    // The address's own connections still work (a PING costs nothing).
    for (c, _) in conns.iter_mut() {
        settle(c);
    }
}

#[test]
fn a_channel_has_its_own_rate_limit_over_all_senders() {
    let _w = watchdog(Duration::from_secs(60));
    let relay = Relay::start(&[
        "--channel-rate-burst",
        "4",
        "--channel-rate-per-sec",
        "0.001",
    ]);
    let mut senders: Vec<Ws> = (0..3).map(|i| relay.agent(&format!("c{i}")).0).collect();
    for s in senders.iter_mut() {
        s.join("#agents");
    }
    let mut refused = 0;
    for (i, s) in senders.iter_mut().enumerate() {
        for j in 0..2 {
            s.msg("#agents", &format!("{i}-{j}"));
            s.send(json!({"type":"PING"}));
            loop {
                let v = s.recv();
                if v["type"] == "PONG" {
                    break;
                }
                if v["type"] == "ERROR" {
                    assert_eq!(v["code"], "RATE_LIMITED");
                    assert!(v["message"].as_str().unwrap().contains("#agents"), "{v}");
                    refused += 1;
                }
            }
        }
    }
    assert_eq!(refused, 2, "6 messages into a channel that takes 4");
    // Other channels are not affected.
    let (mut g, _) = relay.agent("g");
    g.join("#general");
    g.msg("#general", "fine");
    assert_eq!(g.until("MSG")["content"], "fine");
    still_serving(&relay);
}

#[test]
fn allowlist_and_no_ephemeral_with_sighup_reload() {
    let _w = watchdog(Duration::from_secs(60));
    let dir = std::env::temp_dir().join(format!("wb-allow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("allow.txt");
    let (a, b) = (Key::new(), Key::new());
    std::fs::write(&file, format!("# team\n{}", a.pem)).unwrap();
    let f = file.to_str().unwrap();
    let relay = Relay::start(&["--allow", f, "--no-ephemeral"]);
    let mut aw = keyed(&relay, "a", &a);
    aw.ping();
    let mut bw = relay.client();
    identify_030(&mut bw, "b", &b);
    bw.expect_error("NOT_ALLOWED");
    let mut anon = relay.client();
    anon.send(json!({"type":"IDENTIFY","name":"anon"}));
    anon.expect_error("NOT_ALLOWED");
    // SIGHUP re-reads the file: now b (as an exported identity), not a.
    let export = json!({"name":"b","pubkey":b.pem,"created":"2026-01-01T00:00:00.000Z"});
    std::fs::write(&file, serde_json::to_string_pretty(&export).unwrap()).unwrap();
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(relay.child.id() as i32, libc::SIGHUP) };
    let got = until_closed(&mut aw);
    assert!(got.iter().any(|v| v["code"] == "NOT_ALLOWED"), "{got:?}");
    let mut bw = keyed(&relay, "b", &b);
    bw.ping();
    // A bad file on reload keeps the list in force.
    std::fs::write(&file, "not a key\n").unwrap();
    unsafe { libc::kill(relay.child.id() as i32, libc::SIGHUP) };
    let mut bad = relay.client();
    identify_030(&mut bad, "a", &a);
    bad.expect_error("NOT_ALLOWED");
    bw.ping();
    assert!(relay
        .wait_log("allowlist_reload_failed")
        .contains("allowlist_reload_failed"));
    // An invalid file at start is exit 2, naming the file and line.
    let out = Command::new(BIN)
        .args(["relay", "--port", "0", "--host", "127.0.0.1", "--allow", f])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{f}:1:")), "{err}");
    let out = Command::new(BIN)
        .args(["relay", "--port", "0", "--allow", "/nonexistent/keys"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/keys"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Our own commands answer the CHALLENGE, so they work against a
/// `--require-proof` relay, and are proven in the default mode too.
#[test]
fn our_cli_passes_against_a_require_proof_relay() {
    let _w = watchdog(Duration::from_secs(90));
    let dir = std::env::temp_dir().join(format!("wb-proofcli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let id_file = dir.join("id.json");
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .env("HOME", &dir)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let f = id_file.to_str().unwrap();
    run(&["identity", "--generate", "--file", f, "--name", "cli"]);
    for mode in [&["--require-proof"][..], &[][..]] {
        let relay = Relay::start(mode);
        let url = relay.url();
        let (mut bob, bob_id) = relay.agent("bob");
        bob.join("#general");
        let out = run(&["send", &url, "#general", "proven hello", "--identity", f]);
        let echo: Value = serde_json::from_str(out.trim()).unwrap();
        assert!(echo["sig"].is_string());
        let got = bob.until("MSG");
        assert_eq!(got["content"], "proven hello");
        let me = got["from"].as_str().unwrap().to_string();
        run(&["send", &url, &bob_id, "dm", "--identity", f]);
        assert_eq!(bob.until("MSG")["content"], "dm");
        run(&["channels", &url, "--identity", f]);
        run(&["agents", &url, "#general", "--identity", f]);
        let out = run(&["propose", &url, &bob_id, "a task", "--identity", f]);
        let p: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(p["from"], me.as_str());
        let logs = relay.wait_log("\"verified\":true");
        assert!(
            logs.contains(&format!("\"agent\":\"{me}\"")) && logs.contains("\"verified\":true"),
            "{logs}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reconnect_churn_and_refusal_floods_are_cut_off() {
    let _w = watchdog(Duration::from_secs(60));
    // The floods below send up to 300 requests before reading: an outbox
    // deeper than that keeps a lagging writer (a loaded machine) from
    // dropping the client as slow, which is not what this test is about.
    let relay = Relay::start(&[
        "--connect-rate-burst",
        "4",
        "--connect-rate-per-sec",
        "0.001",
        "--outbox",
        "1024",
    ]);
    // One connection that keeps asking for what it was just refused: after
    // 200 refusals in a row it is told so and closed.
    let (mut flood, _) = relay.agent("flood");
    for _ in 0..200 {
        flood.send(json!({"type":"JOIN","channel":"#nope"}));
    }
    let got = until_closed(&mut flood);
    assert_eq!(got.len(), 201, "{:?}", got.last());
    assert!(got[..200].iter().all(|v| v["code"] == "CHANNEL_NOT_FOUND"));
    assert_eq!(got[200]["code"], "RATE_LIMITED");
    assert!(
        got[200]["message"].as_str().unwrap().contains("in a row"),
        "{:?}",
        got[200]
    );
    // An accepted message in between resets the count.
    let (mut mixed, _) = relay.agent("mixed");
    for i in 0..300 {
        if i % 100 == 99 {
            mixed.send(json!({"type":"PING"}));
        } else {
            mixed.send(json!({"type":"JOIN","channel":"#nope"}));
        }
    }
    mixed.send(json!({"type":"LIST_CHANNELS"}));
    mixed.until("CHANNELS");
    // Connections 1-2 are above; 3 and 4 of the burst are allowed, the
    // fifth is refused before its handshake.
    let (mut third, _) = relay.agent("third");
    let _fourth = relay.client();
    let tcp = std::net::TcpStream::connect(format!("127.0.0.1:{}", relay.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    match tungstenite::client::client(relay.url(), tcp) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            assert_eq!(resp.status().as_u16(), 429);
            let body =
                String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).to_string();
            assert!(body.contains("connecting too fast"), "{body}");
        }
        other => panic!("expected 429, got {:?}", other.map(|_| ())),
    }
    third.ping();
    mixed.ping();
}
