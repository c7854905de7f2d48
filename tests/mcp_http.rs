//! `workbench mcp --http` black-box: the real binary on a loopback port,
//! spoken to over real sockets (a raw HTTP/1.1 client below, and the
//! official MCP Python SDK when it is installed in tests/mcp_http/.venv).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{eventually, raw_status, watchdog, Mcp, Proc, TempHome};

/// A running `workbench mcp --http --port 0`.
struct HttpServer {
    proc: Proc,
    port: u16,
    token: String,
    home_path: std::path::PathBuf,
}

fn env_cmd(home: &TempHome) -> std::process::Command {
    let mut c = home.cmd();
    c.env("WORKBENCH_HOST", "127.0.0.1")
        .env("WORKBENCH_SERVE_HOST", "127.0.0.1");
    c
}

impl HttpServer {
    fn start(home: &TempHome, extra: &[&str]) -> HttpServer {
        let mut child = env_cmd(home)
            .args(["mcp", "--http", "--port", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn workbench mcp --http");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let url = line.rsplit(" at ").next().unwrap().trim().to_string();
        let port: u16 = url
            .trim_end_matches("/mcp")
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let token = std::fs::read_to_string(home.path.join(".mcp-http-token"))
            .unwrap()
            .trim()
            .to_string();
        HttpServer {
            proc: Proc {
                child,
                stdout: Some(out),
            },
            port,
            token,
            home_path: home.path.clone(),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    fn conn(&self) -> Conn {
        Conn::new(self.port)
    }

    /// A kept-alive connection with an initialized session.
    fn session(&self) -> (Conn, String) {
        self.session_with(&init_body())
    }

    /// A session of a client that declares MCP Apps.
    fn ui_session(&self) -> (Conn, String) {
        self.session_with(&init_with(
            json!({"extensions": {"io.modelcontextprotocol/ui": {"mimeTypes": ["text/html;profile=mcp-app"]}}}),
        ))
    }

    fn session_with(&self, init: &str) -> (Conn, String) {
        let mut c = self.conn();
        let r = c.send(
            "POST",
            &[("Authorization", &format!("Bearer {}", self.token))],
            Some(init),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let sid = r
            .header("mcp-session-id")
            .expect("a session id")
            .to_string();
        let r = c.rpc(
            self,
            &sid,
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        );
        assert_eq!(r.status, 202);
        (c, sid)
    }

    fn thread_names(&self) -> Vec<String> {
        let dir = format!("/proc/{}/task", self.proc.pid());
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
                    .map(|s| s.trim().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Tool threads doing something: worker threads stay for a while after
    /// a call, parked on a futex (x86-64 syscall 202); a running call is in
    /// another system call (a socket read of its long-poll) or none.
    fn busy_tools(&self) -> Vec<String> {
        let dir = format!("/proc/{}/task", self.proc.pid());
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        std::fs::read_to_string(e.path().join("comm"))
                            .is_ok_and(|c| c.starts_with("tool-"))
                    })
                    .filter_map(|e| std::fs::read_to_string(e.path().join("syscall")).ok())
                    .filter(|sc| sc.split(' ').next() != Some("202"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Everything under the home folder (names and sizes): to show that a
    /// refused request changed nothing.
    fn home_listing(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut stack = vec![self.home_path.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let m = e.metadata().unwrap();
                if m.is_dir() {
                    stack.push(e.path());
                }
                out.push((e.path().display().to_string(), m.len()));
            }
        }
        out.sort();
        out
    }
}

fn init_body() -> String {
    init_with(json!({}))
}

fn init_with(capabilities: Value) -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": capabilities, "clientInfo": {"name": "t", "version": "1"}}})
    .to_string()
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, n: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    /// The `data:` payloads of an SSE body.
    fn events(&self) -> Vec<Value> {
        self.text()
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }
}

/// One kept-alive HTTP/1.1 connection.
struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    fn new(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.set_nodelay(true).unwrap();
        Conn {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        }
    }

    fn write_head(&mut self, method: &str, headers: &[(&str, &str)], body: Option<&str>) {
        let mut req = format!("{method} /mcp HTTP/1.1\r\n");
        let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
        if !has("host") {
            req.push_str("Host: 127.0.0.1\r\n");
        }
        if !has("accept") {
            req.push_str("Accept: application/json, text/event-stream\r\n");
        }
        if body.is_some() && !has("content-type") {
            req.push_str("Content-Type: application/json\r\n");
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            if !has("content-length") {
                req.push_str(&format!("Content-Length: {}\r\n", b.len()));
            }
        }
        req.push_str("\r\n");
        if let Some(b) = body {
            req.push_str(b);
        }
        self.w.write_all(req.as_bytes()).unwrap();
    }

    fn read_head(&mut self) -> (u16, Vec<(String, String)>) {
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        let status = line.split(' ').nth(1).unwrap_or("0").parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let mut l = String::new();
            self.r.read_line(&mut l).unwrap();
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        (status, headers)
    }

    /// Reads one chunk of a chunked body; `None` at the last one.
    fn read_chunk(&mut self) -> Option<Vec<u8>> {
        let mut size = String::new();
        self.r.read_line(&mut size).unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        let mut buf = vec![0u8; n + 2];
        self.r.read_exact(&mut buf).unwrap();
        buf.truncate(n);
        (n > 0).then_some(buf)
    }

    fn read_resp(&mut self) -> Resp {
        let (status, headers) = self.read_head();
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let body = if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            let mut b = Vec::new();
            while let Some(c) = self.read_chunk() {
                b.extend(c);
            }
            b
        } else {
            let n: usize = get("content-length")
                .map(|l| l.parse().unwrap())
                .unwrap_or(0);
            let mut b = vec![0u8; n];
            self.r.read_exact(&mut b).unwrap();
            b
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    fn send(&mut self, method: &str, headers: &[(&str, &str)], body: Option<&str>) -> Resp {
        self.write_head(method, headers, body);
        self.read_resp()
    }

    fn rpc(&mut self, s: &HttpServer, sid: &str, msg: Value) -> Resp {
        let auth = format!("Bearer {}", s.token);
        self.send(
            "POST",
            &[
                ("Authorization", &auth),
                ("Mcp-Session-Id", sid),
                ("MCP-Protocol-Version", "2025-11-25"),
            ],
            Some(&msg.to_string()),
        )
    }

    /// A request's answer, from a JSON or an SSE response.
    fn answer(&mut self, s: &HttpServer, sid: &str, msg: Value) -> Value {
        let r = self.rpc(s, sid, msg);
        assert_eq!(r.status, 200, "{}", r.text());
        if r.header("content-type") == Some("text/event-stream") {
            r.events().pop().unwrap()
        } else {
            r.json()
        }
    }
}

fn call(c: &mut Conn, s: &HttpServer, sid: &str, tool: &str, args: Value) -> Value {
    let a = c.answer(
        s,
        sid,
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": tool, "arguments": args}}),
    );
    assert_eq!(a["result"]["isError"], false, "{a}");
    a["result"]["structuredContent"].clone()
}

#[test]
fn answers_like_stdio_with_sessions_and_keep_alive() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("mcphttp-basic");
    let s = HttpServer::start(&home, &[]);
    let (mut c, sid) = s.session();
    // The same tools/list as stdio, byte for byte.
    let http_tools = c.answer(
        &s,
        &sid,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    );
    let mut stdio = Mcp::start(&home);
    stdio.initialize();
    let stdio_tools = stdio.request("tools/list", json!({}));
    assert_eq!(http_tools["result"], stdio_tools["result"]);
    // Ids are echoed as sent, strings too.
    let pong = c.answer(
        &s,
        &sid,
        json!({"jsonrpc": "2.0", "id": "p-1", "method": "ping"}),
    );
    assert_eq!(pong, json!({"jsonrpc": "2.0", "id": "p-1", "result": {}}));
    // A tool over HTTP and the same tool over stdio see the same project.
    let made = call(
        &mut c,
        &s,
        &sid,
        "workbench_scaffold",
        json!({"name": "h1"}),
    );
    assert_eq!(made["reused"], false);
    let (_, over_stdio) = stdio.call("workbench_list", json!({}));
    let over_http = call(&mut c, &s, &sid, "workbench_list", json!({}));
    assert_eq!(over_http, over_stdio);
    // Without the MCP Apps extension there are no ui:// resources; a client
    // that declares it sees the resource, the metadata and the app tool.
    let res = c.answer(
        &s,
        &sid,
        json!({"jsonrpc": "2.0", "id": 3, "method": "resources/list"}),
    );
    assert_eq!(res["result"]["resources"], json!([]));
    let (mut c, sid) = s.ui_session();
    let ui_tools = c.answer(
        &s,
        &sid,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    );
    let ui_tools = ui_tools["result"]["tools"].as_array().unwrap();
    // 11 page tools, the app tool, 16 chat tools (tests/chat_mcp.rs).
    assert_eq!(ui_tools.len(), 12 + 16);
    let state_tool = ui_tools
        .iter()
        .find(|t| t["name"] == "workbench_state")
        .unwrap();
    assert_eq!(
        state_tool["_meta"]["ui"]["resourceUri"],
        "ui://workbench/app"
    );
    let app_tool = ui_tools
        .iter()
        .find(|t| t["name"] == "workbench_app_post")
        .unwrap();
    assert_eq!(app_tool["_meta"]["ui"]["visibility"], json!(["app"]));
    let res = c.answer(
        &s,
        &sid,
        json!({"jsonrpc": "2.0", "id": 3, "method": "resources/list"}),
    );
    assert_eq!(res["result"]["resources"][0]["uri"], "ui://workbench/h1");
    assert_eq!(
        res["result"]["resources"][0]["mimeType"],
        "text/html;profile=mcp-app"
    );
    let read = c.answer(&s, &sid, json!({"jsonrpc": "2.0", "id": 4, "method": "resources/read", "params": {"uri": "ui://workbench/h1"}}));
    let item = &read["result"]["contents"][0];
    assert!(item["text"].as_str().unwrap().contains("ui/initialize"));
    let port = made["port"].as_u64().unwrap();
    assert_eq!(
        item["_meta"]["ui"]["csp"]["connectDomains"],
        json!([
            format!("http://127.0.0.1:{port}"),
            format!("ws://127.0.0.1:{port}")
        ])
    );
    // DELETE ends the session; it is then unknown.
    let auth = format!("Bearer {}", s.token);
    let r = c.send(
        "DELETE",
        &[("Authorization", &auth), ("Mcp-Session-Id", &sid)],
        None,
    );
    assert_eq!(r.status, 204);
    let r = c.rpc(
        &s,
        &sid,
        json!({"jsonrpc": "2.0", "id": 5, "method": "ping"}),
    );
    assert_eq!(r.status, 404);
}

/// (what, headers, body, HTTP status, JSON-RPC code)
type Case = (
    &'static str,
    Vec<(&'static str, String)>,
    Option<String>,
    u16,
    Option<i64>,
);

#[test]
fn every_bad_request_gets_its_status_and_changes_nothing() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("mcphttp-bad");
    let s = HttpServer::start(&home, &[]);
    let (_c, sid) = s.session();
    let before = s.home_listing();
    let auth = format!("Bearer {}", s.token);
    let scaffold = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "workbench_scaffold", "arguments": {"name": "mustnotexist"}}})
    .to_string();
    let with = |extra: &[(&'static str, String)]| -> Vec<(&'static str, String)> {
        let mut h: Vec<(&'static str, String)> = extra.to_vec();
        for (k, v) in [
            ("Mcp-Session-Id", sid.clone()),
            ("MCP-Protocol-Version", "2025-11-25".to_string()),
        ] {
            if !h.iter().any(|(n, _)| *n == k) {
                h.push((k, v));
            }
        }
        h
    };
    let cases: Vec<Case> = vec![
        ("no token", with(&[]), Some(scaffold.clone()), 401, None),
        (
            "wrong token",
            with(&[("Authorization", format!("Bearer {}", "0".repeat(64)))]),
            Some(scaffold.clone()),
            401,
            None,
        ),
        (
            "basic auth",
            with(&[("Authorization", "Basic dXNlcjpwYXNz".into())]),
            Some(scaffold.clone()),
            401,
            None,
        ),
        (
            "foreign origin",
            with(&[
                ("Authorization", auth.clone()),
                ("Origin", "http://evil.example".into()),
            ]),
            Some(scaffold.clone()),
            403,
            None,
        ),
        (
            "rebinding host",
            with(&[
                ("Authorization", auth.clone()),
                ("Host", "evil.example:8765".into()),
            ]),
            Some(scaffold.clone()),
            403,
            None,
        ),
        (
            "unknown session",
            vec![
                ("Authorization", auth.clone()),
                ("Mcp-Session-Id", "f".repeat(32)),
            ],
            Some(scaffold.clone()),
            404,
            None,
        ),
        (
            "no session",
            vec![("Authorization", auth.clone())],
            Some(scaffold.clone()),
            400,
            None,
        ),
        (
            "bad protocol version",
            with(&[
                ("Authorization", auth.clone()),
                ("MCP-Protocol-Version", "1999-01-01".into()),
            ]),
            Some(scaffold.clone()),
            400,
            None,
        ),
        (
            "oversized",
            with(&[
                ("Authorization", auth.clone()),
                ("Content-Length", (10usize << 20).to_string()),
            ]),
            Some(String::new()),
            413,
            None,
        ),
        (
            "not JSON",
            with(&[("Authorization", auth.clone())]),
            Some("{\"jsonrpc\":\"2.0\",".into()),
            400,
            Some(-32700),
        ),
        (
            "a batch",
            with(&[("Authorization", auth.clone())]),
            Some(format!("[{scaffold}]")),
            400,
            Some(-32600),
        ),
        (
            "no method",
            with(&[("Authorization", auth.clone())]),
            Some("{\"jsonrpc\":\"2.0\",\"id\":1}".into()),
            400,
            Some(-32600),
        ),
        (
            "wrong content type",
            with(&[
                ("Authorization", auth.clone()),
                ("Content-Type", "text/plain".into()),
            ]),
            Some(scaffold.clone()),
            415,
            None,
        ),
        (
            "accepts neither",
            with(&[
                ("Authorization", auth.clone()),
                ("Accept", "text/html".into()),
            ]),
            Some(scaffold.clone()),
            406,
            None,
        ),
        (
            "chunked",
            with(&[
                ("Authorization", auth.clone()),
                ("Content-Type", "application/json".into()),
                ("Transfer-Encoding", "chunked".into()),
            ]),
            None,
            411,
            None,
        ),
    ];
    for (what, headers, body, status, code) in cases {
        let mut c = s.conn();
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = c.send("POST", &h, body.as_deref());
        assert_eq!(r.status, status, "{what}: {}", r.text());
        let err = r.json();
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {err}"
        );
        if let Some(code) = code {
            assert_eq!(err["error"]["code"], code, "{what}");
        }
    }
    // Other methods and paths.
    let mut c = s.conn();
    let r = c.send("PUT", &[("Authorization", &auth)], None);
    assert_eq!(r.status, 405);
    let r = c.send(
        "DELETE",
        &[
            ("Authorization", &auth),
            ("Mcp-Session-Id", &"e".repeat(32)),
        ],
        None,
    );
    assert_eq!(r.status, 404);
    let raw = raw_status(s.port, &format!("POST /other HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\nContent-Length: 0\r\n\r\n"));
    assert_eq!(raw, 404);
    let raw = raw_status(
        s.port,
        &format!(
            "GET /mcp HTTP/1.1\r\nHost: x\r\n{}\r\n\r\n",
            "X: y\r\n".repeat(4000)
        ),
    );
    assert_eq!(raw, 431);
    assert_eq!(
        s.home_listing(),
        before,
        "a refused request changed the home folder"
    );
    assert!(!home.project("mustnotexist").exists());
    // And the server still serves the session.
    let (mut c, sid2) = s.session();
    let pong = c.answer(
        &s,
        &sid2,
        json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
    );
    assert_eq!(pong["result"], json!({}));
}

#[test]
fn wait_streams_progress_and_a_vanished_client_leaves_nothing_running() {
    let _w = watchdog(Duration::from_secs(90));
    let home = TempHome::new("mcphttp-wait");
    let s = HttpServer::start(&home, &[]);
    let (mut c, sid) = s.session();
    call(
        &mut c,
        &s,
        &sid,
        "workbench_scaffold",
        json!({"name": "w1"}),
    );
    // A wait with a progress token is answered as SSE: progress first, then
    // the events once the page posts one.
    let info: Value = serde_json::from_str(
        &std::fs::read_to_string(home.project("w1").join(".server.json")).unwrap(),
    )
    .unwrap();
    let page_port = info["port"].as_u64().unwrap() as u16;
    // Events carry the page key from HELLO, or the owner's token.
    let page_token = info["token"].as_str().unwrap().to_string();
    let poster = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(7));
        workbench::httpc::request(
            &format!("127.0.0.1:{page_port}"),
            "POST",
            "/api/event",
            Some(&page_token),
            Some(br#"{"name":"clicked","data":{"b":1}}"#),
            Duration::from_secs(5),
        )
        .unwrap()
    });
    let r = c.rpc(&s, &sid, json!({"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": {
        "name": "workbench_wait", "arguments": {"project": "w1", "timeout_seconds": 30}, "_meta": {"progressToken": "tok"}}}));
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let ev = r.events();
    assert!(poster.join().unwrap().status == 200);
    let progress: Vec<&Value> = ev
        .iter()
        .filter(|e| e["method"] == "notifications/progress")
        .collect();
    assert!(
        !progress.is_empty(),
        "no progress before the answer: {ev:?}"
    );
    assert_eq!(progress[0]["params"]["progressToken"], "tok");
    let last = ev.last().unwrap();
    assert_eq!(last["id"], 11);
    assert_eq!(
        last["result"]["structuredContent"]["events"][0]["name"],
        "clicked"
    );

    // A client that goes away mid-stream: its wait ends within one slice.
    let mut c2 = s.conn();
    let body = json!({"jsonrpc": "2.0", "id": 12, "method": "tools/call", "params": {
        "name": "workbench_wait", "arguments": {"project": "w1", "since": 1, "timeout_seconds": 50}}})
    .to_string();
    let auth = format!("Bearer {}", s.token);
    c2.write_head(
        "POST",
        &[("Authorization", &auth), ("Mcp-Session-Id", &sid)],
        Some(&body),
    );
    let (status, _) = c2.read_head();
    assert_eq!(status, 200);
    assert!(
        eventually(Duration::from_secs(5), || !s.busy_tools().is_empty()),
        "the wait is running"
    );
    drop(c2);
    let started = Instant::now();
    // Its call ends (its worker thread goes back to waiting for work), and
    // its watcher and connection thread (the second connection) end; the
    // first connection's thread stays.
    let left_over = |names: &[String]| {
        names
            .iter()
            .any(|t| t == "mcp-http-2" || t == "mcp-http-watch")
    };
    assert!(
        eventually(Duration::from_secs(20), || !left_over(&s.thread_names())
            && s.busy_tools().is_empty()),
        "left running after the client vanished: {:?} {:?}",
        s.thread_names(),
        s.busy_tools()
    );
    eprintln!(
        "wait ended {:?} after the client vanished",
        started.elapsed()
    );
    // The session still works.
    let pong = c.answer(
        &s,
        &sid,
        json!({"jsonrpc": "2.0", "id": 13, "method": "ping"}),
    );
    assert_eq!(pong["result"], json!({}));
}

#[test]
fn notifications_cancelled_stops_a_wait_without_an_answer() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("mcphttp-cancel");
    let s = HttpServer::start(&home, &[]);
    let (mut c, sid) = s.session();
    call(
        &mut c,
        &s,
        &sid,
        "workbench_scaffold",
        json!({"name": "c1"}),
    );
    let mut a = s.conn();
    let body = json!({"jsonrpc": "2.0", "id": 21, "method": "tools/call", "params": {
        "name": "workbench_wait", "arguments": {"project": "c1", "timeout_seconds": 50}}})
    .to_string();
    let auth = format!("Bearer {}", s.token);
    a.write_head(
        "POST",
        &[("Authorization", &auth), ("Mcp-Session-Id", &sid)],
        Some(&body),
    );
    let (status, _) = a.read_head();
    assert_eq!(status, 200);
    let r = c.rpc(&s, &sid, json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 21, "reason": "test"}}));
    assert_eq!(r.status, 202);
    // The stream ends within one wait slice, and carries no answer to 21.
    let started = Instant::now();
    let mut body = Vec::new();
    while let Some(chunk) = a.read_chunk() {
        body.extend(chunk);
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        !String::from_utf8_lossy(&body).contains("\"id\":21"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(
        eventually(Duration::from_secs(5), || s.busy_tools().is_empty()),
        "{:?}",
        s.busy_tools()
    );
}

#[test]
fn a_hundred_concurrent_sessions_and_idle_expiry() {
    let _w = watchdog(Duration::from_secs(90));
    let home = TempHome::new("mcphttp-many");
    let s = std::sync::Arc::new(HttpServer::start(&home, &["--session-idle", "2"]));
    let handles: Vec<_> = (0..100)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                let (mut c, sid) = s.session();
                let r = c.answer(
                    &s,
                    &sid,
                    json!({"jsonrpc": "2.0", "id": i, "method": "tools/list"}),
                );
                assert_eq!(r["id"], i);
                // 11 page tools and 16 chat tools.
                assert_eq!(r["result"]["tools"].as_array().unwrap().len(), 11 + 16);
                let l = call(&mut c, &s, &sid, "workbench_list", json!({}));
                assert!(l["projects"].is_array());
                sid
            })
        })
        .collect();
    let sids: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let unique: std::collections::HashSet<_> = sids.iter().collect();
    assert_eq!(unique.len(), 100);
    // Idle for longer than --session-idle: forgotten.
    std::thread::sleep(Duration::from_millis(2500));
    let mut c = s.conn();
    let r = c.rpc(
        &s,
        &sids[0],
        json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
    );
    assert_eq!(r.status, 404, "an idle session expired");
}

#[test]
fn get_stream_ends_with_the_session() {
    let _w = watchdog(Duration::from_secs(30));
    let home = TempHome::new("mcphttp-get");
    let s = HttpServer::start(&home, &[]);
    let (_c, sid) = s.session();
    let auth = format!("Bearer {}", s.token);
    let mut g = s.conn();
    g.write_head(
        "GET",
        &[
            ("Authorization", &auth),
            ("Mcp-Session-Id", &sid),
            ("Accept", "text/event-stream"),
        ],
        None,
    );
    let (status, headers) = g.read_head();
    assert_eq!(status, 200);
    assert!(headers
        .iter()
        .any(|(k, v)| k == "content-type" && v == "text/event-stream"));
    // A second GET stream on the same session is refused.
    let mut g2 = s.conn();
    let r = g2.send(
        "GET",
        &[
            ("Authorization", &auth),
            ("Mcp-Session-Id", &sid),
            ("Accept", "text/event-stream"),
        ],
        None,
    );
    assert_eq!(r.status, 409);
    let mut d = s.conn();
    let r = d.send(
        "DELETE",
        &[("Authorization", &auth), ("Mcp-Session-Id", &sid)],
        None,
    );
    assert_eq!(r.status, 204);
    // DELETE ended the stream: its last chunk arrives.
    assert!(g.read_chunk().is_none() || g.read_chunk().is_none());
}

#[test]
fn token_is_made_once_with_mode_0600_and_shown() {
    use std::os::unix::fs::PermissionsExt;
    let _w = watchdog(Duration::from_secs(20));
    let home = TempHome::new("mcphttp-token");
    let show = || {
        let o = env_cmd(&home)
            .args(["mcp", "--http", "--show-token"])
            .output()
            .unwrap();
        assert!(o.status.success());
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    };
    let t1 = show();
    assert_eq!(t1.len(), 64);
    assert_eq!(show(), t1, "the token is kept");
    let mode = std::fs::metadata(home.path.join(".mcp-http-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // A broken token file is an error, not a silent new token.
    std::fs::write(home.path.join(".mcp-http-token"), "short\n").unwrap();
    let o = env_cmd(&home)
        .args(["mcp", "--http", "--show-token"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("valid token"));
    // Options that need --http are refused without it.
    let o = env_cmd(&home)
        .args(["mcp", "--port", "1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn detached_server_is_found_by_doctor_and_stops_on_sigterm() {
    let _w = watchdog(Duration::from_secs(30));
    let home = TempHome::new("mcphttp-detach");
    let o = env_cmd(&home)
        .args(["mcp", "--http", "--port", "0", "--detach"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(home.path.join(".mcp-http.json")).unwrap())
            .unwrap();
    let pid = state["pid"].as_u64().unwrap() as u32;
    assert!(String::from_utf8_lossy(&o.stdout).contains(state["url"].as_str().unwrap()));
    let d = env_cmd(&home).args(["doctor", "--json"]).output().unwrap();
    let report: Value = serde_json::from_slice(&d.stdout).unwrap();
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "mcp-http")
        .cloned()
        .unwrap_or_else(|| panic!("no mcp-http check: {report}"));
    assert_eq!(check["status"], "ok", "{check}");
    assert!(check["detail"]
        .as_str()
        .unwrap()
        .contains(state["url"].as_str().unwrap()));
    workbench::sys::terminate(pid).unwrap();
    assert!(workbench::sys::wait_pid_exit(pid, Duration::from_secs(5)));
    assert!(
        !home.path.join(".mcp-http.json").exists(),
        "the state file is removed on exit"
    );
}

/// The official MCP Python SDK (pip `mcp`) calls every tool. Skipped when
/// tests/mcp_http/.venv is missing, unless WORKBENCH_REQUIRE_BROWSER=1 (CI).
#[test]
fn python_sdk_calls_every_tool() {
    let _w = watchdog(Duration::from_secs(120));
    let py =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_http/.venv/bin/python");
    if !py.exists() {
        assert_ne!(
            std::env::var("WORKBENCH_REQUIRE_BROWSER").as_deref(),
            Ok("1"),
            "the Python SDK is required"
        );
        eprintln!("SKIPPED: no tests/mcp_http/.venv (python3 -m venv tests/mcp_http/.venv && tests/mcp_http/.venv/bin/pip install mcp==2.3.0)");
        return;
    }
    let home = TempHome::new("mcphttp-sdk");
    let s = HttpServer::start(&home, &[]);
    let relay = support::Relay::start(&[]);
    let (id_a, _) = home.identity("sdk-a");
    let (id_b, _) = home.identity("sdk-b");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_http/sdk_client.py");
    let o = std::process::Command::new(py)
        .arg(script)
        .args([s.url(), s.token.clone(), "sdk".into(), relay.url()])
        .args([&id_a, &id_b])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["initialize"], "workbench");
    assert!(lines[0]["extensions"]["io.modelcontextprotocol/ui"].is_object());
    let listed: Vec<&str> = lines[1]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let called: Vec<&Value> = lines.iter().filter(|l| l.get("tool").is_some()).collect();
    for name in &listed {
        assert!(
            called.iter().any(|c| c["tool"] == *name),
            "{name} was not called"
        );
    }
    for c in &called {
        assert_eq!(c["isError"], false, "{c}");
    }
    let wait = called
        .iter()
        .find(|c| c["tool"] == "workbench_wait")
        .unwrap();
    assert!(
        !wait["progress"].as_array().unwrap().is_empty(),
        "the SDK saw progress"
    );
    let events = called
        .iter()
        .rev()
        .find(|c| c["tool"] == "workbench_events")
        .unwrap();
    assert_eq!(
        events["structured"]["events"][0]["name"], "sdk",
        "the relayed event arrived"
    );
    assert_eq!(
        lines.last().unwrap()["resources"],
        json!(["ui://workbench/sdk"])
    );
}

#[test]
fn setup_remote_writes_each_cli_http_form_without_the_token() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("mcphttp-setup");
    let s = HttpServer::start(&home, &[]);
    let h = &home.path;
    let claude_before = r#"{"numStartups": 3, "mcpServers": {"workbench": {"type": "stdio", "command": "/old/workbench", "args": ["mcp"]}, "other": {"command": "x"}}}"#;
    std::fs::write(h.join(".claude.json"), claude_before).unwrap();
    std::fs::create_dir_all(h.join(".codex")).unwrap();
    let codex_before = "model = \"o3\"\n\n[mcp_servers.workbench]\ncommand = \"/old/workbench\"\nargs = [\"mcp\"]\n";
    std::fs::write(h.join(".codex/config.toml"), codex_before).unwrap();
    std::fs::create_dir_all(h.join(".gemini")).unwrap();
    std::fs::create_dir_all(h.join(".cursor")).unwrap();
    let url = s.url();
    let setup = |extra: &[&str]| {
        env_cmd(&home)
            .env("WORKBENCH_MCP_TOKEN", &s.token)
            .args(["setup", "--remote", &url, "--client", "all"])
            .args(extra)
            .output()
            .unwrap()
    };
    let listing = |home: &TempHome| -> Vec<String> {
        let mut v: Vec<String> = [".", ".codex", ".gemini", ".cursor"]
            .iter()
            .flat_map(|d| std::fs::read_dir(home.path.join(d)).unwrap().flatten())
            .map(|e| e.path().display().to_string())
            .collect();
        v.sort();
        v
    };
    // --dry-run writes nothing.
    let before = listing(&home);
    let o = setup(&["--dry-run"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("would"));
    assert_eq!(listing(&home), before);
    assert_eq!(
        std::fs::read_to_string(h.join(".claude.json")).unwrap(),
        claude_before
    );

    let o = setup(&[]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}");
    assert!(out.contains("accepts the token"), "{out}");
    let claude: Value =
        serde_json::from_str(&std::fs::read_to_string(h.join(".claude.json")).unwrap()).unwrap();
    assert_eq!(claude["numStartups"], 3);
    assert_eq!(claude["mcpServers"]["other"], json!({"command": "x"}));
    assert_eq!(
        claude["mcpServers"]["workbench"],
        json!({"type": "http", "url": url, "headers": {"Authorization": "Bearer ${WORKBENCH_MCP_TOKEN}"}})
    );
    let codex = std::fs::read_to_string(h.join(".codex/config.toml")).unwrap();
    assert!(
        codex.contains(&format!("url = \"{url}\""))
            && codex.contains("bearer_token_env_var = \"WORKBENCH_MCP_TOKEN\""),
        "{codex}"
    );
    assert!(
        codex.starts_with("model = \"o3\"") && !codex.contains("command"),
        "{codex}"
    );
    let gemini: Value =
        serde_json::from_str(&std::fs::read_to_string(h.join(".gemini/settings.json")).unwrap())
            .unwrap();
    assert_eq!(gemini["mcpServers"]["workbench"]["httpUrl"], url.as_str());
    let cursor: Value =
        serde_json::from_str(&std::fs::read_to_string(h.join(".cursor/mcp.json")).unwrap())
            .unwrap();
    assert_eq!(
        cursor["mcpServers"]["workbench"]["headers"]["Authorization"],
        "Bearer ${env:WORKBENCH_MCP_TOKEN}"
    );
    for f in [
        ".claude.json",
        ".codex/config.toml",
        ".gemini/settings.json",
        ".cursor/mcp.json",
    ] {
        assert!(
            !std::fs::read_to_string(h.join(f))
                .unwrap()
                .contains(&s.token),
            "the token leaked into {f}"
        );
    }
    // Backups of the files that existed.
    let after = listing(&home);
    let backups: Vec<&String> = after.iter().filter(|p| p.contains(".bak-")).collect();
    assert_eq!(backups.len(), 2, "{backups:?}");
    assert!(backups
        .iter()
        .any(|b| std::fs::read_to_string(b).unwrap() == claude_before));
    // Idempotent.
    let o = setup(&[]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(out.matches("already configured").count(), 4, "{out}");
    assert_eq!(listing(&home), after);
    // A wrong token is reported; bad arguments are usage errors.
    let o = env_cmd(&home)
        .env("WORKBENCH_MCP_TOKEN", "0".repeat(64))
        .args(["setup", "--remote", &url, "--client", "claude"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("refuses the token"));
    for bad in [
        vec!["--remote", "ftp://x/mcp"],
        vec!["--remote", "http://127.0.0.1:1"],
        vec!["--token-env", "X"],
        vec!["--remote", &url, "--token-env", "1bad"],
    ] {
        let o = env_cmd(&home).arg("setup").args(&bad).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{bad:?}");
    }
}

#[test]
fn stdio_offers_mcp_apps_to_a_client_that_declares_them() {
    let _w = watchdog(Duration::from_secs(30));
    let home = TempHome::new("mcphttp-stdio-ui");
    let mut m = Mcp::start(&home);
    let init = m.request(
        "initialize",
        json!({"protocolVersion": "2025-11-25", "clientInfo": {"name": "gui", "version": "1"},
               "capabilities": {"extensions": {"io.modelcontextprotocol/ui": {"mimeTypes": ["text/html;profile=mcp-app"]}}}}),
    );
    assert_eq!(
        init["result"]["capabilities"]["extensions"]["io.modelcontextprotocol/ui"]["mimeTypes"],
        json!(["text/html;profile=mcp-app"])
    );
    let tools = m.request("tools/list", json!({}));
    let tools = tools["result"]["tools"].as_array().unwrap().clone();
    assert_eq!(tools.len(), 12 + 16, "page tools, the app tool, chat tools");
    assert!(tools.iter().any(|t| t["name"] == "workbench_app_post"));
    m.ok("workbench_scaffold", json!({"name": "s1"}));
    let res = m.request("resources/list", json!({}));
    assert_eq!(res["result"]["resources"][0]["uri"], "ui://workbench/s1");
    let read = m.request("resources/read", json!({"uri": "ui://workbench/nope"}));
    assert_eq!(read["error"]["code"], -32602, "{read}");
    let read = m.request("resources/read", json!({"uri": "file:///etc/passwd"}));
    assert_eq!(read["error"]["code"], -32602, "{read}");
}
