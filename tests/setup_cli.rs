//! Black-box tests of `workbench setup`: the real binary against fixture
//! config files in a temporary HOME, one home per test.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use support::{stderr, stdout, TempHome, BIN};

/// The setup tests' layout inside a [`TempHome`]: HOME is `home/`,
/// WORKBENCH_HOME is `wb/`.
trait SetupHome {
    fn home(&self) -> PathBuf;
    fn wb_home(&self) -> PathBuf;
    fn install(&self, fixture: &str, rel: &str) -> PathBuf;
    fn run(&self, args: &[&str]) -> Output;
}

impl SetupHome for TempHome {
    /// Created on first use, as every test expects it to exist.
    fn home(&self) -> PathBuf {
        let home = self.join("home");
        fs::create_dir_all(&home).unwrap();
        home
    }

    fn wb_home(&self) -> PathBuf {
        self.join("wb")
    }

    /// Copies a fixture to `rel` (relative to HOME) and returns its path.
    fn install(&self, fixture: &str, rel: &str) -> PathBuf {
        let dest = self.home().join(rel);
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(fixture_path(fixture), &dest).unwrap();
        dest
    }

    /// Runs the binary with a clean environment and a time limit.
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_clear()
            .env("HOME", self.home())
            .env("WORKBENCH_HOME", self.wb_home())
            .env("PATH", "/usr/bin:/bin");
        run_with_watchdog(cmd)
    }
}

fn run_with_watchdog(mut cmd: Command) -> Output {
    support::run(&mut cmd, Duration::from_secs(30))
}

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/setup")
        .join(name)
}

/// The command setup registers: this binary, as the OS resolves it.
fn exe() -> String {
    fs::canonicalize(BIN).unwrap().to_str().unwrap().to_string()
}

/// Backups written beside `path`.
fn backups(path: &Path) -> Vec<PathBuf> {
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    let mut out: Vec<PathBuf> = fs::read_dir(path.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{name}.bak-")))
        })
        .collect();
    out.sort();
    out
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// Asserts `new` keeps every top-level key of `old` unchanged except
/// `mcpServers`, which keeps every old server and adds ours.
fn assert_json_merged(old: &Value, new: &Value) {
    let (o, n) = (old.as_object().unwrap(), new.as_object().unwrap());
    for (k, v) in o {
        if k != "mcpServers" {
            assert_eq!(n.get(k), Some(v), "top-level key {k} changed");
        }
    }
    let old_servers = o["mcpServers"].as_object().unwrap();
    let new_servers = n["mcpServers"].as_object().unwrap();
    for (k, v) in old_servers {
        assert_eq!(new_servers.get(k), Some(v), "server {k} changed");
    }
    assert_eq!(new_servers["workbench"]["command"], exe());
    assert_eq!(new_servers["workbench"]["args"], serde_json::json!(["mcp"]));
}

/// Runs setup twice for one JSON client: merged, backed up, then idempotent.
fn json_client_round_trip(client: &str, fixture: &str, rel: &str) -> TempHome {
    let h = TempHome::new(client);
    let path = h.install(fixture, rel);
    let original = fs::read(&path).unwrap();

    let o = h.run(&["setup", "--client", client]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("added \"workbench\""), "{}", stdout(&o));
    assert_json_merged(&serde_json::from_slice(&original).unwrap(), &json(&path));

    let b = backups(&path);
    assert_eq!(b.len(), 1, "one backup expected: {b:?}");
    assert_eq!(
        fs::read(&b[0]).unwrap(),
        original,
        "backup holds the old bytes"
    );

    let after_first = fs::read(&path).unwrap();
    let o = h.run(&["setup", "--client", client]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("already configured"), "{}", stdout(&o));
    assert_eq!(
        fs::read(&path).unwrap(),
        after_first,
        "second run rewrote the file"
    );
    assert_eq!(backups(&path).len(), 1, "second run made a backup");
    h
}

#[test]
fn claude_user_scope_is_merged_and_idempotent() {
    let h = json_client_round_trip("claude", "claude.json", ".claude.json");
    let v = json(&h.home().join(".claude.json"));
    assert_eq!(v["mcpServers"]["workbench"]["type"], "stdio");
    // The per-project servers stay where they were, untouched.
    assert_eq!(
        v["projects"]["/home/u/src/app"]["mcpServers"]["local-only"]["command"],
        "npx"
    );
    assert!(v["projects"]["/home/u/src/app"]["mcpServers"]
        .get("workbench")
        .is_none());
    // Unrelated lines keep their exact formatting.
    let text = fs::read_to_string(h.home().join(".claude.json")).unwrap();
    assert!(text.starts_with("{\n  \"numStartups\": 42,\n  \"theme\": \"dark\",\n"));
    assert!(text.contains("      \"args\": [\"-y\", \"@modelcontextprotocol/server-github\"],\n"));
}

#[test]
fn gemini_settings_are_merged_and_idempotent() {
    let h = json_client_round_trip("gemini", "gemini.json", ".gemini/settings.json");
    let text = fs::read_to_string(h.home().join(".gemini/settings.json")).unwrap();
    assert!(
        text.contains("\"selectedAuthType\": \"gemini-api-key\",\n"),
        "{text}"
    );
}

#[test]
fn cursor_mcp_json_is_merged_and_idempotent() {
    let h = json_client_round_trip("cursor", "cursor.json", ".cursor/mcp.json");
    let text = fs::read_to_string(h.home().join(".cursor/mcp.json")).unwrap();
    // Four-space indentation is followed for the new entry.
    assert!(
        text.contains("\n        \"workbench\": {\n            \"command\": "),
        "{text}"
    );
}

#[test]
fn codex_toml_gets_one_table_appended_and_nothing_else_changes() {
    let h = TempHome::new("codex");
    let path = h.install("codex.toml", ".codex/config.toml");
    let original = fs::read_to_string(&path).unwrap();

    let o = h.run(&["setup", "--client", "codex"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let text = fs::read_to_string(&path).unwrap();
    let exe = exe();
    assert_eq!(
        text,
        format!("{original}\n[mcp_servers.workbench]\ncommand = \"{exe}\"\nargs = [\"mcp\"]\n")
    );
    let b = backups(&path);
    assert_eq!(b.len(), 1);
    assert_eq!(fs::read_to_string(&b[0]).unwrap(), original);

    let o = h.run(&["setup", "--client", "codex"]);
    assert!(stdout(&o).contains("already configured"), "{}", stdout(&o));
    assert_eq!(fs::read_to_string(&path).unwrap(), text);
    assert_eq!(backups(&path).len(), 1);
}

#[test]
fn codex_home_is_honoured() {
    let h = TempHome::new("codexhome");
    let dir = h.path.join("elsewhere");
    fs::create_dir_all(&dir).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["setup", "--client", "codex"])
        .env_clear()
        .env("HOME", h.home())
        .env("WORKBENCH_HOME", h.wb_home())
        .env("CODEX_HOME", &dir);
    let o = run_with_watchdog(cmd);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = fs::read_to_string(dir.join("config.toml")).unwrap();
    assert!(text.starts_with("[mcp_servers.workbench]\n"), "{text}");
    assert!(!h.home().join(".codex").exists());
}

#[test]
fn stale_entry_is_updated_keeping_its_env() {
    let h = TempHome::new("stale");
    let path = h.install("stale_entry.json", ".cursor/mcp.json");
    let o = h.run(&["setup", "--client", "cursor"]);
    assert!(o.status.success());
    assert!(
        stdout(&o).contains("updated \"workbench\""),
        "{}",
        stdout(&o)
    );
    let v = json(&path);
    assert_eq!(v["mcpServers"]["workbench"]["command"], exe());
    assert_eq!(
        v["mcpServers"]["workbench"]["env"]["WORKBENCH_HOME"],
        "/srv/bench"
    );
    assert_eq!(backups(&path).len(), 1);
}

#[test]
fn dry_run_changes_nothing() {
    let h = TempHome::new("dry");
    let paths = [
        h.install("claude.json", ".claude.json"),
        h.install("codex.toml", ".codex/config.toml"),
        h.install("gemini.json", ".gemini/settings.json"),
        h.install("cursor.json", ".cursor/mcp.json"),
    ];
    let before: Vec<Vec<u8>> = paths.iter().map(|p| fs::read(p).unwrap()).collect();
    let o = h.run(&["setup", "--client", "all", "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.matches("would edit it to add").count(), 4, "{out}");
    assert!(out.contains("+ [mcp_servers.workbench]"), "{out}");
    for (p, b) in paths.iter().zip(&before) {
        assert_eq!(&fs::read(p).unwrap(), b, "{} changed", p.display());
        assert!(backups(p).is_empty(), "backup made for {}", p.display());
    }
    assert!(!h.wb_home().exists(), "dry run created WORKBENCH_HOME");
}

#[test]
fn corrupt_configs_are_reported_and_left_byte_identical() {
    let h = TempHome::new("corrupt");
    let bad_json = h.install("corrupt.json", ".gemini/settings.json");
    let bad_servers = h.install("servers_not_object.json", ".claude.json");
    let bad_toml = h.install("codex_inline.toml", ".codex/config.toml");
    let good = h.install("cursor.json", ".cursor/mcp.json");
    let before: Vec<Vec<u8>> = [&bad_json, &bad_servers, &bad_toml]
        .iter()
        .map(|p| fs::read(p).unwrap())
        .collect();

    // One good client among bad ones: exit 0, the bad ones untouched.
    let o = h.run(&["setup", "--client", "all"]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(
        out.contains("gemini ~/.gemini/settings.json: NOT CHANGED: not valid JSON"),
        "{out}"
    );
    assert!(
        out.contains("claude ~/.claude.json: NOT CHANGED: \"mcpServers\" is not a JSON object"),
        "{out}"
    );
    assert!(
        out.contains("codex  ~/.codex/config.toml: NOT CHANGED:"),
        "{out}"
    );
    assert!(out.contains("inline table or dotted keys"), "{out}");
    assert!(out.contains("cursor ~/.cursor/mcp.json: added"), "{out}");
    for (p, b) in [&bad_json, &bad_servers, &bad_toml].iter().zip(&before) {
        assert_eq!(&fs::read(p).unwrap(), b, "{} changed", p.display());
        assert!(backups(p).is_empty());
    }
    assert_eq!(json(&good)["mcpServers"]["workbench"]["command"], exe());

    // Only bad clients requested: exit 1 and still nothing written to them.
    let o = h.run(&["setup", "--client", "gemini", "--client", "claude"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("no client was configured"),
        "{}",
        stderr(&o)
    );
    assert_eq!(fs::read(&bad_json).unwrap(), before[0]);
    assert_eq!(fs::read(&bad_servers).unwrap(), before[1]);
}

#[test]
fn missing_config_is_created_without_backup() {
    let h = TempHome::new("fresh");
    let o = h.run(&["setup", "--client", "gemini"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("(new file)"), "{}", stdout(&o));
    let path = h.home().join(".gemini/settings.json");
    assert_eq!(json(&path)["mcpServers"]["workbench"]["args"][0], "mcp");
    assert!(backups(&path).is_empty());
}

#[test]
fn default_clients_are_the_detected_ones() {
    let h = TempHome::new("detect");
    fs::create_dir_all(h.home().join(".cursor")).unwrap();
    let o = h.run(&["setup"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(h.home().join(".cursor/mcp.json").is_file());
    for other in [".claude.json", ".codex", ".gemini"] {
        assert!(!h.home().join(other).exists(), "{other} was created");
    }

    // Nothing installed (a lab machine): not an error, START.md still written.
    let empty = TempHome::new("nothing");
    let o = empty.run(&["setup"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("No AI CLI found"), "{}", stdout(&o));
    assert!(stdout(&o).contains("--client"), "{}", stdout(&o));
    assert!(empty.wb_home().join("START.md").is_file());
    assert_eq!(
        fs::read_dir(empty.home()).unwrap().count(),
        0,
        "created files in HOME"
    );
}

#[test]
fn start_md_describes_this_machine_and_the_tools() {
    let h = TempHome::new("start");
    h.install("cursor.json", ".cursor/mcp.json");
    let o = h.run(&["setup", "--client", "cursor"]);
    assert!(o.status.success());
    let start = h.wb_home().join("START.md");
    let text = fs::read_to_string(&start).unwrap();
    assert!(text.contains(&exe()), "binary path missing");
    assert!(text.contains(env!("CARGO_PKG_VERSION")));
    assert!(text.contains("Cursor: configured"));
    assert!(text.contains("Claude Code: not configured"));
    for tool in [
        "workbench_scaffold(",
        "workbench_state(",
        "workbench_log(",
        "workbench_read_log(",
        "workbench_list()",
        "workbench_stop(",
        "workbench_wait(",
        "workbench_events(",
        "workbench_snapshot(",
        "workbench.on('data', fn)",
        "workbench.send(name, data)",
    ] {
        assert!(text.contains(tool), "START.md lacks {tool}");
    }
    // Rerun: unchanged content is not rewritten.
    let o = h.run(&["setup", "--client", "cursor"]);
    assert!(
        stdout(&o).contains("START.md is up to date"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn bad_usage_exits_2_with_the_synopsis() {
    let h = TempHome::new("usage");
    for args in [
        &["setup", "--client", "vim"][..],
        &["setup", "--frobnicate"][..],
        &["setup", "extra"][..],
        &["setup", "--client"][..],
    ] {
        let o = h.run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = stderr(&o);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 2, "{args:?}: {err}");
        assert!(lines[0].starts_with("workbench: "), "{err}");
        assert!(lines[1].starts_with("usage: workbench setup"), "{err}");
        assert!(stdout(&o).is_empty());
    }
    assert!(!h.wb_home().exists());
    let o = h.run(&["setup", "--help"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("example"));
}
