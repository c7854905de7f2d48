//! A project: one folder under `$WORKBENCH_HOME`, its validated name, the
//! files in it, and the `.server.json` that tells other processes where its
//! server is. This module owns the disk layout; servers and tools go through it.

use std::fmt;
use std::fs;
use std::io;
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
                fs::OpenOptions::new().create(true).append(true).open(p)?;
            }
        }
        Ok(created)
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
    out.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
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
