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
    assert_fails_with(&wb(&["channels", &relay.url()]), "handshake");
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
