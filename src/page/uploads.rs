//! `POST /api/upload?name=N[&event=E][&via=V]`: one file from the page,
//! the raw bytes as the body (docs/files.md).
//!
//! Everything the headers can decide is decided before a body byte is read:
//! the page key and Origin (route table), the per-client rate, the length
//! against the per-file limit and against what the project may still hold
//! (bytes and file count, reserved at once so parallel uploads cannot
//! overshoot). The body then streams to a temp file in `files/uploads/`
//! (never whole in memory) within a deadline, hashed as it goes; its type
//! is sniffed from its first bytes. Only a complete body is fsynced and
//! linked under its final, collision-free name (the folder fsynced too),
//! then the event `{files:[{name,size,mime,sha256,path,url}]}` is stored,
//! and only then the 200. An upload cut off halfway leaves no file and no
//! event: its temp file is removed, or (after a crash) swept at start-up.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::http::{reply_error, Head, Reply};
use super::sniff::{self, Kind};
use super::Shared;
use crate::ratelimit::{self, KeyedLimiter, Rate};
use crate::util;

/// What the page may upload (`serve --upload-*`, `WORKBENCH_UPLOAD_*`).
#[derive(Debug, Clone)]
pub struct UploadLimits {
    /// One file, in bytes.
    pub max_file_bytes: u64,
    /// Everything in `files/uploads/`, in bytes.
    pub max_total_bytes: u64,
    /// Files in `files/uploads/`.
    pub max_files: u64,
    /// Uploads per second per client address (IPv6 per /64); bursts of 4×.
    pub per_client_per_sec: f64,
}

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits {
            max_file_bytes: 32 << 20,
            max_total_bytes: 1 << 30,
            max_files: 2000,
            per_client_per_sec: 2.0,
        }
    }
}

#[derive(Default)]
struct Usage {
    bytes: u64,
    files: u64,
}

pub struct Uploads {
    dir: PathBuf,
    pub limits: UploadLimits,
    /// Bytes and files stored plus those reserved by uploads in flight.
    usage: Mutex<Usage>,
    limiter: Mutex<KeyedLimiter<IpAddr>>,
}

/// The extra time a large body gets beyond `--body-timeout`: one second
/// per 256 KiB (a phone on weak Wi-Fi).
const SLOW_BYTES_PER_SEC: u64 = 256 << 10;

impl Uploads {
    /// Creates `files/uploads/`, removes temp files of uploads cut off by
    /// a crash, and counts what is stored.
    pub fn open(files_dir: &Path, limits: UploadLimits) -> std::io::Result<Uploads> {
        let dir = files_dir.join("uploads");
        fs::create_dir_all(&dir)?;
        let swept = util::remove_stale_temp_files(&dir);
        if swept > 0 {
            util::log_event("uploads_swept", json!({"temp_files": swept}));
        }
        let mut usage = Usage::default();
        for e in fs::read_dir(&dir)?.flatten() {
            if let Ok(m) = e.metadata() {
                if m.is_file() && !e.file_name().to_string_lossy().starts_with('.') {
                    usage.bytes += m.len();
                    usage.files += 1;
                }
            }
        }
        let burst = (limits.per_client_per_sec * 4.0).max(1.0);
        let rate = Rate::new(burst, limits.per_client_per_sec.max(0.01));
        Ok(Uploads {
            dir,
            limits,
            usage: Mutex::new(usage),
            limiter: Mutex::new(KeyedLimiter::new(rate, 4096, Duration::from_secs(600))),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Usage> {
        self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves room for `len` bytes and one file, or says why not.
    fn reserve(&self, len: u64) -> Result<(), Reply> {
        let l = &self.limits;
        if len > l.max_file_bytes {
            return Err(reply_error(
                413,
                format!(
                    "the file is {len} bytes; the limit is {} bytes ({}) per file",
                    l.max_file_bytes,
                    human(l.max_file_bytes)
                ),
            ));
        }
        let mut u = self.lock();
        if u.files + 1 > l.max_files {
            return Err(reply_error(
                507,
                format!(
                    "this project already holds {} uploaded files, its limit; ask the AI to make room",
                    u.files
                ),
            ));
        }
        if u.bytes + len > l.max_total_bytes {
            return Err(reply_error(
                507,
                format!(
                    "the project's uploads hold {} of {} bytes ({} of {}); this file ({len} bytes) does not fit",
                    u.bytes,
                    l.max_total_bytes,
                    human(u.bytes),
                    human(l.max_total_bytes)
                ),
            ));
        }
        u.bytes += len;
        u.files += 1;
        Ok(())
    }

    fn release(&self, len: u64) {
        let mut u = self.lock();
        u.bytes = u.bytes.saturating_sub(len);
        u.files = u.files.saturating_sub(1);
    }

    fn admit_client(&self, ip: IpAddr) -> bool {
        self.limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_take(&ratelimit::client_key(ip), Instant::now())
    }
}

fn human(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

/// Longest stored name, in bytes (file systems allow 255; room is left for
/// the unique prefix).
const MAX_NAME_BYTES: usize = 120;

/// A file name a client sent, made safe: its last path part only, letters
/// and digits of any script kept, other characters (controls, separators,
/// quotes, `<>`) replaced by `_`, no leading dots, at most
/// `MAX_NAME_BYTES` bytes with the extension kept; never empty.
pub fn sanitize_name(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let mut out = String::new();
    for c in base.chars() {
        let ok = c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ' ' | '+' | '(' | ')');
        let c = if ok { c } else { '_' };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    let out = out.trim().trim_start_matches('.').to_string();
    let (stem, ext) = match out.rfind('.') {
        Some(i) if i > 0 && out.len() - i <= 11 => (&out[..i], &out[i..]),
        _ => (out.as_str(), ""),
    };
    let mut stem = stem.to_string();
    let room = MAX_NAME_BYTES.saturating_sub(ext.len());
    if stem.len() > room {
        let cut = (0..=room)
            .rev()
            .find(|i| stem.is_char_boundary(*i))
            .unwrap_or(0);
        stem.truncate(cut);
    }
    let stem = stem.trim();
    if stem.is_empty() {
        format!("file{ext}")
    } else {
        format!("{stem}{ext}")
    }
}

/// The handler for `POST /api/upload` (an `Action::Stream` route).
pub fn handle(shared: &Shared, head: &Head, req: &mut tiny_http::Request) -> Reply {
    let closing = |mut r: Reply| {
        r.close = true;
        r
    };
    let up = &shared.uploads;
    if let Some(ip) = head.remote {
        if !up.admit_client(ip) {
            return closing(reply_error(
                429,
                "too many uploads from this address; wait a few seconds and try again",
            ));
        }
    }
    let name = match head.query.get("name").map(|n| n.trim()) {
        Some(n) if !n.is_empty() && n.len() <= 1024 => sanitize_name(n),
        _ => {
            return closing(reply_error(
                400,
                "'name' (the file's name, 1-1024 bytes) is required in the query",
            ))
        }
    };
    let event = match head.query.get("event").map(String::as_str) {
        None => Some("attachment"),
        Some("") => None,
        Some(e) if super::events::valid_name(e) => Some(e),
        Some(_) => return closing(reply_error(400, "'event' is not a valid event name")),
    };
    if let (Some(ip), Some(_)) = (head.remote, event) {
        let refused = match shared.events.admit(ip) {
            Ok(()) => None,
            Err(super::events::Limited::Client) => {
                Some("too many events from this viewer; wait a second and attach again")
            }
            Err(super::events::Limited::Total) => {
                Some("too many events from all viewers together; wait a second and attach again")
            }
        };
        if let Some(msg) = refused {
            return closing(reply_error(429, msg));
        }
    }
    let via = head.query.get("via").map(|v| {
        v.chars()
            .filter(char::is_ascii_alphanumeric)
            .take(16)
            .collect::<String>()
    });
    let Some(len) = head.content_length() else {
        return closing(reply_error(411, "send the file with a Content-Length"));
    };
    let len = len as u64;
    if let Err(r) = up.reserve(len) {
        return closing(r);
    }
    let stored = store(shared, head, req, &name, len);
    let mut meta = match stored {
        Ok(m) => m,
        Err(r) => {
            up.release(len);
            return r;
        }
    };
    let stored_name = meta
        .as_object_mut()
        .and_then(|m| m.remove("stored"))
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    let mut data = json!({"files": [meta.clone()]});
    if let Some(v) = via {
        data["via"] = json!(v);
    }
    let viewer = head
        .query
        .get("viewer")
        .filter(|v| v.len() <= 32)
        .cloned()
        .unwrap_or_default();
    let seq = match event {
        None => Value::Null,
        Some(ev) => {
            let from = json!({"viewer": viewer, "addr": head.remote.map(|ip| ip.to_string())});
            match shared.disk.append_event(ev, data, from) {
                Ok(seq) => json!(seq),
                Err(e) => {
                    // The file is stored but the AI was not told: undo it.
                    let _ = fs::remove_file(up.dir.join(&stored_name));
                    up.release(len);
                    return reply_error(
                        super::disk::error_status(&e),
                        format!("the file was not kept: the event could not be stored ({e})"),
                    );
                }
            }
        }
    };
    if let Some(ev) = event {
        shared.hub.log(
            "info",
            &format!(
                "{ev}: {} ({}, {})",
                meta["name"].as_str().unwrap_or(""),
                meta["mime"].as_str().unwrap_or(""),
                human(len)
            ),
            "page",
        );
        let _ = shared.disk.sync();
    }
    util::log_event(
        "upload",
        json!({"path": meta["path"], "bytes": len, "mime": meta["mime"], "seq": seq}),
    );
    Reply::json(200, json!({"ok": true, "file": meta, "seq": seq}))
}

/// Streams the body to a temp file, checks it, fsyncs and links it.
fn store(
    shared: &Shared,
    head: &Head,
    req: &mut tiny_http::Request,
    name: &str,
    len: u64,
) -> Result<Value, Reply> {
    let dir = &shared.uploads.dir;
    let fail = |status: u16, msg: String| {
        let mut r = reply_error(status, msg);
        r.close = true;
        r
    };
    let rand = util::random_hex(6).map_err(|e| fail(500, format!("no randomness: {e}")))?;
    let tmp = dir.join(format!(".upload-{rand}.{}.tmp", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(|e| {
            fail(
                super::disk::error_status(&e),
                format!("cannot create the file: {e}"),
            )
        })?;
    let result = (|| {
        let deadline = shared.limits.body_timeout + Duration::from_secs(len / SLOW_BYTES_PER_SEC);
        req.set_read_deadline(Some(Instant::now() + deadline));
        let r = copy_body(req, &mut file, len, head, deadline);
        req.set_read_deadline(None);
        let (sha, kind) = r?;
        util::injected_write_failure()
            .and_then(|_| file.sync_all())
            .map_err(|e| {
                fail(
                    super::disk::error_status(&e),
                    format!("cannot save the file: {e}"),
                )
            })?;
        Ok((sha, kind))
    })();
    let (sha, kind) = match result {
        Ok(v) => v,
        Err(r) => {
            let _ = fs::remove_file(&tmp);
            return Err(r);
        }
    };
    drop(file);
    let stamp = util::rfc3339_now()
        .chars()
        .filter(char::is_ascii_digit)
        .take(14)
        .collect::<String>();
    let stored = format!("{stamp}-{rand}-{name}");
    let fin = dir.join(&stored);
    // A hard link never replaces an existing file (rename would).
    let linked = fs::hard_link(&tmp, &fin)
        .and_then(|_| fs::remove_file(&tmp))
        .and_then(|_| File::open(dir)?.sync_all());
    if let Err(e) = linked {
        let _ = fs::remove_file(&tmp);
        let _ = fs::remove_file(&fin);
        return Err(reply_error(
            super::disk::error_status(&e),
            format!("cannot save the file: {e}"),
        ));
    }
    let ext = Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("");
    let url_name: String = stored
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    Ok(json!({
        "name": name,
        "size": len,
        "mime": sniff::mime(kind, ext),
        "sha256": sha,
        "path": format!("files/uploads/{stored}"),
        "url": format!("/files/uploads/{url_name}"),
        "stored": stored,
    }))
}

/// Copies exactly `len` body bytes to `out`, hashing them; the first bytes
/// decide the kind, and a client that claimed an image type for something
/// else is refused before the rest is read.
fn copy_body(
    req: &mut tiny_http::Request,
    out: &mut File,
    len: u64,
    head: &Head,
    deadline: Duration,
) -> Result<(String, Kind), Reply> {
    let fail = |status: u16, msg: String| {
        let mut r = reply_error(status, msg);
        r.close = true;
        r
    };
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 << 10];
    let mut first: Vec<u8> = Vec::new();
    let mut kind = None;
    let mut got: u64 = 0;
    let reader = req.as_reader();
    while got < len {
        let want = buf.len().min((len - got) as usize);
        let n = match reader.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(fail(
                    400,
                    format!("the upload was cut off after {got} of {len} bytes; nothing was kept"),
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock => {
                return Err(fail(
                    408,
                    format!(
                        "the upload did not arrive within {} s ({got} of {len} bytes); nothing was kept",
                        deadline.as_secs()
                    ),
                ))
            }
            Err(e) => return Err(fail(400, format!("could not read the upload: {e}"))),
        };
        let chunk = &buf[..n];
        if kind.is_none() {
            first.extend_from_slice(&chunk[..chunk.len().min(sniff::SNIFF_BYTES - first.len())]);
            if first.len() >= sniff::SNIFF_BYTES || got + n as u64 >= len {
                let k = sniff::sniff(&first);
                check_claim(head, k)?;
                kind = Some(k);
            }
        }
        hasher.update(chunk);
        out.write_all(chunk).map_err(|e| {
            fail(
                super::disk::error_status(&e),
                format!("cannot save the file: {e}"),
            )
        })?;
        got += n as u64;
    }
    let kind = match kind {
        Some(k) => k,
        None => {
            let k = sniff::sniff(&first);
            check_claim(head, k)?;
            k
        }
    };
    let sha = crate::util::hex(hasher.finish().as_ref());
    Ok((sha, kind))
}

/// A client that says "image" must send an image (of any raster kind, or
/// SVG); the stored type is always the sniffed one.
fn check_claim(head: &Head, kind: Kind) -> Result<(), Reply> {
    let claimed = head
        .header("Content-Type")
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if claimed.starts_with("image/") && !kind.is_image() {
        let mut r = reply_error(
            415,
            format!(
                "refused: the file claims to be {claimed} but its content is {}",
                sniff::mime(kind, "")
            ),
        );
        r.close = true;
        return Err(r);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned() {
        assert_eq!(sanitize_name("scope.png"), "scope.png");
        assert_eq!(sanitize_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_name("C:\\Users\\x\\a b.jpg"), "a b.jpg");
        assert_eq!(sanitize_name(".hidden"), "hidden");
        assert_eq!(sanitize_name("<script>.html"), "_script_.html");
        assert_eq!(sanitize_name("Ünïcødé 測試.png"), "Ünïcødé 測試.png");
        assert_eq!(sanitize_name("a\u{0}b\nc.txt"), "a_b_c.txt");
        assert_eq!(sanitize_name("..."), "file");
        assert_eq!(sanitize_name("/"), "file");
        let long = format!("{}.png", "測".repeat(200));
        let s = sanitize_name(&long);
        assert!(s.len() <= MAX_NAME_BYTES && s.ends_with(".png"), "{s}");
    }
}
