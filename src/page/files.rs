//! `GET /files/<path>`: the project's `files/` folder, read-only. A path is
//! served only if, after percent-decoding and resolving symlinks, it is a
//! regular file inside that folder; everything else is a 404.
//!
//! Everything here was written by a human's upload or by the AI, so none of
//! it may run script in the page's origin: the type comes from the file's
//! first bytes (`sniff`), every answer carries `X-Content-Type-Options:
//! nosniff` and `Content-Security-Policy: sandbox` (a document opened from
//! here gets an opaque origin and no scripts), and anything that is not an
//! image, PDF or plain text is a download (`Content-Disposition:
//! attachment`). See docs/files.md.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::http::{percent_decode, reply_error, Body, Reply};
use super::sniff;
use crate::project::Project;

/// The headers every `/files/` answer carries besides its type.
pub const SAFETY_HEADERS: [(&str, &str); 2] = [
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", "sandbox"),
];

/// A relative path made only of plain names: no `..`, `.`, empty, absolute
/// or backslash parts, no NUL.
pub fn clean_relative(rel: &str) -> bool {
    !rel.is_empty()
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains(['\\', '\0']))
}

/// `rel` inside `root`, symlinks resolved, still inside `root` and a
/// regular file.
pub fn confined_file(root: &Path, rel: &str) -> Option<PathBuf> {
    if !clean_relative(rel) {
        return None;
    }
    let root = root.canonicalize().ok()?;
    let real = root.join(rel).canonicalize().ok()?;
    (real.starts_with(&root) && real.is_file()).then_some(real)
}

/// The kind of the file at `path`, from its first bytes.
pub fn sniff_file(path: &Path) -> std::io::Result<sniff::Kind> {
    let mut f = std::fs::File::open(path)?;
    let mut head = vec![0u8; sniff::SNIFF_BYTES];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(sniff::sniff(&head[..n]))
}

pub fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_string()
}

pub fn serve(project: &Project, raw: &str) -> Reply {
    let not_found = || reply_error(404, "no such file under files/");
    let Some(rel) = percent_decode(raw, false) else {
        return not_found();
    };
    let Some(real) = confined_file(&project.path("files"), &rel) else {
        return not_found();
    };
    let Ok(kind) = sniff_file(&real) else {
        return not_found();
    };
    let ext = extension(&real);
    match std::fs::File::open(&real) {
        Ok(f) => {
            let len = f.metadata().ok().map(|m| m.len() as usize);
            let mut headers: Vec<(&'static str, String)> = SAFETY_HEADERS
                .iter()
                .map(|(k, v)| (*k, v.to_string()))
                .collect();
            if !sniff::inline(kind, &ext) {
                headers.push(("Content-Disposition", "attachment".to_string()));
            }
            Reply {
                status: 200,
                content_type: sniff::content_type(kind, &ext),
                body: Body::File(f, len),
                then_stop: false,
                close: false,
                headers,
            }
        }
        Err(_) => not_found(),
    }
}
