//! `workbench demo` runs headless: it serves, drives the page like an AI,
//! answers events, and stops cleanly on Ctrl-C (SIGINT).

mod support;

use std::io::BufRead;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use support::*;

#[test]
fn demo_drives_the_page_and_answers_events() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("demo");
    let mut child = home
        .cmd()
        .args([
            "demo",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--seconds",
            "120",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut proc = Proc {
        child,
        stdout: None,
    };
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("a URL")
        .to_string();
    let port: u16 = url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    let mut v = Viewer::connect(port);
    assert_eq!(v.next()["type"], "HELLO");
    // The template arrives (full state, or the first push if we were early).
    let mut saw_template = false;
    let mut data_pushes = 0;
    let mut saw_answer = false;
    http(
        &format!("127.0.0.1:{port}"),
        "POST",
        "/api/event",
        server_info(&home, "demo")["token"].as_str(),
        Some(br#"{"name":"step-done","data":{"step":"1"}}"#),
    );
    for _ in 0..400 {
        let m = v.next();
        if m["type"] == "STATE" {
            saw_template |= m["state"]["template"]
                .as_str()
                .is_some_and(|t| t.contains("PSU bring-up"));
            if m["state"]["data"]["volts"].is_number() {
                data_pushes += 1;
            }
        }
        if m["type"] == "LOG"
            && m["entry"]["message"]
                .as_str()
                .is_some_and(|s| s.starts_with("Step 1 done"))
        {
            saw_answer = true;
        }
        if saw_template && saw_answer && data_pushes >= 5 {
            break;
        }
    }
    assert!(saw_template, "the demo pushed its page");
    assert!(data_pushes >= 5, "live readings arrive as data pushes");
    assert!(saw_answer, "the demo answered the click in the log");
    drop(v);
    // Ctrl-C stops the demo and its server cleanly.
    proc.signal("INT");
    assert_eq!(proc.wait_exit(Duration::from_secs(20)), Some(0));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(rest.contains("stopped"));
    assert!(
        !home.project("demo").join(".server.json").exists(),
        "the demo stops its server"
    );
    let end: Vec<Value> = read_jsonl(&home.project("demo").join("cost-log.jsonl"));
    assert_eq!(end.last().unwrap()["event"], "session_end");
}

#[test]
fn demo_rejects_bad_arguments() {
    let home = TempHome::new("demo-args");
    for args in [
        &["demo", "--seconds", "soon"][..],
        &["demo", "--bogus"],
        &["demo", "--name", "../x"],
    ] {
        let out = home.cmd().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage: workbench demo"));
    }
}
