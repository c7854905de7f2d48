//! The AI CLIs `workbench setup` knows, where each keeps its user-wide MCP
//! server list, and how to read, plan and apply the `workbench` entry there.
//! Not the editing itself (`json_edit`, `toml_edit`) and not the CLI.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{json_edit, toml_edit};
use crate::util;

/// The name our server is registered under in every client.
pub const SERVER_NAME: &str = "workbench";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    Claude,
    Codex,
    Gemini,
    Cursor,
}

impl Client {
    pub const ALL: [Client; 4] = [
        Client::Claude,
        Client::Codex,
        Client::Gemini,
        Client::Cursor,
    ];

    pub fn parse(s: &str) -> Option<Client> {
        Client::ALL.into_iter().find(|c| c.name() == s)
    }

    /// The `--client` value.
    pub fn name(self) -> &'static str {
        match self {
            Client::Claude => "claude",
            Client::Codex => "codex",
            Client::Gemini => "gemini",
            Client::Cursor => "cursor",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Client::Claude => "Claude Code",
            Client::Codex => "Codex CLI",
            Client::Gemini => "Gemini CLI",
            Client::Cursor => "Cursor",
        }
    }

    /// The user-wide config file each client documents for MCP servers:
    /// Claude Code's user scope (`claude mcp add --scope user`) is the
    /// top-level `mcpServers` of `~/.claude.json`; Codex reads
    /// `$CODEX_HOME/config.toml` (default `~/.codex`); Gemini CLI
    /// `~/.gemini/settings.json`; Cursor `~/.cursor/mcp.json`.
    pub fn config_path(self, home: &Path) -> PathBuf {
        match self {
            Client::Claude => home.join(".claude.json"),
            Client::Codex => std::env::var_os("CODEX_HOME")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(".codex"))
                .join("config.toml"),
            Client::Gemini => home.join(".gemini").join("settings.json"),
            Client::Cursor => home.join(".cursor").join("mcp.json"),
        }
    }

    /// True when this client appears to be installed for this user: its
    /// config file or config folder exists.
    pub fn detected(self, home: &Path) -> bool {
        let path = self.config_path(home);
        if path.exists() {
            return true;
        }
        match self {
            Client::Claude => home.join(".claude").is_dir(),
            _ => path.parent().is_some_and(|p| p.is_dir()),
        }
    }

    fn is_toml(self) -> bool {
        self == Client::Codex
    }
}

/// What we register: the absolute path of this binary, `mcp`.
#[derive(Clone, Debug)]
pub struct Target {
    pub command: String,
    pub args: Vec<String>,
}

/// What a client's config says about us right now.
#[derive(Clone, Debug)]
pub enum Registration {
    /// No config file.
    NoFile,
    /// A config file without a `workbench` entry.
    Absent,
    Registered {
        command: String,
        args: Vec<String>,
    },
    /// The file exists but cannot be read or edited safely.
    Unusable(String),
}

pub fn read_text(path: &Path) -> Result<Option<String>, String> {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| "not UTF-8 text".to_string()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read it: {e}")),
    }
}

fn string_array(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| x.to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Reads the registration from config text.
fn registration_in(client: Client, text: &str) -> Registration {
    if client.is_toml() {
        return match toml_edit::read_table(text, &["mcp_servers", SERVER_NAME]) {
            Err(e) => Registration::Unusable(e),
            Ok(None) => Registration::Absent,
            Ok(Some(kv)) => {
                let get = |k: &str| kv.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
                Registration::Registered {
                    command: get("command")
                        .and_then(toml_edit::parse_string)
                        .unwrap_or_default(),
                    args: get("args")
                        .and_then(toml_edit::parse_string_array)
                        .unwrap_or_default(),
                }
            }
        };
    }
    if text.trim().is_empty() {
        return Registration::Absent;
    }
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Registration::Unusable(format!("not valid JSON ({e})")),
    };
    let Some(root) = v.as_object() else {
        return Registration::Unusable("the top level is not a JSON object".into());
    };
    match root.get("mcpServers") {
        None => Registration::Absent,
        Some(Value::Object(servers)) => match servers.get(SERVER_NAME) {
            None => Registration::Absent,
            Some(entry) => Registration::Registered {
                command: entry
                    .get("command")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                args: string_array(entry.get("args")),
            },
        },
        Some(_) => Registration::Unusable("\"mcpServers\" is not a JSON object".into()),
    }
}

pub fn registration(client: Client, home: &Path) -> Registration {
    match read_text(&client.config_path(home)) {
        Ok(None) => Registration::NoFile,
        Ok(Some(text)) => registration_in(client, &text),
        Err(e) => Registration::Unusable(e),
    }
}

/// A change `apply` can make, computed without touching the disk.
#[derive(Debug)]
pub enum Plan {
    AlreadyConfigured,
    Write {
        path: PathBuf,
        old: Option<String>,
        new: String,
    },
}

/// Works out the new file content for `client`, or why it cannot be edited.
pub fn plan(client: Client, home: &Path, target: &Target) -> Result<Plan, String> {
    let path = client.config_path(home);
    let old = read_text(&path)?;
    let text = old.as_deref().unwrap_or("");
    let new = if client.is_toml() {
        let args = format!(
            "[{}]",
            target
                .args
                .iter()
                .map(|a| toml_edit::string(a))
                .collect::<Vec<_>>()
                .join(", ")
        );
        toml_edit::upsert_table(
            text,
            &["mcp_servers", SERVER_NAME],
            &[
                ("command", toml_edit::string(&target.command)),
                ("args", args),
            ],
        )?
    } else {
        let mut fields = Vec::new();
        if client == Client::Claude {
            // What `claude mcp add` itself writes for a stdio server.
            fields.push(("type".to_string(), json!("stdio")));
        }
        fields.push(("command".to_string(), json!(target.command)));
        fields.push(("args".to_string(), json!(target.args)));
        let is_current = |v: &Value| {
            v.get("command").and_then(Value::as_str) == Some(target.command.as_str())
                && string_array(v.get("args")) == target.args
                && v.get("args").is_some()
                && (client != Client::Claude
                    || matches!(v.get("type").and_then(Value::as_str), None | Some("stdio")))
        };
        json_edit::upsert_server(text, SERVER_NAME, &fields, is_current)?
    };
    Ok(match new {
        None => Plan::AlreadyConfigured,
        Some(new) => Plan::Write { path, old, new },
    })
}

/// A free backup name beside `path`: `<file>.bak-<UTC timestamp>`.
fn backup_path(path: &Path) -> PathBuf {
    // 2026-11-24T04:06:44.123Z -> 20261124T040644
    let now = util::rfc3339_now();
    let stamp: String = now
        .chars()
        .take(19)
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let base = format!("{}.bak-{stamp}", path.display());
    let mut candidate = PathBuf::from(&base);
    let mut n = 2;
    while candidate.exists() {
        candidate = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    candidate
}

/// Writes a planned change: a backup of the old file first (same mode), then
/// the new content atomically onto the real file (a symlinked config stays a
/// symlink). Refuses if the file changed since it was planned, since the
/// client itself may be rewriting it. Returns the backup's path, if any.
pub fn apply(plan: &Plan) -> Result<Option<PathBuf>, String> {
    let Plan::Write { path, old, new } = plan else {
        return Ok(None);
    };
    let now = read_text(path)?;
    if now != *old {
        return Err(format!(
            "{} changed while setup was running; run setup again",
            path.display()
        ));
    }
    let real = fs::canonicalize(path).unwrap_or_else(|_| path.clone());
    let mode = fs::metadata(&real)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o600);
    let backup = match old {
        Some(old) => {
            let b = backup_path(path);
            util::write_atomic(&b, old.as_bytes(), mode)
                .map_err(|e| format!("cannot write backup {}: {e}", b.display()))?;
            Some(b)
        }
        None => {
            if let Some(dir) = real.parent() {
                fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            None
        }
    };
    util::write_atomic(&real, new.as_bytes(), mode)
        .map_err(|e| format!("cannot write {}: {e}", real.display()))?;
    Ok(backup)
}

/// A short line diff of a planned change: the changed middle, with up to two
/// lines of context, for `--dry-run`.
pub fn diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let max_suffix = a.len().min(b.len()) - prefix;
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take(max_suffix)
        .take_while(|(x, y)| x == y)
        .count();
    let ctx_start = prefix.saturating_sub(2);
    let mut out = String::new();
    for l in &a[ctx_start..prefix] {
        out.push_str(&format!("    {l}\n"));
    }
    for l in &a[prefix..a.len() - suffix] {
        out.push_str(&format!("  - {l}\n"));
    }
    for l in &b[prefix..b.len() - suffix] {
        out.push_str(&format!("  + {l}\n"));
    }
    for l in a[a.len() - suffix..].iter().take(2) {
        out.push_str(&format!("    {l}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_shows_only_the_change_with_context() {
        let d = diff("a\nb\nc\nd\n", "a\nb\nX\nc\nd\n");
        assert_eq!(d, "    a\n    b\n  + X\n    c\n    d\n");
    }

    #[test]
    fn registration_reads_each_format() {
        let j = r#"{"mcpServers":{"workbench":{"command":"/x","args":["mcp"]}}}"#;
        assert!(matches!(
            registration_in(Client::Gemini, j),
            Registration::Registered { ref command, ref args } if command == "/x" && args == &["mcp"]
        ));
        let t = "[mcp_servers.workbench]\ncommand = \"/x\"\nargs = [\"mcp\"]\n";
        assert!(matches!(
            registration_in(Client::Codex, t),
            Registration::Registered { ref command, .. } if command == "/x"
        ));
        assert!(matches!(
            registration_in(Client::Cursor, "{\"mcpServers\": 3}"),
            Registration::Unusable(_)
        ));
        assert!(matches!(
            registration_in(Client::Cursor, "{}"),
            Registration::Absent
        ));
    }
}
