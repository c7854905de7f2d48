//! Issue 14 §2 against the real thing: a real `redis-server` on a free
//! loopback port (its own temp dir, AOF on) and three `workbench relay
//! --cluster` nodes on 127.0.0.1, with the clients spread over the nodes.
//! Every read has a timeout; waits are bounded with generous deadlines;
//! nothing asserts on timing. Built with the `cluster` feature (default).
#![cfg(feature = "cluster")]

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{keyed, node, watchdog, Cluster, Key, RedisServer, Relay, Ws, FAST};

fn ids(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Skips to the next MSG and returns its content.
fn next_content(ws: &mut Ws) -> String {
    ws.until("MSG")["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn channel_messages_dms_and_presence_span_the_nodes() {
    let _w = watchdog(Duration::from_secs(120));
    let c = Cluster::start(3, &FAST);
    let (mut a, aid) = c.nodes[0].agent("alice");
    let (mut b, bid) = c.nodes[1].agent("bob");
    let (mut d, did) = c.nodes[2].agent("dave");

    // JOINED lists and AGENT_JOINED cover every node.
    assert_eq!(
        ids(&a.join("#general")["agents"]),
        BTreeSet::from([aid.clone()])
    );
    assert_eq!(
        ids(&b.join("#general")["agents"]),
        BTreeSet::from([aid.clone(), bid.clone()])
    );
    assert_eq!(a.expect("AGENT_JOINED")["agent"], bid.as_str());
    let joined = d.join("#general");
    assert_eq!(
        ids(&joined["agents"]),
        BTreeSet::from([aid.clone(), bid.clone(), did.clone()])
    );
    assert_eq!(a.expect("AGENT_JOINED")["agent"], did.as_str());
    assert_eq!(b.expect("AGENT_JOINED")["agent"], did.as_str());

    // LIST_AGENTS and LIST_CHANNELS counts, asked on another node.
    b.send(json!({"type": "LIST_AGENTS", "channel": "#general"}));
    assert_eq!(ids(&b.expect("AGENTS")["list"]), ids(&joined["agents"]));
    d.send(json!({"type": "LIST_CHANNELS"}));
    let list = d.expect("CHANNELS")["list"].clone();
    let general = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "#general")
        .cloned()
        .unwrap();
    assert_eq!(general["agents"], 3, "{list}");

    // Three senders on three nodes, interleaved without waiting: every
    // member sees one and the same order, each sender's own in its order.
    for i in 0..30 {
        a.msg("#general", &format!("a{i}"));
        b.msg("#general", &format!("b{i}"));
        d.msg("#general", &format!("d{i}"));
    }
    let seen: Vec<Vec<String>> = [&mut a, &mut b, &mut d]
        .into_iter()
        .map(|ws| (0..90).map(|_| next_content(ws)).collect())
        .collect();
    assert_eq!(seen[0], seen[1], "node 0 and node 1 saw different orders");
    assert_eq!(seen[0], seen[2], "node 0 and node 2 saw different orders");
    for p in ["a", "b", "d"] {
        let mine: Vec<&String> = seen[0].iter().filter(|m| m.starts_with(p)).collect();
        let want: Vec<String> = (0..30).map(|i| format!("{p}{i}")).collect();
        assert_eq!(mine, want.iter().collect::<Vec<_>>());
    }

    // A DM crosses nodes and is echoed to its sender.
    a.msg(&did, "psst");
    let got = d.until("MSG");
    assert_eq!(
        (got["from"].as_str(), got["content"].as_str()),
        (Some(aid.as_str()), Some("psst"))
    );
    let echo = a.until("MSG");
    assert_eq!(
        (echo["to"].as_str(), echo["content"].as_str()),
        (Some(did.as_str()), Some("psst"))
    );
    a.msg("@nobody1", "x");
    a.expect_error("AGENT_NOT_FOUND");

    // The replay buffer is the cluster's: a newcomer on any node gets it.
    let (mut late, _) = c.nodes[1].agent("late");
    late.join("#general");
    let replay: Vec<Value> = (0..20).map(|_| late.expect("MSG")).collect();
    assert!(replay.iter().all(|m| m["replay"] == true));
    let tail: Vec<String> = replay
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(tail, seen[0][70..].to_vec());

    // LEAVE and a closed connection: AGENT_LEFT on the other nodes.
    b.send(json!({"type": "LEAVE", "channel": "#general"}));
    b.until("LEFT");
    assert_eq!(a.until("AGENT_LEFT")["agent"], bid.as_str());
    assert_eq!(d.until("AGENT_LEFT")["agent"], bid.as_str());
    drop(late);
    assert_eq!(a.until("AGENT_LEFT")["channel"], "#general");
    a.send(json!({"type": "LIST_AGENTS", "channel": "#general"}));
    assert_eq!(
        ids(&a.expect("AGENTS")["list"]),
        BTreeSet::from([aid.clone(), did.clone()])
    );
    // PING answers in order, after everything before it.
    d.send(json!({"type": "PING"}));
    d.until("PONG");
}

#[test]
fn channels_invites_errors_and_races_span_the_nodes() {
    let _w = watchdog(Duration::from_secs(120));
    let c = Cluster::start(3, &[]);
    let (mut owner, oid) = c.nodes[0].agent("owner");
    let (mut guest, gid) = c.nodes[1].agent("guest");
    let (mut other, _) = c.nodes[2].agent("other");

    // Invite-only, created on node 0: hidden and closed on the others.
    owner.send(json!({"type": "CREATE_CHANNEL", "channel": "#secret", "invite_only": true}));
    assert_eq!(
        ids(&owner.expect("JOINED")["agents"]),
        BTreeSet::from([oid.clone()])
    );
    guest.send(json!({"type": "LIST_CHANNELS"}));
    let list = guest.expect("CHANNELS")["list"].to_string();
    assert!(!list.contains("#secret"), "{list}");
    guest.send(json!({"type": "JOIN", "channel": "#secret"}));
    guest.expect_error("NOT_INVITED");
    other.send(json!({"type": "INVITE", "channel": "#secret", "agent": gid}));
    other.expect_error("NOT_INVITED");
    // The invitation reaches the invitee on its node; then it may join.
    owner.send(json!({"type": "INVITE", "channel": "#secret", "agent": gid}));
    let note = guest.until("MSG");
    assert_eq!(note["from"], oid.as_str());
    assert!(note["content"].as_str().unwrap().contains("#secret"));
    assert_eq!(
        ids(&guest.join("#secret")["agents"]),
        BTreeSet::from([oid.clone(), gid.clone()])
    );
    assert_eq!(owner.until("AGENT_JOINED")["agent"], gid.as_str());
    other.send(json!({"type": "JOIN", "channel": "#secret"}));
    other.expect_error("NOT_INVITED");

    // Errors come back from any node as they do from one relay.
    other.send(json!({"type": "CREATE_CHANNEL", "channel": "#secret"}));
    other.expect_error("CHANNEL_EXISTS");
    other.send(json!({"type": "JOIN", "channel": "#nope"}));
    other.expect_error("CHANNEL_NOT_FOUND");
    other.msg("#general", "not a member");
    other.expect_error("NOT_INVITED");
    other.send(json!({"type": "IDENTIFY", "name": "again"}));
    other.expect_error("INVALID_MSG");
    let mut anon = c.nodes[2].client();
    anon.send(json!({"type": "JOIN", "channel": "#general"}));
    anon.expect_error("AUTH_REQUIRED");
    other.ping();

    // Two nodes race to create one channel: exactly one wins.
    for round in 0..5 {
        let name = format!("#race{round}");
        owner.send(json!({"type": "CREATE_CHANNEL", "channel": name}));
        other.send(json!({"type": "CREATE_CHANNEL", "channel": name}));
        let (o, t) = (owner.recv(), other.recv());
        let kinds = BTreeSet::from([o["type"].to_string(), t["type"].to_string()]);
        assert_eq!(
            kinds,
            BTreeSet::from(["\"JOINED\"".to_string(), "\"ERROR\"".to_string()]),
            "{o} / {t}"
        );
        let loser = if o["type"] == "ERROR" { &o } else { &t };
        assert_eq!(loser["code"], "CHANNEL_EXISTS");
    }
}

#[test]
fn identity_is_one_per_cluster_and_racing_proposal_moves_have_one_winner() {
    let _w = watchdog(Duration::from_secs(120));
    let c = Cluster::start(3, &[]);
    let kp = Key::new();
    let kr = Key::new();
    let mut p = keyed(&c.nodes[0], "proposer", &kp);
    let mut r = keyed(&c.nodes[1], "recipient", &kr);

    // The same key on another node is refused while it is connected.
    let mut dup = c.nodes[2].client();
    dup.send(json!({"type": "IDENTIFY", "name": "dup", "pubkey": kr.pem}));
    let e = dup.expect_error("INVALID_MSG");
    assert!(
        e["message"].as_str().unwrap().contains("already connected"),
        "{e}"
    );

    // Two connections of one new key IDENTIFY at once on two nodes:
    // exactly one is welcomed.
    let kx = Key::new();
    let mut x1 = c.nodes[0].client();
    let mut x2 = c.nodes[2].client();
    let hello = json!({"type": "IDENTIFY", "name": "x", "pubkey": kx.pem});
    x1.send(hello.clone());
    x2.send(hello);
    let (v1, v2) = (x1.recv(), x2.recv());
    let welcomed = [&v1, &v2].iter().filter(|v| v["type"] == "WELCOME").count();
    assert_eq!(welcomed, 1, "{v1} / {v2}");
    let loser = if v1["type"] == "ERROR" { &v1 } else { &v2 };
    assert_eq!(loser["code"], "INVALID_MSG");

    // A proposal across nodes, its transitions seen by both parties.
    p.send(kp.proposal(&kr.id, "review the draft", 600));
    let prop = p.expect("PROPOSAL");
    let pid = prop["id"].as_str().unwrap().to_string();
    assert_eq!(r.expect("PROPOSAL")["id"], pid.as_str());
    // ACCEPT and REJECT of one proposal sent back to back: one wins.
    r.send(kr.act("ACCEPT", &pid, "payment_code", Some("pay")));
    r.send(kr.act("REJECT", &pid, "reason", Some("busy")));
    assert_eq!(r.expect("ACCEPT")["status"], "accepted");
    r.expect_error("INVALID_PROPOSAL");
    assert_eq!(p.expect("ACCEPT")["status"], "accepted");
    // COMPLETE (the proposer, on node 0) and DISPUTE (the recipient, on
    // node 1) of the accepted proposal, sent at once: one wins on every
    // node, and the loser gets the usual error.
    p.send(kp.act("COMPLETE", &pid, "proof", Some("done")));
    r.send(kr.act("DISPUTE", &pid, "reason", Some("not done")));
    let (pv, rv) = (p.recv(), r.recv());
    assert_eq!(
        pv["type"], rv["type"],
        "both parties hear one winner: {pv} / {rv}"
    );
    let (p_won, status) = match pv["type"].as_str() {
        Some("COMPLETE") => (true, "completed"),
        Some("DISPUTE") => (false, "disputed"),
        _ => panic!("neither won: {pv} / {rv}"),
    };
    assert_eq!(
        (pv["status"].as_str(), rv["status"].as_str()),
        (Some(status), Some(status))
    );
    let loser = if p_won { &mut r } else { &mut p };
    loser.expect_error("INVALID_PROPOSAL");

    // A keyed MSG is verified where it arrives: unsigned or replayed is
    // refused, cluster-wide.
    r.join("#general");
    p.join("#general");
    r.until("AGENT_JOINED");
    p.send(json!({"type": "MSG", "to": "#general", "content": "unsigned"}));
    p.expect_error("SIGNATURE_REQUIRED");
    let signed = kp.msg("#general", "signed once");
    p.send(signed.clone());
    assert_eq!(r.until("MSG")["content"], "signed once");
    assert_eq!(p.until("MSG")["content"], "signed once");
    p.send(signed);
    p.expect_error("REPLAY_DETECTED");

    // A proven connection on another node takes over an id held by one
    // that has not proven its key.
    let ks = Key::new();
    let mut squat = keyed(&c.nodes[0], "squat", &ks);
    squat.join("#general");
    p.until("AGENT_JOINED");
    let mut owner = c.nodes[2].client();
    owner.send(json!({"type": "IDENTIFY", "name": "s2", "pubkey": ks.pem, "prove": true}));
    let ch = owner.expect("CHALLENGE");
    owner.send(ks.answer(&ch));
    let w = owner.expect("WELCOME");
    assert_eq!(
        (w["agent_id"].as_str(), w["verified"].as_bool()),
        (Some(ks.id.as_str()), Some(true))
    );
    assert_eq!(squat.until("ERROR")["code"], "SESSION_DISPLACED");
    assert_eq!(p.until("AGENT_LEFT")["agent"], ks.id.as_str());
    owner.send(ks.msg(&kp.id, "still me"));
    assert_eq!(p.until("MSG")["content"], "still me");
}

/// Blocks until `ws` gets an AGENT_LEFT for `agent` (bounded).
fn wait_left(ws: &mut Ws, agent: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    // One read may wait the whole limit here.
    ws.ws.get_ref().set_read_timeout(Some(limit)).unwrap();
    while Instant::now() < deadline {
        let v = ws.recv();
        if v["type"] == "AGENT_LEFT" && v["agent"] == agent {
            return true;
        }
    }
    false
}

#[test]
fn a_killed_node_leaves_presence_and_its_agents_carry_on_elsewhere() {
    let _w = watchdog(Duration::from_secs(120));
    let mut c = Cluster::start(3, &[]);
    let (mut a, aid) = c.nodes[0].agent("stay");
    let k = Key::new();
    let mut v = keyed(&c.nodes[2], "victim", &k);
    a.join("#general");
    v.join("#general");
    a.expect("AGENT_JOINED");
    // kill -9 of node 2: no departure record is ever written for it.
    let _ = c.nodes[2].child.kill();
    let _ = c.nodes[2].child.wait();
    // The survivors declare it dead (within 15 s; bounded wait of 40 s).
    assert!(
        wait_left(&mut a, &k.id, Duration::from_secs(40)),
        "no AGENT_LEFT for the dead node's agent"
    );
    a.ws.get_ref()
        .set_read_timeout(Some(support::READ_TIMEOUT))
        .unwrap();
    a.send(json!({"type": "LIST_AGENTS", "channel": "#general"}));
    assert_eq!(
        ids(&a.expect("AGENTS")["list"]),
        BTreeSet::from([aid.clone()])
    );
    // The agent reconnects to another node and carries on with its id.
    let mut v2 = keyed(&c.nodes[1], "victim", &k);
    v2.join("#general");
    assert_eq!(a.expect("AGENT_JOINED")["agent"], k.id.as_str());
    v2.send(k.msg("#general", "back"));
    assert_eq!(a.until("MSG")["content"], "back");
    // A new node 2 (same node id) joins and sees the whole state.
    let url = c.redis.url();
    c.nodes[2] = node(&url, 2, &[]);
    let (mut n, nid) = c.nodes[2].agent("newcomer");
    let j = n.join("#general");
    assert_eq!(
        ids(&j["agents"]),
        BTreeSet::from([aid.clone(), k.id.clone(), nid.clone()])
    );
    let replayed = n.expect("MSG");
    assert_eq!(
        (replayed["content"].as_str(), replayed["replay"].as_bool()),
        (Some("back"), Some(true))
    );
    let _ = v;
}

#[test]
fn a_redis_restart_keeps_sessions_and_refuses_clearly_meanwhile() {
    let _w = watchdog(Duration::from_secs(180));
    let mut c = Cluster::start(3, &[]);
    let (mut a, aid) = c.nodes[0].agent("a");
    let (mut b, bid) = c.nodes[1].agent("b");
    a.join("#general");
    b.join("#general");
    a.expect("AGENT_JOINED");
    a.msg("#general", "before");
    assert_eq!(b.until("MSG")["content"], "before");
    assert_eq!(a.until("MSG")["content"], "before");

    c.redis.kill();
    // While Redis is away: /health says so, and a MSG is refused with the
    // documented code (never dropped in silence). Bounded wait: the node
    // notices at its next Redis operation.
    let port = c.nodes[0].port;
    assert!(
        support::eventually(Duration::from_secs(30), || health(port).0 == 503),
        "health stayed OK with Redis down"
    );
    let (code, body) = health(port);
    assert_eq!(
        (code, body["ok"].as_bool(), body["mode"].as_str()),
        (503, Some(false), Some("cluster"))
    );
    a.msg("#general", "during");
    a.expect_error("CLUSTER_UNAVAILABLE");
    let mut fresh = c.nodes[2].client();
    fresh.send(json!({"type": "IDENTIFY", "name": "fresh"}));
    fresh.expect_error("CLUSTER_UNAVAILABLE");

    c.redis.restart();
    // Every node comes back (bounded), the sessions were kept throughout.
    for n in &c.nodes {
        let p = n.port;
        assert!(
            support::eventually(Duration::from_secs(60), || health(p).0 == 200),
            "node on {p} did not recover"
        );
    }
    a.msg("#general", "after");
    let got = b.until("MSG");
    assert_eq!(
        (got["from"].as_str(), got["content"].as_str()),
        (Some(aid.as_str()), Some("after"))
    );
    b.send(json!({"type": "LIST_AGENTS", "channel": "#general"}));
    assert_eq!(ids(&b.expect("AGENTS")["list"]), BTreeSet::from([aid, bid]));
    fresh.send(json!({"type": "IDENTIFY", "name": "fresh"}));
    fresh.expect("WELCOME");
    for n in &mut c.nodes {
        assert!(n.child.try_wait().unwrap().is_none(), "a node exited");
    }
}

#[test]
fn a_burst_of_100_agents_over_3_nodes_settles_to_one_member_list() {
    let _w = watchdog(Duration::from_secs(180));
    let c = Cluster::start(3, &["--connect-rate-burst", "1000", "--max-per-ip", "1000"]);
    let urls: Vec<String> = c.nodes.iter().map(Relay::url).collect();
    let handles: Vec<_> = (0..100)
        .map(|i| {
            let url = urls[i % 3].clone();
            std::thread::spawn(move || {
                let mut ws = Ws::connect(&url);
                let id = ws.identify(&format!("b{i}"));
                ws.join("#agents");
                (ws, id)
            })
        })
        .collect();
    let mut agents: Vec<(Ws, String)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let all: BTreeSet<String> = agents.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(all.len(), 100);
    // Settled: every agent, on every node, lists all 100.
    for (ws, _) in &mut agents {
        ws.send(json!({"type": "LIST_AGENTS", "channel": "#agents"}));
        let list = ws.until("AGENTS");
        assert_eq!(ids(&list["list"]), all);
    }
}

fn health(port: u16) -> (u16, Value) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, Value::Null);
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split("\r\n\r\n")
        .nth(1)
        .and_then(|b| serde_json::from_str(b.trim()).ok())
        .unwrap_or(Value::Null);
    (code, body)
}

#[test]
fn bad_cluster_urls_are_usage_errors_and_an_unreachable_redis_is_clear() {
    let _w = watchdog(Duration::from_secs(60));
    for (url, says) in [
        ("http://127.0.0.1:6379", "redis://"),
        ("rediss://127.0.0.1:6379", "TLS"),
        ("redis://", "no host"),
        ("redis://127.0.0.1:6379/abc", "database"),
        ("redis://127.0.0.1:notaport", "Redis URL"),
        ("redis://127.0.0.1:0", "port 0"),
    ] {
        let (code, text) = Relay::try_start(&["--cluster", url]).err().expect(url);
        assert_eq!(code, Some(2), "{url}: {text}");
        assert!(text.contains(says), "{url}: {text}");
    }
    let (code, text) = Relay::try_start(&["--cluster", "redis://127.0.0.1:6379", "--ephemeral"])
        .err()
        .unwrap();
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("does not go with"), "{text}");
    let (code, text) = Relay::try_start(&["--node-id", "x"]).err().unwrap();
    assert_eq!(code, Some(2), "{text}");
    let (code, text) = Relay::try_start(&[
        "--cluster",
        "redis://127.0.0.1:6379",
        "--node-id",
        "bad id!",
    ])
    .err()
    .unwrap();
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("--node-id"), "{text}");
    // Nobody listens on this port: a clear error, not a hang or a panic.
    let port = support::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let (code, text) = Relay::try_start(&["--cluster", &url]).err().unwrap();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("cannot reach Redis at"), "{text}");
    assert!(text.contains(&port.to_string()), "{text}");
}

#[test]
fn a_password_in_the_url_is_used_and_a_wrong_one_is_clear() {
    let _w = watchdog(Duration::from_secs(60));
    let redis = RedisServer::start_with(Some("s3cret-pw"));
    let n0 = node(&redis.url(), 0, &[]);
    let n1 = node(&redis.url(), 1, &[]);
    let (mut a, _) = n0.agent("a");
    let (mut b, _) = n1.agent("b");
    a.join("#general");
    b.join("#general");
    a.msg("#general", "authed");
    assert_eq!(b.until("MSG")["content"], "authed");
    // Never in the logs.
    assert!(!n0.log_text().contains("s3cret-pw"));
    let wrong = format!("redis://:nope@127.0.0.1:{}", redis.port);
    let (code, text) = Relay::try_start(&["--cluster", &wrong]).err().unwrap();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("cannot reach Redis"), "{text}");
    assert!(!text.contains("nope@"), "{text}");
}

#[test]
fn the_stream_is_trimmed_behind_snapshots_and_a_new_node_starts_from_one() {
    let _w = watchdog(Duration::from_secs(120));
    let mut flags = FAST.to_vec();
    flags.extend(["--cluster-snapshot-every", "100"]);
    let c = Cluster::start(2, &flags);
    let (mut a, aid) = c.nodes[0].agent("a");
    let (mut b, bid) = c.nodes[1].agent("b");
    a.send(json!({"type": "CREATE_CHANNEL", "channel": "#kept", "invite_only": true}));
    a.expect("JOINED");
    a.send(json!({"type": "INVITE", "channel": "#kept", "agent": bid}));
    b.until("MSG");
    b.join("#kept");
    for i in 0..400 {
        a.msg("#kept", &format!("m{i}"));
    }
    for i in 0..400 {
        assert_eq!(next_content(&mut b), format!("m{i}"));
    }
    // Snapshots were written and the stream trimmed behind them (bounded wait).
    let xlen = |r: &RedisServer| -> usize {
        r.command(&["XLEN", "workbench:relay:log"])
            .lines()
            .find_map(|l| l.strip_prefix(':').and_then(|n| n.parse().ok()))
            .unwrap_or(usize::MAX)
    };
    assert!(
        support::eventually(Duration::from_secs(30), || xlen(&c.redis) < 400),
        "stream not trimmed: {} records; snapshot log lines:\n{}",
        xlen(&c.redis),
        c.nodes
            .iter()
            .flat_map(|n| n
                .log_text()
                .lines()
                .filter(|l| l.contains("snapshot"))
                .map(str::to_string)
                .collect::<Vec<_>>())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(c
        .redis
        .command(&["HEXISTS", "workbench:relay:snapshot", "at"])
        .contains(":1"));
    assert!(c
        .nodes
        .iter()
        .any(|n| n.log_text().contains("\"cluster_snapshot\"")));
    // A new node starts from the snapshot plus the tail: channel, invites,
    // members and the replay buffer are all there.
    let n2 = node(&c.redis.url(), 2, &flags);
    assert!(n2
        .wait_log("cluster_snapshot_loaded")
        .contains("cluster_snapshot_loaded"));
    let mut d = n2.client();
    let did = d.identify("d");
    d.send(json!({"type": "JOIN", "channel": "#kept"}));
    d.expect_error("NOT_INVITED");
    b.send(json!({"type": "INVITE", "channel": "#kept", "agent": did}));
    d.until("MSG");
    let j = d.join("#kept");
    assert_eq!(ids(&j["agents"]), BTreeSet::from([aid, bid, did]));
    let replay: Vec<String> = (0..20).map(|_| next_content(&mut d)).collect();
    let want: Vec<String> = (380..400).map(|i| format!("m{i}")).collect();
    assert_eq!(replay, want);
}

#[test]
fn a_node_stopped_cleanly_says_its_agents_are_gone() {
    let _w = watchdog(Duration::from_secs(60));
    let mut c = Cluster::start(2, &[]);
    let (mut a, _) = c.nodes[0].agent("stays");
    let (mut b, bid) = c.nodes[1].agent("goes");
    a.join("#general");
    b.join("#general");
    a.expect("AGENT_JOINED");
    let joined = c.nodes[1].wait_log("cluster_joined");
    let session = joined
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "cluster_joined")
        .and_then(|v| v["session"].as_str().map(str::to_string))
        .expect("the session is logged");
    let pid = c.nodes[1].child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = c.nodes[1].child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    // Its departure record is in the stream, and its agent left.
    let log = c
        .redis
        .command(&["XRANGE", "workbench:relay:log", "-", "+"]);
    let farewell = format!(r#""d":"{session}""#);
    assert!(
        log.contains(&farewell),
        "no farewell for {session} in {log}"
    );
    assert_eq!(a.until("AGENT_LEFT")["agent"], bid.as_str());
}

#[test]
fn require_proof_holds_across_nodes() {
    let _w = watchdog(Duration::from_secs(60));
    let c = Cluster::start(2, &["--require-proof"]);
    let k = Key::new();
    let prove = |ws: &mut Ws| -> Value {
        ws.send(json!({"type": "IDENTIFY", "name": "p", "pubkey": k.pem, "prove": true}));
        let ch = ws.expect("CHALLENGE");
        ws.send(k.answer(&ch));
        ws.recv()
    };
    let mut first = c.nodes[0].client();
    let w = prove(&mut first);
    assert_eq!(
        (w["type"].as_str(), w["verified"].as_bool()),
        (Some("WELCOME"), Some(true)),
        "{w}"
    );
    // The same key, proven too, on the other node: the proven holder stays.
    let mut second = c.nodes[1].client();
    let e = prove(&mut second);
    assert_eq!(e["code"], "INVALID_MSG", "{e}");
    assert!(e["message"].as_str().unwrap().contains("proven"), "{e}");
    // A wrong answer is refused where it arrives.
    let mut third = c.nodes[1].client();
    third.send(json!({"type": "IDENTIFY", "name": "p", "pubkey": k.pem, "prove": true}));
    let mut ch = third.expect("CHALLENGE");
    ch["nonce"] = json!("not-the-nonce");
    third.send(k.answer(&ch));
    third.expect_error("VERIFICATION_FAILED");
    first.ping();
}
