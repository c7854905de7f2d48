//! The path back from the page: POST /api/event, the long-poll, and the
//! workbench_wait / workbench_events tools, with their bad-input cases.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

fn post_event(srv: &Server, body: &[u8]) -> (u16, Value) {
    // Events need the page's event key (from HELLO) or the owner's token.
    http(
        &srv.addr(),
        "POST",
        "/api/event",
        Some(&srv.token),
        Some(body),
    )
}

#[test]
fn events_are_numbered_stored_logged_and_read_after_a_cursor() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("ev-basic");
    let srv = Server::start(&home, "ev", &[]);
    let mut v = srv.viewer();
    v.preamble(0);
    let (s, r) = post_event(
        &srv,
        br#"{"name":"reading","data":{"volts":5.02},"viewer":"v1"}"#,
    );
    assert_eq!((s, r["seq"].clone()), (200, json!(1)));
    let (s, r) = post_event(&srv, br#"{"name":"step3-done","data":null}"#);
    assert_eq!((s, r["seq"].clone()), (200, json!(2)));
    // Each event also lands in the session log, pushed to viewers as text.
    assert!(v.next()["entry"]["message"]
        .as_str()
        .unwrap()
        .starts_with("event reading"));
    assert_eq!(v.next()["entry"]["source"], "page");

    let (s, all) = srv.get_auth("/api/events?since=0");
    assert_eq!(s, 200);
    assert_eq!(all["cursor"], 2);
    assert_eq!(all["events"][0]["data"], json!({"volts": 5.02}));
    assert_eq!(all["events"][0]["from"]["viewer"], "v1");
    assert_eq!(all["events"][0]["from"]["addr"], "127.0.0.1");
    let (_, after1) = srv.get_auth("/api/events?since=1");
    assert_eq!(after1["events"].as_array().unwrap().len(), 1);
    let (_, only) = srv.get_auth("/api/events?since=0&names=step3-done");
    assert_eq!(only["events"][0]["seq"], 2);

    let lines = read_jsonl(&srv.dir.join("events.jsonl"));
    assert_eq!(lines.len(), 2);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["seq"], i as u64 + 1);
        for k in ["ts", "name", "data", "from"] {
            assert!(l.get(k).is_some(), "{k} missing in {l}");
        }
    }
    // Numbering continues after a restart.
    drop(v);
    drop(srv);
    let srv = Server::start(&home, "ev", &[]);
    let (_, r) = post_event(&srv, br#"{"name":"again"}"#);
    assert_eq!(r["seq"], 3);
}

#[test]
fn bad_events_get_clear_answers_and_nothing_is_stored() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("ev-bad");
    let srv = Server::start(&home, "evb", &[]);
    let big = format!(r#"{{"name":"x","data":"{}"}}"#, "a".repeat(70 * 1024));
    let long_name = format!(r#"{{"name":"{}"}}"#, "n".repeat(65));
    let cases: Vec<(&[u8], u16)> = vec![
        (b"not json", 400),
        (b"[]", 400),
        (br#"{"data":1}"#, 400),
        (br#"{"name":""}"#, 400),
        (br#"{"name":"has space"}"#, 400),
        (br#"{"name":"<script>"}"#, 400),
        (long_name.as_bytes(), 400),
        (br#"{"name":5}"#, 400),
        (big.as_bytes(), 413),
    ];
    for (body, status) in cases {
        let (s, r) = post_event(&srv, body);
        assert_eq!(
            s,
            status,
            "{}",
            String::from_utf8_lossy(&body[..body.len().min(50)])
        );
        assert!(r["error"].is_string());
    }
    // A cross-site form post (text/plain) is refused.
    let req = format!("POST /api/event HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: close\r\n\r\n{{\"name\":\"a\"}}\n", srv.token);
    assert_eq!(raw_status(srv.port, &req), 415);
    assert!(read_jsonl(&srv.dir.join("events.jsonl")).is_empty());

    // Bad cursors.
    for q in ["since=-1", "since=abc", "wait=x", "limit=-3"] {
        let (s, r) = srv.get_auth(&format!("/api/events?{q}"));
        assert_eq!(s, 400, "{q}");
        assert!(r["error"].is_string());
    }
    let (s, r) = srv.get_auth("/api/events?since=99");
    assert_eq!(s, 400);
    assert!(r["error"].as_str().unwrap().contains("since=0"), "{r}");
    assert_eq!(srv.health()["ok"], true);
}

#[test]
fn a_flood_from_one_viewer_is_rate_limited_without_losing_accepted_events() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("ev-flood");
    let srv = Server::start(&home, "flood", &[]);
    let mut accepted = 0;
    let mut limited = 0;
    for i in 0..100 {
        let (s, r) = post_event(&srv, format!(r#"{{"name":"tick","data":{i}}}"#).as_bytes());
        match s {
            200 => accepted += 1,
            429 => {
                limited += 1;
                assert!(r["error"].as_str().unwrap().contains("slow down"));
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(limited > 0, "a flood must hit the rate limit");
    assert!(accepted >= 20, "the burst is accepted");
    let (_, all) = srv.get_auth("/api/events?since=0&limit=1000");
    assert_eq!(all["events"].as_array().unwrap().len(), accepted);
    // The owner's API is not slowed or refused meanwhile.
    let (s, _) = srv.post("/api/log", &json!({"message": "still here"}));
    assert_eq!(s, 200);
}

#[test]
fn wait_blocks_until_an_event_and_never_loses_one() {
    let _w = watchdog(Duration::from_secs(90));
    let home = TempHome::new("ev-wait");
    let mut m = Mcp::start(&home);
    m.initialize();
    m.ok("workbench_scaffold", json!({"name": "w"}));
    let addr = format!("127.0.0.1:{}", server_info(&home, "w")["port"]);
    let token = server_info(&home, "w")["token"]
        .as_str()
        .unwrap()
        .to_string();

    // Nothing yet: pending with the same cursor, after the (clamped) timeout.
    for t in [json!(0), json!(-5), json!(0.2)] {
        let r = m.ok(
            "workbench_wait",
            json!({"project": "w", "timeout_seconds": t}),
        );
        assert_eq!(r["status"], "pending");
        assert_eq!(r["cursor"], 0);
    }

    // An event that arrives while nobody waits is returned by the next call.
    http(
        &addr,
        "POST",
        "/api/event",
        Some(&token),
        Some(br#"{"name":"message","data":{"text":"hi"}}"#),
    );
    let r = m.ok("workbench_wait", json!({"project": "w", "since": 0}));
    assert_eq!(r["status"], "events");
    assert_eq!(r["events"][0]["data"]["text"], "hi");
    let cursor = r["cursor"].clone();
    assert_eq!(cursor, 1);

    // A waiter blocks until the event arrives (huge timeout is clamped, not refused).
    let a2 = addr.clone();
    let token2 = token.clone();
    let poster = std::thread::spawn(move || {
        let token = token2;
        std::thread::sleep(Duration::from_millis(300));
        http(
            &a2,
            "POST",
            "/api/event",
            Some(&token),
            Some(br#"{"name":"reading","data":{"v":1}}"#),
        );
        http(
            &a2,
            "POST",
            "/api/event",
            Some(&token),
            Some(br#"{"name":"other","data":{}}"#),
        );
    });
    let r = m.ok(
        "workbench_wait",
        json!({"project": "w", "since": cursor, "timeout_seconds": 1e9, "names": ["reading"]}),
    );
    poster.join().unwrap();
    assert_eq!(r["status"], "events");
    assert_eq!(r["events"].as_array().unwrap().len(), 1);
    assert_eq!(r["events"][0]["name"], "reading");
    assert_eq!(r["cursor"], 2);
    // The filtered-out event is still there for an unfiltered read.
    let r = m.ok("workbench_events", json!({"project": "w", "since": 2}));
    assert_eq!(r["events"][0]["name"], "other");
    assert_eq!(r["cursor"], 3);

    // Bad cursors are answers the AI can act on.
    let (err, msg) = m.call("workbench_wait", json!({"project": "w", "since": -1}));
    assert!(err && msg.as_str().unwrap().contains("since"), "{msg}");
    let (err, msg) = m.call("workbench_wait", json!({"project": "w", "since": 1000}));
    assert!(err && msg.as_str().unwrap().contains("since=3"), "{msg}");
    let (err, msg) = m.call("workbench_events", json!({"project": "w", "since": "x"}));
    assert!(
        err && msg.as_str().unwrap().contains("bad arguments"),
        "{msg}"
    );
    m.ok("workbench_stop", json!({"project": "w"}));
}

#[test]
fn a_waiting_tool_sends_progress_and_never_blocks_other_requests() {
    let _w = watchdog(Duration::from_secs(90));
    let home = TempHome::new("ev-progress");
    let mut m = Mcp::start(&home);
    m.initialize();
    m.ok("workbench_scaffold", json!({"name": "pg"}));
    m.send(&json!({"jsonrpc": "2.0", "id": "w", "method": "tools/call",
        "params": {"name": "workbench_wait", "arguments": {"project": "pg", "timeout_seconds": 7}, "_meta": {"progressToken": "tok-1"}}}));
    // While the wait blocks, other requests are answered at once.
    let p = m.request("ping", json!({}));
    assert_eq!(p["result"], json!({}));
    let r = m.response_to(&json!("w"), Duration::from_secs(30));
    assert_eq!(r["result"]["structuredContent"]["status"], "pending");
    let progress: Vec<&Value> = m
        .notifications
        .iter()
        .filter(|n| n["method"] == "notifications/progress")
        .collect();
    assert!(!progress.is_empty(), "keep-alive progress while blocking");
    assert!(progress
        .iter()
        .all(|n| n["params"]["progressToken"] == "tok-1"));
    m.ok("workbench_stop", json!({"project": "pg"}));
}

#[test]
fn snapshot_without_a_viewer_says_so() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("ev-snap");
    let mut m = Mcp::start(&home);
    m.initialize();
    m.ok("workbench_scaffold", json!({"name": "s"}));
    let r = m.ok("workbench_snapshot", json!({"project": "s"}));
    assert_eq!(r["connected"], false);
    assert!(r["message"].as_str().unwrap().contains("no browser"));
    m.ok("workbench_stop", json!({"project": "s"}));
}

#[test]
fn all_viewers_together_are_rate_limited_too() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("ev-total");
    // Each client may send plenty; all together only the overall bucket
    // (burst 100 at 1/s): the shared limit is what refuses here.
    let srv = Server::start(
        &home,
        "total",
        &["--events-client-rate", "1000", "--events-rate", "1"],
    );
    let mut accepted = 0;
    let mut refused = 0;
    for i in 0..200 {
        let (s, r) = post_event(&srv, format!(r#"{{"name":"t","data":{i}}}"#).as_bytes());
        match s {
            200 => accepted += 1,
            429 => {
                refused += 1;
                assert!(
                    r["error"]
                        .as_str()
                        .unwrap()
                        .contains("all viewers together"),
                    "{r}"
                );
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(refused > 0, "the overall limit must refuse some");
    assert!(
        (100..=110).contains(&accepted),
        "the burst is taken: {accepted}"
    );
    let (_, all) = srv.get_auth("/api/events?since=0&limit=1000");
    assert_eq!(all["events"].as_array().unwrap().len(), accepted);
    // Bad values for the options are usage errors, not a running server.
    for bad in [
        ["--events-rate", "0"],
        ["--events-max-bytes", "100"],
        ["--events-segment-bytes", "x"],
    ] {
        let o = run(
            home.cmd().args(["serve", "bad", "--port", "0"]).args(bad),
            Duration::from_secs(10),
        );
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
    }
    let o = run(
        home.cmd()
            .args(["serve", "bad", "--port", "0"])
            .env("WORKBENCH_EVENTS_MAX_BYTES", "lots"),
        Duration::from_secs(10),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("WORKBENCH_EVENTS_MAX_BYTES"),
        "{}",
        stderr(&o)
    );
}
