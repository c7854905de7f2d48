//! Uploads from the page and the file tools, on the real binary over
//! loopback (docs/files.md). The browser half (every way in, refusals shown
//! in the page, SVG isolation, snapshot pixels) is tests/browser/uploads.mjs.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::*;

const PNG_1X1: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0xF8, 0xCF, 0xC0, 0xF0,
    0x1F, 0x00, 0x05, 0x00, 0x01, 0xFF, 0x89, 0x99, 0x3D, 0x1D, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
];

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

fn read_resp(s: &mut TcpStream) -> Resp {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, _) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let at = head.len() + 4;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Resp {
        status,
        head: head.to_string(),
        body: buf.get(at..).unwrap_or(&[]).to_vec(),
    }
}

/// One upload with the owner's token (the page uses its event key).
fn upload(srv: &Server, query: &str, ctype: &str, body: &[u8], extra: &str) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    let head = format!(
        "POST /api/upload?{query} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        srv.port, srv.token, body.len()
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    let _ = s.write_all(&req);
    read_resp(&mut s)
}

fn get(srv: &Server, path: &str) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        srv.port
    );
    s.write_all(req.as_bytes()).unwrap();
    read_resp(&mut s)
}

fn uploads_dir(srv: &Server) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(srv.dir.join("files/uploads"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn events(srv: &Server) -> Vec<Value> {
    let (s, r) = srv.get_auth("/api/events?since=0");
    assert_eq!(s, 200, "{r}");
    r["events"].as_array().cloned().unwrap_or_default()
}

#[test]
fn an_upload_is_stored_sniffed_announced_and_served_safely() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("up-ok");
    let srv = Server::start(&home, "u", &[]);
    let r = upload(
        &srv,
        "name=..%2F..%2Fscope%20%E6%B8%AC.png&via=attach",
        "image/png",
        PNG_1X1,
        "",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let f = r.json()["file"].clone();
    assert_eq!(f["name"], "scope 測.png");
    assert_eq!(f["size"], PNG_1X1.len());
    assert_eq!(f["mime"], "image/png");
    assert_eq!(f["sha256"], sha(PNG_1X1));
    let path = f["path"].as_str().unwrap();
    assert!(
        path.starts_with("files/uploads/") && path.ends_with("-scope 測.png"),
        "{path}"
    );
    assert_eq!(std::fs::read(srv.dir.join(path)).unwrap(), PNG_1X1);
    // The event is the server's, after the file is on disk.
    let evs = events(&srv);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0]["name"], "attachment");
    assert_eq!(evs[0]["data"]["files"][0], f);
    assert_eq!(evs[0]["data"]["via"], "attach");
    // Served with the sniffed type, nosniff, a sandbox, inline.
    let g = get(&srv, f["url"].as_str().unwrap());
    assert_eq!(g.status, 200);
    assert_eq!(g.body, PNG_1X1);
    assert_eq!(g.header("Content-Type").as_deref(), Some("image/png"));
    assert_eq!(
        g.header("X-Content-Type-Options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(
        g.header("Content-Security-Policy").as_deref(),
        Some("sandbox")
    );
    assert_eq!(g.header("Content-Disposition"), None);
    // The same name again gets a different stored name.
    let r2 = upload(&srv, "name=scope%20%E6%B8%AC.png", "image/png", PNG_1X1, "");
    assert_eq!(r2.status, 200);
    assert_ne!(r2.json()["file"]["path"], f["path"]);
    // HTML (not claimed as an image) is kept, typed by its bytes, and only
    // ever a sandboxed download; a very long unicode name is shortened.
    let long = "%C3%A9".repeat(300);
    let html = b"<!doctype html><script>alert(document.cookie)</script>";
    let r3 = upload(
        &srv,
        &format!("name={long}.png"),
        "application/octet-stream",
        html,
        "",
    );
    assert_eq!(r3.status, 200, "{}", String::from_utf8_lossy(&r3.body));
    let f3 = r3.json()["file"].clone();
    assert_eq!(
        f3["mime"], "text/html",
        "the extension .png does not decide the type"
    );
    assert!(f3["name"].as_str().unwrap().len() <= 120);
    let g3 = get(&srv, f3["url"].as_str().unwrap());
    assert_eq!(g3.status, 200);
    assert_eq!(
        g3.header("Content-Disposition").as_deref(),
        Some("attachment")
    );
    assert_eq!(
        g3.header("Content-Security-Policy").as_deref(),
        Some("sandbox")
    );
    assert!(g3.header("Content-Type").unwrap().starts_with("text/html"));
    // A form field's upload (event=) stores the file and no event.
    let r4 = upload(&srv, "name=a.txt&event=", "text/plain", b"volts 5.02\n", "");
    assert_eq!(r4.status, 200);
    assert_eq!(r4.json()["seq"], Value::Null);
    assert_eq!(events(&srv).len(), 3);
}

#[test]
fn refusals_are_clear_and_leave_nothing() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("up-refuse");
    let srv = Server::start(
        &home,
        "u",
        &[
            "--upload-max-bytes",
            "1000",
            "--uploads-max-files",
            "2",
            "--uploads-max-bytes",
            "1500",
        ],
    );
    // Over the per-file limit: decided from Content-Length, body never read.
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    write!(s, "POST /api/upload?name=big.png HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\nContent-Length: 5000000\r\n\r\n", srv.port, srv.token).unwrap();
    let r = read_resp(&mut s);
    assert_eq!(r.status, 413);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("limit is 1000 bytes"),
        "{:?}",
        r.json()
    );
    // A lying type: HTML sent as image/png.
    let r = upload(
        &srv,
        "name=x.png",
        "image/png",
        b"<html><script>1</script></html>",
        "",
    );
    assert_eq!(r.status, 415);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("claims to be image/png but its content is text/html"));
    // No name, no key, a foreign Origin.
    assert_eq!(upload(&srv, "via=x", "image/png", PNG_1X1, "").status, 400);
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    write!(s, "POST /api/upload?name=a.png HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc", srv.port).unwrap();
    assert_eq!(read_resp(&mut s).status, 403);
    let r = upload(
        &srv,
        "name=a.png",
        "image/png",
        PNG_1X1,
        "Origin: http://evil.example\r\n",
    );
    assert_eq!(r.status, 403);
    assert_eq!(
        uploads_dir(&srv),
        Vec::<String>::new(),
        "nothing refused is kept"
    );
    assert!(events(&srv).is_empty());
    // The project's bytes quota, then its file count.
    assert_eq!(
        upload(&srv, "name=a.txt", "text/plain", &[b'a'; 900], "").status,
        200
    );
    let r = upload(&srv, "name=b.txt", "text/plain", &[b'b'; 900], "");
    assert_eq!(r.status, 507);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("hold 900 of 1500 bytes"),
        "{:?}",
        r.json()
    );
    assert_eq!(
        upload(&srv, "name=c.txt", "text/plain", b"c", "").status,
        200
    );
    let r = upload(&srv, "name=d.txt", "text/plain", b"d", "");
    assert_eq!(r.status, 507);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("2 uploaded files"));
    assert_eq!(uploads_dir(&srv).len(), 2);
    // Still serving.
    assert_eq!(srv.health()["ok"], true);
}

#[test]
fn uploads_are_rate_limited_per_address() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("up-rate");
    let srv = Server::start(&home, "u", &["--uploads-rate", "1"]);
    let statuses: Vec<u16> = (0..8)
        .map(|i| upload(&srv, &format!("name=f{i}.txt"), "text/plain", b"x", "").status)
        .collect();
    assert!(statuses.iter().take(4).all(|s| *s == 200), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[test]
fn an_upload_cut_off_leaves_no_file_and_no_event_even_after_kill_9() {
    let _w = watchdog(Duration::from_secs(60));
    let home = TempHome::new("up-cut");
    let srv = Server::start(&home, "u", &[]);
    let body = vec![0x42u8; 200_000];
    // The client goes away halfway.
    {
        let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
        write!(s, "POST /api/upload?name=half.bin HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n", srv.port, srv.token, body.len()).unwrap();
        s.write_all(&body[..100_000]).unwrap();
    }
    assert!(eventually(Duration::from_secs(10), || uploads_dir(&srv).is_empty()));
    assert!(events(&srv).is_empty());
    assert_eq!(srv.health()["ok"], true);
    // kill -9 while the body streams in.
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    write!(s, "POST /api/upload?name=half.bin HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n", srv.port, srv.token, body.len()).unwrap();
    s.write_all(&body[..100_000]).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || uploads_dir(&srv)
            .iter()
            .any(|n| n.ends_with(".tmp"))),
        "the upload is being streamed to a temp file"
    );
    srv.proc.signal("KILL");
    let mut srv = srv;
    srv.proc.wait_exit(Duration::from_secs(10));
    drop(s);
    let left = uploads_dir(&srv);
    assert!(
        left.iter()
            .all(|n| n.starts_with('.') && n.ends_with(".tmp")),
        "only a temp file, never a partial under a real name: {left:?}"
    );
    // The next start sweeps it; no event was ever stored.
    let srv2 = Server::start(&home, "u", &[]);
    assert_eq!(uploads_dir(&srv2), Vec::<String>::new());
    assert!(events(&srv2).is_empty());
}

fn mcp_result(m: &mut Mcp, tool: &str, args: Value) -> Value {
    let r = m.request("tools/call", json!({"name": tool, "arguments": args}));
    r["result"].clone()
}

#[test]
fn file_tools_read_write_and_confine() {
    let _w = watchdog(Duration::from_secs(90));
    let home = TempHome::new("up-tools");
    let mut m = Mcp::start_env(&home, &[("WORKBENCH_FILES_QUOTA", "5000")]);
    m.initialize();
    m.ok("workbench_scaffold", json!({"name": "t"}));
    let b64 = base64::engine::general_purpose::STANDARD.encode(PNG_1X1);
    // Write an image, then replace it.
    let w = m.ok(
        "workbench_write_file",
        json!({"project": "t", "path": "scope.png", "base64": b64}),
    );
    assert_eq!(w["url"], "/files/scope.png");
    assert_eq!(
        (w["replaced"].clone(), w["mime"].clone()),
        (json!(false), json!("image/png"))
    );
    let w = m.ok(
        "workbench_write_file",
        json!({"project": "t", "path": "files/scope.png", "base64": b64}),
    );
    assert_eq!(w["replaced"], true);
    let w = m.ok(
        "workbench_write_file",
        json!({"project": "t", "path": "runs/r 1.csv", "text": "v,a\n5,1\n"}),
    );
    assert_eq!(w["url"], "/files/runs/r%201.csv");
    // Quota refusal with the numbers.
    let (err, msg) = m.call(
        "workbench_write_file",
        json!({"project": "t", "path": "big.txt", "text": "x".repeat(6000)}),
    );
    assert!(
        err && msg.as_str().unwrap().contains("5000-byte quota"),
        "{msg}"
    );
    // Read back: image as image, text as text, binary as a resource.
    let r = mcp_result(
        &mut m,
        "workbench_read_file",
        json!({"project": "t", "path": "files/scope.png"}),
    );
    assert_eq!(r["isError"], false);
    assert_eq!(r["content"][1]["type"], "image");
    let got = base64::engine::general_purpose::STANDARD
        .decode(r["content"][1]["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(got, PNG_1X1);
    let r = mcp_result(
        &mut m,
        "workbench_read_file",
        json!({"project": "t", "path": "files/runs/r 1.csv", "offset": 4}),
    );
    assert_eq!(r["content"][1], json!({"type": "text", "text": "5,1\n"}));
    let dir = home.project("t");
    std::fs::write(dir.join("files/blob.bin"), [0u8, 1, 2, 3, 255]).unwrap();
    let r = mcp_result(
        &mut m,
        "workbench_read_file",
        json!({"project": "t", "path": "files/blob.bin", "length": 2}),
    );
    assert_eq!(r["content"][1]["type"], "resource");
    assert_eq!(r["content"][1]["resource"]["blob"], "AAE=");
    // Confinement: '..', absolute, a symlink out.
    let outside = home.join("secret.txt");
    std::fs::write(&outside, "secret").unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("files/link.txt")).unwrap();
    std::os::unix::fs::symlink(home.join(""), dir.join("files/out")).unwrap();
    for (tool, path) in [
        ("workbench_read_file", "../secret.txt"),
        ("workbench_read_file", "files/../../secret.txt"),
        ("workbench_read_file", outside.to_str().unwrap()),
        ("workbench_read_file", "files/link.txt"),
        ("workbench_write_file", "../x.txt"),
        ("workbench_write_file", "/tmp/x.txt"),
        ("workbench_write_file", "link.txt"),
        ("workbench_write_file", "out/evil.txt"),
    ] {
        let mut args = json!({"project": "t", "path": path});
        if tool == "workbench_write_file" {
            args["text"] = json!("x");
        }
        let (err, msg) = m.call(tool, args);
        assert!(err, "{tool} {path} must be refused: {msg}");
    }
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "secret");
    assert!(!home.join("evil.txt").exists());
    m.ok("workbench_stop", json!({"project": "t"}));
}

#[test]
fn workbench_wait_returns_an_uploaded_image_as_an_image_block() {
    let _w = watchdog(Duration::from_secs(90));
    let home = TempHome::new("up-wait");
    let mut m = Mcp::start(&home);
    m.initialize();
    m.ok("workbench_scaffold", json!({"name": "w"}));
    let info = server_info(&home, "w");
    let srv_port = info["port"].as_u64().unwrap() as u16;
    let token = info["token"].as_str().unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", srv_port)).unwrap();
    let mut req = format!("POST /api/upload?name=p.png HTTP/1.1\r\nHost: 127.0.0.1:{srv_port}\r\nAuthorization: Bearer {token}\r\nContent-Type: image/png\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", PNG_1X1.len()).into_bytes();
    req.extend_from_slice(PNG_1X1);
    s.write_all(&req).unwrap();
    assert_eq!(read_resp(&mut s).status, 200);
    let r = mcp_result(
        &mut m,
        "workbench_wait",
        json!({"project": "w", "since": 0, "timeout_seconds": 5}),
    );
    let file = &r["structuredContent"]["events"][0]["data"]["files"][0];
    assert_eq!(file["returned_as"], "image");
    assert_eq!(r["content"][1]["mimeType"], "image/png");
    let got = base64::engine::general_purpose::STANDARD
        .decode(r["content"][1]["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(sha(&got), file["sha256"].as_str().unwrap());
    // Forged references (outside files/, or a wrong hash) are never sent
    // as images: only the real upload's block comes back.
    std::fs::write(home.project("w").join("notes.png"), PNG_1X1).unwrap();
    let forged = json!({"name": "form", "data": {
        "a": {"path": "notes.png", "mime": "image/png", "sha256": sha(PNG_1X1)},
        "b": {"path": file["path"], "mime": "image/png", "sha256": "00"}}});
    let st = workbench::httpc::request(
        &format!("127.0.0.1:{srv_port}"),
        "POST",
        "/api/event",
        Some(token),
        Some(forged.to_string().as_bytes()),
        Duration::from_secs(10),
    )
    .unwrap()
    .status;
    assert_eq!(st, 200);
    let r = mcp_result(
        &mut m,
        "workbench_events",
        json!({"project": "w", "since": 0}),
    );
    assert_eq!(r["content"].as_array().unwrap().len(), 2, "{r}");
    let d = &r["structuredContent"]["events"][1]["data"];
    assert_eq!(d["a"]["returned_as"], "reference");
    assert_eq!(d["b"]["returned_as"], "reference");
    m.ok("workbench_stop", json!({"project": "w"}));
}
