//! `GET /files/<path>`: the project's `files/` folder, read-only. A path is
//! served only if, after percent-decoding and resolving symlinks, it is a
//! regular file inside that folder; everything else is a 404.

use std::path::Path;

use super::http::{percent_decode, reply_error, Body, Reply};
use crate::project::Project;

fn content_type(path: &Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .as_deref()
    {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("svg") => "image/svg+xml",
        Some("pdf") => "application/pdf",
        Some("txt" | "md" | "log" | "csv") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

pub fn serve(project: &Project, raw: &str) -> Reply {
    let not_found = || reply_error(404, "no such file under files/");
    let Some(rel) = percent_decode(raw, false) else {
        return not_found();
    };
    // Refuse anything but plain names: no `..`, no absolute parts, no NUL.
    let clean = rel
        .split('/')
        .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains(['\\', '\0']));
    if !clean {
        return not_found();
    }
    let root = match project.path("files").canonicalize() {
        Ok(r) => r,
        Err(_) => return not_found(),
    };
    // Resolve symlinks and check the result is still inside files/.
    let Ok(real) = root.join(&rel).canonicalize() else {
        return not_found();
    };
    if !real.starts_with(&root) || !real.is_file() {
        return not_found();
    }
    match std::fs::File::open(&real) {
        Ok(f) => {
            let len = f.metadata().ok().map(|m| m.len() as usize);
            Reply {
                status: 200,
                content_type: content_type(&real),
                body: Body::File(f, len),
                then_stop: false,
                close: false,
            }
        }
        Err(_) => not_found(),
    }
}
