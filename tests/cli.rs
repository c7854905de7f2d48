//! Every subcommand has `--help` with an example; unknown flags and missing
//! arguments are a one-line error plus the usage line, exit 2.

mod support;

use support::*;

const COMMANDS: &[&str] = &[
    "mcp", "serve", "list", "stop", "demo", "setup", "doctor", "relay", "send", "listen",
    "channels", "agents", "create", "invite", "connect", "identity", "propose", "accept", "reject",
    "complete", "dispute",
];

#[test]
fn every_command_has_help_with_an_example() {
    let home = TempHome::new("cli-help");
    for c in COMMANDS {
        let out = home.cmd().args([c, "--help"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{c}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with(&format!("usage: workbench {c}")),
            "{c}: {text}"
        );
        assert!(text.contains("example"), "{c} --help has no example");
        let via_help = home.cmd().args(["help", c]).output().unwrap();
        assert_eq!(via_help.stdout, out.stdout, "`workbench help {c}`");
    }
    let out = home.cmd().arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("workbench {}", env!("CARGO_PKG_VERSION"))
    );
    let out = home.cmd().arg("help").output().unwrap();
    for c in COMMANDS {
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(c),
            "overview lists {c}"
        );
    }
}

#[test]
fn unknown_flags_and_missing_arguments_exit_2_with_the_usage() {
    let home = TempHome::new("cli-bad");
    for c in COMMANDS {
        let out = home
            .cmd()
            .args([c, "--definitely-bogus"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{c} --definitely-bogus");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--definitely-bogus"), "{c}: {err}");
        assert!(err.contains(&format!("usage: workbench {c}")), "{c}: {err}");
    }
    for c in [
        "serve", "stop", "send", "listen", "channels", "agents", "create", "invite", "connect",
        "propose", "accept", "reject", "complete", "dispute",
    ] {
        let out = home
            .cmd()
            .arg(c)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{c} without arguments");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("missing <"),
            "{c}"
        );
    }
    let out = home.cmd().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Starts `workbench serve <name> --prefer-port <port>` and returns it with
/// the port its ready line names.
fn serve_preferring(home: &TempHome, name: &str, port: u16) -> (Proc, u16) {
    use std::io::BufRead;
    let mut child = home
        .cmd()
        .args(["serve", name, "--host", "127.0.0.1", "--prefer-port"])
        .arg(port.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("serving"), "{line:?}");
    let got: u16 = line
        .rsplit_once("127.0.0.1:")
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    (
        Proc {
            child,
            stdout: Some(out),
        },
        got,
    )
}

#[test]
fn prefer_port_takes_the_port_when_free_and_any_port_when_taken() {
    let _w = watchdog(std::time::Duration::from_secs(60));
    let home = TempHome::new("cli-prefer");
    // A port that was free a moment ago (nothing else is told about it).
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_a, got) = serve_preferring(&home, "pa", free);
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(home.project("pa").join(".server.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["port"], got, "the record names the real port");
    // Now that port is held (by the first server): the second falls back.
    let (_b, other) = serve_preferring(&home, "pb", got);
    assert_ne!(other, got);
    let (status, h) = http(&format!("127.0.0.1:{other}"), "GET", "/health", None, None);
    assert_eq!((status, h["project"].as_str()), (200, Some("pb")));
    // Both options at once is a usage error.
    let out = home
        .cmd()
        .args(["serve", "pc", "--port", "0", "--prefer-port", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--prefer-port"), "{}", stderr(&out));
}
