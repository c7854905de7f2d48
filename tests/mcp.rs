//! Black-box tests of `workbench mcp`: the real binary over pipes, as AI CLIs
//! drive it, with real detached project servers on 127.0.0.1.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

#[test]
fn handshake_answers_every_request_and_ignores_notifications() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("mcp-hs");
    let mut m = Mcp::start(&home);
    // Newer clients probe before initialize and wait for an answer.
    m.send(&json!({"jsonrpc": "2.0", "id": "probe", "method": "server/discover"}));
    let r = m.next_line(Duration::from_secs(5));
    assert_eq!(r["id"], "probe");
    assert_eq!(r["error"]["code"], -32601);
    // Before initialize only ping is served (MCP lifecycle): the others get
    // Invalid Request with a message saying what to do, and the loop goes on.
    for method in ["tools/list", "tools/call"] {
        let r = m.request(method, json!({"name": "workbench_list", "arguments": {}}));
        assert_eq!(r["error"]["code"], -32600, "{r}");
        let msg = r["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("not initialized") && msg.contains("initialize"),
            "{msg}"
        );
    }
    let r = m.request("ping", Value::Null);
    assert_eq!(r["result"], json!({}));

    // id 0, unknown fields, and the notification + next request in one write.
    m.send_raw(concat!(
        r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{"roots":{}},"clientInfo":{"name":"x","version":"1"},"futureField":true}}"#,
        "\n",
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        "\n",
        r#"{"jsonrpc":"2.0","id":"p1","method":"ping"}"#,
        "\n"
    ));
    let init = m.next_line(Duration::from_secs(5));
    assert_eq!(init["id"], 0);
    let res = &init["result"];
    assert_eq!(res["protocolVersion"], "2025-03-26");
    assert_eq!(res["serverInfo"]["name"], "workbench");
    assert!(res["serverInfo"]["version"].is_string());
    assert!(res["capabilities"]["tools"].is_object());
    assert!(res["instructions"]
        .as_str()
        .unwrap()
        .contains("workbench_scaffold"));
    // The notification got no answer: the next line answers the ping.
    let ping = m.next_line(Duration::from_secs(5));
    assert_eq!(ping, json!({"jsonrpc": "2.0", "id": "p1", "result": {}}));

    for (asked, expected) in [
        ("2025-11-25", "2025-11-25"),
        ("2025-06-18", "2025-06-18"),
        ("2024-11-05", "2024-11-05"),
        ("2023-01-01", "2025-11-25"),
    ] {
        let r = m.request("initialize", json!({"protocolVersion": asked}));
        assert_eq!(r["result"]["protocolVersion"], expected);
    }
    let r = m.request("initialize", Value::Null);
    assert_eq!(r["result"]["protocolVersion"], "2025-11-25");
    // Initialized now: tools/list answers.
    let r = m.request("tools/list", Value::Null);
    let tools = r["result"]["tools"].as_array().unwrap();
    let named = |prefix: &str| {
        tools
            .iter()
            .filter(|t| t["name"].as_str().unwrap().starts_with(prefix))
            .count()
    };
    // The page tools and the relay chat tools (tests/chat_mcp.rs).
    assert_eq!(
        (tools.len(), named("workbench_"), named("chat_")),
        (27, 11, 16)
    );

    // Any id comes back exactly as sent, as raw text on the wire: a 30-digit
    // integer stays that integer (not 1.2345678901234568e29), in answers and
    // in errors alike.
    for id in [
        "123456789012345678901234567890",
        "-98765432109876543210987654321",
        "1.50",
        r#""\u00e9t\u00e9""#,
    ] {
        m.send_raw(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#));
        m.send_raw("\n");
        let line = m.next_raw_line(Duration::from_secs(5));
        assert_eq!(
            line,
            format!(r#"{{"id":{id},"jsonrpc":"2.0","result":{{}}}}"#)
        );
        m.send_raw(&format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"nope/nope"}}"#
        ));
        m.send_raw("\n");
        let line = m.next_raw_line(Duration::from_secs(5));
        assert!(line.contains(&format!(r#""id":{id},"#)), "{line}");
        assert!(line.contains("-32601"), "{line}");
        m.send_raw(&format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"workbench_list","arguments":{{}}}}}}"#
        ));
        m.send_raw("\n");
        let line = m.next_raw_line(Duration::from_secs(30));
        assert!(
            line.starts_with(&format!(r#"{{"id":{id},"jsonrpc":"2.0","result":"#)),
            "{line}"
        );
    }
    assert_eq!(
        m.close_stdin_and_wait(),
        Some(0),
        "EOF on stdin is a clean exit"
    );
}

#[test]
fn tools_list_has_schemas_an_ai_can_act_on() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("mcp-list");
    let mut m = Mcp::start(&home);
    m.initialize();
    let tools = m.request("tools/list", json!({}))["result"]["tools"].clone();
    let names: Vec<&str> = tools
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for n in [
        "workbench_scaffold",
        "workbench_state",
        "workbench_log",
        "workbench_read_log",
        "workbench_list",
        "workbench_stop",
        "workbench_wait",
        "workbench_events",
        "workbench_snapshot",
    ] {
        assert!(names.contains(&n), "{n} missing");
    }
    for t in tools.as_array().unwrap() {
        assert_eq!(t["inputSchema"]["type"], "object", "{}", t["name"]);
        assert_eq!(t["outputSchema"]["type"], "object", "{}", t["name"]);
        assert!(!t["description"].as_str().unwrap().is_empty());
    }
}

#[test]
fn bad_input_gets_the_right_error_and_the_loop_keeps_answering() {
    let _w = watchdog(Duration::from_secs(90));
    let home = TempHome::new("mcp-bad");
    let mut m = Mcp::start(&home);
    m.initialize();
    let expect_error = |m: &mut Mcp, raw: &str, code: i64| {
        m.send_raw(raw);
        let r = m.next_line(Duration::from_secs(10));
        assert_eq!(r["error"]["code"], code, "{raw:.60}: {r}");
        assert_eq!(r["id"], Value::Null);
        let p = m.request("ping", json!({}));
        assert_eq!(
            p["result"],
            json!({}),
            "the loop still answers after {raw:.60}"
        );
    };
    expect_error(&mut m, "this is not json\n", -32700);
    expect_error(
        &mut m,
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\n",
        -32700,
    );
    expect_error(
        &mut m,
        "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]\n",
        -32600,
    );
    expect_error(&mut m, "42\n", -32600);
    expect_error(
        &mut m,
        "{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"ping\"}\n",
        -32600,
    );
    let huge = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"ping\",\"params\":{{\"x\":\"{}\"}}}}\n",
        "a".repeat(10 << 20)
    );
    expect_error(&mut m, &huge, -32600);

    let r = m.request("no/such/method", json!({}));
    assert_eq!(r["error"]["code"], -32601);
    let r = m.request(
        "tools/call",
        json!({"name": "workbench_nope", "arguments": {}}),
    );
    assert_eq!(r["error"]["code"], -32602);
    let r = m.request("tools/call", Value::Null);
    assert_eq!(r["error"]["code"], -32602);
    let r = m.request("tools/call", json!({"name": 5}));
    assert_eq!(r["error"]["code"], -32602);

    // Wrong argument types and bad names are tool errors the AI can fix.
    let (err, msg) = m.call("workbench_scaffold", json!({"name": 42}));
    assert!(err);
    assert!(
        msg.as_str()
            .unwrap()
            .contains("bad arguments for workbench_scaffold"),
        "{msg}"
    );
    let (err, msg) = m.call("workbench_scaffold", json!({"name": "../etc"}));
    assert!(err);
    assert!(
        msg.as_str().unwrap().contains("invalid project name"),
        "{msg}"
    );
    let (err, msg) = m.call(
        "workbench_state",
        json!({"project": "ghost", "template": "x"}),
    );
    assert!(err);
    assert_eq!(
        msg,
        "project 'ghost' does not exist; call workbench_scaffold first"
    );
    let (err, msg) = m.call("workbench_log", json!({"project": "ghost"}));
    assert!(err);
    assert!(
        msg.as_str().unwrap().contains("missing field `message`"),
        "{msg}"
    );
    assert!(!home.project("ghost").exists());
    assert!(!home
        .path
        .parent()
        .unwrap()
        .join("etc")
        .join("index.html")
        .exists());

    m.ok("workbench_scaffold", json!({"name": "p"}));
    let (err, msg) = m.call("workbench_state", json!({"project": "p", "template": 7}));
    assert!(err);
    assert!(
        msg.as_str()
            .unwrap()
            .contains("'template' must be a string"),
        "{msg}"
    );
    let (err, msg) = m.call("workbench_state", json!({"project": "p", "colour": "red"}));
    assert!(err);
    assert!(msg.as_str().unwrap().contains("unknown field"), "{msg}");
    let (err, _) = m.call(
        "workbench_log",
        json!({"project": "p", "message": "x", "level": "shout"}),
    );
    assert!(err);
    let v = m.ok(
        "workbench_log",
        json!({"project": "p", "message": "still fine"}),
    );
    assert!(v["ts"].is_string());
    m.ok("workbench_stop", json!({"project": "p"}));
}

#[test]
fn scaffold_push_log_read_list_stop() {
    let _w = watchdog(Duration::from_secs(90));
    let home = TempHome::new("mcp-flow");
    let mut m = Mcp::start(&home);
    m.initialize();
    let s = m.ok(
        "workbench_scaffold",
        json!({"name": "bench1", "title": "PSU bring-up", "description": "rail checks"}),
    );
    assert_eq!(s["reused"], false);
    assert_eq!(s["path"], home.project("bench1").display().to_string());
    let info = server_info(&home, "bench1");
    assert_eq!(s["port"], info["port"]);
    assert_eq!(s["url"], info["url"]);
    let again = m.ok("workbench_scaffold", json!({"name": "bench1"}));
    assert_eq!(again["reused"], true);
    assert_eq!(server_info(&home, "bench1")["pid"], info["pid"]);

    let port = info["port"].as_u64().unwrap() as u16;
    let mut viewer = Viewer::connect(port);
    viewer.preamble(0);
    let st = m.ok(
        "workbench_state",
        json!({"project": "bench1", "template": "<h2>Rail 1</h2>", "data": {"v": 3.3}}),
    );
    assert_eq!(st["viewers"], 1);
    assert!(st["bytes"].as_u64().unwrap() > 20);
    let pushed = viewer.next();
    assert_eq!(pushed["state"]["template"], "<h2>Rail 1</h2>");
    let lg = m.ok(
        "workbench_log",
        json!({"project": "bench1", "message": "measured 3.3 V", "level": "success"}),
    );
    assert!(lg["ts"].is_string());
    assert_eq!(viewer.next()["entry"]["message"], "measured 3.3 V");

    for i in 0..5 {
        m.ok(
            "workbench_log",
            json!({"project": "bench1", "message": format!("n{i}")}),
        );
    }
    let rl = m.ok(
        "workbench_read_log",
        json!({"project": "bench1", "limit": 3}),
    );
    let msgs: Vec<&str> = rl["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(msgs, ["n2", "n3", "n4"]);
    let rl = m.ok(
        "workbench_read_log",
        json!({"project": "bench1", "limit": 100000}),
    );
    assert_eq!(rl["count"], 6, "limit is clamped, not refused");

    let list = m.ok("workbench_list", json!({}));
    let row = &list["projects"][0];
    assert_eq!(row["name"], "bench1");
    assert_eq!(row["title"], "PSU bring-up");
    assert_eq!(row["running"], true);
    assert_eq!(row["pid"], info["pid"]);
    assert_eq!(row["viewers"], 1);

    let cli = home.cmd().args(["list", "--json"]).output().unwrap();
    let cli_row: Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(cli_row["pid"], info["pid"]);

    let stop = m.ok("workbench_stop", json!({"project": "bench1"}));
    assert_eq!(stop["was_running"], true);
    assert!(!home.project("bench1").join(".server.json").exists());
    let end = read_jsonl(&home.project("bench1").join("cost-log.jsonl"))
        .pop()
        .unwrap();
    assert_eq!(end["event"], "session_end");
    assert_eq!(end["state_pushes"], 1);
    let list = m.ok("workbench_list", json!({}));
    assert_eq!(list["projects"][0]["running"], false);
}

#[test]
fn servers_survive_an_ai_cli_restart() {
    let _w = watchdog(Duration::from_secs(90));
    let home = TempHome::new("mcp-persist");
    let mut m1 = Mcp::start(&home);
    m1.initialize();
    let s = m1.ok("workbench_scaffold", json!({"name": "lab"}));
    m1.ok(
        "workbench_state",
        json!({"project": "lab", "template": "<p>first</p>"}),
    );
    let info = server_info(&home, "lab");
    let mut viewer = Viewer::connect(info["port"].as_u64().unwrap() as u16);
    let (state, _) = viewer.preamble(0);
    assert_eq!(state["state"]["template"], "<p>first</p>");

    // As clients do on shutdown: SIGTERM to the MCP server's whole process group.
    let pgid = m1.proc.pid();
    // SAFETY: kill(2) on a process group we created.
    assert_eq!(unsafe { libc::kill(-(pgid as i32), libc::SIGTERM) }, 0);
    assert!(
        m1.proc.wait_exit(Duration::from_secs(10)).is_none(),
        "killed by the signal, so no exit code"
    );
    assert!(
        workbench::sys::pid_alive(info["pid"].as_u64().unwrap() as u32),
        "the project server survived"
    );

    let mut m2 = Mcp::start(&home);
    m2.initialize();
    let list = m2.ok("workbench_list", json!({}));
    let row = &list["projects"][0];
    assert_eq!(row["running"], true);
    assert_eq!(row["pid"], info["pid"]);
    assert_eq!(row["url"], s["url"]);
    // No scaffold needed: state goes straight to the same server.
    let st = m2.ok(
        "workbench_state",
        json!({"project": "lab", "template": "<p>second</p>"}),
    );
    assert_eq!(st["viewers"], 1);
    // The browser connected all along got it.
    assert_eq!(viewer.next()["state"]["template"], "<p>second</p>");
    assert_eq!(server_info(&home, "lab")["pid"], info["pid"]);
    m2.ok("workbench_stop", json!({"project": "lab"}));
}

#[test]
fn two_clients_scaffolding_at_once_get_one_server() {
    let _w = watchdog(Duration::from_secs(90));
    let home = TempHome::new("mcp-race");
    let mut a = Mcp::start(&home);
    let mut b = Mcp::start(&home);
    a.initialize();
    b.initialize();
    let call = json!({"jsonrpc": "2.0", "id": 77, "method": "tools/call", "params": {"name": "workbench_scaffold", "arguments": {"name": "shared"}}});
    a.send(&call);
    b.send(&call);
    let ra = a.response_to(&json!(77), Duration::from_secs(30));
    let rb = b.response_to(&json!(77), Duration::from_secs(30));
    let (sa, sb) = (
        &ra["result"]["structuredContent"],
        &rb["result"]["structuredContent"],
    );
    assert_eq!(sa["port"], sb["port"]);
    assert_eq!(sa["url"], sb["url"]);
    let reused: Vec<bool> = [sa, sb]
        .iter()
        .map(|s| s["reused"].as_bool().unwrap())
        .collect();
    assert_eq!(
        reused.iter().filter(|r| !**r).count(),
        1,
        "exactly one started a server: {reused:?}"
    );
    assert_eq!(count_servers(&home, "shared"), 1, "one server process");
    a.ok("workbench_stop", json!({"project": "shared"}));
}

#[test]
fn a_dead_or_impostor_server_is_replaced_and_state_comes_back() {
    let _w = watchdog(Duration::from_secs(90));
    let home = TempHome::new("mcp-dead");
    let mut m = Mcp::start(&home);
    m.initialize();
    m.ok("workbench_scaffold", json!({"name": "d"}));
    m.ok(
        "workbench_state",
        json!({"project": "d", "template": "<p>persisted</p>"}),
    );
    let info = server_info(&home, "d");
    let pid = info["pid"].as_u64().unwrap() as u32;
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(workbench::sys::wait_pid_exit(pid, Duration::from_secs(5)));

    // Any project tool restarts it; the page state comes back from state.json.
    m.ok(
        "workbench_log",
        json!({"project": "d", "message": "after crash"}),
    );
    let info2 = server_info(&home, "d");
    assert_ne!(info2["pid"], info["pid"]);
    let mut v = Viewer::connect(info2["port"].as_u64().unwrap() as u16);
    let (state, _) = v.preamble(1);
    assert_eq!(state["state"]["template"], "<p>persisted</p>");

    // A truncated record is repaired by scaffold.
    m.ok("workbench_stop", json!({"project": "d"}));
    std::fs::write(home.project("d").join(".server.json"), "{\"pid\": 12").unwrap();
    let list = m.ok("workbench_list", json!({}));
    assert_eq!(list["projects"][0]["running"], false);
    let s = m.ok("workbench_scaffold", json!({"name": "d"}));
    assert_eq!(s["reused"], false);
    assert!(server_info(&home, "d")["token"].is_string());
    m.ok("workbench_stop", json!({"project": "d"}));

    // A record pointing at another program (this test process, and a port
    // where something else answers) is treated as stale and never killed.
    let impostor = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let iport = impostor.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in impostor.incoming().take(20) {
            use std::io::{Read, Write};
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let body = "{\"ok\":true,\"project\":\"other\",\"pid\":1}";
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let fake = json!({"pid": std::process::id(), "port": iport, "host": "127.0.0.1", "url": "http://x/", "started": "t", "token": "t", "version": "0"});
    std::fs::write(home.project("d").join(".server.json"), fake.to_string()).unwrap();
    let st = m.ok("workbench_state", json!({"project": "d", "data": 1}));
    assert_eq!(st["viewers"], 0);
    let real = server_info(&home, "d");
    assert_ne!(real["port"], iport);
    assert_ne!(real["pid"], std::process::id());
    m.ok("workbench_stop", json!({"project": "d"}));
}

#[test]
fn cli_stop_and_list_match_the_tools() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("mcp-cli");
    let mut m = Mcp::start(&home);
    m.initialize();
    m.ok("workbench_scaffold", json!({"name": "c1"}));
    let out = home.cmd().arg("list").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("c1") && text.contains("yes"), "{text}");
    let out = home.cmd().args(["stop", "c1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("stopped 'c1'"));
    assert!(!home.project("c1").join(".server.json").exists());
    let out = home.cmd().args(["stop", "c1"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("was not running"));
    let out = home.cmd().args(["stop", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = home.cmd().args(["stop", "../x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

fn kill_hard(pid: u32) {
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(workbench::sys::wait_pid_exit(pid, Duration::from_secs(5)));
}

fn pid_of(info: &Value) -> u32 {
    info["pid"].as_u64().unwrap() as u32
}

/// `GET /health` of a project's server, checked to be that project's.
fn assert_serves(home: &TempHome, name: &str) -> Value {
    let info = server_info(home, name);
    let (status, h) = http(
        &format!("127.0.0.1:{}", info["port"]),
        "GET",
        "/health",
        None,
        None,
    );
    assert_eq!(status, 200, "{name}");
    assert_eq!(h["project"], name);
    assert_eq!(h["pid"], info["pid"]);
    info
}

#[test]
fn restarts_racing_for_one_old_port_or_a_held_port_all_come_up() {
    let _w = watchdog(Duration::from_secs(120));
    let home = TempHome::new("mcp-portrace");
    let mut m = Mcp::start(&home);
    m.initialize();
    let names = ["r0", "r1", "r2", "r3"];
    for n in names {
        m.ok("workbench_scaffold", json!({"name": n}));
    }
    // All crash (their records stay behind), and every record now names the
    // same old port: each restart prefers it, at most one can have it.
    let old = server_info(&home, "r0")["port"].clone();
    for n in names {
        let mut info = server_info(&home, n);
        kill_hard(pid_of(&info));
        info["port"] = old.clone();
        std::fs::write(home.project(n).join(".server.json"), info.to_string()).unwrap();
    }
    // Four restarts at once: tool calls run on their own threads.
    for (i, n) in names.iter().enumerate() {
        m.send(
            &json!({"jsonrpc": "2.0", "id": 100 + i, "method": "tools/call",
            "params": {"name": "workbench_state", "arguments": {"project": n, "data": i}}}),
        );
    }
    let mut answered = std::collections::HashMap::new();
    while answered.len() < names.len() {
        let r = m.next_line(Duration::from_secs(60));
        let id = r["id"].as_u64().expect("a response");
        answered.insert(id, r);
    }
    for (id, r) in &answered {
        assert_eq!(r["result"]["isError"], false, "call {id}: {r}");
    }
    let mut ports = std::collections::HashSet::new();
    for n in names {
        ports.insert(assert_serves(&home, n)["port"].as_u64().unwrap());
    }
    assert_eq!(
        ports.len(),
        names.len(),
        "each restart got a port of its own"
    );

    // A port someone else holds: the restart takes another, and the URL the
    // tool returns is the one the server really listens on.
    let info = server_info(&home, "r1");
    kill_hard(pid_of(&info));
    let held_port = info["port"].as_u64().unwrap() as u16;
    let _holder = std::net::TcpListener::bind(("127.0.0.1", held_port)).unwrap();
    let s = m.ok("workbench_scaffold", json!({"name": "r1"}));
    assert_eq!(s["reused"], false);
    assert_ne!(s["port"], held_port);
    let info = assert_serves(&home, "r1");
    assert_eq!(s["port"], info["port"]);
    assert_eq!(s["url"], info["url"]);
    assert!(s["url"]
        .as_str()
        .unwrap()
        .ends_with(&format!(":{}/", s["port"])));
    for n in names {
        m.ok("workbench_stop", json!({"project": n}));
    }
}

#[test]
fn a_server_whose_record_is_missing_or_corrupt_is_found_restored_and_stopped() {
    let _w = watchdog(Duration::from_secs(90));
    let home = TempHome::new("mcp-orphan");
    let mut m = Mcp::start(&home);
    m.initialize();
    m.ok("workbench_scaffold", json!({"name": "o"}));
    let info = server_info(&home, "o");
    let record = home.project("o").join(".server.json");
    let intact = || {
        std::fs::read_to_string(&record)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .is_some_and(|v| v == info)
    };

    // Deleted, truncated, overwritten with garbage: the server writes it back.
    std::fs::remove_file(&record).unwrap();
    assert!(
        eventually(Duration::from_secs(10), intact),
        "restored after delete"
    );
    std::fs::write(&record, "{\"pid\": 12").unwrap();
    assert!(
        eventually(Duration::from_secs(10), intact),
        "restored after corruption"
    );
    std::fs::write(&record, "").unwrap();
    assert!(
        eventually(Duration::from_secs(10), intact),
        "restored after truncation"
    );

    // A record it cannot restore (a folder in its place): tools still find
    // the running server through its lock, without starting a second one.
    // (The server may restore the file between the two steps: try again.)
    let blocked = (0..200).any(|_| {
        let _ = std::fs::remove_file(&record);
        std::fs::create_dir(&record).is_ok()
    });
    assert!(blocked, "a folder took the record's place");
    {
        let mut fresh = Mcp::start(&home);
        fresh.initialize();
        let st = fresh.ok(
            "workbench_state",
            json!({"project": "o", "template": "<p>found</p>"}),
        );
        assert!(st["seq"].as_u64().is_some(), "{st}");
        let list = fresh.ok("workbench_list", json!({}));
        assert_eq!(list["projects"][0]["running"], true, "{list}");
        assert_eq!(list["projects"][0]["pid"], info["pid"]);
        assert_eq!(count_servers(&home, "o"), 1, "no second server");
        // The doctor finds it too, through the same record.
        let out = run(
            home.cmd().args(["doctor", "--json"]),
            Duration::from_secs(30),
        );
        let report: Value = serde_json::from_str(&stdout(&out)).expect("doctor --json");
        let check = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == "server o")
            .cloned()
            .unwrap_or_else(|| panic!("no server check in {report}"));
        assert_eq!(check["status"], "ok", "{check}");
        // `workbench stop` really stops it.
        let out = run(home.cmd().args(["stop", "o"]), Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(stdout(&out).contains("stopped 'o'"), "{}", stdout(&out));
        assert!(workbench::sys::wait_pid_exit(
            pid_of(&info),
            Duration::from_secs(5)
        ));
        std::fs::remove_dir(&record).unwrap();
        // Nothing left that looks like a running server.
        let list = fresh.ok("workbench_list", json!({}));
        assert_eq!(list["projects"][0]["running"], false, "{list}");
        assert!(list["projects"][0].get("stale").is_none(), "{list}");
    }
}

#[test]
fn a_kept_connection_follows_a_server_restarted_by_someone_else() {
    let _w = watchdog(Duration::from_secs(90));
    let home = TempHome::new("mcp-keep");
    let mut m1 = Mcp::start(&home);
    m1.initialize();
    m1.ok("workbench_scaffold", json!({"name": "k"}));
    for i in 0..3 {
        m1.ok("workbench_state", json!({"project": "k", "data": i}));
    }
    let first = server_info(&home, "k");
    // Another client stops it and starts a new one (new pid and token).
    let out = run(home.cmd().args(["stop", "k"]), Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut m2 = Mcp::start(&home);
    m2.initialize();
    m2.ok("workbench_scaffold", json!({"name": "k"}));
    let second = server_info(&home, "k");
    assert_ne!(first["pid"], second["pid"]);
    // m1's kept connection is dead; its next call reaches the new server.
    m1.ok(
        "workbench_state",
        json!({"project": "k", "template": "<p>after</p>"}),
    );
    assert_eq!(
        server_info(&home, "k")["pid"],
        second["pid"],
        "no third server"
    );
    let mut v = Viewer::connect(second["port"].as_u64().unwrap() as u16);
    let (state, _) = v.preamble(0);
    assert_eq!(state["state"]["template"], "<p>after</p>");
    m2.ok("workbench_stop", json!({"project": "k"}));
}
