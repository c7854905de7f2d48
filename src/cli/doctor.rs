//! `workbench doctor`: checks this machine the way a new user's first
//! session needs it (home folder, ports, LAN address, a browser, AI CLI
//! registrations, running and stale servers) and prints a concrete fix for
//! every problem. Read-only apart from a probe file in the home folder; it
//! never sends traffic beyond the loopback/own-address `/health` probes.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::setup::{target, tilde, user_home};
use super::{finish, CliError, CliResult, VERSION};
use crate::control;
use crate::project::{self, Project, ProjectName, ServerInfo};
use crate::setup::clients::{self, Client, Registration};
use crate::sys;

pub const USAGE: &str = "\
usage: workbench doctor [--json] [--cert FILE [--key FILE]]

Checks this machine and explains how to fix each problem it finds:
  home      $WORKBENCH_HOME (default ~/workbench) exists or can be created, and is writable
  ports     8070-8079 can be bound on 127.0.0.1 (bound and released at once)
  lan       a LAN IPv4 address browsers on other machines can reach
  browser   chromium, google-chrome, firefox or xdg-open on PATH (or $BROWSER)
  clients   each AI CLI's registration of `workbench mcp` (see `workbench setup`)
  servers   every .server.json: process alive, really `workbench serve <name>`,
            answering GET /health for that project; stale records are flagged
  tls       the certificate in $WORKBENCH_CERT (what servers `workbench mcp`
            starts use) and --cert FILE: when it expires (warn under 14
            days, FAIL once expired) and whether the key matches

Each line reads `ok|warn|FAIL  <check>: <detail>`, followed by `fix: ...` when
something needs doing. Exit status 1 if any check FAILs, else 0.

options:
  --json       one JSON object instead of text: {\"ok\":bool,\"checks\":[{\"status\",\"check\",\"detail\",\"fix\"}]}
  --cert FILE  also check this certificate (e.g. the relay's --cert)
  --key FILE   and that this key belongs to it

example:
  workbench doctor
";

/// The ports `workbench serve` tries first, in order.
const PORTS: std::ops::RangeInclusive<u16> = 8070..=8079;
const BROWSERS: &[&str] = &[
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
    "firefox",
    "xdg-open",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

struct Check {
    status: Status,
    name: String,
    detail: String,
    fix: Option<String>,
}

impl From<crate::setup::remote::HttpCheck> for Check {
    fn from(c: crate::setup::remote::HttpCheck) -> Check {
        match c {
            crate::setup::remote::HttpCheck::Ok(detail) => ok("mcp-http", detail),
            crate::setup::remote::HttpCheck::Warn(detail, fix) => {
                problem(Status::Warn, "mcp-http", detail, fix)
            }
            crate::setup::remote::HttpCheck::Fail(detail, fix) => {
                problem(Status::Fail, "mcp-http", detail, fix)
            }
        }
    }
}

fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
    Check {
        status: Status::Ok,
        name: name.into(),
        detail: detail.into(),
        fix: None,
    }
}

fn problem(
    status: Status,
    name: impl Into<String>,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> Check {
    Check {
        status,
        name: name.into(),
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

pub fn run(mut args: pico_args::Arguments) -> CliResult {
    let as_json = args.contains("--json");
    let cert: Option<PathBuf> = args
        .opt_value_from_str("--cert")
        .map_err(super::arg_error(USAGE))?;
    let key: Option<PathBuf> = args
        .opt_value_from_str("--key")
        .map_err(super::arg_error(USAGE))?;
    finish(args, USAGE)?;

    let home = user_home().ok();
    let mut checks = vec![check_binary()];
    checks.push(check_home(&project::home()));
    let servers = server_records(&project::home());
    checks.push(check_ports(&servers));
    checks.push(check_lan());
    checks.push(check_browser());
    match &home {
        Some(h) => checks.extend(check_clients(h)),
        None => checks.push(problem(
            Status::Warn,
            "clients",
            "HOME is not set, so the AI CLIs' configs cannot be found",
            "run doctor from a login shell (HOME set)",
        )),
    }
    checks.extend(check_servers(&servers));
    checks.push(crate::setup::remote::doctor_check().into());
    checks.push(check_start_md(&project::home()));
    checks.extend(check_tls(cert, key));

    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    if as_json {
        let list: Vec<Value> = checks
            .iter()
            .map(|c| {
                json!({"status": c.status.label().to_lowercase(), "check": c.name,
                       "detail": c.detail, "fix": c.fix})
            })
            .collect();
        println!("{}", json!({"ok": failed == 0, "checks": list}));
    } else {
        for c in &checks {
            println!("{:<5} {}: {}", c.status.label(), c.name, c.detail);
            if let Some(fix) = &c.fix {
                println!("      fix: {fix}");
            }
        }
        let warned = checks.iter().filter(|c| c.status == Status::Warn).count();
        println!(
            "\n{} ok, {warned} warn, {failed} FAIL",
            checks.len() - warned - failed
        );
    }
    if failed > 0 {
        return Err(CliError::Failed(format!(
            "{failed} check(s) failed; see the fix lines above"
        )));
    }
    Ok(())
}

/// Days left under which a certificate's expiry is a warning.
const CERT_WARN_DAYS: i64 = 14;

/// The certificates doctor was pointed at: `--cert`, and `WORKBENCH_CERT`.
fn check_tls(cert: Option<PathBuf>, key: Option<PathBuf>) -> Vec<Check> {
    let mut files = Vec::new();
    if let Some(c) = cert {
        files.push(("--cert", c, key));
    }
    if let Some(c) = std::env::var_os(crate::page::tls::CERT_ENV).filter(|v| !v.is_empty()) {
        let k = std::env::var_os(crate::page::tls::KEY_ENV).map(PathBuf::from);
        files.push(("WORKBENCH_CERT", PathBuf::from(c), k));
    }
    if files.is_empty() {
        return vec![ok(
            "tls",
            "no certificate configured (pages use http://; set WORKBENCH_CERT/WORKBENCH_KEY for https://)",
        )];
    }
    files
        .into_iter()
        .map(|(from, c, k)| check_cert(from, &c, k.as_deref()))
        .collect()
}

fn check_cert(from: &str, cert: &Path, key: Option<&Path>) -> Check {
    let name = format!("tls {from}");
    let fix_file = "give a PEM certificate chain (leaf first) and its key; see docs/tls.md";
    let chain = match crate::tls::load_certs(cert) {
        Ok(c) => c,
        Err(e) => return problem(Status::Fail, name, e.to_string(), fix_file),
    };
    let v = match crate::tls::Validity::of(&chain[0]) {
        Ok(v) => v,
        Err(e) => {
            return problem(
                Status::Fail,
                name,
                format!("{}: {e}", cert.display()),
                fix_file,
            )
        }
    };
    let now = crate::util::now_ms() / 1000;
    let days = v.days_left(now);
    let when = crate::tls::date(v.not_after);
    if let Some(key) = key {
        if let Err(e) = crate::tls::load_server(cert, key) {
            if v.not_after >= now {
                return problem(Status::Fail, name, e.to_string(), fix_file);
            }
        }
    }
    let renew = format!(
        "renew {} before it expires and restart the servers using it",
        cert.display()
    );
    if v.not_after < now {
        problem(
            Status::Fail,
            name,
            format!("{} expired on {when}", cert.display()),
            renew,
        )
    } else if days < CERT_WARN_DAYS {
        problem(
            Status::Warn,
            name,
            format!("{} expires on {when} ({days} days left)", cert.display()),
            renew,
        )
    } else {
        ok(
            name,
            format!("{} valid until {when} ({days} days left)", cert.display()),
        )
    }
}

fn check_binary() -> Check {
    let path = target()
        .map(|t| t.command)
        .unwrap_or_else(|_| "(unknown path)".into());
    ok(
        "binary",
        format!(
            "{path} (workbench {VERSION}, {} {})",
            std::env::consts::OS,
            std::env::consts::ARCH
        ),
    )
}

fn check_home(dir: &Path) -> Check {
    let name = "home";
    let shown = dir.display();
    let redirect =
        "or point WORKBENCH_HOME at a folder you own (export WORKBENCH_HOME=~/workbench)";
    match fs::metadata(dir) {
        Ok(m) if !m.is_dir() => problem(
            Status::Fail,
            name,
            format!("{shown} exists but is not a folder"),
            format!("move it aside (mv {shown} {shown}.old), {redirect}"),
        ),
        Ok(_) if !project::is_dir_writable(dir) => problem(
            Status::Fail,
            name,
            format!("{shown} is not writable by this user"),
            format!("chmod u+rwx {shown}, {redirect}"),
        ),
        Ok(_) => ok(
            name,
            format!(
                "{shown} is writable ({} project(s))",
                project::all_projects().len()
            ),
        ),
        Err(_) => {
            // Not there yet: fine if the nearest existing ancestor lets us create it.
            let mut anc = dir.parent();
            while let Some(a) = anc {
                if a.as_os_str().is_empty() || a.exists() {
                    break;
                }
                anc = a.parent();
            }
            let anc = match anc {
                Some(a) if a.as_os_str().is_empty() => Path::new("."),
                Some(a) => a,
                None => Path::new("/"),
            };
            if anc.is_dir() && project::is_dir_writable(anc) {
                ok(
                    name,
                    format!("{shown} does not exist yet; it is created on first use"),
                )
            } else if anc.is_dir() {
                problem(
                    Status::Fail,
                    name,
                    format!(
                        "{shown} does not exist and {} is not writable",
                        anc.display()
                    ),
                    format!("create it (mkdir -p {shown}) with the right owner, {redirect}"),
                )
            } else {
                problem(
                    Status::Fail,
                    name,
                    format!(
                        "{shown} cannot be created: {} is a file, not a folder",
                        anc.display()
                    ),
                    format!("move {} aside, {redirect}", anc.display()),
                )
            }
        }
    }
}

/// A project whose folder holds a server record, and what it says.
struct Record {
    name: String,
    path: PathBuf,
    status: control::Status,
}

impl Record {
    /// The record's port and pid, when it could be read.
    fn info(&self) -> Option<&ServerInfo> {
        match &self.status {
            control::Status::Live(i, _) | control::Status::Stale(Some(i), _) => Some(i),
            _ => None,
        }
    }
}

fn server_records(home: &Path) -> Vec<Record> {
    let mut out: Vec<Record> = fs::read_dir(home)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = ProjectName::parse(e.file_name().to_str()?).ok()?;
            let project = Project::new(name.clone());
            let status = control::status(&project);
            if let control::Status::Down = status {
                return None;
            }
            Some(Record {
                name: name.to_string(),
                path: project.server_file(),
                status,
            })
        })
        .collect();
    out.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    out
}

fn check_ports(servers: &[Record]) -> Check {
    let ours = |port: u16| {
        servers.iter().find_map(|r| match r.info() {
            Some(i) if i.port == port && sys::pid_alive(i.pid) => Some(r.name.clone()),
            _ => None,
        })
    };
    let mut free = Vec::new();
    let mut busy = Vec::new();
    for port in PORTS {
        // Bound and dropped at once: no connection is made, no traffic sent.
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(_) => free.push(port),
            Err(_) => busy.push(match ours(port) {
                Some(name) => format!("{port} (workbench '{name}')"),
                None => format!("{port}"),
            }),
        }
    }
    let range = format!("{}-{}", PORTS.start(), PORTS.end());
    if free.is_empty() {
        problem(
            Status::Fail,
            "ports",
            format!("all of {range} are in use: {}", busy.join(", ")),
            "stop servers you no longer need (workbench list; workbench stop <name>), \
             or serve on another port (workbench serve <name> --port 0)",
        )
    } else if busy.is_empty() {
        ok("ports", format!("{range} all free"))
    } else {
        ok(
            "ports",
            format!(
                "{} of {range} free; in use: {}",
                free.len(),
                busy.join(", ")
            ),
        )
    }
}

fn check_lan() -> Check {
    match sys::lan_ipv4() {
        Some(ip) => ok(
            "lan",
            format!("{ip}: browsers on this network open http://{ip}:<port>/"),
        ),
        None => problem(
            Status::Warn,
            "lan",
            "no LAN IPv4 address (only loopback); pages work on this machine only",
            "connect this machine to the network (cable or Wi-Fi), then run doctor again; \
             meanwhile open http://127.0.0.1:<port>/ locally",
        ),
    }
}

/// The first executable called `name` on PATH.
fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

fn check_browser() -> Check {
    if let Some(b) = std::env::var("BROWSER").ok().filter(|b| !b.is_empty()) {
        let first = b.split(':').next().unwrap_or("").to_string();
        let cmd = first.split_whitespace().next().unwrap_or("").to_string();
        if which(&cmd).is_some() || Path::new(&cmd).is_file() {
            return ok("browser", format!("$BROWSER = {b}"));
        }
    }
    let found: Vec<String> = BROWSERS
        .iter()
        .filter_map(|b| which(b).map(|p| p.display().to_string()))
        .collect();
    if found.is_empty() {
        problem(
            Status::Warn,
            "browser",
            "no browser found on PATH (looked for chromium, chromium-browser, google-chrome, firefox, xdg-open)",
            "install one (e.g. sudo apt install chromium), or open the page's URL from \
             a browser on another machine on the LAN",
        )
    } else {
        ok("browser", found.join(", "))
    }
}

fn check_clients(home: &Path) -> Vec<Check> {
    let exe = target().map(|t| t.command).unwrap_or_default();
    let mut out = Vec::new();
    let mut registered = 0;
    for c in Client::ALL {
        let name = format!("client {}", c.name());
        let path = tilde(&c.config_path(home), home);
        let setup = format!("workbench setup --client {}", c.name());
        out.push(match clients::registration(c, home) {
            Registration::Registered { command, args } => {
                registered += 1;
                if args != ["mcp"] {
                    problem(
                        Status::Warn,
                        name,
                        format!("{path} registers \"workbench\" as `{command} {}`, not `… mcp`", args.join(" ")),
                        setup,
                    )
                } else if command == exe {
                    ok(name, format!("{} runs this binary ({path})", c.label()))
                } else if Path::new(&command).is_file() {
                    ok(
                        name,
                        format!("{} runs {command} ({path}); this binary is {exe}", c.label()),
                    )
                } else {
                    problem(
                        Status::Warn,
                        name,
                        format!("{path} points at {command}, which does not exist"),
                        format!("{setup} (with the binary you want the AI to use)"),
                    )
                }
            }
            Registration::Unusable(e) => problem(
                Status::Warn,
                name,
                format!("{path} cannot be read safely: {e}"),
                format!("repair or move {path} aside (the AI CLI itself will also fail on it), then {setup}"),
            ),
            Registration::NoFile | Registration::Absent if c.detected(home) => problem(
                Status::Warn,
                name,
                format!("{} is installed but \"workbench\" is not registered in {path}", c.label()),
                setup,
            ),
            Registration::NoFile | Registration::Absent => {
                ok(name, format!("{} not found here ({path}); skipped", c.label()))
            }
        });
    }
    if registered == 0 {
        out.push(problem(
            Status::Warn,
            "clients",
            "no AI CLI is set up to start `workbench mcp`",
            "workbench setup --client claude|codex|gemini|cursor",
        ));
    }
    out
}

fn check_servers(records: &[Record]) -> Vec<Check> {
    if records.is_empty() {
        return vec![ok("servers", "none running (no .server.json files)")];
    }
    records.iter().map(check_server).collect()
}

/// Words for what `control::status` found, with the fix for each case.
fn check_server(r: &Record) -> Check {
    use control::{Stale, Status as S};
    let name = format!("server {}", r.name);
    let file = r.path.display();
    let stop = format!("workbench stop {} (or delete {file})", r.name);
    let restart = format!(
        "workbench stop {0}, then start it again (workbench serve {0}, or workbench_scaffold from the AI)",
        r.name
    );
    match &r.status {
        S::Down => ok(name, "not running"),
        S::Live(info, h) => ok(
            name,
            format!(
                "serving {} (pid {}, {} viewer(s))",
                info.url,
                info.pid,
                h.get("viewers").and_then(Value::as_u64).unwrap_or(0)
            ),
        ),
        S::Stale(None, why) => problem(Status::Warn, name, format!("stale record: {why}"), stop),
        S::Stale(Some(info), why) => match why {
            Stale::Unreadable(e) => problem(Status::Warn, name, format!("stale record: {e}"), stop),
            Stale::Dead => problem(
                Status::Warn,
                name,
                format!("stale .server.json: pid {} is not running", info.pid),
                stop,
            ),
            Stale::OtherProgram(cmd) => problem(
                Status::Warn,
                name,
                format!(
                    "stale .server.json: pid {} is now another program ({})",
                    info.pid,
                    cmd.join(" ")
                ),
                format!("delete {file}"),
            ),
            Stale::Foreign { project, pid } => problem(
                Status::Fail,
                name,
                format!(
                    "{} answers /health for project {project} (pid {pid}) instead",
                    info.connect_addr()
                ),
                restart,
            ),
            Stale::NotAnswering(e) => problem(
                Status::Fail,
                name,
                format!(
                    "pid {} is running but {}/health failed: {e}",
                    info.pid,
                    info.connect_addr()
                ),
                restart,
            ),
        },
    }
}

fn check_start_md(home: &Path) -> Check {
    let path = home.join("START.md");
    if path.is_file() {
        ok("start.md", format!("{} (the AI's guide)", path.display()))
    } else {
        problem(
            Status::Warn,
            "start.md",
            format!("{} has not been written yet", path.display()),
            "workbench setup (it writes START.md for the AI to read)",
        )
    }
}
