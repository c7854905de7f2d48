//! The events log and the disk against abuse and failure, on the real
//! binary over loopback: a 100,000-event flood, the quota and its `lost`
//! marker, restarts, torn and invalid lines, failing writes (injected, and a
//! full tmpfs when the test may mount one), and file modes. After each: the
//! server still serves a page load and a push, its RSS stays under a stated
//! bound, and everything it acknowledged is on disk.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// RSS bound after each abuse below: the events memory budget is at most
/// 1 MiB in these tests, so anything near this means a leak.
const RSS_LIMIT_KB: u64 = 128 * 1024;

/// One keep-alive HTTP/1.1 connection posting events as a page does.
struct Conn {
    r: BufReader<TcpStream>,
    port: u16,
    key: String,
}

/// The page's event key (from a viewer's HELLO), fetched once per server.
fn event_key(port: u16, fresh: bool) -> String {
    static KEYS: std::sync::Mutex<Vec<(u16, String)>> = std::sync::Mutex::new(Vec::new());
    let mut keys = KEYS.lock().unwrap();
    if !fresh {
        if let Some((_, k)) = keys.iter().find(|(p, _)| *p == port) {
            return k.clone();
        }
    }
    let key = Viewer::connect(port).next()["event_key"]
        .as_str()
        .expect("HELLO carries the event key")
        .to_string();
    keys.retain(|(p, _)| *p != port);
    keys.push((port, key.clone()));
    key
}

impl Conn {
    fn new(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.set_nodelay(true).unwrap();
        Conn {
            r: BufReader::new(s),
            port,
            key: event_key(port, false),
        }
    }

    fn post_event(&mut self, body: &[u8]) -> (u16, Value) {
        let r = self.post_event_once(body);
        if r.0 == 403 {
            // A restarted server on the same port has a new key.
            self.key = event_key(self.port, true);
            return self.post_event_once(body);
        }
        r
    }

    fn post_event_once(&mut self, body: &[u8]) -> (u16, Value) {
        let head = format!(
            "POST /api/event HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nX-Workbench-Key: {}\r\nContent-Length: {}\r\n\r\n",
            self.port,
            self.key,
            body.len()
        );
        // One write: a head and a body in two segments would meet Nagle's
        // algorithm and delayed ACKs (40 ms per request).
        let mut req = head.into_bytes();
        req.extend_from_slice(body);
        self.r.get_mut().write_all(&req).unwrap();
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        let status: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut len = 0;
        loop {
            line.clear();
            self.r.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; len];
        self.r.read_exact(&mut body).unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}

/// A home on /dev/shm (a tmpfs every Linux has) for the 100,000-event flood:
/// the events log fsyncs every batch, and this keeps thousands of fsyncs off
/// the shared machine's disk (the quota tests below flood the real disk).
/// Falls back to the usual temp dir when /dev/shm is missing.
fn shm_home(tag: &str) -> TempHome {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("no /dev/shm: flooding a home on the normal temp dir");
        return TempHome::new(tag);
    }
    let path = shm.join(format!(
        "wb-test-{tag}-{}-{}",
        std::process::id(),
        workbench::util::now_ms()
    ));
    std::fs::create_dir_all(&path).unwrap();
    TempHome { path }
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Every record in every events segment of a project folder, oldest first.
fn events_on_disk(dir: &Path) -> Vec<Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("events") && n.ends_with(".jsonl"))
        .collect();
    // events.jsonl is segment 0, then events-000001.jsonl, …
    files.sort_by_key(|n| (n != "events.jsonl", n.clone()));
    files
        .iter()
        .flat_map(|f| {
            std::fs::read(dir.join(f))
                .unwrap()
                .split(|&b| b == b'\n')
                .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn events_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("events") && n.ends_with(".jsonl")
        })
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// The server still does its job: a page load, a push, a bounded RSS.
fn still_serves(srv: &Server, what: &str) {
    let r = workbench::httpc::request(&srv.addr(), "GET", "/", None, None, Duration::from_secs(10))
        .unwrap();
    assert_eq!(r.status, 200, "page load after {what}");
    assert!(String::from_utf8_lossy(&r.body).contains("<html"));
    let (s, _) = srv.post("/api/state", &json!({"data": {"after": what}}));
    assert_eq!(s, 200, "push after {what}");
    let rss = rss_kb(srv.proc.pid());
    assert!(
        rss < RSS_LIMIT_KB,
        "RSS {rss} kB after {what} (bound {RSS_LIMIT_KB} kB)"
    );
    eprintln!("{what}: RSS {rss} kB");
}

/// Temp files (`.NAME.PID.tmp`) in a project folder.
fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

/// Posts `n` events named `name` over `conns` keep-alive connections;
/// returns every acknowledged seq.
fn flood(port: u16, name: &str, n: usize, conns: usize) -> Vec<u64> {
    let per = n / conns;
    let threads: Vec<_> = (0..conns)
        .map(|c| {
            let name = name.to_string();
            let count = if c == conns - 1 { n - per * c } else { per };
            std::thread::spawn(move || {
                let mut conn = Conn::new(port);
                let mut acked = Vec::with_capacity(count);
                for i in 0..count {
                    let body = format!(r#"{{"name":"{name}","data":{{"c":{c},"i":{i}}}}}"#);
                    let (s, r) = conn.post_event(body.as_bytes());
                    assert_eq!(s, 200, "{r}");
                    acked.push(r["seq"].as_u64().unwrap());
                }
                acked
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

const FAST: [&str; 4] = [
    "--events-rate",
    "10000000",
    "--events-client-rate",
    "10000000",
];

#[test]
fn after_100000_flood_events_the_humans_reading_is_still_returned() {
    let _w = watchdog(Duration::from_secs(600));
    let home = shm_home("disk-flood");
    let mut args = FAST.to_vec();
    args.extend(["--events-memory-bytes", "1048576"]);
    let srv = Server::start(&home, "flood", &args);
    // The AI's cursor is 0; 50,000 flood events, the human's reading, 50,000 more.
    let mut acked = flood(srv.port, "tick", 50_000, 16);
    let (s, r) = Conn::new(srv.port).post_event(br#"{"name":"reading","data":{"volts":5.02}}"#);
    assert_eq!(s, 200);
    let reading_seq = r["seq"].as_u64().unwrap();
    acked.push(reading_seq);
    acked.extend(flood(srv.port, "tick", 50_000, 16));

    let (s, got) = srv.get_auth("/api/events?since=0&names=reading&wait=5");
    assert_eq!(s, 200);
    assert_eq!(got["events"].as_array().unwrap().len(), 1, "{got}");
    assert_eq!(got["events"][0]["name"], "reading");
    assert_eq!(got["events"][0]["seq"], reading_seq);
    assert_eq!(got["events"][0]["data"]["volts"], 5.02);
    assert_eq!(got["cursor"], reading_seq);
    // An old cursor (far older than memory) is served from disk, in order.
    let (_, page) = srv.get_auth(&format!("/api/events?since={}&limit=5", reading_seq - 3));
    assert_eq!(
        seqs(page["events"].as_array().unwrap()),
        (reading_seq - 2..=reading_seq + 2).collect::<Vec<_>>()
    );

    // Every acknowledged event is on disk exactly once; numbers have no holes.
    acked.sort_unstable();
    assert_eq!(acked, (1..=100_001).collect::<Vec<u64>>());
    let on_disk = events_on_disk(&srv.dir);
    assert_eq!(seqs(&on_disk), acked);
    still_serves(&srv, "a 100,000-event flood");
}

#[test]
fn the_quota_bounds_the_disk_reports_lost_events_and_numbering_survives_a_restart() {
    let _w = watchdog(Duration::from_secs(180));
    let home = TempHome::new("disk-quota");
    let mut args = FAST.to_vec();
    args.extend([
        "--events-max-bytes",
        "65536",
        "--events-segment-bytes",
        "8192",
        "--events-memory-bytes",
        "4096",
    ]);
    let dir = home.project("q");
    let first_floor;
    {
        let srv = Server::start(&home, "q", &args);
        let (s, r) = Conn::new(srv.port).post_event(br#"{"name":"reading","data":{"volts":4.9}}"#);
        assert_eq!((s, r["seq"].as_u64()), (200, Some(1)));
        let acked = flood(srv.port, "tick", 3000, 4);
        assert_eq!(acked.len(), 3000);
        let bytes = events_bytes(&srv.dir);
        assert!(bytes <= 65536, "events on disk: {bytes} bytes > quota");

        // The reading was dropped by the quota: a name-filtered read says so
        // instead of waiting for ever.
        let (_, got) = srv.get_auth("/api/events?since=0&names=reading&wait=2");
        let lost = &got["events"][0];
        assert_eq!(lost["type"], "lost", "{got}");
        assert_eq!(lost["name"], "lost");
        assert_eq!(lost["reason"], "quota");
        assert_eq!(lost["from_seq"], 1);
        let to = lost["to_seq"].as_u64().unwrap();
        assert_eq!(lost["count"], to);
        assert_eq!(lost["seq"], to);
        assert_eq!(got["cursor"], to);
        // Everything after the marker is there, in order, with no holes.
        let on_disk = seqs(&events_on_disk(&srv.dir));
        assert_eq!(on_disk, (to + 1..=3001).collect::<Vec<u64>>());
        let (_, next) = srv.get_auth(&format!("/api/events?since={to}&limit=3"));
        assert_eq!(
            seqs(next["events"].as_array().unwrap()),
            vec![to + 1, to + 2, to + 3]
        );
        first_floor = to + 1;
        still_serves(&srv, "a flood over the quota");
        srv.post("/api/stop", &json!({}));
    }
    // A restart: numbering continues after the highest seq on disk, old
    // cursors still get the marker, and the quota holds.
    let srv = Server::start(&home, "q", &args);
    let (s, r) = Conn::new(srv.port).post_event(br#"{"name":"after","data":1}"#);
    assert_eq!((s, r["seq"].as_u64()), (200, Some(3002)));
    let (s, _) = srv.get_auth("/api/events?since=3002");
    assert_eq!(s, 200, "the last cursor is still valid");
    let (_, got) = srv.get_auth("/api/events?since=0&limit=2");
    assert_eq!(got["events"][0]["type"], "lost");
    assert!(got["events"][0]["to_seq"].as_u64().unwrap() + 1 >= first_floor);
    let all = seqs(&events_on_disk(&dir));
    let mut sorted = all.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), all.len(), "no seq is used twice");
    assert!(events_bytes(&dir) <= 65536);
    still_serves(&srv, "a restart after a flood");
}

#[test]
fn torn_invalid_and_corrupt_lines_are_skipped_one_by_one() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("disk-torn");
    let dir = home.project("t");
    {
        let srv = Server::start(&home, "t", &[]);
        for i in 1..=10 {
            let (s, _) = srv.post_raw(
                "/api/event",
                Some(&srv.token),
                format!(r#"{{"name":"n{i}","data":{i}}}"#).as_bytes(),
            );
            assert_eq!(s, 200);
        }
        srv.post("/api/log", &json!({"message": "kept entry"}));
        srv.post("/api/stop", &json!({}));
    }
    // Record 5 corrupted in the middle (an invalid UTF-8 byte in it), then a
    // torn record and one invalid byte at the very end.
    let path = dir.join("events.jsonl");
    let text = std::fs::read(&path).unwrap();
    let mut lines: Vec<Vec<u8>> = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| l.to_vec())
        .collect();
    assert_eq!(lines.len(), 10);
    lines[4][12] = 0xff;
    let mut bytes = lines.join(&b'\n');
    bytes.extend_from_slice(b"\n{\"seq\":11,\"name\":\"torn\",\"da\xff");
    std::fs::write(&path, bytes).unwrap();
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("session.jsonl"))
        .unwrap();
    log.write_all(b"\xff\n").unwrap();
    drop(log);

    let srv = Server::start(&home, "t", &[]);
    let (_, got) = srv.get_auth("/api/events?since=0");
    let ev = got["events"].as_array().unwrap();
    assert_eq!(seqs(ev), vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert_eq!(ev[4]["type"], "lost", "the corrupt record is reported");
    assert_eq!(ev[4]["reason"], "unreadable");
    assert_eq!(ev[4]["count"], 1);
    assert_eq!(ev[9]["name"], "n10");
    // Numbering continues after the last whole record, never restarting.
    let (s, r) = srv.post_raw("/api/event", Some(&srv.token), br#"{"name":"next"}"#);
    assert_eq!((s, r["seq"].as_u64()), (200, Some(11)));
    // The session log's invalid last line does not hide the entries before it.
    let (_, logs) = srv.get_auth("/api/log?limit=1000");
    assert!(logs["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["message"] == "kept entry"));
    let (_, after) = srv.get_auth("/api/events?since=10");
    assert_eq!(after["events"][0]["name"], "next");
    still_serves(&srv, "a torn and corrupt events log");
}

/// Writes that fail (injected in this debug build: see util::injected_write_failure)
/// are answered with an error, use up no number, leave no temp file, and
/// the server recovers once the disk does.
#[test]
fn a_failing_write_is_never_acknowledged() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("disk-fail");
    let flag = home.path.join("fail-writes");
    let flag_s = flag.to_string_lossy().into_owned();
    let srv = Server::start_env(
        &home,
        "f",
        0,
        &[],
        &[("WORKBENCH_TEST_FAIL_WRITES", &flag_s)],
    );
    assert_eq!(
        srv.post_raw("/api/event", Some(&srv.token), br#"{"name":"ok1"}"#)
            .0,
        200
    );
    assert_eq!(srv.post("/api/log", &json!({"message": "saved"})).0, 200);
    assert_eq!(
        srv.post("/api/state", &json!({"template": "<p>saved</p>"}))
            .0,
        200
    );

    for (errno, status) in [("28", 507), ("5", 500)] {
        std::fs::write(&flag, errno).unwrap();
        let (s, r) = srv.post_raw("/api/event", Some(&srv.token), br#"{"name":"refused"}"#);
        assert_eq!(s, status, "{r}");
        assert!(r["error"].as_str().unwrap().contains("not stored"), "{r}");
        let (s, r) = srv.post("/api/log", &json!({"message": "refused"}));
        assert_eq!(s, status, "{r}");
        assert!(r["error"].as_str().unwrap().contains("not saved"), "{r}");
        let (s, r) = srv.post("/api/state", &json!({"template": "<p>refused</p>"}));
        assert_eq!(s, status, "{r}");
        assert!(r["error"].as_str().unwrap().contains("not saved"), "{r}");
    }
    std::fs::remove_file(&flag).unwrap();

    // Recovered: the next event takes the next number (no hole, no reuse).
    let (s, r) = srv.post_raw("/api/event", Some(&srv.token), br#"{"name":"ok2"}"#);
    assert_eq!((s, r["seq"].as_u64()), (200, Some(2)));
    let names: Vec<String> = events_on_disk(&srv.dir)
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["ok1", "ok2"]);
    let log = read_jsonl(&srv.dir.join("session.jsonl"));
    assert!(log.iter().any(|e| e["message"] == "saved"));
    assert!(!log.iter().any(|e| e["message"] == "refused"));
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(srv.dir.join("state.json")).unwrap())
            .unwrap();
    assert_eq!(state["template"], "<p>saved</p>");
    assert_eq!(
        temp_files(&srv.dir),
        Vec::<String>::new(),
        "temp files left"
    );
    still_serves(&srv, "failed writes");
}

/// A real full disk: a 512 KiB tmpfs. Needs root (mount); skipped with a
/// message otherwise — `a_failing_write_is_never_acknowledged` always runs.
#[test]
fn a_full_disk_gets_507_and_nothing_acknowledged_is_missing() {
    let _w = watchdog(Duration::from_secs(120));
    let home = TempHome::new("disk-full");
    let mnt = home.path.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
        .arg(&mnt)
        .output();
    match mounted {
        Ok(o) if o.status.success() => {}
        other => {
            eprintln!("SKIPPED a_full_disk_gets_507…: cannot mount a tmpfs ({other:?}); the injected-failure test covers the error path");
            return;
        }
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let tmp_home = TempHome {
        path: mnt.join("home"),
    };
    std::fs::create_dir_all(&tmp_home.path).unwrap();
    let srv = Server::start(&tmp_home, "full", &FAST);
    let (s, r) = srv.post_raw(
        "/api/event",
        Some(&srv.token),
        br#"{"name":"before","data":1}"#,
    );
    assert_eq!((s, r["seq"].as_u64()), (200, Some(1)));

    // Fill the tmpfs to the last byte.
    let filler = mnt.join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![b'x'; 4096];
        while f.write_all(&chunk).is_ok() {}
        let mut b = [b'x'];
        while f.write_all(&b).is_ok() {
            b[0] = b'x';
        }
    }
    let mut acked_events = vec!["before".to_string()];
    let mut acked_logs = Vec::new();
    let mut refused = 0;
    for i in 0..40 {
        let name = format!("e{i}");
        let (s, r) = srv.post_raw(
            "/api/event",
            Some(&srv.token),
            format!(r#"{{"name":"{name}","data":"{}"}}"#, "d".repeat(300)).as_bytes(),
        );
        match s {
            200 => acked_events.push(name),
            507 => refused += 1,
            other => panic!("event {i}: status {other} {r}"),
        }
        let msg = format!("log {i} {}", "m".repeat(300));
        let (s, r) = srv.post("/api/log", &json!({ "message": msg }));
        match s {
            200 => acked_logs.push(msg),
            507 => refused += 1,
            other => panic!("log {i}: status {other} {r}"),
        }
    }
    assert!(refused > 0, "a full disk must refuse something");
    let (s, _) = srv.post("/api/state", &json!({"template": "x".repeat(8192)}));
    assert_eq!(s, 507, "a state that cannot be saved is not acknowledged");

    std::fs::remove_file(&filler).unwrap();
    let (s, _) = srv.post_raw("/api/event", Some(&srv.token), br#"{"name":"after"}"#);
    assert_eq!(s, 200, "writes work again once there is room");
    acked_events.push("after".into());
    let names: Vec<String> = events_on_disk(&srv.dir)
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, acked_events, "exactly the acknowledged events");
    let on_disk: BTreeSet<String> = read_jsonl(&srv.dir.join("session.jsonl"))
        .iter()
        .filter_map(|e| e["message"].as_str().map(String::from))
        .collect();
    for m in &acked_logs {
        assert!(on_disk.contains(m), "acknowledged log entry missing");
    }
    assert_eq!(
        temp_files(&srv.dir),
        Vec::<String>::new(),
        "no temp file is left on the full disk"
    );
    still_serves(&srv, "a full disk");
    drop(srv);
    drop(tmp_home);
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn session_files_are_owner_only_and_old_projects_are_fixed_at_start() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("disk-modes");
    let mut m = Mcp::start(&home);
    m.initialize();
    m.ok("workbench_scaffold", json!({"name": "md"}));
    m.ok(
        "workbench_state",
        json!({"project": "md", "template": "<p>x</p>"}),
    );
    let dir = home.project("md");
    let port = server_info(&home, "md")["port"].as_u64().unwrap() as u16;
    Conn::new(port).post_event(br#"{"name":"a"}"#);
    m.ok("workbench_stop", json!({"project": "md"}));
    let session_files = [
        "state.json",
        "session.md",
        "session.jsonl",
        "events.jsonl",
        "cost-log.jsonl",
        "server.log",
    ];
    assert_eq!(mode(&dir), 0o700);
    for f in session_files {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    // An older project: 0755 folder, 0644 files, a temp file from a crash.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in session_files {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let stale = dir.join(".state.json.999999999.tmp");
    std::fs::write(&stale, b"half").unwrap();
    let srv = Server::start(&home, "md", &[]);
    assert_eq!(mode(&dir), 0o700);
    for f in session_files {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f} fixed at start");
    }
    assert_eq!(mode(&dir.join(".server.json")), 0o600);
    assert!(!stale.exists(), "a dead process's temp file is removed");
    still_serves(&srv, "fixing modes");
}

/// Servers started by `workbench mcp` take the quota from its environment,
/// and the `lost` marker reaches the AI through workbench_wait.
#[test]
fn mcp_servers_take_the_quota_from_the_environment_and_pass_lost_markers() {
    let _w = watchdog(Duration::from_secs(120));
    let home = TempHome::new("disk-mcp");
    let mut m = Mcp::start_env(
        &home,
        &[
            ("WORKBENCH_EVENTS_MAX_BYTES", "16384"),
            ("WORKBENCH_EVENTS_SEGMENT_BYTES", "4096"),
            ("WORKBENCH_EVENTS_MEMORY_BYTES", "4096"),
            ("WORKBENCH_EVENTS_RATE", "100000"),
            ("WORKBENCH_EVENTS_CLIENT_RATE", "100000"),
        ],
    );
    m.initialize();
    m.ok("workbench_scaffold", json!({"name": "mq"}));
    let port = server_info(&home, "mq")["port"].as_u64().unwrap() as u16;
    let (s, _) = Conn::new(port).post_event(br#"{"name":"reading","data":{"v":1}}"#);
    assert_eq!(s, 200);
    let acked = flood(port, "tick", 1000, 2);
    assert_eq!(acked.len(), 1000);
    assert!(events_bytes(&home.project("mq")) <= 16384);
    let r = m.ok(
        "workbench_wait",
        json!({"project": "mq", "since": 0, "names": ["reading"], "timeout_seconds": 2}),
    );
    assert_eq!(r["status"], "events");
    let lost = &r["events"][0];
    assert_eq!(lost["type"], "lost", "{r}");
    assert_eq!(lost["from_seq"], 1);
    assert_eq!(r["cursor"], lost["to_seq"]);
    let r = m.ok(
        "workbench_events",
        json!({"project": "mq", "since": 0, "limit": 2}),
    );
    assert_eq!(r["events"][0]["type"], "lost");
    assert_eq!(
        r["events"][1]["seq"].as_u64(),
        lost["to_seq"].as_u64().map(|t| t + 1)
    );
    // A page cannot forge a marker: the name is reserved.
    let (s, _) = Conn::new(port).post_event(br#"{"name":"lost","data":{}}"#);
    assert_eq!(s, 400);
    m.ok("workbench_stop", json!({"project": "mq"}));
}

/// The AI hears about a write that did not reach the disk: the tool call
/// is an error it can act on, not a success.
#[test]
fn mcp_tools_report_a_failed_write_as_an_error() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("disk-mcp-fail");
    let flag = home.path.join("fail-writes");
    let flag_s = flag.to_string_lossy().into_owned();
    let mut m = Mcp::start_env(&home, &[("WORKBENCH_TEST_FAIL_WRITES", &flag_s)]);
    m.initialize();
    m.ok("workbench_scaffold", json!({"name": "mf"}));
    std::fs::write(&flag, "28").unwrap();
    let (err, msg) = m.call("workbench_log", json!({"project": "mf", "message": "x"}));
    assert!(err, "{msg}");
    assert!(msg.as_str().unwrap().contains("HTTP 507"), "{msg}");
    let (err, msg) = m.call(
        "workbench_state",
        json!({"project": "mf", "template": "<p>x</p>"}),
    );
    assert!(err && msg.as_str().unwrap().contains("not saved"), "{msg}");
    std::fs::remove_file(&flag).unwrap();
    m.ok("workbench_log", json!({"project": "mf", "message": "y"}));
    m.ok("workbench_stop", json!({"project": "mf"}));
}
