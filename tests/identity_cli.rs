//! Black-box tests of `workbench identity`: files written here and by other
//! implementations (tests/vectors/, see scripts/identity_vectors.sh), the
//! 0600/0700 modes, no silent overwrite, and clear refusals of missing,
//! tampered and over-shared files. Each run has its own HOME and a watchdog.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use support::{stderr, stdout, TempHome, BIN, VECTORS};

/// The identity tests use a [`TempHome`] as HOME.
trait IdentityHome {
    fn path(&self, rel: &str) -> PathBuf;
    fn run(&self, args: &[&str]) -> Output;
    fn fixture(&self, name: &str, mode: u32) -> PathBuf;
}

impl IdentityHome for TempHome {
    fn path(&self, rel: &str) -> PathBuf {
        self.join(rel)
    }

    /// Runs `workbench args…` with this HOME; fails the test after 20 s.
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args).env("HOME", &self.path);
        support::run(&mut cmd, Duration::from_secs(20))
    }

    /// Copies a fixture into HOME with the given mode.
    fn fixture(&self, name: &str, mode: u32) -> PathBuf {
        let dest = self.path(name);
        fs::copy(Path::new(VECTORS).join(name), &dest).unwrap();
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode)).unwrap();
        dest
    }
}

fn field(text: &str, label: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .unwrap_or_else(|| panic!("no '{label}' in {text}"))
        .trim()
        .to_string()
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn sha_id(pem: &str) -> String {
    Sha256::digest(pem.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..8]
        .to_string()
}

fn vectors(name: &str) -> Value {
    serde_json::from_str(&fs::read_to_string(Path::new(VECTORS).join(name)).unwrap()).unwrap()
}

#[test]
fn generate_show_export_in_the_default_place() {
    let home = TempHome::new("identity");
    let out = home.run(&["identity", "--generate", "--name", "alice"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let file = home.path(".agentchat/identity.json");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&home.path(".agentchat")), 0o700);
    let id = field(&stdout(&out), "Agent ID:");

    let text = fs::read_to_string(&file).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 4, "{keys:?}");
    assert_eq!(v["name"], "alice");
    let pubkey = v["pubkey"].as_str().unwrap();
    assert!(pubkey.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    assert!(pubkey.ends_with("-----END PUBLIC KEY-----\n"));
    assert!(v["privkey"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert_eq!(id, sha_id(pubkey));

    let show = home.run(&["identity", "--show"]);
    assert!(show.status.success(), "{}", stderr(&show));
    assert_eq!(field(&stdout(&show), "Agent ID:"), id);
    assert_eq!(field(&stdout(&show), "Name:"), "alice");
    assert_eq!(
        field(&stdout(&show), "Created:"),
        v["created"].as_str().unwrap()
    );

    // No action: shows.
    let plain = home.run(&["identity"]);
    assert_eq!(field(&stdout(&plain), "Agent ID:"), id);

    let export = home.run(&["identity", "--export"]);
    assert!(export.status.success());
    let e: Value = serde_json::from_str(&stdout(&export)).unwrap();
    assert_eq!(e["pubkey"], pubkey);
    assert_eq!(e["name"], "alice");
    assert!(e.get("privkey").is_none());
    assert!(!stdout(&export).contains("PRIVATE"));
}

#[test]
fn never_overwrites_without_force() {
    let home = TempHome::new("identity");
    let file = home.path("keys/me.json");
    let f = file.to_str().unwrap();
    assert!(home
        .run(&["identity", "--generate", "--file", f])
        .status
        .success());
    let before = fs::read_to_string(&file).unwrap();

    let again = home.run(&["identity", "--generate", "--file", f]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));
    assert_eq!(fs::read_to_string(&file).unwrap(), before);

    let forced = home.run(&[
        "identity",
        "--generate",
        "--force",
        "--name",
        "b",
        "--file",
        f,
    ]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    let after = fs::read_to_string(&file).unwrap();
    assert_ne!(after, before);
    assert_eq!(mode(&file), 0o600);
    // Nothing left beside it.
    assert_eq!(fs::read_dir(home.path("keys")).unwrap().count(), 1);
}

#[test]
fn files_from_node_and_python_load_with_their_ids() {
    let home = TempHome::new("identity");
    for (file, vec) in [
        ("node_identity.json", "node_vectors.json"),
        ("python_identity.json", "python_vectors.json"),
        ("workbench_identity.json", "node_signs_workbench.json"),
    ] {
        let path = home.fixture(file, 0o600);
        let out = home.run(&["identity", "--show", "--file", path.to_str().unwrap()]);
        assert!(out.status.success(), "{file}: {}", stderr(&out));
        assert_eq!(
            field(&stdout(&out), "Agent ID:"),
            vectors(vec)["agent_id"].as_str().unwrap(),
            "{file}"
        );
    }
    let v = vectors("node_vectors.json");
    let path = home.fixture("node_identity.json", 0o600);
    let out = home.run(&["identity", "--show", "--file", path.to_str().unwrap()]);
    assert_eq!(
        field(&stdout(&out), "Fingerprint:"),
        v["fingerprint"].as_str().unwrap()
    );
}

#[test]
fn refuses_a_file_others_can_read() {
    let home = TempHome::new("identity");
    for m in [0o644, 0o640, 0o604, 0o660] {
        let path = home.fixture("node_identity.json", m);
        let p = path.to_str().unwrap();
        let out = home.run(&["identity", "--show", "--file", p]);
        assert_eq!(out.status.code(), Some(1), "mode {m:o}");
        assert!(
            stderr(&out).contains(&format!("chmod 600 {p}")),
            "{}",
            stderr(&out)
        );
        let out = home.run(&["identity", "--export", "--file", p]);
        assert_eq!(out.status.code(), Some(1));
        assert!(stdout(&out).is_empty());
    }
}

#[test]
fn missing_file_says_how_to_create_one() {
    let home = TempHome::new("identity");
    let out = home.run(&["identity", "--show"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("no identity file at"), "{err}");
    assert!(err.contains("--generate"), "{err}");
    let out = home.run(&["identity"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("No identity found."));
}

#[test]
fn tampered_files_are_refused_clearly() {
    let home = TempHome::new("identity");
    let node: Value = serde_json::from_str(
        &fs::read_to_string(Path::new(VECTORS).join("node_identity.json")).unwrap(),
    )
    .unwrap();
    let python: Value = serde_json::from_str(
        &fs::read_to_string(Path::new(VECTORS).join("python_identity.json")).unwrap(),
    )
    .unwrap();
    let mut swapped = node.clone();
    swapped["pubkey"] = python["pubkey"].clone();
    let mut bad_pem = node.clone();
    bad_pem["privkey"] = Value::String(node["privkey"].as_str().unwrap().replace("MC4C", "XX4C"));
    let mut rsa = node.clone();
    rsa["pubkey"] = Value::String("-----BEGIN PUBLIC KEY-----\nMFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf\n9Cnzj4p4WGeKLs1Pt8QuKUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ==\n-----END PUBLIC KEY-----\n".into());
    let mut no_key = node.clone();
    no_key.as_object_mut().unwrap().remove("privkey");
    let cases: [(&str, String, &str); 5] = [
        ("swapped", swapped.to_string(), "does not match"),
        ("bad_pem", bad_pem.to_string(), "privkey is not"),
        ("rsa", rsa.to_string(), "pubkey is not an Ed25519"),
        ("no_key", no_key.to_string(), "bad JSON"),
        ("garbage", "{\"name\": \"x\",".into(), "bad JSON"),
    ];
    for (name, text, want) in cases {
        let path = home.path(name);
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let out = home.run(&["identity", "--show", "--file", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        let err = stderr(&out);
        assert!(err.contains(want), "{name}: {err}");
        assert!(err.contains(path.to_str().unwrap()), "{name}: {err}");
        assert!(
            !err.contains("PRIVATE KEY"),
            "{name}: never echo key material: {err}"
        );
    }
}

#[test]
fn bad_arguments_are_usage_errors() {
    let home = TempHome::new("identity");
    for args in [
        &["identity", "--show", "--export"][..],
        &["identity", "--generate", "--name", "has space"],
        &["identity", "--show", "--force"],
        &["identity", "--frobnicate"],
        &["identity", "--file"],
    ] {
        let out = home.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("usage: workbench identity"),
            "{args:?}"
        );
    }
    assert!(!home.path(".agentchat").exists());
}
