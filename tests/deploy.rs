//! `workbench deploy` (issue 15): every file it writes is parsed back and
//! checked field by field, the compose file is validated against the
//! Compose specification's JSON schema and the SDL against Akash's
//! published SDL schema (both fetched from npm by scripts/deploy_schemas.sh,
//! validated with Python's `jsonschema`), and the health check it writes is
//! run against a real relay. No container engine runs on these machines, so
//! no image is built here.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use std::time::Duration;
use support::{die_with_parent, watchdog, Certs, Relay, BIN};

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("wb-deploy-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        Dir(d)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn s(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn wb_in(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(dir).stdin(Stdio::null());
    die_with_parent(&mut cmd);
    cmd.output().expect("run workbench")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A generated YAML file, parsed back (with saphyr, the YAML crate the
/// command reads deploy.yaml with) into JSON values for field-by-field checks.
fn yaml(path: &Path) -> Value {
    use saphyr::LoadableYamlNode;
    let s = std::fs::read_to_string(path).expect("generated file");
    let docs = saphyr::Yaml::load_from_str(&s)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    assert_eq!(docs.len(), 1, "one document in {}", path.display());
    to_json(&docs[0])
}

fn to_json(y: &saphyr::Yaml) -> Value {
    use saphyr::{Scalar, Yaml};
    match y {
        Yaml::Value(Scalar::Null) => Value::Null,
        Yaml::Value(Scalar::Boolean(b)) => Value::from(*b),
        Yaml::Value(Scalar::Integer(n)) => Value::from(*n),
        Yaml::Value(Scalar::FloatingPoint(f)) => Value::from(f.into_inner()),
        Yaml::Value(Scalar::String(s)) => Value::from(s.as_ref()),
        Yaml::Sequence(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Mapping(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.as_str().expect("string keys").to_string(), to_json(v)))
                .collect(),
        ),
        other => panic!("unexpected YAML node {other:?}"),
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Validates `doc` against one of the fetched schemas; panics with the
/// validator's output if it is invalid or the validator cannot run.
fn validate(schema: &str, doc: &Path) {
    let schema = root().join("tests/deploy/schemas").join(schema);
    assert!(
        schema.exists(),
        "{} missing: run scripts/deploy_schemas.sh (needs npm)",
        schema.display()
    );
    let out = Command::new("python3")
        .arg(root().join("tests/deploy/validate.py"))
        .arg(&schema)
        .arg(doc)
        .output()
        .expect("python3 runs (pip install jsonschema pyyaml)");
    assert!(
        out.status.success(),
        "{} against {}: {}{}",
        doc.display(),
        schema.display(),
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("valid"));
}

/// The validator rejects what it should: a check that cannot fail is none.
#[test]
fn the_schema_validators_reject_bad_files() {
    let _w = watchdog(Duration::from_secs(60));
    let d = Dir::new("neg");
    std::fs::write(
        d.path("c.yml"),
        "services:\n  r:\n    image: x\n    portz: [1]\n",
    )
    .expect("w");
    std::fs::write(
        d.path("s.yaml"),
        "version: \"2.0\"\nservices:\n  r:\n    image: x\n",
    )
    .expect("w");
    for (schema, doc) in [
        ("compose-spec.json", "c.yml"),
        ("sdl-schema.yaml", "s.yaml"),
    ] {
        let out = Command::new("python3")
            .arg(root().join("tests/deploy/validate.py"))
            .arg(root().join("tests/deploy/schemas").join(schema))
            .arg(d.path(doc))
            .output()
            .expect("python3");
        assert_eq!(
            out.status.code(),
            Some(1),
            "{schema}: {}",
            text(&out.stdout)
        );
    }
}

#[test]
fn docker_compose_with_every_option_parses_back_and_validates() {
    let _w = watchdog(Duration::from_secs(60));
    let certs = Certs::new("deploy-docker", "ec");
    let d = Dir::new("docker");
    let out = wb_in(
        &d.0,
        &[
            "deploy",
            "--provider",
            "docker",
            "--output",
            "out",
            "--port",
            "7001",
            "--name",
            "labrelay",
            "--volumes",
            "--network",
            "lab",
            "--dockerfile",
            "--cert",
            &certs.path("fullchain.pem"),
            "--key",
            &certs.path("server.key"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("wss://<this-host>:7001"),
        "{}",
        text(&out.stdout)
    );
    let compose = d.path("out/docker-compose.yml");
    validate("compose-spec.json", &compose);
    let c = yaml(&compose);
    let svc = &c["services"]["labrelay"];
    assert_eq!(svc["image"], "workbench:latest");
    assert_eq!(svc["build"]["context"], ".");
    assert_eq!(svc["build"]["dockerfile"], "Dockerfile");
    assert_eq!(svc["container_name"], "labrelay");
    let cmd: Vec<&str> = svc["command"]
        .as_array()
        .expect("command")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        cmd,
        [
            "relay",
            "--host",
            "0.0.0.0",
            "--port",
            "7001",
            "--name",
            "labrelay",
            "--cert",
            "/certs/cert.pem",
            "--key",
            "/certs/key.pem"
        ]
    );
    assert_eq!(svc["ports"][0], "7001:7001");
    assert_eq!(svc["restart"], "unless-stopped");
    let vols = svc["volumes"].as_array().expect("volumes");
    assert_eq!(vols.len(), 3);
    assert_eq!(vols[0]["type"], "volume");
    assert_eq!(vols[0]["source"], "labrelay-data");
    assert_eq!(vols[0]["target"], "/home/nonroot/workbench");
    let abs = |p: String| std::fs::canonicalize(p).expect("abs").display().to_string();
    assert_eq!(vols[1]["type"], "bind");
    assert_eq!(
        vols[1]["source"].as_str(),
        Some(abs(certs.path("fullchain.pem")).as_str())
    );
    assert_eq!(vols[1]["target"], "/certs/cert.pem");
    assert_eq!(vols[1]["read_only"], true);
    assert_eq!(
        vols[2]["source"].as_str(),
        Some(abs(certs.path("server.key")).as_str())
    );
    assert_eq!(vols[2]["target"], "/certs/key.pem");
    assert_eq!(vols[2]["read_only"], true);
    assert_eq!(svc["networks"][0], "lab");
    assert_eq!(c["networks"]["lab"]["name"], "lab");
    assert!(c["volumes"]["labrelay-data"].is_object());
    let hc = &svc["healthcheck"];
    assert_eq!(hc["interval"], "30s");
    assert_eq!(hc["retries"], 3);
    let test: Vec<String> = hc["test"]
        .as_array()
        .expect("test")
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    assert_eq!(
        test,
        [
            "CMD",
            "/workbench",
            "channels",
            "wss://localhost:7001",
            "--ca",
            "/certs/cert.pem"
        ]
    );

    // The Dockerfile it wrote is the repository's own, byte for byte.
    let written = std::fs::read(d.path("out/Dockerfile")).expect("Dockerfile");
    let repo = std::fs::read(root().join("Dockerfile")).expect("repo Dockerfile");
    assert_eq!(
        written, repo,
        "--dockerfile writes the repository's Dockerfile"
    );

    // The health check it wrote passes against a real TLS relay on that
    // port: the same arguments, with the container's paths mapped to ours.
    let relay = Relay::start(&[
        "--cert",
        &certs.path("fullchain.pem"),
        "--key",
        &certs.path("server.key"),
    ]);
    let args: Vec<String> = test[2..]
        .iter()
        .map(|a| match a.as_str() {
            "/certs/cert.pem" => certs.path("fullchain.pem"),
            "wss://localhost:7001" => format!("wss://localhost:{}", relay.port),
            other => other.to_string(),
        })
        .collect();
    let probe = Command::new(BIN)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .expect("probe");
    assert!(
        probe.status.success(),
        "health check against the relay: {}",
        text(&probe.stderr)
    );
}

#[test]
fn docker_defaults_and_never_overwriting() {
    let _w = watchdog(Duration::from_secs(60));
    let d = Dir::new("defaults");
    let out = wb_in(&d.0, &["deploy", "--provider", "docker"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let compose = d.path("docker-compose.yml");
    validate("compose-spec.json", &compose);
    let c = yaml(&compose);
    let svc = &c["services"]["workbench-relay"];
    assert_eq!(svc["image"], "workbench:latest");
    assert!(
        svc.get("build").is_none() && svc.get("volumes").is_none() && svc.get("networks").is_none()
    );
    assert_eq!(svc["ports"][0], "6667:6667");
    assert!(
        !d.path("Dockerfile").exists(),
        "no Dockerfile without --dockerfile"
    );
    let test: Vec<&str> = svc["healthcheck"]["test"]
        .as_array()
        .expect("hc")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        test,
        ["CMD", "/workbench", "channels", "ws://127.0.0.1:6667"]
    );

    // The plain health check passes against a real relay.
    let relay = Relay::start(&[]);
    let probe = Command::new(BIN)
        .args(["channels", &format!("ws://127.0.0.1:{}", relay.port)])
        .output()
        .expect("probe");
    assert!(probe.status.success(), "{}", text(&probe.stderr));

    // A second run refuses and leaves the file alone; --force rewrites it.
    std::fs::write(&compose, "mine\n").expect("edit");
    let again = wb_in(
        &d.0,
        &["deploy", "--provider", "docker", "--no-health-check"],
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("already exists; nothing written (pass --force"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(std::fs::read_to_string(&compose).expect("kept"), "mine\n");
    let forced = wb_in(
        &d.0,
        &[
            "deploy",
            "--provider",
            "docker",
            "--no-health-check",
            "--force",
        ],
    );
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    let c = yaml(&compose);
    assert!(c["services"]["workbench-relay"]
        .get("healthcheck")
        .is_none());

    // --init-config writes an example that then drives a run, and is not
    // overwritten either.
    let init = wb_in(&d.0, &["deploy", "--init-config"]);
    assert!(init.status.success(), "{}", text(&init.stderr));
    let example = std::fs::read_to_string(d.path("deploy.yaml")).expect("deploy.yaml");
    assert!(example.contains("provider: docker"));
    let init2 = wb_in(&d.0, &["deploy", "--init-config"]);
    assert_eq!(init2.status.code(), Some(1));
    let run = wb_in(
        &d.0,
        &["deploy", "--config", "deploy.yaml", "--output", "fromcfg"],
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    validate("compose-spec.json", &d.path("fromcfg/docker-compose.yml"));
}

#[test]
fn a_certificate_the_health_check_cannot_verify_gets_none() {
    let _w = watchdog(Duration::from_secs(60));
    let certs = Certs::new("deploy-leaf", "ec");
    let d = Dir::new("leaf");
    // The leaf alone: `--ca leaf` cannot verify it (its issuer is missing).
    let out = wb_in(
        &d.0,
        &[
            "deploy",
            "--provider",
            "docker",
            "--cert",
            &certs.path("server.pem"),
            "--key",
            &certs.path("server.key"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("no health check"),
        "{}",
        text(&out.stdout)
    );
    let c = yaml(&d.path("docker-compose.yml"));
    assert!(c["services"]["workbench-relay"]
        .get("healthcheck")
        .is_none());
    // Bad certificate files are refused before anything is written.
    let e = Dir::new("badcert");
    let out = wb_in(
        &e.0,
        &[
            "deploy",
            "--provider",
            "docker",
            "--cert",
            &certs.path("expired.pem"),
            "--key",
            &certs.path("server.key"),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("expired.pem: certificate expired"),
        "{}",
        text(&out.stderr)
    );
    assert!(!e.path("docker-compose.yml").exists());
}

#[test]
fn invalid_deploy_yaml_names_the_line_and_the_problem() {
    let _w = watchdog(Duration::from_secs(60));
    let d = Dir::new("badyaml");
    let cases = [
        (
            "provider: docker\nprot: 6667\n",
            "line 2",
            "unknown key `prot`",
        ),
        (
            "provider: aws\n",
            "line 1",
            "provider must be docker or akash, not 'aws'",
        ),
        (
            "provider: docker\nport: 0\n",
            "line 2",
            "port must be 1-65535",
        ),
        (
            "provider: docker\nport: 70000\n",
            "line 2",
            "port must be 1-65535",
        ),
        (
            "provider: docker\nname: Bad Name\n",
            "line 2",
            "name must be",
        ),
        (
            "provider: akash\nimage: x\nresources:\n  memory: 512MB\n",
            "line 4",
            "'512MB' is not a size",
        ),
        (
            "provider: akash\nimage: x\nresources:\n  cpu: 0\n",
            "line 4",
            "resources.cpu must be more than 0",
        ),
        (
            "provider: akash\nimage: x\npricing:\n  denom: usd\n",
            "line 4",
            "pricing.denom",
        ),
        ("provider: docker\nports: [\n", "line", ""),
        (
            "provider: docker\nvolumes: maybe\n",
            "line 2",
            "volumes must be true or false",
        ),
        ("provider: docker\nport: 1\nport: 2\n", "line", ""),
        (
            "provider: docker\ntls:\n  cert: a.pem\n",
            "line 2",
            "tls needs both cert and key",
        ),
        ("- just\n- a list\n", "line 1", "must be a mapping"),
    ];
    for (i, (body, line, what)) in cases.iter().enumerate() {
        let file = d.path(&format!("c{i}.yaml"));
        std::fs::write(&file, body).expect("write");
        let out = wb_in(
            &d.0,
            &[
                "deploy",
                "--config",
                &file.display().to_string(),
                "--generate-sdl",
                "--output",
                &d.s(),
            ],
        );
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{body:?}: {err}");
        assert!(
            err.contains(&format!("c{i}.yaml: {line}")),
            "{body:?} names its line: {err}"
        );
        assert!(err.contains(what), "{body:?} says what is wrong: {err}");
        assert!(!d.path("docker-compose.yml").exists() && !d.path("deploy.sdl.yaml").exists());
    }
}

#[test]
fn akash_sdl_parses_back_validates_and_pretends_nothing() {
    let _w = watchdog(Duration::from_secs(60));
    let d = Dir::new("akash");
    std::fs::write(
        d.path("deploy.yaml"),
        "provider: akash\nimage: ghcr.io/lab/workbench:0.1.0\nport: 6668\nname: agents\n\
         resources:\n  cpu: 1.5\n  memory: 256Mi\n  storage: 2Gi\npricing:\n  denom: uakt\n  amount: 5000\n\
         wallet: ./wallet.json\nduration: 24h\n",
    )
    .expect("config");
    let out = wb_in(
        &d.0,
        &["deploy", "--config", "deploy.yaml", "--generate-sdl"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("workbench does not perform on-chain steps"),
        "{stdout}"
    );
    for step in [
        "provider-services tx deployment create ./deploy.sdl.yaml",
        "provider-services tx market lease create",
        "provider-services send-manifest ./deploy.sdl.yaml",
        "provider-services lease-status",
        "provider-services tx deployment close",
        "provider-services keys add",
    ] {
        assert!(stdout.contains(step), "shows `{step}`: {stdout}");
    }
    let sdl_path = d.path("deploy.sdl.yaml");
    validate("sdl-schema.yaml", &sdl_path);
    let s = yaml(&sdl_path);
    assert_eq!(s["version"], "2.0");
    let svc = &s["services"]["relay"];
    assert_eq!(svc["image"], "ghcr.io/lab/workbench:0.1.0");
    let args: Vec<&str> = svc["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        args,
        ["relay", "--host", "0.0.0.0", "--port", "6668", "--name", "agents"]
    );
    let expose = &svc["expose"][0];
    assert_eq!(expose["port"], 6668);
    assert_eq!(expose["as"], 80);
    assert_eq!(expose["proto"], "tcp");
    assert_eq!(expose["to"][0]["global"], true);
    let res = &s["profiles"]["compute"]["relay"]["resources"];
    assert_eq!(res["cpu"]["units"], 1.5);
    assert_eq!(res["memory"]["size"], "256Mi");
    assert_eq!(res["storage"]["size"], "2Gi");
    let price = &s["profiles"]["placement"]["akash"]["pricing"]["relay"];
    assert_eq!(price["denom"], "uakt");
    assert_eq!(price["amount"], 5000);
    assert_eq!(s["deployment"]["relay"]["akash"]["profile"], "relay");
    assert_eq!(s["deployment"]["relay"]["akash"]["count"], 1);
    // The SDL's references hold (the schema checks structure only).
    assert!(s["profiles"]["compute"]["relay"].is_object());

    // Without an image there is nothing a provider could pull.
    let e = Dir::new("akash-noimage");
    let out = wb_in(&e.0, &["deploy", "--provider", "akash", "--generate-sdl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("pull the image from a registry"),
        "{}",
        text(&out.stderr)
    );
    assert!(!e.path("deploy.sdl.yaml").exists());
}
