//! Black-box tests of `workbench doctor`: the real binary on a healthy and a
//! broken home, one temporary HOME/WORKBENCH_HOME per test.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use support::*;

/// The doctor tests' layout inside a [`TempHome`]: HOME is `home/`, and
/// each test picks its own WORKBENCH_HOME.
trait DoctorHome {
    fn home(&self) -> PathBuf;
    fn run_with(&self, wb_home: &Path, args: &[&str]) -> Output;
}

impl DoctorHome for TempHome {
    /// Created on first use, as every test expects it to exist.
    fn home(&self) -> PathBuf {
        let home = self.join("home");
        fs::create_dir_all(&home).unwrap();
        home
    }

    /// Runs the binary with HOME in this temp dir and the given WORKBENCH_HOME.
    fn run_with(&self, wb_home: &Path, args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_clear()
            .env("HOME", self.home())
            .env("WORKBENCH_HOME", wb_home)
            .env("PATH", "/usr/bin:/bin");
        run(&mut cmd, Duration::from_secs(30))
    }
}

/// The line for `check` and the fix line after it, if any.
fn line_for<'a>(out: &'a str, check: &str) -> (&'a str, Option<&'a str>) {
    let lines: Vec<&str> = out.lines().collect();
    let i = lines
        .iter()
        .position(|l| {
            l.get(6..)
                .is_some_and(|r| r.starts_with(&format!("{check}:")))
        })
        .unwrap_or_else(|| panic!("no line for {check} in:\n{out}"));
    let fix = lines
        .get(i + 1)
        .filter(|l| l.trim_start().starts_with("fix: "))
        .copied();
    (lines[i], fix)
}

/// A pid that is certainly not running: a child we started and reaped.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

fn write_record(dir: &Path, name: &str, pid: u32, port: u16) {
    let p = dir.join(name);
    fs::create_dir_all(&p).unwrap();
    fs::write(p.join("index.html"), "<title>x</title>").unwrap();
    let rec = serde_json::json!({
        "pid": pid, "port": port, "host": "0.0.0.0",
        "url": format!("http://127.0.0.1:{port}/"), "started": "2026-01-01T00:00:00Z",
        "token": "t", "version": "0.1.0"
    });
    fs::write(p.join(".server.json"), rec.to_string()).unwrap();
}

#[test]
fn healthy_home_passes() {
    let h = TempHome::new("healthy");
    let wb = h.path.join("wb");
    fs::create_dir_all(&wb).unwrap();
    let o = h.run_with(&wb, &["doctor"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    let (home, fix) = line_for(&out, "home");
    assert!(home.starts_with("ok    home: "), "{home}");
    assert!(home.contains("is writable"), "{home}");
    assert!(fix.is_none());
    for check in [
        "binary",
        "ports",
        "lan",
        "browser",
        "client claude",
        "servers",
    ] {
        let (line, _) = line_for(&out, check);
        assert!(!line.starts_with("FAIL"), "{line}");
    }
    assert!(line_for(&out, "servers").0.contains("none running"));
    assert!(out.contains(" 0 FAIL"), "{out}");
}

#[test]
fn home_not_created_yet_is_fine() {
    let h = TempHome::new("later");
    let o = h.run_with(&h.path.join("not-yet"), &["doctor"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(line_for(&stdout(&o), "home")
        .0
        .contains("created on first use"));
    assert!(
        !h.path.join("not-yet").exists(),
        "doctor must not create the home"
    );
}

#[test]
fn stale_server_record_is_a_warning_with_a_fix() {
    let h = TempHome::new("stale");
    let wb = h.path.join("wb");
    let pid = dead_pid();
    write_record(&wb, "bench1", pid, 8075);
    fs::create_dir_all(wb.join("broken")).unwrap();
    fs::write(wb.join("broken/.server.json"), "{\"pid\":").unwrap();

    let o = h.run_with(&wb, &["doctor"]);
    let out = stdout(&o);
    assert_eq!(
        o.status.code(),
        Some(0),
        "stale records are warnings: {out}"
    );
    let (line, fix) = line_for(&out, "server bench1");
    assert!(line.starts_with("warn  "), "{line}");
    assert!(
        line.contains(&format!("stale .server.json: pid {pid} is not running")),
        "{line}"
    );
    assert!(fix.unwrap().contains("workbench stop bench1"), "{fix:?}");
    let (line, fix) = line_for(&out, "server broken");
    assert!(
        line.starts_with("warn  ") && line.contains("stale record"),
        "{line}"
    );
    assert!(fix.unwrap().contains(".server.json"));
}

#[test]
fn record_whose_pid_is_another_program_is_stale() {
    let h = TempHome::new("reused");
    let wb = h.path.join("wb");
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    // Until exec completes, /proc shows the test binary's command line.
    let cmdline = format!("/proc/{}/cmdline", sleeper.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !fs::read(&cmdline).unwrap_or_default().starts_with(b"sleep")
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    write_record(&wb, "bench2", sleeper.id(), 8076);
    let o = h.run_with(&wb, &["doctor"]);
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let (line, fix) = line_for(&out, "server bench2");
    assert!(line.contains("is now another program (sleep 30)"), "{line}");
    assert!(fix.unwrap().contains("delete"), "{fix:?}");
}

#[test]
fn home_that_is_a_file_fails_with_a_fix() {
    let h = TempHome::new("file");
    let file = h.path.join("wb");
    fs::write(&file, "not a folder").unwrap();
    let o = h.run_with(&file, &["doctor"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let (line, fix) = line_for(&out, "home");
    assert!(line.starts_with("FAIL  home: "), "{line}");
    assert!(line.contains("is not a folder"), "{line}");
    assert!(fix.unwrap().contains("WORKBENCH_HOME"), "{fix:?}");
    assert!(stderr(&o).contains("1 check(s) failed"), "{}", stderr(&o));
    assert_eq!(fs::read_to_string(&file).unwrap(), "not a folder");
}

#[test]
fn home_below_a_file_fails_with_a_fix() {
    let h = TempHome::new("below");
    let file = h.path.join("f");
    fs::write(&file, "").unwrap();
    let o = h.run_with(&file.join("sub/wb"), &["doctor"]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let (line, fix) = line_for(&out, "home");
    assert!(line.contains("is a file, not a folder"), "{line}");
    assert!(fix.unwrap().contains("move"), "{fix:?}");
}

#[test]
fn read_only_home_is_reported_as_it_really_is() {
    let h = TempHome::new("ro");
    let ro = h.path.join("ro");
    fs::create_dir_all(&ro).unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
    // root ignores mode bits; the doctor must agree with what really happens.
    let probe = ro.join("probe");
    let writable = fs::write(&probe, b"").is_ok();
    let _ = fs::remove_file(&probe);
    let o = h.run_with(&ro, &["doctor"]);
    let out = stdout(&o);
    let (line, fix) = line_for(&out, "home");
    if writable {
        assert_eq!(o.status.code(), Some(0));
        assert!(line.starts_with("ok    home: "), "{line}");
    } else {
        assert_eq!(o.status.code(), Some(1));
        assert!(
            line.starts_with("FAIL  home: ") && line.contains("not writable"),
            "{line}"
        );
        assert!(fix.unwrap().contains("chmod u+rwx"), "{fix:?}");
    }
}

#[test]
fn client_registrations_are_checked() {
    let h = TempHome::new("clients");
    let wb = h.path.join("wb");
    // Cursor registered through setup; Gemini pointing at a vanished binary;
    // Codex installed but not registered.
    let o = h.run_with(&wb, &["setup", "--client", "cursor"]);
    assert!(o.status.success(), "{}", stderr(&o));
    fs::create_dir_all(h.home().join(".gemini")).unwrap();
    fs::write(
        h.home().join(".gemini/settings.json"),
        r#"{"mcpServers":{"workbench":{"command":"/nowhere/workbench","args":["mcp"]}}}"#,
    )
    .unwrap();
    fs::create_dir_all(h.home().join(".codex")).unwrap();

    let o = h.run_with(&wb, &["doctor"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(line_for(&out, "client cursor").0.starts_with("ok    "));
    assert!(line_for(&out, "client cursor")
        .0
        .contains("runs this binary"));
    let (gem, fix) = line_for(&out, "client gemini");
    assert!(
        gem.starts_with("warn  ") && gem.contains("does not exist"),
        "{gem}"
    );
    assert!(fix.unwrap().contains("workbench setup --client gemini"));
    let (codex, fix) = line_for(&out, "client codex");
    assert!(codex.contains("not registered"), "{codex}");
    assert!(fix.unwrap().contains("workbench setup --client codex"));
    assert!(line_for(&out, "client claude").0.contains("not found here"));
    assert!(line_for(&out, "start.md").0.starts_with("ok    "));
}

#[test]
fn json_output_is_machine_readable() {
    let h = TempHome::new("json");
    let file = h.path.join("wb");
    fs::write(&file, "").unwrap();
    let o = h.run_with(&file, &["doctor", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).expect("stdout is one JSON object");
    assert_eq!(v["ok"], false);
    let checks = v["checks"].as_array().unwrap();
    let home = checks.iter().find(|c| c["check"] == "home").unwrap();
    assert_eq!(home["status"], "fail");
    assert!(home["fix"].as_str().unwrap().contains("WORKBENCH_HOME"));
    assert!(checks.iter().any(|c| c["check"] == "ports"));
}

#[test]
fn bad_usage_exits_2() {
    let h = TempHome::new("usage");
    for args in [&["doctor", "--verbose"][..], &["doctor", "now"][..]] {
        let o = h.run_with(&h.path.join("wb"), args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 2, "{err}");
        assert!(err
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("usage: workbench doctor"));
    }
}

/// A process whose command line reads `workbench-… serve <name>` (a shell
/// started through a symlink so argv[0] says workbench), standing in for a
/// page server, plus a loopback listener answering `/health` once as `project`.
struct FakeServer {
    child: std::process::Child,
    port: u16,
    answered: mpsc::Receiver<String>,
}

impl FakeServer {
    fn start(h: &TempHome, name: &str, project: &str) -> FakeServer {
        let link = h.path.join("workbench-fake");
        if !link.exists() {
            std::os::unix::fs::symlink("/bin/sh", &link).unwrap();
        }
        // `; :` keeps the shell from exec'ing sleep, so its cmdline stays ours.
        let child = Command::new(&link)
            .args(["-c", "sleep 30; :", "serve", name])
            .spawn()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // The pid /health reports must be the record's, as a real server's is.
        let body = serde_json::json!({"ok": true, "project": project, "pid": child.id(), "viewers": 2, "version": "0.1.0"}).to_string();
        let (tx, answered) = mpsc::channel();
        std::thread::spawn(move || {
            use std::io::{BufRead, BufReader, Write};
            let (mut s, _) = listener.accept().unwrap();
            // Read the whole request head before answering.
            let mut reader = BufReader::new(&s);
            let mut first = String::new();
            reader.read_line(&mut first).unwrap();
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                line.clear();
            }
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tx.send(first);
        });
        FakeServer {
            child,
            port,
            answered,
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_record_at(dir: &Path, name: &str, pid: u32, port: u16) {
    write_record(dir, name, pid, port);
    let path = dir.join(name).join(".server.json");
    let mut v: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    v["host"] = "127.0.0.1".into();
    fs::write(path, v.to_string()).unwrap();
}

#[test]
fn live_server_answering_health_is_ok() {
    let h = TempHome::new("live");
    let wb = h.path.join("wb");
    let fake = FakeServer::start(&h, "bench3", "bench3");
    write_record_at(&wb, "bench3", fake.child.id(), fake.port);
    let o = h.run_with(&wb, &["doctor"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let (line, fix) = line_for(&out, "server bench3");
    assert!(line.starts_with("ok    "), "{line}");
    assert!(line.contains("2 viewer(s)"), "{line}");
    assert!(fix.is_none());
    let request = fake.answered.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(request.trim_end(), "GET /health HTTP/1.1");
}

#[test]
fn port_answering_for_another_project_fails() {
    let h = TempHome::new("mismatch");
    let wb = h.path.join("wb");
    let fake = FakeServer::start(&h, "bench4", "someone-else");
    write_record_at(&wb, "bench4", fake.child.id(), fake.port);
    let o = h.run_with(&wb, &["doctor"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let (line, fix) = line_for(&out, "server bench4");
    assert!(line.starts_with("FAIL  "), "{line}");
    assert!(line.contains("\"someone-else\""), "{line}");
    assert!(fix.unwrap().contains("workbench stop bench4"), "{fix:?}");
}
