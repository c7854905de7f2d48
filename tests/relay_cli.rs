//! The relay's shell commands (`send`, `listen`, `channels`, `agents`,
//! `create`, `invite`, `connect`) against the real relay.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};
use support::{die_with_parent, run, watchdog, Relay, BIN};

fn wb(args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    die_with_parent(&mut cmd);
    run(&mut cmd, Duration::from_secs(30))
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect()
}

fn assert_fails_with(out: &Output, needle: &str) {
    assert!(!out.status.success(), "expected failure");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "one-line error: {err}");
    assert!(
        err.contains(needle),
        "stderr {err:?} should mention {needle}"
    );
}

#[test]
fn relay_cli_send_and_listen() {
    let _w = watchdog(Duration::from_secs(60));
    let relay = Relay::start(&[]);
    let url = relay.url();
    let mut cmd = Command::new(BIN);
    cmd.args([
        "listen",
        &url,
        "#general",
        "--max-messages",
        "2",
        "--name",
        "ear",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    die_with_parent(&mut cmd);
    let mut listen = cmd.spawn().unwrap();
    // Wait for its "listening" line before sending.
    let stderr = listen.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("listen says it is listening");
    assert!(first.contains("listening"), "{first}");

    let out = wb(&[
        "send",
        &url,
        "#general",
        "hello from cli",
        "--name",
        "mouth",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let echo = &json_lines(&out)[0];
    assert_eq!(
        (echo["type"].as_str(), echo["content"].as_str()),
        (Some("MSG"), Some("hello from cli"))
    );
    let out = wb(&["send", &url, "#general", "second"]);
    assert!(out.status.success());

    let mut lines = Vec::new();
    for line in BufReader::new(listen.stdout.take().unwrap()).lines() {
        lines.push(serde_json::from_str::<Value>(&line.unwrap()).unwrap());
    }
    assert!(listen.wait().unwrap().success());
    let contents: Vec<&str> = lines
        .iter()
        .map(|v| v["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["hello from cli", "second"]);

    // A later listener gets the history replayed, flagged.
    let out = wb(&["listen", &url, "--max-messages", "2"]);
    assert!(out.status.success());
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|v| v["replay"] == true));

    // A direct message to an agent that does not exist is an ERROR.
    let out = wb(&["send", &url, "@nobody", "hi"]);
    assert_fails_with(&out, "AGENT_NOT_FOUND");
}

#[test]
fn relay_cli_lists_creates_and_invites() {
    let _w = watchdog(Duration::from_secs(60));
    let relay = Relay::start(&[]);
    let url = relay.url();
    let out = wb(&["channels", &url]);
    assert!(out.status.success());
    assert_eq!(
        json_lines(&out),
        vec![
            json!({"name": "#agents", "agents": 0}),
            json!({"name": "#general", "agents": 0})
        ]
    );

    let (mut a, aid) = relay.agent("present");
    a.join("#general");
    let out = wb(&["agents", &url, "#general", "--name", "looker"]);
    assert!(out.status.success());
    assert_eq!(json_lines(&out), vec![json!({"agent": aid})]);
    assert_fails_with(&wb(&["agents", &url, "#missing"]), "CHANNEL_NOT_FOUND");

    let out = wb(&["create", &url, "#builds"]);
    assert!(out.status.success());
    assert_eq!(json_lines(&out)[0]["channel"], "#builds");
    assert_fails_with(&wb(&["create", &url, "#builds"]), "CHANNEL_EXISTS");
    let out = wb(&["create", &url, "#hidden", "--private"]);
    assert_eq!(json_lines(&out)[0]["invite_only"], true);
    let listed = json_lines(&wb(&["channels", &url]));
    assert!(listed.contains(&json!({"name": "#builds", "agents": 0})));
    assert!(!listed.iter().any(|v| v["name"] == "#hidden"));

    // Invite into a public channel: the invitee is told by MSG.
    let out = wb(&["invite", &url, "#general", &aid, "--name", "host"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        json_lines(&out)[0],
        json!({"channel": "#general", "invited": aid})
    );
    let v = a.until("MSG");
    assert!(v["content"]
        .as_str()
        .unwrap()
        .contains("invited to #general"));
    // Not a member of an invite-only channel: refused.
    assert_fails_with(&wb(&["invite", &url, "#hidden", &aid]), "NOT_INVITED");
}

#[test]
fn relay_cli_errors_are_one_line() {
    let _w = watchdog(Duration::from_secs(60));
    // Nothing listens on port 1.
    assert_fails_with(
        &wb(&["send", "ws://127.0.0.1:1", "#general", "x"]),
        "cannot connect",
    );
    assert_fails_with(&wb(&["listen", "ws://127.0.0.1:1"]), "cannot connect");
    assert_fails_with(&wb(&["channels", "127.0.0.1:1"]), "cannot connect");
    assert_fails_with(&wb(&["channels", "wss://127.0.0.1:1"]), "wss://");
    let relay = Relay::start(&[]);
    let url = relay.url();
    // Usage errors exit 2 and name the synopsis.
    let out = wb(&["send", &url, "general", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: workbench send"));
    let out = wb(&["listen", &url, "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
    let out = wb(&["send", &url, "#general", "x", "--name", "bad name"]);
    assert_eq!(out.status.code(), Some(2));
    // A relay that is full refuses the handshake.
    drop(relay);
    let relay = Relay::start(&["--max-connections", "1"]);
    let _hold = relay.client();
    assert_fails_with(&wb(&["channels", &relay.url()]), "TOO_MANY_CONNECTIONS");
}

#[test]
fn relay_cli_connect_is_interactive() {
    let _w = watchdog(Duration::from_secs(60));
    let relay = Relay::start(&[]);
    let (mut peer, pid) = relay.agent("peer");
    peer.join("#general");
    let mut cmd = Command::new(BIN);
    cmd.args([
        "connect",
        &relay.url(),
        "--join",
        "#general",
        "--name",
        "human",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    die_with_parent(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_for = |needle: &str| loop {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no line with {needle}"));
        if line.contains(needle) {
            return line;
        }
    };
    wait_for("connected to");
    let hid = peer.until("AGENT_JOINED")["agent"]
        .as_str()
        .unwrap()
        .to_string();

    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "hello from a human").unwrap();
    let v = peer.until("MSG");
    assert_eq!(
        (v["from"].as_str(), v["content"].as_str()),
        (Some(hid.as_str()), Some("hello from a human"))
    );
    peer.msg("#general", "hi human");
    wait_for(&format!("[#general] {pid}: hi human"));
    writeln!(stdin, "/dm {pid} psst").unwrap();
    let v = loop {
        let v = peer.until("MSG");
        if v["from"] == hid.as_str() {
            break v;
        }
    };
    assert_eq!(
        (v["to"].as_str(), v["content"].as_str()),
        (Some(pid.as_str()), Some("psst"))
    );
    writeln!(stdin, "/join #agents").unwrap();
    wait_for("joined #agents");
    writeln!(stdin, "/join #nope").unwrap();
    wait_for("CHANNEL_NOT_FOUND");
    writeln!(stdin, "/quit").unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(peer.until("AGENT_LEFT")["agent"], hid.as_str());
}

/// Characters that must never reach a terminal as themselves.
fn unsafe_char(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c as u32, 0x200B..=0x200F | 0x202A..=0x202E | 0x2066..=0x2069 | 0xFEFF)
}

/// Hostile text: an ANSI clear-screen, a title-setting OSC with a bell, a
/// carriage return, a C1 CSI, bidi overrides and isolates, zero-width ones.
const HOSTILE: &str =
    "ok\u{1b}[2J\u{1b}]0;pwned\u{7}\r\u{9b}31m \u{202e}txt.exe\u{202c} \u{2066}x\u{2069} a\u{200b}b\u{feff}";

/// A fake "relay" on a loopback port: for each connection, runs `script`
/// on the accepted WebSocket (at most `conns` connections, then it stops).
fn fake_relay(
    conns: usize,
    script: impl Fn(&mut tungstenite::WebSocket<std::net::TcpStream>) + Send + 'static,
) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    thread::spawn(move || {
        for stream in listener.incoming().take(conns) {
            let Ok(stream) = stream else { return };
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            if let Ok(mut ws) = tungstenite::accept(stream) {
                script(&mut ws);
            }
        }
    });
    url
}

fn read_json(ws: &mut tungstenite::WebSocket<std::net::TcpStream>) -> Option<Value> {
    loop {
        match ws.read().ok()? {
            tungstenite::Message::Text(t) => return serde_json::from_str(t.as_str()).ok(),
            tungstenite::Message::Close(_) => return None,
            _ => {}
        }
    }
}

fn send_json(ws: &mut tungstenite::WebSocket<std::net::TcpStream>, v: Value) {
    let _ = ws.send(tungstenite::Message::text(v.to_string()));
}

/// Every byte a relay sends is escaped before it reaches the terminal: in
/// error messages, in the JSON lines `listen` prints, in what `connect`
/// shows (issue 11 §7).
#[test]
fn relay_cli_escapes_everything_a_relay_sends() {
    let _w = watchdog(Duration::from_secs(60));
    // An ERROR whose code and message are hostile.
    let url = fake_relay(3, |ws| {
        let _ = read_json(ws);
        send_json(
            ws,
            json!({"type":"ERROR","code":format!("X{HOSTILE}"),"message":HOSTILE,"ts":1}),
        );
        let _ = read_json(ws);
    });
    for args in [
        vec!["send", url.as_str(), "#general", "x"],
        vec!["listen", url.as_str()],
        vec!["channels", url.as_str(), "--name", "n"],
    ] {
        let out = wb(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.chars().any(unsafe_char),
            "{args:?} printed raw: {err:?}"
        );
        assert!(
            err.contains("\\u{1b}[2J") && err.contains("\\u{202e}txt.exe"),
            "{err}"
        );
    }
    // A banner (WELCOME) and messages whose text is hostile, through listen.
    let url = fake_relay(1, |ws| {
        let _ = read_json(ws);
        send_json(
            ws,
            json!({"type":"WELCOME","agent_id":format!("@x{HOSTILE}"),"server":HOSTILE,"ts":1}),
        );
        let _ = read_json(ws); // JOIN
        let _ = read_json(ws); // PING
        send_json(
            ws,
            json!({"type":"JOINED","channel":"#general","agents":[],"ts":1}),
        );
        send_json(
            ws,
            json!({"type":"MSG","from":"@evil","to":"#general","content":HOSTILE,"ts":1,"replay":true}),
        );
        send_json(ws, json!({"type":"PONG","ts":1}));
        send_json(
            ws,
            json!({"type":"MSG","from":HOSTILE,"to":"#general","content":HOSTILE,"ts":2}),
        );
        let _ = read_json(ws);
    });
    let out = wb(&["listen", &url, "--max-messages", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stdout.chars().any(unsafe_char),
        "raw in stdout: {stdout:?}"
    );
    assert!(
        !stderr.chars().any(unsafe_char),
        "raw in stderr: {stderr:?}"
    );
    // Still JSON, and the same text once parsed: nothing is lost.
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|v| v["content"] == HOSTILE));
    assert_eq!(lines[1]["from"], HOSTILE);
}

/// `connect` shows another agent's hostile message escaped (the real relay).
#[test]
fn relay_cli_connect_escapes_what_others_send() {
    let _w = watchdog(Duration::from_secs(60));
    let relay = Relay::start(&[]);
    let (mut peer, _) = relay.agent("peer");
    peer.join("#general");
    let mut cmd = Command::new(BIN);
    cmd.args(["connect", &relay.url(), "--name", "human"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    die_with_parent(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    peer.until("AGENT_JOINED");
    peer.msg("#general", HOSTILE);
    let line = loop {
        let line = rx.recv_timeout(Duration::from_secs(10)).expect("a line");
        if line.contains("txt.exe") {
            break line;
        }
    };
    assert!(!line.chars().any(unsafe_char), "raw: {line:?}");
    assert!(
        line.contains("\\u{1b}[2J") && line.contains("\\u{200b}"),
        "{line}"
    );
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}

/// `:99999` is an error, never port 80; and an address that answers but is
/// not a relay fails with a message that says so.
#[test]
fn relay_cli_bad_ports_and_non_relays_are_clear_errors() {
    let _w = watchdog(Duration::from_secs(60));
    for bad in [
        "ws://127.0.0.1:99999",
        "127.0.0.1:99999",
        "ws://127.0.0.1:0",
    ] {
        let out = wb(&["channels", bad]);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("invalid port"), "{bad}: {err}");
        assert!(!err.contains(":80"), "{err}");
    }
    // An HTTP server that is not a WebSocket endpoint.
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http_url = format!("ws://{}", http.local_addr().unwrap());
    thread::spawn(move || {
        for s in http.incoming().take(1) {
            let Ok(mut s) = s else { return };
            let mut buf = [0u8; 2048];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
            );
        }
    });
    let out = wb(&["channels", &http_url]);
    assert_fails_with(&out, "is not an AgentChat relay");
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 200"));
    // A TCP server speaking another protocol (an SSH-like banner).
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other_url = format!("ws://{}", other.local_addr().unwrap());
    thread::spawn(move || {
        for s in other.incoming().take(1) {
            let Ok(mut s) = s else { return };
            let _ = s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n");
        }
    });
    assert_fails_with(&wb(&["channels", &other_url]), "is not an AgentChat relay");
    // A WebSocket server that is not a relay (answers IDENTIFY with other JSON).
    let ws_url = fake_relay(1, |ws| {
        let _ = read_json(ws);
        send_json(ws, json!({"type":"STATE","state":{},"seq":1}));
        let _ = read_json(ws);
    });
    let out = wb(&["send", &ws_url, "#general", "x"]);
    assert_fails_with(&out, "is not an AgentChat relay");
    assert!(String::from_utf8_lossy(&out.stderr).contains("STATE"));
}
