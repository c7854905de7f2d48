//! Black-box tests of `workbench serve`: the real binary on 127.0.0.1, real
//! HTTP and WebSocket clients, a temporary WORKBENCH_HOME per test.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

#[test]
fn serve_creates_the_project_and_writes_a_private_server_record() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("create");
    let srv = Server::start(
        &home,
        "bench1",
        &[
            "--title",
            "PSU <bring-up> & co",
            "--description",
            "<script>x</script>",
        ],
    );
    let dir = &srv.dir;
    for f in [
        "index.html",
        "session.md",
        "session.jsonl",
        "events.jsonl",
        "cost-log.jsonl",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    assert!(dir.join("files").is_dir());
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    assert!(html.contains("<title>PSU &lt;bring-up&gt; &amp; co</title>"));
    assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"));
    assert!(!html.contains("<script>x</script>"));

    let meta = std::fs::metadata(dir.join(".server.json")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    for k in ["pid", "port", "host", "url", "started", "token", "version"] {
        assert!(!srv.info[k].is_null(), "{k} missing from .server.json");
    }
    assert_eq!(srv.info["pid"], srv.proc.pid());
    assert_eq!(srv.info["token"].as_str().unwrap().len(), 64);
    assert!(srv.info["url"]
        .as_str()
        .unwrap()
        .ends_with(&format!(":{}/", srv.port)));

    let h = srv.health();
    assert_eq!(h["ok"], true);
    assert_eq!(h["project"], "bench1");
    assert_eq!(h["pid"], srv.proc.pid());
    assert_eq!(h["viewers"], 0);

    let page =
        workbench::httpc::request(&srv.addr(), "GET", "/", None, None, Duration::from_secs(5))
            .unwrap();
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("id=\"content\""));

    let start: Vec<Value> = read_jsonl(&dir.join("cost-log.jsonl"));
    assert_eq!(start.last().unwrap()["event"], "session_start");
}

#[test]
fn an_existing_project_keeps_its_files() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("keep");
    let dir = home.project("p");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("index.html"),
        "<html><title>mine</title>custom page</html>",
    )
    .unwrap();
    std::fs::write(
        dir.join("session.jsonl"),
        "{\"ts\":\"t\",\"level\":\"info\",\"message\":\"old\",\"source\":\"ai\"}\n",
    )
    .unwrap();
    let srv = Server::start(&home, "p", &["--title", "ignored"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("index.html")).unwrap(),
        "<html><title>mine</title>custom page</html>"
    );
    let (s, v) = srv.get_auth("/api/log?limit=5");
    assert_eq!(s, 200);
    assert_eq!(v["entries"][0]["message"], "old");
}

#[test]
fn pushes_reach_every_viewer_in_the_same_order() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("order");
    let srv = Server::start(&home, "order", &[]);
    let mut a = srv.viewer();
    let mut b = srv.viewer();
    a.preamble(0);
    b.preamble(0);
    assert_eq!(srv.health()["viewers"], 2);
    for i in 0..40 {
        if i % 3 == 0 {
            let (s, v) = srv.post(
                "/api/log",
                &json!({"message": format!("log {i}"), "level": "success"}),
            );
            assert_eq!((s, v["ok"].clone()), (200, json!(true)));
        } else {
            let (s, v) = srv.post("/api/state", &json!({"data": {"i": i}}));
            assert_eq!(s, 200);
            assert_eq!(v["viewers"], 2);
            assert!(v["bytes"].as_u64().unwrap() > 0);
        }
    }
    let seen_a: Vec<Value> = (0..40).map(|_| a.next()).collect();
    let seen_b: Vec<Value> = (0..40).map(|_| b.next()).collect();
    assert_eq!(seen_a, seen_b);
    for (i, m) in seen_a.iter().enumerate() {
        if i % 3 == 0 {
            assert_eq!(m["type"], "LOG");
            assert_eq!(m["entry"]["message"], format!("log {i}"));
            assert_eq!(m["entry"]["level"], "success");
        } else {
            assert_eq!(m["type"], "STATE");
            assert_eq!(m["full"], false);
            assert_eq!(m["state"]["data"]["i"], i);
        }
    }
    let seqs: Vec<u64> = seen_a.iter().filter_map(|m| m["seq"].as_u64()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq must increase: {seqs:?}"
    );
}

#[test]
fn late_viewer_gets_full_state_and_last_50_logs_then_live_pushes() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("late");
    let srv = Server::start(&home, "late", &[]);
    srv.post(
        "/api/state",
        &json!({"template": "<p>one</p>", "styles": "p{color:red}", "script": "1"}),
    );
    srv.post("/api/state", &json!({"data": [1, 2, 3]}));
    srv.post("/api/state", &json!({"styles": null}));
    for i in 0..60 {
        srv.post("/api/log", &json!({"message": format!("m{i}")}));
    }
    let mut v = srv.viewer();
    let (state, logs) = v.preamble(50);
    assert_eq!(
        state["state"],
        json!({"template": "<p>one</p>", "script": "1", "data": [1, 2, 3]})
    );
    assert!(logs
        .iter()
        .all(|l| l["type"] == "LOG" && l["replay"] == true));
    assert_eq!(logs[0]["entry"]["message"], "m10");
    assert_eq!(logs[49]["entry"]["message"], "m59");
    srv.post("/api/state", &json!({"template": "<p>two</p>"}));
    let live = v.next();
    assert_eq!(live["state"]["template"], "<p>two</p>");
    assert!(live.get("replay").is_none());

    let (s, recent) = srv.get_auth("/api/log?limit=3");
    assert_eq!(s, 200);
    let msgs: Vec<&str> = recent["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(msgs, ["m57", "m58", "m59"]);

    // Both log files got one line per entry.
    let jsonl = read_jsonl(&srv.dir.join("session.jsonl"));
    assert_eq!(jsonl.len(), 60);
    let md = std::fs::read_to_string(srv.dir.join("session.md")).unwrap();
    assert_eq!(md.lines().filter(|l| l.starts_with("- ")).count(), 60);
}

#[test]
fn stop_api_ends_cleanly_and_state_survives_a_restart() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("restart");
    let mut srv = Server::start(&home, "r", &[]);
    let mut v = srv.viewer();
    v.preamble(0);
    srv.post(
        "/api/state",
        &json!({"template": "<h2>kept</h2>", "data": {"x": 1}}),
    );
    srv.post("/api/log", &json!({"message": "before restart"}));
    let (s, _) = srv.post("/api/stop", &json!({}));
    assert_eq!(s, 200);
    assert_eq!(srv.proc.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(!srv.dir.join(".server.json").exists());
    let cost = read_jsonl(&srv.dir.join("cost-log.jsonl"));
    let end = cost.last().unwrap();
    assert_eq!(end["event"], "session_end");
    for k in [
        "started",
        "ended",
        "duration_s",
        "state_pushes",
        "log_entries",
        "peak_viewers",
        "bytes_pushed",
    ] {
        assert!(!end[k].is_null(), "{k} missing in {end}");
    }
    assert_eq!(end["state_pushes"], 1);
    assert_eq!(end["log_entries"], 1);
    assert_eq!(end["peak_viewers"], 1);
    assert!(end["bytes_pushed"].as_u64().unwrap() > 0);

    let srv2 = Server::start(&home, "r", &[]);
    assert_ne!(srv2.token, srv.token, "a fresh token per start");
    let mut v2 = srv2.viewer();
    let (state, logs) = v2.preamble(1);
    assert_eq!(state["state"]["template"], "<h2>kept</h2>");
    assert_eq!(state["state"]["data"], json!({"x": 1}));
    assert_eq!(logs[0]["entry"]["message"], "before restart");
}

#[test]
fn sigterm_ends_cleanly() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("sigterm");
    let mut srv = Server::start(&home, "t", &[]);
    srv.post("/api/log", &json!({"message": "x"}));
    srv.proc.signal("TERM");
    assert_eq!(srv.proc.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(!srv.dir.join(".server.json").exists());
    assert_eq!(
        read_jsonl(&srv.dir.join("cost-log.jsonl")).last().unwrap()["event"],
        "session_end"
    );
}

#[test]
fn writes_need_the_owner_token_and_change_nothing_without_it() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("auth");
    let srv = Server::start(&home, "auth", &[]);
    srv.post("/api/state", &json!({"template": "<p>owner</p>"}));
    let body = br#"{"template":"<p>intruder</p>"}"#;
    for token in [None, Some("wrong"), Some("")] {
        for path in ["/api/state", "/api/log", "/api/stop"] {
            let (s, v) = srv.post_raw(path, token, body);
            assert_eq!(s, 401, "{path} with {token:?}");
            assert!(v["error"].as_str().unwrap().contains("token"));
        }
        let (s, _) = http(&srv.addr(), "GET", "/api/log", token, None);
        assert_eq!(s, 401);
        let (s, _) = http(&srv.addr(), "GET", "/api/events", token, None);
        assert_eq!(s, 401);
    }
    let mut v = srv.viewer();
    let (state, _) = v.preamble(0);
    assert_eq!(state["state"]["template"], "<p>owner</p>");
    assert_eq!(srv.health()["ok"], true);
}

#[test]
fn bad_bodies_get_json_errors_and_the_server_keeps_serving() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("badbody");
    let srv = Server::start(&home, "bad", &["--max-body", "4096"]);
    let tok = Some(srv.token.as_str());
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("/api/state", b"{not json".to_vec(), 400, "not valid JSON"),
        ("/api/state", b"[1,2]".to_vec(), 400, "JSON object"),
        (
            "/api/state",
            br#"{"template": 5}"#.to_vec(),
            400,
            "must be a string",
        ),
        (
            "/api/state",
            br#"{"templat": "x"}"#.to_vec(),
            400,
            "unknown field",
        ),
        ("/api/state", b"{}".to_vec(), 400, "nothing to push"),
        ("/api/log", br#"{"message": 3}"#.to_vec(), 400, "'message'"),
        (
            "/api/log",
            br#"{"message": "x", "level": "loud"}"#.to_vec(),
            400,
            "'level'",
        ),
        ("/api/log", br#"{"message": ""}"#.to_vec(), 400, "empty"),
        (
            "/api/state",
            format!(r#"{{"template":"{}"}}"#, "x".repeat(5000)).into_bytes(),
            413,
            "limit",
        ),
    ];
    for (path, body, status, needle) in cases {
        let (s, v) = srv.post_raw(path, tok, &body);
        assert_eq!(
            s,
            status,
            "{path} {}",
            String::from_utf8_lossy(&body[..body.len().min(40)])
        );
        assert_eq!(v["ok"], false);
        assert!(v["error"].as_str().unwrap().contains(needle), "{v}");
    }
    let (s, _) = srv.get_auth("/api/log?limit=abc");
    assert_eq!(s, 400);
    let (s, _) = srv.get("/no/such/route");
    assert_eq!(s, 404);
    let (s, _) = http(&srv.addr(), "DELETE", "/api/state", tok, None);
    assert_eq!(s, 405);
    // Nothing was pushed or logged by any of that.
    assert!(read_jsonl(&srv.dir.join("session.jsonl")).is_empty());
    assert!(!srv.dir.join("state.json").exists());
    assert_eq!(srv.health()["ok"], true);
    let (s, _) = srv.post("/api/state", &json!({"template": "ok"}));
    assert_eq!(s, 200);
}

#[test]
fn files_are_served_from_files_only() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("files");
    let srv = Server::start(&home, "f", &[]);
    let files = srv.dir.join("files");
    std::fs::create_dir_all(files.join("sub")).unwrap();
    std::fs::write(files.join("sub/schematic.svg"), "<svg/>").unwrap();
    std::fs::write(files.join("notes.txt"), "hello").unwrap();
    std::fs::write(home.path.join("secret.txt"), "top secret").unwrap();
    std::os::unix::fs::symlink(home.path.join("secret.txt"), files.join("escape.txt")).unwrap();
    std::os::unix::fs::symlink("/etc", files.join("etc")).unwrap();

    let ok = workbench::httpc::request(
        &srv.addr(),
        "GET",
        "/files/sub/schematic.svg",
        None,
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body, b"<svg/>");
    let req = |p: &str| format!("GET {p} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    assert_eq!(raw_status(srv.port, &req("/files/notes.txt")), 200);
    for bad in [
        "/files/../../etc/passwd",
        "/files/..%2f..%2fetc%2fpasswd",
        "/files/%2e%2e/%2e%2e/etc/passwd",
        "/files/sub/../../index.html",
        "/files/escape.txt",
        "/files/etc/passwd",
        "/files//etc/passwd",
        "/files/%2fetc%2fpasswd",
        "/files/nope.txt",
        "/files/sub",
        "/files/%zz",
    ] {
        assert_eq!(raw_status(srv.port, &req(bad)), 404, "{bad}");
    }
    assert_eq!(srv.health()["ok"], true);
}

#[test]
fn invalid_project_names_are_refused_and_nothing_is_created() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("names");
    let long = "x".repeat(65);
    // A name no other process uses, next to the temp home: `/tmp/x` may exist.
    let sibling = format!(
        "{}-escaped",
        home.path.file_name().unwrap().to_string_lossy()
    );
    let escape = format!("../{sibling}");
    for bad in [escape.as_str(), "", long.as_str(), "a b", "/abs", ".hidden"] {
        let out = home
            .cmd()
            .args(["serve", bad, "--port", "0", "--host", "127.0.0.1"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("invalid project name"), "{bad:?}: {err}");
    }
    assert_eq!(
        std::fs::read_dir(&home.path).unwrap().count(),
        0,
        "nothing may be created"
    );
    assert!(!home.path.parent().unwrap().join(&sibling).exists());
}

#[test]
fn cli_usage_errors_exit_2() {
    let home = TempHome::new("usage");
    let out = home.cmd().args(["serve", "p", "--bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option '--bogus'"));
    let out = home.cmd().args(["serve"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing <name>"));
    let out = home
        .cmd()
        .args(["serve", "p", "--port", "seventy"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = home.cmd().args(["serve", "--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("example"));
}

#[test]
fn a_taken_port_is_named_in_the_error() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("port");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = home
        .cmd()
        .args([
            "serve",
            "p",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("port {port} is already in use")),
        "{err}"
    );
    assert!(!home.project("p").join(".server.json").exists());
}

#[test]
fn a_second_server_for_the_same_project_is_refused() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("twice");
    let srv = Server::start(&home, "once", &[]);
    let out = home
        .cmd()
        .args(["serve", "once", "--host", "127.0.0.1", "--port", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already being served"));
    // The first server's record is untouched.
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(srv.dir.join(".server.json")).unwrap())
            .unwrap();
    assert_eq!(info["pid"], srv.proc.pid());
}

#[test]
fn a_viewer_that_stops_reading_is_dropped_and_never_delays_the_others() {
    let _w = watchdog(Duration::from_secs(120));
    let home = TempHome::new("slow");
    let srv = Server::start(&home, "slow", &[]);
    // The stalled viewer: handshake done, then it never reads again.
    let _stalled = srv.viewer();
    let mut good = srv.viewer();
    good.preamble(0);
    // The stalled viewer registers on its own thread; wait until it counts.
    assert!(eventually(Duration::from_secs(10), || srv.health()
        ["viewers"]
        == 2));

    let n = 400;
    let port = srv.port;
    let reader = std::thread::spawn(move || {
        let _ = port;
        (0..n)
            .map(|_| good.next()["state"]["data"]["i"].as_u64().unwrap())
            .collect::<Vec<u64>>()
    });
    let blob = "x".repeat(64 * 1024);
    let mut min_viewers = 2;
    for i in 0..n {
        let (s, v) = srv.post("/api/state", &json!({"data": {"i": i, "blob": blob}}));
        assert_eq!(s, 200);
        min_viewers = min_viewers.min(v["viewers"].as_u64().unwrap());
    }
    let got = reader.join().unwrap();
    assert_eq!(
        got,
        (0..n).collect::<Vec<u64>>(),
        "the reading viewer got every push in order"
    );
    assert_eq!(min_viewers, 1, "the stalled viewer was dropped");
    assert_eq!(srv.health()["viewers"], 1);
}

#[test]
fn a_vanished_viewer_is_noticed() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("vanish");
    let mut c = home.cmd();
    c.env("WORKBENCH_PING_SECS", "1");
    let child = c
        .args(["serve", "v", "--host", "127.0.0.1", "--port", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut p = Proc {
        child,
        stdout: None,
    };
    let mut out = std::io::BufReader::new(p.child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let info: Value = serde_json::from_str(
        &std::fs::read_to_string(home.project("v").join(".server.json")).unwrap(),
    )
    .unwrap();
    let port = info["port"].as_u64().unwrap() as u16;
    let health = || {
        http(&format!("127.0.0.1:{port}"), "GET", "/health", None, None).1["viewers"]
            .as_u64()
            .unwrap()
    };
    {
        let mut v = Viewer::connect(port);
        // HELLO is queued after the viewer is registered: from then on it counts.
        assert_eq!(v.next()["type"], "HELLO");
        assert_eq!(health(), 1);
        // Drop the TCP connection without a close frame.
        v.ws.get_ref().shutdown(std::net::Shutdown::Both).unwrap();
    }
    assert!(
        eventually(Duration::from_secs(30), || health() == 0),
        "vanished viewer still counted"
    );
}

#[test]
fn corrupt_files_on_disk_are_survived_and_kept_for_inspection() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("corrupt");
    let dir = home.project("c");
    {
        let srv = Server::start(&home, "c", &[]);
        srv.post("/api/log", &json!({"message": "good entry"}));
        srv.post_raw("/api/event", Some(&srv.token), br#"{"name":"a"}"#);
    }
    // A torn state file, a half-written log line, garbage in events.jsonl.
    std::fs::write(dir.join("state.json"), "{\"template\": \"<p>cut").unwrap();
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("session.jsonl"))
        .unwrap();
    std::io::Write::write_all(&mut log, b"{\"ts\":\"2026\",\"mess").unwrap();
    drop(log);
    let mut ev = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("events.jsonl"))
        .unwrap();
    std::io::Write::write_all(&mut ev, b"not json at all\n").unwrap();
    drop(ev);

    let srv = Server::start(&home, "c", &[]);
    let mut v = srv.viewer();
    let (state, logs) = v.preamble(1);
    assert_eq!(
        state["state"],
        json!({}),
        "an unreadable state starts empty"
    );
    assert_eq!(
        logs[0]["entry"]["message"], "good entry",
        "readable entries survive"
    );
    let aside: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.json.corrupt-")
        })
        .collect();
    assert_eq!(
        aside.len(),
        1,
        "the corrupt state is kept beside, not deleted"
    );
    assert_eq!(
        std::fs::read_to_string(aside[0].path()).unwrap(),
        "{\"template\": \"<p>cut"
    );
    // Numbering continues after the last good event.
    let (s, r) = srv.post_raw("/api/event", Some(&srv.token), br#"{"name":"b"}"#);
    assert_eq!((s, r["seq"].clone()), (200, json!(2)));
    let (s, _) = srv.post("/api/state", &json!({"template": "<p>fresh</p>"}));
    assert_eq!(s, 200);
    // A new entry is not glued onto the torn line: it reads back whole.
    srv.post("/api/log", &json!({"message": "after the crash"}));
    let text = std::fs::read_to_string(dir.join("session.jsonl")).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["message"], "after the crash");
    assert_eq!(
        text.lines()
            .filter(|l| serde_json::from_str::<Value>(l).is_err())
            .count(),
        1,
        "only the torn line is bad"
    );
}

#[test]
fn big_pushes_and_then_small_ones_arrive_intact() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("big");
    let srv = Server::start(&home, "big", &[]);
    let mut v = srv.viewer();
    v.preamble(0);
    // Larger than the viewer's buffer-reset threshold, under the 8 MiB body limit.
    let big = "b".repeat(3 << 20);
    let (s, _) = srv.post("/api/state", &json!({"template": big}));
    assert_eq!(s, 200);
    for i in 0..3 {
        srv.post("/api/state", &json!({"data": i}));
    }
    assert_eq!(
        v.next()["state"]["template"].as_str().unwrap().len(),
        3 << 20
    );
    for i in 0..3 {
        assert_eq!(v.next()["state"]["data"], i);
    }
    // A late viewer gets the big template in its full state too.
    let mut late = srv.viewer();
    let (state, _) = late.preamble(0);
    assert_eq!(state["state"]["template"].as_str().unwrap().len(), 3 << 20);
}

#[test]
fn a_closing_page_says_goodbye_with_its_key() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("bye");
    let srv = Server::start(&home, "bye", &[]);
    let mut v = srv.viewer();
    let hello = v.next();
    assert_eq!(hello["type"], "HELLO");
    let (viewer, key) = (
        hello["viewer"].as_str().unwrap(),
        hello["key"].as_str().unwrap(),
    );
    assert_eq!(key.len(), 16);
    assert_eq!(srv.health()["viewers"], 1);
    let bye = |body: String| http(&srv.addr(), "POST", "/api/bye", None, Some(body.as_bytes()));
    // A wrong key, an unknown viewer or a bad body changes nothing.
    assert_eq!(
        bye(json!({"viewer": viewer, "key": "0000000000000000"}).to_string()).0,
        404
    );
    assert_eq!(bye(json!({"viewer": "v99", "key": key}).to_string()).0, 404);
    assert_eq!(bye("not json".into()).0, 400);
    assert_eq!(srv.health()["viewers"], 1);
    // The right key (sendBeacon posts it as text/plain) drops it at once.
    assert_eq!(
        bye(json!({"viewer": viewer, "key": key}).to_string()).0,
        200
    );
    assert_eq!(srv.health()["viewers"], 0);
    loop {
        match v.ws.read() {
            Ok(tungstenite::Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        }
    }
}
