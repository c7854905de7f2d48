//! `workbench deploy`: writes what a person needs to run the relay in Docker
//! (`docker-compose.yml`, optionally the `Dockerfile`) or on Akash (an SDL
//! 2.0 file), from options and/or a `deploy.yaml` (AgentChat 0.3.0's
//! `deploy`). It writes files only: no container is started, and nothing
//! touches the Akash network (that needs a funded wallet; the command
//! prints the official Akash CLI steps instead). The YAML it writes comes
//! from the templates in `deploy/`; `deploy.yaml` is read with saphyr.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{arg_error, finish, usage_error, CliError, CliResult};

pub const USAGE: &str = "\
usage: workbench deploy --provider docker|akash [--output DIR] [--port 6667] [--name NAME] [--image IMAGE] [--volumes] [--no-health-check] [--cert FILE --key FILE] [--network NET] [--dockerfile] [--generate-sdl] [--config deploy.yaml] [--init-config] [--force]

Writes deployment files for the relay; runs nothing. Options override the
values in --config.

  docker: docker-compose.yml (and the Dockerfile with --dockerfile), then
          `docker compose up -d` in DIR starts the relay.
  akash:  with --generate-sdl, deploy.sdl.yaml (Akash SDL 2.0: image, port,
          CPU, memory, storage, pricing). workbench does not perform the
          on-chain steps (wallet, create, status, close); it prints the
          official Akash CLI commands that deploy the file it wrote.

options:
  --provider P       docker or akash (or `provider:` in deploy.yaml)
  --output DIR       where files are written (default: .)
  --port N           the relay's port (default 6667)
  --name NAME        service / container name, also the relay's --name
                     (default workbench-relay)
  --image IMAGE      image to run (docker default workbench:latest; akash:
                     required, an image providers can pull from a registry)
  --volumes          mount a named volume at the image's data folder
                     (/home/nonroot/workbench)
  --no-health-check  no container health check (default: `workbench
                     channels` against the relay every 30 s)
  --cert FILE        serve wss:// with this PEM certificate (checked now;
                     mounted read-only, the relay started with it)
  --key FILE         its private key (mounted read-only)
  --network NET      attach the service to the Docker network NET
  --dockerfile       also write the Dockerfile (the repository's own: a Rust
                     builder stage makes the static binary, shipped alone)
  --generate-sdl     akash: write deploy.sdl.yaml
  --config FILE      read settings from a deploy.yaml
  --init-config      write an example deploy.yaml to DIR and stop
  --force            overwrite files that exist (never done without it)

example:
  workbench deploy --provider docker --dockerfile --volumes --output deploy/
  workbench deploy --init-config && workbench deploy --config deploy.yaml --provider akash --generate-sdl
";

/// The repository's Dockerfile, byte for byte: `--dockerfile` writes it.
pub const DOCKERFILE: &str = include_str!("../../Dockerfile");
/// The example `--init-config` writes.
const EXAMPLE_CONFIG: &str = include_str!("deploy/deploy.example.yaml");

/// Where the certificate and key are mounted in the container.
const CERT_IN_CONTAINER: &str = "/certs/cert.pem";
const KEY_IN_CONTAINER: &str = "/certs/key.pem";
/// The image's data folder (Dockerfile: WORKBENCH_HOME).
const DATA_IN_CONTAINER: &str = "/home/nonroot/workbench";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Docker,
    Akash,
}

/// A Kubernetes-style size (`512Mi`, `1Gi`, `100M`), as Akash and Compose take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Size(String);

impl TryFrom<String> for Size {
    type Error = String;
    fn try_from(s: String) -> Result<Size, String> {
        let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let unit = &s[digits.len()..];
        let units = ["", "k", "Ki", "M", "Mi", "G", "Gi", "T", "Ti"];
        if digits.is_empty()
            || !digits.chars().all(|c| c.is_ascii_digit())
            || !units.contains(&unit)
        {
            return Err(format!(
                "'{s}' is not a size: use a number with Ki, Mi, Gi (e.g. 512Mi)"
            ));
        }
        if digits.trim_start_matches('0').is_empty() {
            return Err(format!("'{s}' is zero"));
        }
        Ok(Size(s))
    }
}

/// A value from deploy.yaml and the line it is on, for errors found later.
#[derive(Debug, Clone)]
struct At<T> {
    value: T,
    line: usize,
}

/// deploy.yaml. Unknown keys are errors (a typo must not be ignored).
#[derive(Debug, Default)]
struct FileConfig {
    provider: Option<Provider>,
    name: Option<At<String>>,
    port: Option<At<i64>>,
    image: Option<String>,
    volumes: Option<bool>,
    health_check: Option<bool>,
    network: Option<At<String>>,
    dockerfile: Option<bool>,
    tls: Option<TlsFiles>,
    resources: Resources,
    pricing: Pricing,
    /// 0.3.0's key for its on-chain steps: accepted, used only in the
    /// printed Akash CLI commands (0.3.0's `duration` is accepted and unused).
    wallet: Option<String>,
}

#[derive(Debug)]
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Clone, Default)]
struct Resources {
    cpu: Option<At<f64>>,
    memory: Option<Size>,
    storage: Option<Size>,
}

#[derive(Debug, Clone, Default)]
struct Pricing {
    denom: Option<At<String>>,
    amount: Option<u64>,
}

/// Everything resolved and checked, before any file is written.
#[derive(Debug)]
struct Plan {
    provider: Provider,
    output: PathBuf,
    port: u16,
    name: String,
    image: Option<String>,
    volumes: bool,
    health_check: bool,
    tls: Option<(PathBuf, PathBuf)>,
    /// The health check (`--ca` the certificate file, to localhost) would
    /// verify this certificate.
    tls_localhost: bool,
    network: Option<String>,
    dockerfile: bool,
    force: bool,
    cpu: f64,
    memory: String,
    storage: String,
    denom: String,
    amount: u64,
    wallet: Option<String>,
}

fn fail_at(file: &Path, line: usize, what: impl std::fmt::Display) -> CliError {
    CliError::Usage(format!("{}: line {line}: {what}", file.display()))
}

/// Reads deploy.yaml; an error names the line and what is wrong.
fn read_config(path: &Path) -> Result<FileConfig, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("{}: cannot read it: {e}", path.display())))?;
    parse_config(&text).map_err(|(line, what)| fail_at(path, line, what))
}

/// The YAML parsing is saphyr's (a maintained, pure-Rust YAML 1.2 loader
/// that keeps each node's position); this only maps its tree onto our keys.
fn parse_config(text: &str) -> Result<FileConfig, (usize, String)> {
    use saphyr::{LoadableYamlNode, MarkedYaml};
    let docs = MarkedYaml::load_from_str(text).map_err(|e| {
        let m = e.marker();
        (m.line(), format!("column {}: {}", m.col() + 1, e.info()))
    })?;
    let mut cfg = FileConfig::default();
    let Some(root) = docs.first() else {
        return Ok(cfg); // an empty file
    };
    if let Some(extra) = docs.get(1) {
        return Err((line(extra), "one YAML document only".into()));
    }
    if root.data.is_null() {
        return Ok(cfg);
    }
    const KEYS: &str = "provider, name, port, image, volumes, health_check, network, dockerfile, tls, resources, pricing, wallet, duration";
    for (key, key_line, v) in mapping(root, "deploy.yaml")? {
        match key.as_str() {
            "provider" => {
                cfg.provider = Some(match string(v, "provider")?.as_str() {
                    "docker" => Provider::Docker,
                    "akash" => Provider::Akash,
                    other => {
                        return Err((
                            line(v),
                            format!("provider must be docker or akash, not '{other}'"),
                        ))
                    }
                })
            }
            "name" => cfg.name = Some(at(v, string(v, "name")?)),
            "port" => cfg.port = Some(at(v, integer(v, "port")?)),
            "image" => cfg.image = Some(string(v, "image")?),
            "volumes" => cfg.volumes = Some(boolean(v, "volumes")?),
            "health_check" => cfg.health_check = Some(boolean(v, "health_check")?),
            "network" => cfg.network = Some(at(v, string(v, "network")?)),
            "dockerfile" => cfg.dockerfile = Some(boolean(v, "dockerfile")?),
            "wallet" => cfg.wallet = Some(string(v, "wallet")?),
            "duration" => drop(string(v, "duration")?),
            "tls" => {
                let (mut cert, mut key_file) = (None, None);
                for (k, k_line, w) in mapping(v, "tls")? {
                    match k.as_str() {
                        "cert" => cert = Some(PathBuf::from(string(w, "tls.cert")?)),
                        "key" => key_file = Some(PathBuf::from(string(w, "tls.key")?)),
                        other => return Err((k_line, unknown(other, "cert, key"))),
                    }
                }
                match (cert, key_file) {
                    (Some(cert), Some(key)) => cfg.tls = Some(TlsFiles { cert, key }),
                    _ => return Err((key_line, "tls needs both cert and key".into())),
                }
            }
            "resources" => {
                for (k, k_line, w) in mapping(v, "resources")? {
                    let size =
                        |what: &str| Size::try_from(string(w, what)?).map_err(|e| (line(w), e));
                    match k.as_str() {
                        "cpu" => cfg.resources.cpu = Some(at(w, number(w, "resources.cpu")?)),
                        "memory" => cfg.resources.memory = Some(size("resources.memory")?),
                        "storage" => cfg.resources.storage = Some(size("resources.storage")?),
                        other => return Err((k_line, unknown(other, "cpu, memory, storage"))),
                    }
                }
            }
            "pricing" => {
                for (k, k_line, w) in mapping(v, "pricing")? {
                    match k.as_str() {
                        "denom" => cfg.pricing.denom = Some(at(w, string(w, "pricing.denom")?)),
                        "amount" => {
                            let n = integer(w, "pricing.amount")?;
                            let n = u64::try_from(n).map_err(|_| {
                                (line(w), "pricing.amount must be 0 or more".to_string())
                            })?;
                            cfg.pricing.amount = Some(n);
                        }
                        other => return Err((k_line, unknown(other, "denom, amount"))),
                    }
                }
            }
            other => return Err((key_line, unknown(other, KEYS))),
        }
    }
    Ok(cfg)
}

type Yaml<'a> = saphyr::MarkedYaml<'a>;

fn line(y: &Yaml<'_>) -> usize {
    y.span.start.line()
}

fn at<T>(y: &Yaml<'_>, value: T) -> At<T> {
    At {
        value,
        line: line(y),
    }
}

fn unknown(key: &str, expected: &str) -> String {
    format!("unknown key `{key}`, expected one of {expected}")
}

/// A mapping's entries: key, the key's line, value; in file order.
type Entries<'a, 'b> = Vec<(String, usize, &'b Yaml<'a>)>;

/// A mapping's entries with string keys, in file order.
fn mapping<'a, 'b>(y: &'b Yaml<'a>, what: &str) -> Result<Entries<'a, 'b>, (usize, String)> {
    let Some(map) = y.data.as_mapping() else {
        return Err((line(y), format!("{what} must be a mapping of key: value")));
    };
    map.iter()
        .map(|(k, v)| match k.data.as_str() {
            Some(s) => Ok((s.to_string(), line(k), v)),
            None => Err((line(k), format!("keys in {what} must be names"))),
        })
        .collect()
}

fn string(y: &Yaml<'_>, what: &str) -> Result<String, (usize, String)> {
    y.data
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| (line(y), format!("{what} must be a string")))
}

fn integer(y: &Yaml<'_>, what: &str) -> Result<i64, (usize, String)> {
    y.data
        .as_integer()
        .ok_or_else(|| (line(y), format!("{what} must be a whole number")))
}

fn number(y: &Yaml<'_>, what: &str) -> Result<f64, (usize, String)> {
    y.data
        .as_floating_point()
        .or_else(|| y.data.as_integer().map(|n| n as f64))
        .ok_or_else(|| (line(y), format!("{what} must be a number")))
}

fn boolean(y: &Yaml<'_>, what: &str) -> Result<bool, (usize, String)> {
    y.data
        .as_bool()
        .ok_or_else(|| (line(y), format!("{what} must be true or false")))
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

const NAME_RULE: &str = "must be 1-63 chars of a-z 0-9 - _, starting with a letter or digit";

fn plan(mut args: pico_args::Arguments) -> Result<(Plan, bool), CliError> {
    let e = arg_error(USAGE);
    let provider_arg: Option<String> = args.opt_value_from_str("--provider").map_err(&e)?;
    let output: PathBuf = args
        .opt_value_from_str("--output")
        .map_err(&e)?
        .unwrap_or_else(|| PathBuf::from("."));
    let port_arg: Option<u16> = args.opt_value_from_str("--port").map_err(&e)?;
    let name_arg: Option<String> = args.opt_value_from_str("--name").map_err(&e)?;
    let image_arg: Option<String> = args.opt_value_from_str("--image").map_err(&e)?;
    let volumes_arg = args.contains("--volumes");
    let no_health = args.contains("--no-health-check");
    let cert_arg: Option<PathBuf> = args.opt_value_from_str("--cert").map_err(&e)?;
    let key_arg: Option<PathBuf> = args.opt_value_from_str("--key").map_err(&e)?;
    let network_arg: Option<String> = args.opt_value_from_str("--network").map_err(&e)?;
    let dockerfile_arg = args.contains("--dockerfile");
    let generate_sdl = args.contains("--generate-sdl");
    let config_path: Option<PathBuf> = args.opt_value_from_str("--config").map_err(&e)?;
    let init_config = args.contains("--init-config");
    let force = args.contains("--force");
    finish(args, USAGE)?;

    let provider_arg = match provider_arg.as_deref() {
        None => None,
        Some("docker") => Some(Provider::Docker),
        Some("akash") => Some(Provider::Akash),
        Some(other) => {
            return Err(usage_error(
                USAGE,
                format!("unknown --provider '{other}': use docker or akash"),
            ))
        }
    };
    let file = match &config_path {
        Some(p) => read_config(p)?,
        None => FileConfig::default(),
    };
    let cfg_file = config_path.clone().unwrap_or_default();

    let provider = match (provider_arg, file.provider) {
        (Some(p), _) | (None, Some(p)) => p,
        (None, None) if init_config => Provider::Docker,
        (None, None) => {
            return Err(usage_error(
                USAGE,
                "--provider docker|akash is required (or provider: in --config)",
            ))
        }
    };
    let name = match (name_arg, &file.name) {
        (Some(n), _) if !valid_name(&n) => {
            return Err(usage_error(USAGE, format!("--name {NAME_RULE}")))
        }
        (Some(n), _) => n,
        (None, Some(n)) if !valid_name(&n.value) => {
            return Err(fail_at(&cfg_file, n.line, format!("name {NAME_RULE}")))
        }
        (None, Some(n)) => n.value.clone(),
        (None, None) => "workbench-relay".into(),
    };
    let port = match (port_arg, &file.port) {
        (Some(0), _) => return Err(usage_error(USAGE, "--port must be 1-65535")),
        (Some(p), _) => p,
        (None, Some(p)) => match u16::try_from(p.value) {
            Ok(n) if n > 0 => n,
            _ => return Err(fail_at(&cfg_file, p.line, "port must be 1-65535")),
        },
        (None, None) => 6667,
    };
    let network = match (network_arg, &file.network) {
        (Some(n), _) if !valid_name(&n) => {
            return Err(usage_error(USAGE, format!("--network {NAME_RULE}")))
        }
        (Some(n), _) => Some(n),
        (None, Some(n)) if !valid_name(&n.value) => {
            return Err(fail_at(&cfg_file, n.line, format!("network {NAME_RULE}")))
        }
        (None, Some(n)) => Some(n.value.clone()),
        (None, None) => None,
    };
    let tls = match (cert_arg, key_arg, file.tls) {
        (Some(c), Some(k), _) => Some((c, k)),
        (None, None, Some(t)) => Some((t.cert, t.key)),
        (None, None, None) => None,
        _ => return Err(usage_error(USAGE, "--cert and --key go together")),
    };
    // Checked now, so a deployment never starts with a file the relay
    // would refuse; paths are made absolute for the bind mounts.
    let mut tls_localhost = false;
    let tls = match tls {
        None => None,
        Some((c, k)) => {
            crate::tls::load_server(&c, &k).map_err(|e| CliError::Usage(e.to_string()))?;
            let chain = crate::tls::load_certs(&c).map_err(|e| CliError::Usage(e.to_string()))?;
            tls_localhost = crate::tls::would_verify(&chain, "localhost", &chain);
            let abs = |p: PathBuf| std::fs::canonicalize(&p).unwrap_or(p);
            Some((abs(c), abs(k)))
        }
    };
    let resources = file.resources.clone();
    let cpu = match resources.cpu.clone() {
        Some(c) if !(c.value > 0.0 && c.value <= 256.0) => {
            return Err(fail_at(
                &cfg_file,
                c.line,
                "resources.cpu must be more than 0 (units of one CPU)",
            ))
        }
        Some(c) => c.value,
        None => 0.5,
    };
    let memory = resources
        .memory
        .clone()
        .map_or_else(|| "512Mi".to_string(), |s| s.0);
    let storage = resources
        .storage
        .clone()
        .map_or_else(|| "1Gi".to_string(), |s| s.0);
    let denom = match file.pricing.denom.clone() {
        Some(d) if !(d.value == "uakt" || d.value == "uact" || d.value.starts_with("ibc/")) => {
            return Err(fail_at(
                &cfg_file,
                d.line,
                "pricing.denom must be uakt, uact or ibc/…",
            ))
        }
        Some(d) => d.value,
        None => "uakt".into(),
    };
    let amount = file.pricing.amount.unwrap_or(1000);
    let image = image_arg.or(file.image).filter(|i| !i.trim().is_empty());
    if provider == Provider::Akash && !init_config {
        if !generate_sdl {
            return Err(usage_error(
                USAGE,
                "--provider akash writes an SDL: pass --generate-sdl",
            ));
        }
        if image.is_none() {
            return Err(usage_error(
                USAGE,
                "akash providers pull the image from a registry: pass --image (or image: in --config), e.g. ghcr.io/you/workbench:0.1.0",
            ));
        }
        if tls.is_some() {
            return Err(usage_error(
                USAGE,
                "--cert/--key cannot be mounted on Akash; use the provider's ingress, or bake the files into your image",
            ));
        }
    }
    Ok((
        Plan {
            provider,
            output,
            port,
            name,
            image,
            volumes: volumes_arg || file.volumes.unwrap_or(false),
            health_check: !no_health && file.health_check.unwrap_or(true),
            tls,
            tls_localhost,
            network,
            dockerfile: dockerfile_arg || file.dockerfile.unwrap_or(false),

            force,
            cpu,
            memory,
            storage,
            denom,
            amount,
            wallet: file.wallet,
        },
        init_config,
    ))
}

/// A YAML scalar that means exactly `s`: a JSON string is a valid YAML
/// double-quoted scalar.
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A YAML flow sequence of strings.
fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// The relay's command line inside the container.
fn relay_args(p: &Plan) -> Vec<String> {
    let mut a: Vec<String> = ["relay", "--host", "0.0.0.0", "--port"]
        .map(String::from)
        .to_vec();
    a.push(p.port.to_string());
    a.push("--name".into());
    a.push(p.name.clone());
    if p.tls.is_some() {
        a.extend(["--cert", CERT_IN_CONTAINER, "--key", KEY_IN_CONTAINER].map(String::from));
    }
    a
}

fn compose(p: &Plan) -> String {
    let image = p.image.clone().unwrap_or_else(|| "workbench:latest".into());
    let mut y = String::new();
    y.push_str(&format!(
        "# Written by `workbench deploy --provider docker` (workbench {}).\n\
         # Start: docker compose up -d    Logs: docker compose logs -f    Stop: docker compose down\n",
        super::VERSION
    ));
    y.push_str("services:\n");
    y.push_str(&format!("  {}:\n", p.name));
    y.push_str(&format!("    image: {}\n", q(&image)));
    if p.dockerfile {
        y.push_str("    build:\n      context: \".\"\n      dockerfile: \"Dockerfile\"\n");
    }
    y.push_str(&format!("    container_name: {}\n", q(&p.name)));
    y.push_str(&format!("    command: {}\n", list(&relay_args(p))));
    y.push_str(&format!(
        "    ports:\n      - {}\n",
        q(&format!("{0}:{0}", p.port))
    ));
    y.push_str("    restart: unless-stopped\n");
    if p.volumes || p.tls.is_some() {
        y.push_str("    volumes:\n");
        if p.volumes {
            y.push_str(&format!(
                "      - type: volume\n        source: {}\n        target: {}\n",
                q(&format!("{}-data", p.name)),
                q(DATA_IN_CONTAINER)
            ));
        }
        if let Some((cert, key)) = &p.tls {
            for (host, inside) in [(cert, CERT_IN_CONTAINER), (key, KEY_IN_CONTAINER)] {
                y.push_str(&format!(
                    "      - type: bind\n        source: {}\n        target: {}\n        read_only: true\n",
                    q(&host.display().to_string()),
                    q(inside)
                ));
            }
        }
    }
    if let Some(net) = &p.network {
        y.push_str(&format!("    networks:\n      - {}\n", q(net)));
    }
    if let Some(test) = health_test(p) {
        y.push_str(&format!(
            "    healthcheck:\n      test: {}\n      interval: 30s\n      timeout: 10s\n      retries: 3\n      start_period: 5s\n",
            list(&test)
        ));
    }
    if p.volumes {
        y.push_str(&format!("volumes:\n  {}: {{}}\n", p.name.clone() + "-data"));
    }
    if let Some(net) = &p.network {
        y.push_str(&format!("networks:\n  {net}:\n    name: {}\n", q(net)));
    }
    y
}

/// The health check: `workbench channels` against the relay (LIST_CHANNELS
/// needs no identity). Over TLS it verifies the certificate like any client
/// (there is no skip-verify), so it is written only if that would pass.
fn health_test(p: &Plan) -> Option<Vec<String>> {
    if !p.health_check || (p.tls.is_some() && !p.tls_localhost) {
        return None;
    }
    let mut t: Vec<String> = vec!["CMD".into(), "/workbench".into(), "channels".into()];
    match p.tls {
        Some(_) => {
            t.push(format!("wss://localhost:{}", p.port));
            t.push("--ca".into());
            t.push(CERT_IN_CONTAINER.into());
        }
        None => t.push(format!("ws://127.0.0.1:{}", p.port)),
    }
    Some(t)
}

fn sdl(p: &Plan) -> String {
    let image = p.image.clone().unwrap_or_default();
    let svc = "relay";
    format!(
        "# Akash SDL written by `workbench deploy --provider akash --generate-sdl` (workbench {version}).\n\
         # workbench does not deploy it: see the Akash CLI commands it printed, or docs/deploy.md.\n\
         ---\n\
         version: \"2.0\"\n\
         services:\n  {svc}:\n    image: {image}\n    args: {args}\n    expose:\n      \
         # The provider's HTTP ingress (port 80) passes WebSocket upgrades.\n      \
         - port: {port}\n        as: 80\n        proto: tcp\n        to:\n          - global: true\n\
         profiles:\n  compute:\n    {svc}:\n      resources:\n        cpu:\n          units: {cpu}\n        \
         memory:\n          size: {memory}\n        storage:\n          size: {storage}\n  \
         placement:\n    akash:\n      pricing:\n        {svc}:\n          denom: {denom}\n          amount: {amount}\n\
         deployment:\n  {svc}:\n    akash:\n      profile: {svc}\n      count: 1\n",
        version = super::VERSION,
        image = q(&image),
        args = list(&relay_args(p)),
        port = p.port,
        cpu = p.cpu,
        memory = q(&p.memory),
        storage = q(&p.storage),
        denom = q(&p.denom),
        amount = p.amount,
    )
}

/// What `--provider akash` prints after writing the SDL: the on-chain steps
/// are the official Akash CLI's (`provider-services`), not ours.
fn akash_steps(sdl_path: &Path, wallet: Option<&str>) -> String {
    let f = sdl_path.display();
    let key = wallet.map_or_else(
        || "<key-name>".to_string(),
        |w| format!("<key-name for {w}>"),
    );
    format!(
        "workbench does not perform on-chain steps (wallet, create, status, close): they need the\n\
         Akash network and a funded wallet. Here are the official Akash CLI commands that deploy\n\
         {f} (https://akash.network/docs, `provider-services`):\n\
         \n  # wallet\n  provider-services keys add {key}\n\
         \n  # create the deployment, pick a bid, lease it, send the manifest\n  \
         provider-services tx deployment create {f} --from {key}\n  \
         provider-services query market bid list --owner <your-address> --dseq <DSEQ>\n  \
         provider-services tx market lease create --dseq <DSEQ> --provider <provider> --from {key}\n  \
         provider-services send-manifest {f} --dseq <DSEQ> --provider <provider> --from {key}\n\
         \n  # status (the relay's URI is in the lease status)\n  \
         provider-services lease-status --dseq <DSEQ> --provider <provider> --from {key}\n\
         \n  # close\n  provider-services tx deployment close --dseq <DSEQ> --from {key}\n"
    )
}

/// Writes `files` into `dir`; refuses (before writing any) if one exists
/// and `force` is off.
fn write_all(dir: &Path, files: &[(&str, String)], force: bool) -> Result<Vec<PathBuf>, CliError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::Failed(format!("cannot create {}: {e}", dir.display())))?;
    if !force {
        let existing: Vec<String> = files
            .iter()
            .map(|(n, _)| dir.join(n))
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            return Err(CliError::Failed(format!(
                "{} already exists; nothing written (pass --force to overwrite)",
                existing.join(", ")
            )));
        }
    }
    let mut written = Vec::new();
    for (name, body) in files {
        let path = dir.join(name);
        let mut open = OpenOptions::new();
        open.write(true);
        if force {
            open.create(true).truncate(true);
        } else {
            // Created here or not at all: a file that appeared since the
            // check above is still never overwritten.
            open.create_new(true);
        }
        open.open(&path)
            .and_then(|mut f| f.write_all(body.as_bytes()))
            .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}

pub fn run(args: pico_args::Arguments) -> CliResult {
    let (p, init_config) = plan(args)?;
    if init_config {
        let written = write_all(
            &p.output,
            &[("deploy.yaml", EXAMPLE_CONFIG.to_string())],
            p.force,
        )?;
        for w in written {
            println!("wrote {}", w.display());
        }
        println!("edit it, then: workbench deploy --config deploy.yaml");
        return Ok(());
    }
    match p.provider {
        Provider::Docker => {
            let mut files = vec![("docker-compose.yml", compose(&p))];
            if p.dockerfile {
                files.push(("Dockerfile", DOCKERFILE.to_string()));
            }
            for w in write_all(&p.output, &files, p.force)? {
                println!("wrote {}", w.display());
            }
            if p.tls.is_some() && p.health_check && !p.tls_localhost {
                println!(
                    "no health check: it connects to wss://localhost with the certificate file as its --ca, and this\n\
                     certificate would not verify that way (it must name localhost, and the file must hold its\n\
                     issuer, or be self-signed)"
                );
            }
            if p.dockerfile {
                println!(
                    "the Dockerfile builds from a workbench source checkout: put the compose file and it at the\n\
                     checkout's root (or set build.context to it), then: docker compose up -d --build"
                );
            } else {
                println!("then, in {}: docker compose up -d", p.output.display());
            }
            let scheme = if p.tls.is_some() { "wss" } else { "ws" };
            println!("agents connect to {scheme}://<this-host>:{}", p.port);
        }
        Provider::Akash => {
            let written = write_all(&p.output, &[("deploy.sdl.yaml", sdl(&p))], p.force)?;
            for w in &written {
                println!("wrote {}", w.display());
            }
            print!("\n{}", akash_steps(&written[0], p.wallet.as_deref()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_need_a_unit_the_providers_know() {
        assert!(Size::try_from("512Mi".to_string()).is_ok());
        assert!(Size::try_from("1Gi".to_string()).is_ok());
        assert!(Size::try_from("512".to_string()).is_ok());
        assert!(Size::try_from("512MB".to_string()).is_err());
        assert!(Size::try_from("Mi".to_string()).is_err());
        assert!(Size::try_from("0Gi".to_string()).is_err());
    }

    #[test]
    fn quoted_scalars_are_yaml() {
        assert_eq!(q("a\"b"), "\"a\\\"b\"");
        assert_eq!(list(&["x".into(), "--y".into()]), "[\"x\", \"--y\"]");
    }

    #[test]
    fn the_example_config_parses() {
        let c = parse_config(EXAMPLE_CONFIG).expect("example parses");
        assert_eq!(c.provider, Some(Provider::Docker));
        assert_eq!(c.port.map(|p| p.value), Some(6667));
    }
}
