//! A project: one folder under `$WORKBENCH_HOME`, its validated name, the
//! files in it, and the `.server.json` that tells other processes where its
//! server is. This module owns the disk layout; servers and tools go through it.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::util;

/// A project name that is safe as a single path component:
/// `[A-Za-z0-9][A-Za-z0-9_-]{0,63}`. It can only be built through `parse`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProjectName(String);

impl ProjectName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(ProjectName(s.to_string()))
        } else {
            Err(format!(
                "invalid project name {s:?}: use 1-64 characters of letters, digits, '_' and '-', starting with a letter or digit"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `$WORKBENCH_HOME`, or `~/workbench`.
pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("WORKBENCH_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let base = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("workbench")
}

/// The page template every new project starts from; embedded so the binary
/// never depends on its working directory.
pub const SCAFFOLD_HTML: &str = include_str!("../static/scaffold.html");

#[derive(Clone, Debug)]
pub struct Project {
    pub name: ProjectName,
    pub dir: PathBuf,
}

impl Project {
    pub fn new(name: ProjectName) -> Self {
        let dir = home().join(name.as_str());
        Project { name, dir }
    }

    pub fn exists(&self) -> bool {
        self.dir.join("index.html").is_file()
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Creates the folder and its starting files if missing; an existing
    /// project keeps every file it has. Returns true when it was created.
    pub fn create(&self, title: Option<&str>, description: Option<&str>) -> io::Result<bool> {
        fs::create_dir_all(self.dir.join("files"))?;
        set_mode(&self.dir, 0o700)?;
        let index = self.path("index.html");
        let created = !index.exists();
        if created {
            let title = title
                .filter(|t| !t.trim().is_empty())
                .unwrap_or(self.name.as_str());
            let html = SCAFFOLD_HTML
                .replace("{{TITLE}}", &util::html_escape(title))
                .replace(
                    "{{DESCRIPTION}}",
                    &util::html_escape(description.unwrap_or("")),
                )
                .replace("{{PROJECT}}", &util::html_escape(self.name.as_str()));
            util::write_atomic(&index, html.as_bytes(), 0o644)?;
        }
        let md = self.path("session.md");
        if !md.exists() {
            let title = title.unwrap_or(self.name.as_str());
            util::append_line(&md, &format!("# {title} — session log\n"))?;
        }
        for f in ["session.jsonl", "events.jsonl", "cost-log.jsonl"] {
            let p = self.path(f);
            if !p.exists() {
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(p)?;
            }
        }
        Ok(created)
    }

    /// Makes the folder and `files/` 0700 and every file holding session
    /// data 0600 (projects made by older versions were 0755/0644), and
    /// removes temp files a crashed write left behind. Problems are logged:
    /// the server still starts.
    pub fn secure_files(&self) {
        for dir in [self.dir.clone(), self.path("files")] {
            if let Err(e) = set_mode(&dir, 0o700) {
                util::log_event(
                    "chmod_failed",
                    serde_json::json!({"path": dir.display().to_string(), "error": e.to_string()}),
                );
            }
        }
        for entry in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !holds_session_data(name) || !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            if let Err(e) = set_mode(&entry.path(), 0o600) {
                util::log_event(
                    "chmod_failed",
                    serde_json::json!({"path": name, "error": e.to_string()}),
                );
            }
        }
        let removed = util::remove_stale_temp_files(&self.dir);
        if removed > 0 {
            util::log_event(
                "stale_temp_files_removed",
                serde_json::json!({"count": removed}),
            );
        }
    }

    /// The page title, read back from index.html's `<title>`.
    pub fn title(&self) -> Option<String> {
        let html = fs::read_to_string(self.path("index.html")).ok()?;
        let start = html.find("<title>")? + "<title>".len();
        let end = html[start..].find("</title>")? + start;
        Some(
            html[start..end]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&amp;", "&"),
        )
    }

    pub fn server_file(&self) -> PathBuf {
        self.path(".server.json")
    }
}

/// Every project folder under the home, sorted by name.
pub fn all_projects() -> Vec<Project> {
    let mut out: Vec<Project> = fs::read_dir(home())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = ProjectName::parse(e.file_name().to_str()?).ok()?;
            let p = Project::new(name);
            p.exists().then_some(p)
        })
        .collect();
    out.sort_unstable_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
    out
}

/// `.server.json`: where a live project server is and the token that lets
/// its owner write to it. Mode 0600: the token is the only write credential.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ServerInfo {
    pub pid: u32,
    pub port: u16,
    pub host: String,
    pub url: String,
    pub started: String,
    pub token: String,
    pub version: String,
}

impl ServerInfo {
    /// `Ok(None)` when there is no file; `Err` when it exists but is not a
    /// valid record (truncated, hand-edited): callers treat that as stale.
    pub fn load(project: &Project) -> Result<Option<ServerInfo>, String> {
        let path = project.server_file();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{} is not a valid server record: {e}", path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    pub fn save(&self, project: &Project) -> io::Result<()> {
        let text = serde_json::to_string_pretty(self).expect("ServerInfo serialises");
        util::write_atomic(&project.server_file(), text.as_bytes(), 0o600)
    }

    /// Where a local client should connect: loopback when the server listens
    /// on every interface, else the address it is bound to.
    pub fn connect_addr(&self) -> String {
        let host = match self.host.as_str() {
            "0.0.0.0" | "" => "127.0.0.1",
            "::" | "[::]" => "[::1]",
            h => h,
        };
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Removes `.server.json` only if it still describes the given pid, so a
/// stopping server never deletes the record of a newer one.
pub fn remove_server_file_if_pid(project: &Project, pid: u32) {
    if let Ok(Some(info)) = ServerInfo::load(project) {
        if info.pid != pid {
            return;
        }
    }
    let _ = fs::remove_file(project.server_file());
}

/// Files of a project folder that hold session data (owner-only, 0600):
/// what the page showed, what the human sent, the logs and the token.
pub fn holds_session_data(name: &str) -> bool {
    name == "state.json"
        || name.starts_with("state.json.corrupt-")
        || name.starts_with("session.")
        || (name.starts_with("events") && name.ends_with(".jsonl"))
        || name == "cost-log.jsonl"
        || name == "server.log"
        || name == ".server.json"
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::symlink_metadata(path)?;
    // Never follow a link out of the folder; never touch what isn't ours.
    if meta.file_type().is_symlink() || meta.permissions().mode() & 0o777 == mode {
        return Ok(());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

pub fn is_dir_writable(dir: &Path) -> bool {
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    let ok = fs::write(&probe, b"").is_ok();
    let _ = fs::remove_file(&probe);
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        for good in ["a", "bench1", "PSU_bring-up", &"x".repeat(64)] {
            assert!(ProjectName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "../x",
            "-a",
            "_a",
            "a b",
            "a/b",
            ".",
            "..",
            &"x".repeat(65),
            "é",
        ] {
            assert!(ProjectName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn session_files_are_recognised() {
        for f in [
            "state.json",
            "session.md",
            "session.jsonl",
            "events.jsonl",
            "events-000003.jsonl",
            "cost-log.jsonl",
            "server.log",
            ".server.json",
            "state.json.corrupt-17",
        ] {
            assert!(holds_session_data(f), "{f}");
        }
        for f in ["index.html", "files", ".serve.lock", "notes.txt"] {
            assert!(!holds_session_data(f), "{f}");
        }
    }

    #[test]
    fn connect_addr_prefers_loopback_for_wildcard() {
        let mut i = ServerInfo {
            pid: 1,
            port: 8070,
            host: "0.0.0.0".into(),
            url: String::new(),
            started: String::new(),
            token: String::new(),
            version: String::new(),
        };
        assert_eq!(i.connect_addr(), "127.0.0.1:8070");
        i.host = "10.0.0.5".into();
        assert_eq!(i.connect_addr(), "10.0.0.5:8070");
    }
}
