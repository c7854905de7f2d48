//! The file tools (issue 16, docs/files.md): `workbench_read_file`,
//! `workbench_write_file`, and the image content blocks that
//! `workbench_wait`, `workbench_events` and `workbench_snapshot` add next to
//! their JSON. They work on the project folder directly (the MCP server and
//! the page server run as the same user on the same machine).
//!
//! A tool puts extra content blocks under `CONTENT_KEY` in its JSON result;
//! `tools::to_call_result` moves them into `content`.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::page::{files, sniff};
use crate::project::Project;

/// Where a result's extra content blocks wait for `to_call_result`.
pub const CONTENT_KEY: &str = "_content";

/// Defaults; `WORKBENCH_IMAGE_MAX_BYTES`, `WORKBENCH_IMAGES_MAX_BYTES` and
/// `WORKBENCH_FILES_QUOTA` override them.
pub const IMAGE_MAX_BYTES: u64 = 6 << 20;
pub const IMAGES_MAX_BYTES: u64 = 6 << 20;
pub const FILES_QUOTA: u64 = 512 << 20;
/// The most `workbench_read_file` returns in one call.
pub const READ_MAX_BYTES: u64 = 4 << 20;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

pub fn image_max() -> u64 {
    env_u64("WORKBENCH_IMAGE_MAX_BYTES", IMAGE_MAX_BYTES)
}

pub fn images_max() -> u64 {
    env_u64("WORKBENCH_IMAGES_MAX_BYTES", IMAGES_MAX_BYTES)
}

pub fn files_quota() -> u64 {
    env_u64("WORKBENCH_FILES_QUOTA", FILES_QUOTA)
}

fn obj(props: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
}

pub const READ_DESCRIPTION: &str = "Read a file from the project folder, e.g. a photo the human attached (the `path` from its event, like files/uploads/…). Images (PNG, JPEG, GIF, WebP up to the image limit) come back as image content you can look at, UTF-8 text as text, anything else as a base64 resource. At most 4 MiB per call: use offset/length to read more. Paths are relative to the project folder; '..', absolute paths and symlinks leading out are refused.";

pub const WRITE_DESCRIPTION: &str = "Write a file into the project's files/ folder (atomically) so the page can show or offer it: the result's `url` (like /files/scope-annotated.png) goes straight into a template, e.g. <img src=\"/files/scope-annotated.png\"> or <a href=\"/files/readings.csv\" download>. Give `text` for text or `base64` for binary. An existing file is replaced (the result says so). Refused with the numbers when files/ would pass the project's quota.";

pub fn read_input_schema(project: Value) -> Value {
    obj(
        json!({
            "project": project,
            "path": {"type": "string", "description": "Relative to the project folder, e.g. files/uploads/20261201-scope.png or notes.txt."},
            "offset": {"type": "integer", "minimum": 0, "description": "First byte to read (default 0)."},
            "length": {"type": "integer", "minimum": 1, "description": "How many bytes (default and max 4 MiB)."}
        }),
        &["project", "path"],
    )
}

pub fn read_output_schema() -> Value {
    json!({"type": "object", "properties": {"path": {"type": "string"}, "size": {"type": "integer"}, "offset": {"type": "integer"},
        "length": {"type": "integer"}, "mime": {"type": "string"}, "returned_as": {"type": "string"}, "eof": {"type": "boolean"}}})
}

pub fn write_input_schema(project: Value) -> Value {
    obj(
        json!({
            "project": project,
            "path": {"type": "string", "description": "Relative to files/, e.g. scope-annotated.png or reports/run1.csv (a leading 'files/' is accepted)."},
            "text": {"type": "string", "description": "The content as text (UTF-8)."},
            "base64": {"type": "string", "description": "The content as standard base64 (binary files)."}
        }),
        &["project", "path"],
    )
}

pub fn write_output_schema() -> Value {
    json!({"type": "object", "properties": {"path": {"type": "string"}, "url": {"type": "string"}, "bytes": {"type": "integer"},
        "mime": {"type": "string"}, "replaced": {"type": "boolean"}, "quota": {"type": "object"}}})
}

type Existing = fn(&str) -> Result<Project, String>;

fn parse(tool: &str, v: Value) -> Result<FileArgs, String> {
    let v = if v.is_null() { json!({}) } else { v };
    serde_json::from_value(v)
        .map_err(|e| format!("bad arguments for {tool}: {e}; see its inputSchema in tools/list"))
}

pub fn read_file(tool: &str, args: Value, existing: Existing) -> Result<Value, String> {
    let a = parse(tool, args)?;
    read(&existing(&a.project)?, &a)
}

pub fn write_file(tool: &str, args: Value, existing: Existing) -> Result<Value, String> {
    let a = parse(tool, args)?;
    write(&existing(&a.project)?, &a)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileArgs {
    project: String,
    path: String,
    offset: Option<u64>,
    length: Option<u64>,
    text: Option<String>,
    base64: Option<String>,
}

/// `rel` inside `root` with symlinks resolved, or why not.
fn confine(root: &Path, rel: &str, what: &str) -> Result<PathBuf, String> {
    if rel.is_empty() {
        return Err("path is empty".into());
    }
    let p = Path::new(rel);
    if p.is_absolute() {
        return Err(format!(
            "absolute paths are refused: give a path relative to the {what} (e.g. files/photo.png)"
        ));
    }
    if p.components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        || rel.contains('\0')
    {
        return Err(format!(
            "'..' is refused: the path must stay inside the {what}"
        ));
    }
    let root = root
        .canonicalize()
        .map_err(|e| format!("cannot open the {what}: {e}"))?;
    let real = root
        .join(p)
        .canonicalize()
        .map_err(|_| format!("no such file: {rel}"))?;
    if !real.starts_with(&root) {
        return Err(format!(
            "{rel} is a symbolic link that leads outside the {what}; refused"
        ));
    }
    Ok(real)
}

fn read(p: &Project, a: &FileArgs) -> Result<Value, String> {
    if a.text.is_some() || a.base64.is_some() {
        return Err(
            "workbench_read_file takes no text/base64 (that is workbench_write_file)".into(),
        );
    }
    let real = confine(&p.dir, &a.path, "project folder")?;
    if !real.is_file() {
        return Err(format!("{} is not a regular file", a.path));
    }
    let mut f = fs::File::open(&real).map_err(|e| format!("cannot open {}: {e}", a.path))?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let kind = files::sniff_file(&real).map_err(|e| format!("cannot read {}: {e}", a.path))?;
    let ext = files::extension(&real);
    let mime = sniff::mime(kind, &ext);
    let offset = a.offset.unwrap_or(0);
    if offset > size {
        return Err(format!(
            "offset {offset} is past the end of the file ({size} bytes)"
        ));
    }
    let whole_image =
        kind.is_raster_image() && offset == 0 && a.length.is_none() && size <= image_max();
    let length = if whole_image {
        size
    } else {
        a.length
            .unwrap_or(READ_MAX_BYTES)
            .clamp(1, READ_MAX_BYTES)
            .min(size - offset)
    };
    f.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(length as usize);
    (&mut f)
        .take(length)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read {}: {e}", a.path))?;
    let eof = offset + buf.len() as u64 >= size;
    let mut out = json!({"path": a.path, "size": size, "offset": offset, "length": buf.len(), "mime": mime, "eof": eof});
    let block = if whole_image {
        out["returned_as"] = json!("image");
        json!({"type": "image", "data": STANDARD.encode(&buf), "mimeType": mime})
    } else if kind == sniff::Kind::Text
        || kind == sniff::Kind::Html
        || kind == sniff::Kind::Svg
        || kind == sniff::Kind::Xml
    {
        // A chunk may cut a character: back up to the last whole one.
        let text = match std::str::from_utf8(&buf) {
            Ok(t) => t.to_string(),
            Err(e) if e.error_len().is_none() => {
                let ok = e.valid_up_to();
                out["length"] = json!(ok);
                out["eof"] = json!(false);
                String::from_utf8_lossy(&buf[..ok]).into_owned()
            }
            Err(_) => String::from_utf8_lossy(&buf).into_owned(),
        };
        out["returned_as"] = json!("text");
        json!({"type": "text", "text": text})
    } else {
        out["returned_as"] = json!("resource");
        json!({"type": "resource", "resource": {
            "uri": format!("file://{}", real.display()),
            "mimeType": mime,
            "blob": STANDARD.encode(&buf)}})
    };
    out[CONTENT_KEY] = json!([block]);
    Ok(out)
}

/// Bytes of regular files under `dir` (bounded walk; symlinks not followed).
fn used_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![(dir.to_path_buf(), 0)];
    let mut seen = 0;
    while let Some((d, depth)) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            seen += 1;
            if seen > 200_000 {
                return total;
            }
            let Ok(m) = e.metadata() else { continue };
            let ft = m.file_type();
            if ft.is_file() {
                total += m.len();
            } else if ft.is_dir() && depth < 16 {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    total
}

fn write(p: &Project, a: &FileArgs) -> Result<Value, String> {
    if a.offset.is_some() || a.length.is_some() {
        return Err("workbench_write_file takes no offset/length".into());
    }
    let data = match (&a.text, &a.base64) {
        (Some(t), None) => t.clone().into_bytes(),
        (None, Some(b)) => STANDARD
            .decode(b.trim())
            .map_err(|e| format!("'base64' is not valid standard base64: {e}"))?,
        _ => return Err("give exactly one of 'text' or 'base64'".into()),
    };
    let rel = a.path.strip_prefix("files/").unwrap_or(&a.path);
    let root = p.path("files");
    fs::create_dir_all(&root).map_err(|e| format!("cannot create files/: {e}"))?;
    // The checks of `confine`, on a file that may not exist yet.
    let rp = Path::new(rel);
    if rp.is_absolute() {
        return Err("absolute paths are refused: give a path relative to files/".into());
    }
    if !files::clean_relative(rel) {
        return Err("the path must be plain names under files/ (no '..', no empty parts)".into());
    }
    let root_real = root.canonicalize().map_err(|e| e.to_string())?;
    let target = root_real.join(rp);
    let parent = target.parent().unwrap_or(&root_real).to_path_buf();
    // Refuse before creating anything if an existing part leads out.
    let mut probe = root_real.clone();
    for c in rp
        .parent()
        .map(|q| q.components().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        probe.push(c);
        if let Ok(real) = probe.canonicalize() {
            if !real.starts_with(&root_real) {
                return Err(format!(
                    "{rel} goes through a symbolic link that leads outside files/; refused"
                ));
            }
        }
    }
    fs::create_dir_all(&parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let parent_real = parent.canonicalize().map_err(|e| e.to_string())?;
    if !parent_real.starts_with(&root_real) {
        return Err(format!("{rel} leads outside files/; refused"));
    }
    let old = fs::symlink_metadata(&target).ok();
    if let Some(m) = &old {
        if m.file_type().is_symlink() {
            return Err(format!("files/{rel} is a symbolic link; refused"));
        }
        if m.is_dir() {
            return Err(format!("files/{rel} is a folder"));
        }
    }
    let quota = files_quota();
    let used = used_bytes(&root_real);
    let after = used - old.as_ref().map(|m| m.len()).unwrap_or(0).min(used) + data.len() as u64;
    if after > quota {
        return Err(format!(
            "refused: files/ holds {used} bytes of its {quota}-byte quota; writing {} bytes{} would make it {after}. Remove files or raise WORKBENCH_FILES_QUOTA.",
            data.len(),
            if old.is_some() { " (replacing the old file)" } else { "" }
        ));
    }
    crate::util::write_atomic(&target, &data, 0o644)
        .map_err(|e| format!("cannot write files/{rel}: {e}"))?;
    let kind = sniff::sniff(&data[..data.len().min(sniff::SNIFF_BYTES)]);
    let ext = files::extension(&target);
    let url: String = rel
        .split('/')
        .map(|c| {
            c.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/");
    Ok(json!({
        "path": format!("files/{rel}"),
        "url": format!("/files/{url}"),
        "bytes": data.len(),
        "mime": sniff::mime(kind, &ext),
        "replaced": old.is_some(),
        "quota": {"used": after, "limit": quota},
    }))
}

/// Adds an `image` block for each image attachment in `events` (objects
/// with `path`, `mime`, `sha256` under files/), in order, while each is
/// within the per-image limit and all stay within the per-result total;
/// marks each file object `returned_as` "image" or "reference". The bytes
/// sent are checked against the event's sha256.
pub fn attach_images(p: &Project, result: &mut Value) {
    let mut blocks = Vec::new();
    let mut budget = images_max();
    let per = image_max();
    if let Some(events) = result.get_mut("events").and_then(Value::as_array_mut) {
        for ev in events.iter_mut() {
            if let Some(data) = ev.get_mut("data") {
                visit(data, 0, &mut |file| {
                    let sent = image_block(p, file, per, budget);
                    let how = match sent {
                        Some((block, n)) => {
                            budget -= n;
                            blocks.push(block);
                            "image"
                        }
                        None => "reference",
                    };
                    file.insert("returned_as".into(), json!(how));
                });
            }
        }
    }
    if !blocks.is_empty() {
        result[CONTENT_KEY] = Value::Array(blocks);
    }
}

fn visit(v: &mut Value, depth: usize, f: &mut dyn FnMut(&mut Map<String, Value>)) {
    if depth > 8 {
        return;
    }
    match v {
        Value::Object(m) => {
            let is_file = ["path", "mime", "sha256"]
                .iter()
                .all(|k| m.get(*k).is_some_and(Value::is_string));
            if is_file {
                f(m);
            } else {
                for x in m.values_mut() {
                    visit(x, depth + 1, f);
                }
            }
        }
        Value::Array(a) => {
            for x in a.iter_mut() {
                visit(x, depth + 1, f);
            }
        }
        _ => {}
    }
}

fn image_block(
    p: &Project,
    file: &Map<String, Value>,
    per: u64,
    budget: u64,
) -> Option<(Value, u64)> {
    let mime = file.get("mime")?.as_str()?;
    if !["image/png", "image/jpeg", "image/gif", "image/webp"].contains(&mime) {
        return None;
    }
    let rel = file.get("path")?.as_str()?;
    if !rel.starts_with("files/") {
        return None;
    }
    let real = confine(&p.dir, rel, "project folder").ok()?;
    let size = fs::metadata(&real).ok()?.len();
    if size > per || size > budget {
        return None;
    }
    let bytes = fs::read(&real).ok()?;
    let kind = sniff::sniff(&bytes);
    let sha = crate::relay::identity::sha256_hex(&bytes);
    if !kind.is_raster_image() || Some(sha.as_str()) != file.get("sha256")?.as_str() {
        return None;
    }
    let block = json!({"type": "image", "data": STANDARD.encode(&bytes), "mimeType": sniff::mime(kind, "")});
    Some((block, bytes.len() as u64))
}

/// A `data:image/png;base64,…` URL from the page, as an image block and
/// its size; None if it is not a PNG.
pub fn png_block(data_url: &str) -> Option<(Value, Value)> {
    let b64 = data_url.strip_prefix("data:image/png;base64,")?;
    let bytes = STANDARD.decode(b64).ok()?;
    if sniff::sniff(&bytes) != sniff::Kind::Png || bytes.len() < 24 {
        return None;
    }
    let w = u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    let h = u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
    Some((
        json!({"type": "image", "data": b64, "mimeType": "image/png"}),
        json!({"width": w, "height": h, "bytes": bytes.len()}),
    ))
}
