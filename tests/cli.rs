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
