//! The page server against abusive clients on loopback (issue 11 §1, §2,
//! §5): descriptor floods, slow or oversized request heads, stalled bodies,
//! bad Content-Length, foreign Host and Origin, forged snapshot answers and
//! events, viewer floods. After each, the server must still serve a page
//! load and a push, stay under a stated RSS bound, and have on disk what it
//! acknowledged. Abusers speak from 127.0.0.2, 127.0.0.3, … (all loopback
//! on Linux), the "real" client from 127.0.0.1.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

/// RSS bound after any of these tests (debug build; an idle server is ~10 MiB).
const RSS_BOUND_KIB: u64 = 150 << 10;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("server alive");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// `workbench serve` under `prlimit --nofile=N:N` (soft and hard: raising
/// the soft limit to the hard one at start cannot lift it).
fn start_with_nofile(home: &TempHome, name: &str, nofile: u64, extra: &[&str]) -> Server {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={nofile}:{nofile}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_workbench"))
        .args(["serve", name, "--host", "127.0.0.1", "--port", "0"])
        .args(extra)
        .env("WORKBENCH_HOME", &home.path)
        .env("HOME", &home.path)
        .env_remove("WORKBENCH_HOST")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn prlimit workbench serve");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert!(line.contains("serving"), "unexpected first line: {line:?}");
    let dir = home.project(name);
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(".server.json")).unwrap()).unwrap();
    Server {
        port: info["port"].as_u64().unwrap() as u16,
        token: info["token"].as_str().unwrap().to_string(),
        info,
        dir,
        proc: Proc {
            child,
            stdout: Some(stdout),
        },
    }
}

fn from(n: u8, port: u16) -> TcpStream {
    workbench::sys::connect_from(
        Ipv4Addr::new(127, 0, 0, n),
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
    )
    .expect("connect from a loopback address")
}

/// Sends `bytes` from 127.0.0.`n` and reads the answer (up to `limit`).
fn exchange_from(n: u8, port: u16, bytes: &[u8], limit: Duration) -> (u16, String) {
    let mut s = from(n, port);
    s.set_read_timeout(Some(limit)).unwrap();
    let _ = s.write_all(bytes);
    read_answer(&mut s)
}

fn read_answer(s: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Read until the peer closes or the head and a Content-Length body are in.
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if body.len() >= len {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn exchange(port: u16, bytes: &[u8]) -> (u16, String) {
    exchange_from(1, port, bytes, Duration::from_secs(10))
}

/// The event key every viewer gets in HELLO.
fn event_key(srv: &Server) -> String {
    let mut v = srv.viewer();
    let hello = v.next();
    hello["event_key"].as_str().expect("event_key").to_string()
}

fn post_event_raw(port: u16, key: &str, extra_headers: &str, body: &str) -> (u16, String) {
    let req = format!(
        "POST /api/event HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nX-Workbench-Key: {key}\r\n{extra_headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    exchange(port, req.as_bytes())
}

/// After every abuse: a page load, a push that a new viewer sees, the
/// acknowledged state on disk, every acknowledged event on disk, RSS bound.
fn assert_healthy(srv: &Server, tag: &str, acked_events: &[u64]) {
    let pid = srv.proc.pid();
    assert!(alive(pid), "{tag}: the server died");
    let page = exchange(
        srv.port,
        format!(
            "GET / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            srv.port
        )
        .as_bytes(),
    );
    assert_eq!(
        page.0,
        200,
        "{tag}: page load: {}",
        &page.1[..page.1.len().min(200)]
    );
    assert!(
        page.1.contains("<html") || page.1.contains("<!doctype"),
        "{tag}"
    );
    let marker = format!("<p>after {tag}</p>");
    let (s, r) = srv.post("/api/state", &json!({ "template": marker }));
    assert_eq!(s, 200, "{tag}: push: {r}");
    // A viewer that connects now gets HELLO, then the full state.
    let mut v = srv.viewer();
    assert_eq!(v.next()["type"], "HELLO");
    let full = v.next();
    assert_eq!(
        full["state"]["template"], marker,
        "{tag}: a new viewer sees the push"
    );
    let on_disk = std::fs::read_to_string(srv.dir.join("state.json")).unwrap();
    assert!(
        on_disk.contains(&marker),
        "{tag}: acknowledged state is on disk"
    );
    let stored: Vec<u64> = read_jsonl(&srv.dir.join("events.jsonl"))
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    for seq in acked_events {
        assert!(
            stored.contains(seq),
            "{tag}: acknowledged event {seq} is missing"
        );
    }
    let rss = rss_kib(pid);
    assert!(
        rss < RSS_BOUND_KIB,
        "{tag}: RSS {rss} KiB over {RSS_BOUND_KIB} KiB"
    );
}

#[test]
fn an_idle_connection_flood_is_refused_at_the_door_and_the_server_lives() {
    let _watchdog = watchdog(Duration::from_secs(90));
    let home = TempHome::new("lim-fd");
    // 256 descriptors: the connection cap is lowered to fit under it.
    let srv = start_with_nofile(&home, "fd", 256, &["--max-connections-per-client", "64"]);
    let pid = srv.proc.pid();
    // One address opens far more than its share; it gets 64 and then 503s.
    let mut flood: Vec<TcpStream> = (0..150).map(|_| from(2, srv.port)).collect();
    let mut refused = 0;
    for s in flood.iter_mut().skip(100) {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        if read_answer(s).0 == 503 {
            refused += 1;
        }
    }
    assert!(
        refused >= 40,
        "per-client cap: only {refused} of the last 50 refused"
    );
    // Others are served while it lasts.
    assert_healthy(&srv, "one-address flood", &[]);
    // Many addresses together run into the total cap, never into EMFILE.
    for n in 3..=8 {
        flood.extend((0..60).map(|_| from(n, srv.port)));
    }
    let (status, _) = exchange_from(
        9,
        srv.port,
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(status == 503 || status == 200, "at the cap: {status}");
    assert!(alive(pid), "the flood killed the server");
    drop(flood);
    // The slots come back once the flood is gone.
    assert!(eventually(Duration::from_secs(10), || exchange(
        srv.port,
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .0 == 200));
    assert_healthy(&srv, "many-address flood", &[]);
}

#[test]
fn running_out_of_descriptors_drops_connections_never_the_process() {
    let _watchdog = watchdog(Duration::from_secs(90));
    let home = TempHome::new("lim-emfile");
    let srv = Server::start(
        &home,
        "emfile",
        &[
            "--max-connections",
            "100000",
            "--max-connections-per-client",
            "100000",
        ],
    );
    let pid = srv.proc.pid();
    // Lower the soft limit under the running server: its cap no longer
    // fits, so accept() itself runs out of descriptors. (The hard limit
    // stays: lowering it could not be undone.)
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let hard: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|h| h.parse().ok())
        .expect("hard NOFILE limit");
    let ok = Command::new("prlimit")
        .args([format!("--pid={pid}"), format!("--nofile=64:{hard}")])
        .status()
        .unwrap()
        .success();
    assert!(ok, "prlimit --pid");
    let flood: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", srv.port)).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    assert!(alive(pid), "EMFILE killed the server");
    drop(flood);
    let raised = Command::new("prlimit")
        .args([format!("--pid={pid}"), format!("--nofile={hard}:{hard}")])
        .status()
        .unwrap()
        .success();
    assert!(raised);
    assert!(eventually(Duration::from_secs(10), || exchange(
        srv.port,
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .0 == 200));
    assert_healthy(&srv, "emfile", &[]);
}

#[test]
fn a_dripped_header_block_times_out_with_408() {
    let _watchdog = watchdog(Duration::from_secs(60));
    let home = TempHome::new("lim-drip");
    let srv = Server::start(&home, "drip", &["--header-timeout", "2"]);
    let mut s = from(2, srv.port);
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    // One header line every 300 ms: each read would succeed, the whole head never ends.
    for i in 0..60 {
        if s.write_all(format!("X-Drip-{i}: x\r\n").as_bytes())
            .is_err()
        {
            break;
        }
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                break;
            }
            Err(_) => {}
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "got {text:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the drip was not cut off"
    );
    // An idle connection (no byte at all) is closed quietly, without a 408.
    assert_healthy(&srv, "drip", &[]);
}

#[test]
fn oversized_request_lines_header_blocks_and_header_counts_get_431() {
    let _watchdog = watchdog(Duration::from_secs(60));
    let home = TempHome::new("lim-431");
    let srv = Server::start(&home, "big", &[]);
    let long_line = format!(
        "GET /{} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(
        exchange_from(2, srv.port, long_line.as_bytes(), Duration::from_secs(10)).0,
        431
    );
    let big_block = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n{}\r\n",
        (0..40)
            .map(|i| format!("X-Big-{i}: {}\r\n", "b".repeat(1000)))
            .collect::<String>()
    );
    assert_eq!(
        exchange_from(2, srv.port, big_block.as_bytes(), Duration::from_secs(10)).0,
        431
    );
    // One endless header line, sent without ever ending: cut at the cap.
    let mut s = from(2, srv.port);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nX-Endless: ").unwrap();
    let chunk = vec![b'c'; 16 << 10];
    for _ in 0..8 {
        if s.write_all(&chunk).is_err() {
            break;
        }
    }
    assert_eq!(read_answer(&mut s).0, 431);
    let many = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n{}\r\n",
        (0..100)
            .map(|i| format!("X-{i}: y\r\n"))
            .collect::<String>()
    );
    assert_eq!(
        exchange_from(2, srv.port, many.as_bytes(), Duration::from_secs(10)).0,
        431
    );
    assert_healthy(&srv, "431", &[]);
}

#[test]
fn a_stalled_body_times_out_and_holds_nothing() {
    let _watchdog = watchdog(Duration::from_secs(60));
    let home = TempHome::new("lim-stall");
    let srv = Server::start(&home, "stall", &["--body-timeout", "2"]);
    let key = event_key(&srv);
    // Twenty stalled uploads: an owner push and events, each half-sent.
    let mut stalled: Vec<TcpStream> = Vec::new();
    for i in 0..20 {
        let mut s = from(2 + (i % 4) as u8, srv.port);
        let head = if i == 0 {
            format!("POST /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Length: 4000000\r\n\r\n{{\"template\":\"", srv.token)
        } else {
            format!("POST /api/event HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Workbench-Key: {key}\r\nContent-Length: 60000\r\n\r\n{{\"name\":\"x\",\"data\":\"")
        };
        s.write_all(head.as_bytes()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        stalled.push(s);
    }
    let started = Instant::now();
    for s in stalled.iter_mut() {
        assert_eq!(read_answer(s).0, 408);
    }
    assert!(started.elapsed() < Duration::from_secs(12));
    assert!(
        read_jsonl(&srv.dir.join("events.jsonl")).is_empty(),
        "a half event was stored"
    );
    assert_healthy(&srv, "stalled bodies", &[]);
}

#[test]
fn auth_and_size_are_answered_before_the_body_is_sent() {
    let _watchdog = watchdog(Duration::from_secs(60));
    let home = TempHome::new("lim-early");
    let srv = Server::start(&home, "early", &["--max-body", "100000"]);
    let key = event_key(&srv);
    let port = srv.port;
    // Only the headers are sent; the answer must come without the body.
    let early = |head: String| {
        let mut s = from(2, port);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        read_answer(&mut s).0
    };
    assert_eq!(
        early(
            "POST /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000000\r\n\r\n".into()
        ),
        401
    );
    assert_eq!(
        early(format!("POST /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Length: 5000000\r\n\r\n", srv.token)),
        413
    );
    // Each route has its own limit: an event is small even for the owner.
    assert_eq!(
        early(format!("POST /api/event HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Workbench-Key: {key}\r\nContent-Length: 70000\r\n\r\n")),
        413
    );
    assert_eq!(
        early("POST /api/event HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 70000\r\n\r\n".into()),
        403
    );
    // A length no memory could hold is refused, not allocated.
    assert_eq!(
        early(format!("POST /api/event HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Workbench-Key: {key}\r\nContent-Length: 1000000000000000000\r\n\r\n")),
        413
    );
    // Chunked uploads have no length to judge: refused.
    assert_eq!(
        early(format!("POST /api/event HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Workbench-Key: {key}\r\nTransfer-Encoding: chunked\r\n\r\n")),
        411
    );
    assert_healthy(&srv, "early answers", &[]);
}

#[test]
fn duplicate_or_conflicting_content_length_gets_400() {
    let _watchdog = watchdog(Duration::from_secs(60));
    let home = TempHome::new("lim-cl");
    let srv = Server::start(&home, "cl", &[]);
    let key = event_key(&srv);
    let body = r#"{"name":"smuggled"}"#;
    for lengths in [
        format!("Content-Length: {0}\r\nContent-Length: {0}\r\n", body.len()),
        format!("Content-Length: {}\r\nContent-Length: 3\r\n", body.len()),
        format!(
            "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
            body.len()
        ),
        "Content-Length: abc\r\n".to_string(),
        "Content-Length: -1\r\n".to_string(),
        "Content-Length: 99999999999999999999999\r\n".to_string(),
    ] {
        let req = format!("POST /api/event HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Workbench-Key: {key}\r\n{lengths}\r\n{body}");
        assert_eq!(exchange(srv.port, req.as_bytes()).0, 400, "{lengths:?}");
    }
    assert!(read_jsonl(&srv.dir.join("events.jsonl")).is_empty());
    assert_healthy(&srv, "content-length", &[]);
}

#[test]
fn a_foreign_host_is_refused_on_every_route() {
    let _watchdog = watchdog(Duration::from_secs(60));
    let home = TempHome::new("lim-host");
    let srv = Server::start(&home, "host", &["--allow-origin", "bench.example"]);
    for path in ["/", "/health", "/ws", "/files/x"] {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: rebound.evil.example:{}\r\nConnection: close\r\n\r\n",
            srv.port
        );
        assert_eq!(exchange(srv.port, req.as_bytes()).0, 403, "{path}");
    }
    let two =
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n";
    assert_eq!(exchange(srv.port, two.as_bytes()).0, 400);
    for ok in ["127.0.0.1", "localhost:1234", "bench.example"] {
        let req = format!("GET /health HTTP/1.1\r\nHost: {ok}\r\nConnection: close\r\n\r\n");
        assert_eq!(exchange(srv.port, req.as_bytes()).0, 200, "{ok}");
    }
    assert_healthy(&srv, "host", &[]);
}

#[test]
fn a_foreign_origin_can_neither_post_nor_open_the_websocket() {
    let _watchdog = watchdog(Duration::from_secs(60));
    let home = TempHome::new("lim-origin");
    let srv = Server::start(&home, "origin", &[]);
    let key = event_key(&srv);
    let port = srv.port;
    let body = r#"{"name":"forged","data":"FORGED"}"#;
    for origin in [
        "http://evil.example".to_string(),
        format!("http://127.0.0.1:{}", port + 1),
        format!("http://127.0.0.2:{port}"),
        "null".to_string(),
    ] {
        let (s, _) = post_event_raw(port, &key, &format!("Origin: {origin}\r\n"), body);
        assert_eq!(s, 403, "POST from {origin}");
        let ws = format!("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: {origin}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
        let (s, text) = exchange(port, ws.as_bytes());
        assert_eq!(s, 403, "/ws from {origin}");
        assert!(!text.contains("STATE"), "state leaked to {origin}");
    }
    assert!(
        read_jsonl(&srv.dir.join("events.jsonl")).is_empty(),
        "a forged event was stored"
    );
    // An MCP Apps frame (Origin: null) opens its viewer socket with the key
    // only the owner's MCP process can derive; a wrong key gets nothing.
    let app = |key: &str| {
        let req = format!("GET /app/{key}/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: null\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
        let mut s = from(2, port);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut head = [0u8; 12];
        let _ = s.read_exact(&mut head);
        String::from_utf8_lossy(&head[9..12]).to_string()
    };
    assert_eq!(app(&workbench::page::origin::app_key(&srv.token)), "101");
    assert_eq!(app("0123456789abcdef0123456789abcdef"), "404");
    assert_eq!(
        app(&workbench::page::origin::app_key("another token")),
        "404"
    );
    // The page's own origin works, as does a client that sends none.
    let (s, r) = post_event_raw(
        port,
        &key,
        &format!("Origin: http://127.0.0.1:{port}\r\n"),
        body,
    );
    assert_eq!(s, 200, "{r}");
    let (s, _) = post_event_raw(
        port,
        &key,
        &format!("Origin: http://localhost:{port}\r\n"),
        body,
    );
    assert_eq!(s, 200);
    assert_healthy(&srv, "origin", &[1, 2]);
}

#[test]
fn events_without_the_page_key_change_nothing() {
    let _watchdog = watchdog(Duration::from_secs(60));
    let home = TempHome::new("lim-key");
    let srv = Server::start(&home, "key", &[]);
    let key = event_key(&srv);
    let body = r#"{"name":"reading","data":{"v":1}}"#;
    let no_key = format!(
        "POST /api/event HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(exchange(srv.port, no_key.as_bytes()).0, 403);
    assert_eq!(
        post_event_raw(srv.port, "0123456789abcdef0123456789abcdef", "", body).0,
        403
    );
    assert_eq!(post_event_raw(srv.port, "", "", body).0, 403);
    assert!(read_jsonl(&srv.dir.join("events.jsonl")).is_empty());
    let (s, r) = post_event_raw(srv.port, &key, "", body);
    assert_eq!(s, 200, "{r}");
    let (_, got) = srv.get_auth("/api/events?since=0");
    assert_eq!(got["events"].as_array().unwrap().len(), 1);
    assert_healthy(&srv, "event key", &[1]);
}

#[test]
fn forged_snapshot_answers_change_nothing() {
    let _watchdog = watchdog(Duration::from_secs(60));
    let home = TempHome::new("lim-snap");
    let srv = Server::start(&home, "snap", &[]);
    let port = srv.port;
    let mut a = srv.viewer();
    let ha = a.next();
    let mut b = srv.viewer();
    let hb = b.next();
    let token = srv.token.clone();
    let addr = srv.addr();
    let asker = std::thread::spawn(move || http(&addr, "GET", "/api/snapshot", Some(&token), None));
    // The newest viewer (b) is asked.
    let id = loop {
        let m = b.next();
        if m["type"] == "SNAPSHOT" {
            break m["id"].as_str().unwrap().to_string();
        }
    };
    let answer = |ctype: &str, viewer: &str, key: &str, text: &str| {
        let body = json!({"html": text, "text": text, "forms": []}).to_string();
        let req = format!(
            "POST /api/snapshot/{id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {ctype}\r\nX-Workbench-Viewer: {viewer}\r\nX-Workbench-Key: {key}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        exchange_from(2, port, req.as_bytes(), Duration::from_secs(5)).0
    };
    let (va, ka) = (ha["viewer"].as_str().unwrap(), ha["key"].as_str().unwrap());
    let (vb, kb) = (hb["viewer"].as_str().unwrap(), hb["key"].as_str().unwrap());
    assert_eq!(answer("text/plain", vb, kb, "FORGED"), 415, "text/plain");
    assert_eq!(
        answer("application/json", va, ka, "FORGED"),
        403,
        "another viewer"
    );
    assert_eq!(
        answer("application/json", vb, ka, "FORGED"),
        403,
        "wrong key"
    );
    assert_eq!(answer("application/json", vb, "", "FORGED"), 403, "no key");
    assert_eq!(answer("application/json", vb, kb, "the real page"), 200);
    let (s, r) = asker.join().unwrap();
    assert_eq!(s, 200);
    assert_eq!(r["viewer"], vb);
    assert_eq!(r["snapshot"]["text"], "the real page");
    // Answered: the id is spent.
    assert_eq!(answer("application/json", vb, kb, "late"), 404);
    drop(a);
    assert_healthy(&srv, "snapshot", &[]);
}

#[test]
fn viewers_are_capped_in_total_and_per_address() {
    let _watchdog = watchdog(Duration::from_secs(60));
    let home = TempHome::new("lim-viewers");
    let srv = Server::start(
        &home,
        "vw",
        &["--max-viewers", "4", "--max-viewers-per-client", "2"],
    );
    let port = srv.port;
    let upgrade = |n: u8| {
        let mut s = from(n, port);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let req = format!("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut head = [0u8; 12];
        let _ = s.read_exact(&mut head);
        let status: u16 = String::from_utf8_lossy(&head[9..12]).parse().unwrap_or(0);
        (status, s)
    };
    let (s1, _k1) = upgrade(2);
    let (s2, _k2) = upgrade(2);
    let (s3, _) = upgrade(2);
    assert_eq!((s1, s2, s3), (101, 101, 503));
    let (s4, _k4) = upgrade(3);
    assert_eq!(s4, 101);
    // The real client gets the last slot; then the page is full.
    assert_eq!(srv.health()["viewers"], 3);
    let mut real = srv.viewer();
    assert_eq!(real.next()["type"], "HELLO");
    assert_eq!(upgrade(4).0, 503);
    assert_eq!(srv.health()["viewers"], 4);
    let (s, r) = srv.post("/api/state", &json!({"data": {"x": 1}}));
    assert_eq!((s, r["viewers"].clone()), (200, json!(4)));
    drop(real);
    assert!(eventually(Duration::from_secs(10), || srv.health()
        ["viewers"]
        == 3));
    assert_healthy(&srv, "viewer caps", &[]);
}

#[test]
fn never_reading_viewers_of_a_big_state_share_one_copy() {
    let _watchdog = watchdog(Duration::from_secs(120));
    let home = TempHome::new("lim-bigstate");
    let srv = Server::start(&home, "bigstate", &["--max-viewers-per-client", "100"]);
    let port = srv.port;
    let big = "x".repeat(6 << 20);
    let (s, _) = srv.post("/api/state", &json!({ "template": big }));
    assert_eq!(s, 200);
    let before = rss_kib(srv.proc.pid());
    // 60 viewers that never read: each would need its own 6 MiB copy if the
    // server copied per viewer (360 MiB); the frame is shared.
    let mut idle = Vec::new();
    for i in 0..60 {
        let mut s = from(2 + (i % 10) as u8, port);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let req = format!("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
        s.write_all(req.as_bytes()).unwrap();
        idle.push(s);
    }
    assert!(eventually(Duration::from_secs(20), || srv.health()
        ["viewers"]
        == 60));
    for i in 0..3 {
        let (s, _) = srv.post("/api/state", &json!({ "template": format!("{big}{i}") }));
        assert_eq!(s, 200);
    }
    let after = rss_kib(srv.proc.pid());
    eprintln!("RSS with 60 stalled viewers of a 6 MiB state: {before} -> {after} KiB");
    assert!(
        after < before + (64 << 10),
        "60 stalled viewers grew RSS from {before} to {after} KiB"
    );
    drop(idle);
    assert_healthy(&srv, "big state", &[]);
}

#[test]
fn upgraded_websockets_count_against_the_connection_caps() {
    let _watchdog = watchdog(Duration::from_secs(90));
    let home = TempHome::new("lim-wscount");
    let srv = Server::start(&home, "wscount", &["--max-connections-per-client", "3"]);
    let port = srv.port;
    let upgrade = || {
        let mut s = from(2, port);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let req = format!("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        assert_eq!(&head[9..12], b"101");
        s
    };
    let viewers: Vec<TcpStream> = (0..3).map(|_| upgrade()).collect();
    // The three open WebSockets fill this address's share: plain HTTP from it is refused.
    let get = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    assert_eq!(exchange_from(2, port, get, Duration::from_secs(5)).0, 503);
    assert_eq!(exchange_from(3, port, get, Duration::from_secs(5)).0, 200);
    drop(viewers);
    // A push-only socket is noticed closed at its next write: the second
    // ping after the close (pings every 10 s) fails and frees the slot.
    assert!(eventually(Duration::from_secs(40), || exchange_from(
        2,
        port,
        get,
        Duration::from_secs(5)
    )
    .0 == 200));
    assert_healthy(&srv, "websocket counts", &[]);
}
