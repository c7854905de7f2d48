//! `workbench setup --remote URL`: registers a `workbench mcp --http` server
//! on another machine with each AI CLI, in the HTTP form that CLI documents,
//! and the `doctor` check of a local `--http` server.
//!
//! The bearer token never goes into a config file: every entry names the
//! environment variable that holds it, in that CLI's own syntax (Codex's
//! `bearer_token_env_var`, `${VAR}` in Claude Code and Gemini CLI headers,
//! `${env:VAR}` in Cursor's). The edit machinery (merge, backup, dry run)
//! is `clients.rs`, `json_edit.rs` and `toml_edit.rs`.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::clients::{self, Client, Plan, SERVER_NAME};
use super::{json_edit, toml_edit};
use crate::mcp::http;

/// The default variable the token is read from on the AI's machine.
pub const TOKEN_ENV: &str = "WORKBENCH_MCP_TOKEN";

/// What to register: the server's URL and the variable holding its token.
#[derive(Clone, Debug)]
pub struct Remote {
    pub url: String,
    pub token_env: String,
}

/// Checks a `--remote` URL: http(s), a host, and a path (normally `/mcp`).
pub fn parse_url(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("--remote {url:?}: give an http:// or https:// URL"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() || authority.contains('@') || url.chars().any(char::is_whitespace) {
        return Err(format!("--remote {url:?}: give scheme://host[:port]/mcp"));
    }
    if path.is_empty() {
        return Err(format!(
            "--remote {url:?} has no path: the endpoint is {url}{}",
            http::ENDPOINT
        ));
    }
    Ok(url.to_string())
}

pub fn valid_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The fields each CLI documents for a Streamable HTTP server, and the keys
/// of a local (stdio) entry that must go.
fn json_entry(client: Client, r: &Remote) -> (Vec<(String, Value)>, &'static [&'static str]) {
    let var = &r.token_env;
    match client {
        // `claude mcp add --transport http NAME URL --header …` writes this;
        // Claude Code expands ${VAR} in url and headers.
        Client::Claude => (
            vec![
                ("type".into(), json!("http")),
                ("url".into(), json!(r.url)),
                (
                    "headers".into(),
                    json!({"Authorization": format!("Bearer ${{{var}}}")}),
                ),
            ],
            &["command", "args", "env", "cwd"],
        ),
        // Gemini CLI: `httpUrl` is Streamable HTTP (`url` would be SSE);
        // settings values expand $VAR / ${VAR}.
        Client::Gemini => (
            vec![
                ("httpUrl".into(), json!(r.url)),
                (
                    "headers".into(),
                    json!({"Authorization": format!("Bearer ${{{var}}}")}),
                ),
            ],
            &["command", "args", "env", "cwd", "url"],
        ),
        // Cursor: `url` plus `headers`, interpolating ${env:VAR}.
        Client::Cursor => (
            vec![
                ("url".into(), json!(r.url)),
                (
                    "headers".into(),
                    json!({"Authorization": format!("Bearer ${{env:{var}}}")}),
                ),
            ],
            &["command", "args", "env", "type"],
        ),
        Client::Codex => unreachable!("Codex is TOML"),
    }
}

/// Plans the remote entry for `client`, like `clients::plan` does the local one.
pub fn plan(client: Client, home: &Path, r: &Remote) -> Result<Plan, String> {
    let path = client.config_path(home);
    let old = clients::read_text(&path)?;
    let text = old.as_deref().unwrap_or("");
    let new = if client == Client::Codex {
        // Codex: `url` is Streamable HTTP; `bearer_token_env_var` names the
        // variable it reads the token from.
        toml_edit::upsert_table_without(
            text,
            &["mcp_servers", SERVER_NAME],
            &[
                ("url", toml_edit::string(&r.url)),
                ("bearer_token_env_var", toml_edit::string(&r.token_env)),
            ],
            &["command", "args", "env", "cwd"],
        )?
    } else {
        let (fields, drop) = json_entry(client, r);
        let is_current = |v: &Value| {
            fields.iter().all(|(k, want)| v.get(k) == Some(want))
                && drop.iter().all(|k| v.get(*k).is_none())
        };
        json_edit::upsert_server_without(text, SERVER_NAME, &fields, drop, is_current)?
    };
    Ok(match new {
        None => Plan::AlreadyConfigured,
        Some(new) => Plan::Write { path, old, new },
    })
}

/// What a probe of an `--http` server found.
#[derive(Debug, PartialEq)]
pub enum Probe {
    /// It answered as workbench and took the token.
    Accepted,
    /// It answered 401: the token is wrong.
    WrongToken,
    /// Something answered, but not as `workbench mcp --http`.
    NotOurs(u16),
    Unreachable(String),
}

/// Asks the server without opening a session: a request with the token and
/// no `Mcp-Session-Id` gets 400 naming the header from us (after the token
/// check), so nothing is created and the token is proven.
pub fn probe(url: &str, token: &str) -> Probe {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or(url.strip_prefix("https://").unwrap_or(url));
    let (addr, path) = match rest.split_once('/') {
        Some((a, p)) => (a.to_string(), format!("/{p}")),
        None => (rest.to_string(), "/".to_string()),
    };
    let addr = if addr.contains(':') && !addr.ends_with(']') {
        addr
    } else {
        format!("{addr}:{}", if url.starts_with("https") { 443 } else { 80 })
    };
    let body = br#"{"jsonrpc":"2.0","id":0,"method":"ping"}"#;
    match crate::httpc::request(
        &addr,
        "POST",
        &path,
        Some(token),
        Some(body),
        Duration::from_secs(5),
    ) {
        Err(e) => Probe::Unreachable(e.to_string()),
        Ok(r) if r.status == 401 => Probe::WrongToken,
        Ok(r) if r.status == 400 && String::from_utf8_lossy(&r.body).contains("Mcp-Session-Id") => {
            Probe::Accepted
        }
        Ok(r) => Probe::NotOurs(r.status),
    }
}

/// `doctor`'s view of a local `workbench mcp --http`.
pub enum HttpCheck {
    Ok(String),
    Warn(String, String),
    Fail(String, String),
}

pub fn doctor_check() -> HttpCheck {
    use std::os::unix::fs::PermissionsExt;
    let start =
        "start it with `workbench mcp --http --detach` or under systemd (docs/remote-mcp.md)";
    if let Ok(m) = std::fs::metadata(http::token_path()) {
        if m.permissions().mode() & 0o077 != 0 {
            return HttpCheck::Warn(
                format!(
                    "{} is readable by other users",
                    http::token_path().display()
                ),
                format!("chmod 600 {}", http::token_path().display()),
            );
        }
    }
    let text = match std::fs::read_to_string(http::state_path()) {
        Ok(t) => t,
        Err(_) => {
            return HttpCheck::Ok(format!(
                "not running (optional: serves MCP to AI CLIs on other machines; {start})"
            ))
        }
    };
    let state: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let (Some(pid), Some(url)) = (state["pid"].as_u64(), state["url"].as_str()) else {
        return HttpCheck::Warn(
            format!("{} is not a valid record", http::state_path().display()),
            format!("remove it, then {start}"),
        );
    };
    if !crate::sys::pid_alive(pid as u32) {
        return HttpCheck::Warn(
            format!(
                "the server recorded in {} (pid {pid}) is not running",
                http::state_path().display()
            ),
            start.to_string(),
        );
    }
    let token = match std::fs::read_to_string(http::token_path()) {
        Ok(t) => t.trim().to_string(),
        Err(e) => {
            return HttpCheck::Fail(
                format!("cannot read the token: {e}"),
                "run `workbench mcp --http --show-token`".into(),
            )
        }
    };
    // Loopback when it listens on every interface.
    let local = url
        .replace("://0.0.0.0:", "://127.0.0.1:")
        .replace("://[::]:", "://[::1]:");
    match probe(&local, &token) {
        Probe::Accepted => HttpCheck::Ok(format!(
            "serving MCP over HTTP at {url} (pid {pid}); the token works"
        )),
        Probe::WrongToken => HttpCheck::Fail(
            format!(
                "the server at {url} refuses the token in {}",
                http::token_path().display()
            ),
            "restart it so it reads the current token".into(),
        ),
        Probe::NotOurs(s) => HttpCheck::Fail(
            format!("{url} answered HTTP {s}, not as workbench mcp --http"),
            start.to_string(),
        ),
        Probe::Unreachable(e) => {
            HttpCheck::Fail(format!("{url} does not answer: {e}"), start.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote() -> Remote {
        Remote {
            url: "http://bench.local:8765/mcp".into(),
            token_env: TOKEN_ENV.into(),
        }
    }

    fn planned(client: Client, existing: &str) -> String {
        // A folder per call: tests run in parallel in one process, and two
        // of them planning for one client must not share (and delete) it.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "wb-remote-{}-{}-{n}",
            client.name(),
            std::process::id()
        ));
        let path = client.config_path(&dir);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, existing).unwrap();
        let out = match plan(client, &dir, &remote()).unwrap() {
            Plan::Write { new, .. } => new,
            Plan::AlreadyConfigured => existing.to_string(),
        };
        let _ = std::fs::remove_dir_all(&dir);
        out
    }

    #[test]
    fn urls_need_scheme_host_and_path() {
        assert!(parse_url("http://bench:8765/mcp").is_ok());
        assert!(parse_url("https://bench.example/mcp").is_ok());
        assert!(parse_url("bench:8765/mcp").is_err());
        assert!(parse_url("http://bench:8765").unwrap_err().contains("/mcp"));
        assert!(parse_url("http://u:p@bench/mcp").is_err());
        assert!(parse_url("http:///mcp").is_err());
    }

    #[test]
    fn each_client_gets_its_documented_http_form_without_the_token() {
        let local = r#"{"mcpServers": {"workbench": {"type": "stdio", "command": "/bin/wb", "args": ["mcp"], "timeout": 5}}}"#;
        let claude: Value = serde_json::from_str(&planned(Client::Claude, local)).unwrap();
        assert_eq!(
            claude["mcpServers"]["workbench"],
            json!({"type": "http", "url": "http://bench.local:8765/mcp",
                   "headers": {"Authorization": "Bearer ${WORKBENCH_MCP_TOKEN}"}, "timeout": 5})
        );
        let gemini: Value = serde_json::from_str(&planned(Client::Gemini, local)).unwrap();
        assert_eq!(
            gemini["mcpServers"]["workbench"]["httpUrl"],
            "http://bench.local:8765/mcp"
        );
        assert!(gemini["mcpServers"]["workbench"].get("command").is_none());
        let cursor: Value = serde_json::from_str(&planned(Client::Cursor, local)).unwrap();
        assert_eq!(
            cursor["mcpServers"]["workbench"]["headers"]["Authorization"],
            "Bearer ${env:WORKBENCH_MCP_TOKEN}"
        );
        let codex = planned(
            Client::Codex,
            "model = \"x\"\n\n[mcp_servers.workbench]\ncommand = \"/bin/wb\"\nargs = [\"mcp\"]\nstartup_timeout_sec = 20\n",
        );
        assert!(
            codex.contains("url = \"http://bench.local:8765/mcp\""),
            "{codex}"
        );
        assert!(codex.contains("bearer_token_env_var = \"WORKBENCH_MCP_TOKEN\""));
        assert!(codex.contains("startup_timeout_sec = 20") && codex.contains("model = \"x\""));
        assert!(!codex.contains("command"), "{codex}");
    }

    #[test]
    fn planning_twice_changes_nothing() {
        for c in Client::ALL {
            let once = planned(c, "");
            assert_eq!(planned(c, &once), once, "{}", c.name());
        }
    }
}
