//! TLS end to end (issue 15), with real handshakes on loopback and
//! certificates made here by the `openssl` CLI: a test CA, a server
//! certificate for localhost/127.0.0.1 signed by it, a second unrelated CA,
//! an expired certificate and a key that belongs to another certificate.
//! The relay (`--cert/--key`), its CLI clients (`--ca`), bad files, clients
//! that do not speak TLS or stall in the handshake, and the page server
//! over HTTPS.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::{die_with_parent, watchdog, Certs, Mcp, Relay, TempHome, BIN, READ_TIMEOUT};
use tungstenite::{Message, WebSocket};
use workbench::tls::{self, TlsStream};

trait TlsRelay {
    fn relay(&self, extra: &[&str]) -> Relay;
}

impl TlsRelay for Certs {
    fn relay(&self, extra: &[&str]) -> Relay {
        let (cert, key) = (self.path("server.pem"), self.path("server.key"));
        let mut args = vec!["--cert", cert.as_str(), "--key", key.as_str()];
        args.extend_from_slice(extra);
        Relay::start(&args)
    }
}

fn wb(args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    die_with_parent(&mut cmd);
    cmd.output().expect("run workbench")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A TLS WebSocket client built on the library's own TLS stream.
fn wss(certs: &Certs, port: u16, host: &str) -> WebSocket<TlsStream> {
    let ca = tls::load_certs(Path::new(&certs.path("ca.pem"))).expect("ca");
    let config = tls::client_config(&ca).expect("client config");
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let stream = tls::connect(tcp, &config, host, Duration::from_secs(10)).expect("TLS handshake");
    stream
        .tcp()
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("timeout");
    let url = format!("wss://{host}:{port}/");
    let (ws, _) = tungstenite::client::client(url.as_str(), stream).expect("websocket handshake");
    ws
}

fn recv(ws: &mut WebSocket<TlsStream>) -> Value {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => return serde_json::from_str(t.as_str()).expect("JSON"),
            Ok(_) => continue,
            Err(e) => panic!("reading over TLS: {e}"),
        }
    }
}

fn until(ws: &mut WebSocket<TlsStream>, kind: &str) -> Value {
    loop {
        let v = recv(ws);
        if v["type"] == kind {
            return v;
        }
    }
}

fn send(ws: &mut WebSocket<TlsStream>, v: Value) {
    ws.send(Message::text(v.to_string())).expect("send");
}

#[test]
fn send_and_listen_over_wss_with_ca_and_fail_clearly_without() {
    let _w = watchdog(Duration::from_secs(90));
    let certs = Certs::new("cli", "ec");
    let relay = certs.relay(&[]);
    let url = format!("wss://localhost:{}", relay.port);
    let ca = certs.path("ca.pem");

    let mut listen = Command::new(BIN);
    listen
        .args([
            "listen",
            &url,
            "#general",
            "--max-messages",
            "1",
            "--ca",
            &ca,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    die_with_parent(&mut listen);
    let listen = listen.spawn().expect("listen");
    // `listen` says on stderr when it has joined; wait for that through the
    // relay's log instead of sleeping.
    assert!(
        relay_common_wait(&relay, "\"join\""),
        "listen joined: {}",
        relay.log_text()
    );
    let out = wb(&["send", &url, "#general", "over TLS", "--ca", &ca]);
    assert!(out.status.success(), "send: {}", stderr(&out));
    let echo: Value = serde_json::from_slice(&out.stdout).expect("echo JSON");
    assert_eq!(echo["content"], "over TLS");
    let got = listen.wait_with_output().expect("listen ends");
    assert!(got.status.success(), "listen: {}", stderr(&got));
    let line: Value = serde_json::from_slice(&got.stdout).expect("listen JSON");
    assert_eq!(line["type"], "MSG");
    assert_eq!(line["content"], "over TLS");

    // Without --ca (a private CA is not in the system store) and with the
    // wrong CA: one line on stderr naming the host and why, exit 1.
    let other = certs.path("other-ca.pem");
    for extra in [vec![], vec!["--ca", other.as_str()]] {
        let mut args = vec!["send", url.as_str(), "#general", "x"];
        args.extend_from_slice(&extra);
        let out = wb(&args);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains("TLS to localhost"), "names the host: {err}");
        assert!(
            err.contains("not signed by a trusted authority"),
            "says why: {err}"
        );
        assert!(out.stdout.is_empty());
    }
    // The certificate is for localhost and 127.0.0.1, not other names.
    let out = wb(&[
        "channels",
        &format!("wss://127.0.0.1:{}", relay.port),
        "--ca",
        &ca,
    ]);
    assert!(out.status.success(), "by IP: {}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("#general"));
    // A ws:// client on the TLS port fails, and says so.
    let out = wb(&["channels", &format!("ws://127.0.0.1:{}", relay.port)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // A bad --ca file is a usage error naming it.
    let junk = certs.path("junk.pem");
    let out = wb(&["channels", &url, "--ca", &junk]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("junk.pem: not a PEM certificate"),
        "{}",
        stderr(&out)
    );
}

/// Waits (bounded) for a relay log line containing `needle`.
fn relay_common_wait(relay: &Relay, needle: &str) -> bool {
    for _ in 0..200 {
        if relay.log_text().contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn every_key_type_serves_wss_and_broadcasts_arrive_in_order() {
    let _w = watchdog(Duration::from_secs(120));
    for kind in ["rsa", "ed25519", "ec"] {
        let certs = Certs::new(&format!("kind-{kind}"), kind);
        let relay = certs.relay(&["--rate-burst", "1000", "--rate-per-sec", "1000"]);
        let mut peers: Vec<_> = (0..3)
            .map(|_| wss(&certs, relay.port, "localhost"))
            .collect();
        for (i, ws) in peers.iter_mut().enumerate() {
            send(ws, json!({"type": "IDENTIFY", "name": format!("p{i}")}));
            until(ws, "WELCOME");
            send(ws, json!({"type": "JOIN", "channel": "#general"}));
            until(ws, "JOINED");
        }
        // Many frames (some near the 4096-character content cap) through the one
        // writer thread: every peer decrypts all of them, in order.
        let big = "y".repeat(4_000);
        for n in 0..60 {
            let content = if n % 10 == 9 {
                format!("{n}:{big}")
            } else {
                format!("{n}")
            };
            send(
                &mut peers[0],
                json!({"type": "MSG", "to": "#general", "content": content}),
            );
        }
        for ws in &mut peers {
            for n in 0..60 {
                let v = until(ws, "MSG");
                let c = v["content"].as_str().expect("content");
                assert_eq!(
                    c.split(':').next(),
                    Some(n.to_string().as_str()),
                    "{kind}: order"
                );
            }
        }
        // A ping is answered over TLS too (the pong goes through the writer).
        peers[1]
            .send(Message::Ping(b"hi".to_vec().into()))
            .expect("ping");
        send(&mut peers[1], json!({"type": "PING"}));
        until(&mut peers[1], "PONG");
    }
}

#[test]
fn bad_certificate_and_key_files_exit_2_naming_the_file() {
    let _w = watchdog(Duration::from_secs(60));
    let c = Certs::new("bad", "ec");
    let cases = [
        (
            "missing cert",
            c.path("nope.pem"),
            c.path("server.key"),
            "nope.pem: no such file",
        ),
        (
            "missing key",
            c.path("server.pem"),
            c.path("nope.key"),
            "nope.key: no such file",
        ),
        // Root reads any file whatever its mode, so a directory stands in
        // for an unreadable file.
        (
            "unreadable",
            c.dir.display().to_string(),
            c.path("server.key"),
            "cannot read it",
        ),
        (
            "cert not PEM",
            c.path("junk.pem"),
            c.path("server.key"),
            "junk.pem: not a PEM certificate file",
        ),
        (
            "key not PEM",
            c.path("server.pem"),
            c.path("junk.pem"),
            "junk.pem: not a PEM private key",
        ),
        (
            "key is a cert",
            c.path("server.pem"),
            c.path("server.pem"),
            "server.pem: not a PEM private key",
        ),
        (
            "wrong key",
            c.path("server.pem"),
            c.path("stray.key"),
            "stray.key: this key does not match the certificate",
        ),
        (
            "expired",
            c.path("expired.pem"),
            c.path("server.key"),
            "expired.pem: certificate expired on",
        ),
    ];
    for (what, cert, key, needle) in cases {
        let out = wb(&[
            "relay",
            "--port",
            "0",
            "--host",
            "127.0.0.1",
            "--cert",
            &cert,
            "--key",
            &key,
        ]);
        assert_eq!(out.status.code(), Some(2), "{what}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{what}: {}", stderr(&out));
        assert_eq!(
            stderr(&out).trim_end().lines().count(),
            1,
            "{what}: one line"
        );
    }
    // The page server checks its files the same way.
    let home = TempHome::new("tls-bad-serve");
    for (cert, key, needle) in [
        (
            c.path("expired.pem"),
            c.path("server.key"),
            "expired.pem: certificate expired on",
        ),
        (
            c.path("server.pem"),
            c.path("stray.key"),
            "stray.key: this key does not match",
        ),
    ] {
        let out = home
            .cmd()
            .args([
                "serve",
                "p",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--cert",
                &cert,
                "--key",
                &key,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("serve");
        assert_eq!(out.status.code(), Some(2), "serve: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "serve: {}", stderr(&out));
    }
    let out = wb(&["relay", "--port", "0", "--cert", &c.path("server.pem")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--cert and --key go together"));
}

#[test]
fn plain_clients_and_a_stalled_handshake_never_stop_the_tls_relay() {
    let _w = watchdog(Duration::from_secs(90));
    let certs = Certs::new("stall", "ec");
    let relay = certs.relay(&[]);
    let addr = ("127.0.0.1", relay.port);

    // A client that connects and says nothing, and one that stops half way
    // through a ClientHello: both sit in their own threads' handshakes.
    let silent = TcpStream::connect(addr).expect("silent");
    let mut half = TcpStream::connect(addr).expect("half");
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01])
        .expect("partial hello");

    // Meanwhile a real client does a whole round trip.
    let mut ws = wss(&certs, relay.port, "localhost");
    send(&mut ws, json!({"type": "IDENTIFY", "name": "beside"}));
    until(&mut ws, "WELCOME");
    send(&mut ws, json!({"type": "PING"}));
    until(&mut ws, "PONG");

    // Plain HTTP and plain ws:// on the TLS port: closed, nothing served.
    for request in [
        "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_string(),
        "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            .to_string(),
    ] {
        let mut plain = TcpStream::connect(addr).expect("plain");
        plain.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
        plain.write_all(request.as_bytes()).expect("request");
        let mut got = Vec::new();
        let _ = plain.read_to_end(&mut got);
        assert!(
            !String::from_utf8_lossy(&got).contains("HTTP/1.1"),
            "no HTTP answer: {got:?}"
        );
    }
    // The relay still serves, the stalled ones notwithstanding.
    send(&mut ws, json!({"type": "PING"}));
    until(&mut ws, "PONG");
    let other = wss(&certs, relay.port, "127.0.0.1");
    drop(other);

    // The handshake limit closes both stalled connections (a read then
    // ends; the 30 s read timeout is only the test's own bound).
    for (what, mut s) in [("silent", silent), ("half", half)] {
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("{what}: the relay never closed a stalled handshake: {e}"),
        }
    }
    assert!(
        relay.log_text().contains("tls_handshake_failed"),
        "{}",
        relay.log_text()
    );
}

#[test]
fn page_server_over_https() {
    let _w = watchdog(Duration::from_secs(60));
    let certs = Certs::new("page", "ec");
    let home = std::env::temp_dir().join(format!("wb-tls-home-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let mut cmd = Command::new(BIN);
    cmd.args([
        "serve",
        "tlspage",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--public-host",
        "localhost",
        "--cert",
        &certs.path("server.pem"),
        "--key",
        &certs.path("server.key"),
    ])
    .env("WORKBENCH_HOME", &home)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    die_with_parent(&mut cmd);
    let mut child = cmd.spawn().expect("serve");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).expect("ready line");
    assert!(
        line.contains("https://localhost:"),
        "the URL is https: {line}"
    );
    let info: Value = serde_json::from_slice(
        &std::fs::read(home.join("tlspage/.server.json")).expect(".server.json"),
    )
    .expect("json");
    let url = info["url"].as_str().expect("url");
    assert!(url.starts_with("https://localhost:"), "{url}");
    let port = info["port"].as_u64().expect("port") as u16;

    // Two clients stalled in their handshakes (one silent, one half way
    // through a ClientHello) hold their own threads, not the accept loop.
    let _silent = TcpStream::connect(("127.0.0.1", port)).expect("silent");
    let mut half = TcpStream::connect(("127.0.0.1", port)).expect("half");
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .expect("partial hello");

    // GET /health over TLS, verified against the test CA.
    let ca = tls::load_certs(Path::new(&certs.path("ca.pem"))).expect("ca");
    let config: Arc<rustls::ClientConfig> = tls::client_config(&ca).expect("config");
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut s =
        tls::connect(tcp, &config, "localhost", Duration::from_secs(10)).expect("handshake");
    s.tcp()
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("timeout");
    s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut body = Vec::new();
    let _ = s.read_to_end(&mut body);
    let text = String::from_utf8_lossy(&body);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"project\":\"tlspage\""), "{text}");

    // Plain HTTP from another address is not served; the owner's tools on
    // this machine (loopback) still are, so MCP keeps working.
    let (code, _) = workbench_get(port, "/health");
    assert_eq!(code, 200, "loopback plain HTTP for the local owner");

    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&home);
}

fn workbench_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .expect("req");
    let mut got = String::new();
    let _ = s.read_to_string(&mut got);
    let code = got.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, got)
}

/// `workbench mcp` with WORKBENCH_CERT/WORKBENCH_KEY: the servers it starts
/// serve HTTPS, the tools return https:// URLs and keep working (they talk
/// to their server over loopback), and a viewer on wss:// gets the pushes.
#[test]
fn mcp_started_servers_use_https_and_push_over_wss() {
    let _w = watchdog(Duration::from_secs(90));
    let certs = Certs::new("mcp", "ec");
    let home = TempHome::new("tls-mcp");
    let (cert, key) = (certs.path("server.pem"), certs.path("server.key"));
    let mut mcp = Mcp::start_env(&home, &[("WORKBENCH_CERT", &cert), ("WORKBENCH_KEY", &key)]);
    mcp.initialize();
    let s = mcp.ok(
        "workbench_scaffold",
        json!({"name": "secure", "title": "TLS"}),
    );
    let url = s["url"].as_str().expect("url");
    assert!(url.starts_with("https://127.0.0.1:"), "{s}");
    let port = s["port"].as_u64().expect("port") as u16;
    let list = mcp.ok("workbench_list", json!({}));
    assert!(
        list["projects"][0]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://")),
        "{list}"
    );

    // A viewer over wss://, verified against the test CA.
    let ca = tls::load_certs(Path::new(&certs.path("ca.pem"))).expect("ca");
    let config = tls::client_config(&ca).expect("config");
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let stream =
        tls::connect(tcp, &config, "127.0.0.1", Duration::from_secs(10)).expect("handshake");
    stream
        .tcp()
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("timeout");
    let ws_url = format!("wss://127.0.0.1:{port}/ws");
    let (mut ws, _) = tungstenite::client::client(ws_url.as_str(), stream).expect("wss upgrade");
    let first = recv(&mut ws);
    assert_eq!(first["type"], "HELLO", "{first}");
    let pushed = mcp.ok(
        "workbench_state",
        json!({"project": "secure", "template": "<h1>over TLS</h1>"}),
    );
    assert!(pushed["viewers"].as_u64().is_some(), "{pushed}");
    let got = loop {
        let v = recv(&mut ws);
        if v["type"] == "STATE" && v["state"]["template"] == "<h1>over TLS</h1>" {
            break v;
        }
    };
    assert_eq!(got["full"], false);
    mcp.ok("workbench_stop", json!({"project": "secure"}));
}

#[test]
fn doctor_reports_certificate_expiry() {
    let _w = watchdog(Duration::from_secs(60));
    let certs = Certs::new("doctor", "ec");
    let home = TempHome::new("tls-doctor");
    let run = |extra: &[&str], env: &[(&str, String)]| {
        let mut cmd = home.cmd();
        cmd.arg("doctor")
            .arg("--json")
            .args(extra)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        let out = cmd.output().expect("doctor");
        let v: Value = serde_json::from_slice(&out.stdout).expect("doctor --json");
        v["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .filter(|c| c["check"].as_str().is_some_and(|n| n.starts_with("tls")))
            .cloned()
            .collect::<Vec<Value>>()
    };
    // Issued for 10 days: a warning with the date and the days left.
    let c = run(
        &[
            "--cert",
            &certs.path("server.pem"),
            "--key",
            &certs.path("server.key"),
        ],
        &[],
    );
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0]["status"], "warn", "{c:?}");
    let detail = c[0]["detail"].as_str().expect("detail");
    assert!(
        detail.contains("expires on") && detail.contains("days left"),
        "{detail}"
    );
    // Expired: FAIL, with the date it expired.
    let c = run(&["--cert", &certs.path("expired.pem")], &[]);
    assert_eq!(c[0]["status"], "fail", "{c:?}");
    assert!(
        c[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("expired on")),
        "{c:?}"
    );
    // WORKBENCH_CERT (what MCP-started servers use) with the wrong key.
    let env = [
        ("WORKBENCH_CERT", certs.path("server.pem")),
        ("WORKBENCH_KEY", certs.path("stray.key")),
    ];
    let c = run(&[], &env);
    assert_eq!(c[0]["check"], "tls WORKBENCH_CERT");
    assert_eq!(c[0]["status"], "fail", "{c:?}");
    assert!(
        c[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("does not match")),
        "{c:?}"
    );
}
