//! Small shared helpers: clocks, random tokens, whole-line appends and atomic
//! file replacement, and the one-line JSON logs every long-running process
//! writes to stderr. Nothing protocol-specific lives here.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// RFC 3339 timestamp in UTC with millisecond precision, e.g. `2026-11-24T03:51:51.123Z`.
pub fn rfc3339_ms(ms: u64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let t = t
        .replace_nanosecond((ms % 1000) as u32 * 1_000_000)
        .unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

pub fn rfc3339_now() -> String {
    rfc3339_ms(now_ms())
}

/// `n` random bytes from the kernel, hex-encoded.
pub fn random_hex(n: usize) -> io::Result<String> {
    let mut buf = vec![0u8; n];
    File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(hex(&buf))
}

/// The `Sec-WebSocket-Accept` answer to a `Sec-WebSocket-Key` (RFC 6455
/// §4.2.2): base64 of SHA-1 over the key and the protocol's GUID. Both the
/// page's viewer socket and the relay's handshake use it.
pub fn ws_accept_key(key: &str) -> String {
    use base64::Engine;
    use sha1::{Digest, Sha1};
    let mut h = Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// Compares two secrets without an early exit on the first differing byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Replaces `path` atomically: write a temp file beside it, fsync, rename.
/// Readers see the old file or the new one, never a torn one, and the new
/// content survives a power cut.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    replace(path, data, mode, true)
}

/// Like `write_atomic` without the fsync: safe against a crash of this
/// process (the page cache keeps what was written), cheap enough for a file
/// rewritten on every push (state.json).
pub fn write_replace(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    replace(path, data, mode, false)
}

fn replace(path: &Path, data: &[u8], mode: u32, durable: bool) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        injected_write_failure()?;
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_data()?;
        }
        fs::rename(&tmp, path)
    })();
    // A failed write never leaves its temp file behind (a full disk stays
    // full otherwise); `remove_stale_temp_files` handles a crash mid-write.
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Removes `.NAME.PID.tmp` files left in `dir` by `write_atomic` in a
/// process that died mid-write (its pid no longer runs, or is ours).
/// Returns how many were removed.
pub fn remove_stale_temp_files(dir: &Path) -> usize {
    let me = std::process::id();
    let mut removed = 0;
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else {
            continue;
        };
        let Some(pid) = stem.rsplit('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if (pid == me || !crate::sys::pid_alive(pid)) && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// A test hook, compiled into debug builds only: while the file named by
/// `WORKBENCH_TEST_FAIL_WRITES` exists, every project write fails with the
/// errno written in it (default EIO = 5; 28 = ENOSPC). Release builds never
/// read the variable. It lets a test that cannot mount a full tmpfs still
/// prove that a failed write is answered with an error, never 200.
pub fn injected_write_failure() -> io::Result<()> {
    #[cfg(debug_assertions)]
    if let Some(flag) = std::env::var_os("WORKBENCH_TEST_FAIL_WRITES") {
        if let Ok(text) = fs::read_to_string(&flag) {
            let errno = text.trim().parse::<i32>().unwrap_or(5);
            return Err(io::Error::from_raw_os_error(errno));
        }
    }
    Ok(())
}

/// Appends one whole line with a single `write` on an O_APPEND file, so
/// concurrent appenders never interleave inside a line. A write that fails
/// part-way (a full disk) is cut back off, so no torn line is left for the
/// next append to glue onto. New files are 0600: they hold session data.
pub fn append_line(path: &Path, line: &str) -> io::Result<()> {
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    injected_write_failure()?;
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    let before = f.metadata()?.len();
    f.write_all(buf.as_bytes()).inspect_err(|_| {
        let _ = f.set_len(before);
    })
}

/// If a log file ends inside a line (a crash mid-append), ends that line, so
/// the next append starts a line of its own instead of gluing onto garbage.
pub fn seal_torn_line(path: &Path) -> io::Result<()> {
    use std::io::{Seek, SeekFrom};
    let mut f = match OpenOptions::new().read(true).append(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if f.metadata()?.len() == 0 {
        return Ok(());
    }
    f.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    f.read_exact(&mut last)?;
    if last[0] != b'\n' {
        f.write_all(b"\n")?;
    }
    Ok(())
}

/// The most a tail read scans back from the end of a file.
const TAIL_SCAN_MAX: u64 = 64 << 20;
/// Longer lines are skipped by `tail_jsonl` (a session log entry is far smaller).
const TAIL_LINE_MAX: usize = 4 << 20;

/// Reads the last `limit` lines of a JSON-lines file that parse as JSON,
/// scanning back from the end (never more than 64 MiB), line by line: a torn
/// or invalid line (bad UTF-8, not JSON) is skipped and counted in a
/// `jsonl_skipped` log line, never fatal to the rest of the file.
pub fn tail_jsonl(path: &Path, limit: usize) -> io::Result<Vec<Value>> {
    use std::io::{Seek, SeekFrom};
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let mut span: u64 = 256 << 10;
    loop {
        let span_now = span.min(TAIL_SCAN_MAX);
        let start = len.saturating_sub(span_now);
        f.seek(SeekFrom::Start(start))?;
        let mut lines = Lines::new(io::BufReader::new(&mut f), TAIL_LINE_MAX);
        if start > 0 {
            lines.skip_partial()?;
        }
        let mut all = Vec::new();
        let mut bad = 0;
        while let Some(line) = lines.next_line()? {
            match line {
                Some([]) => {}
                Some(l) => match serde_json::from_slice::<Value>(l) {
                    Ok(v) => all.push(v),
                    Err(_) => bad += 1,
                },
                None => bad += 1,
            }
        }
        if all.len() >= limit || start == 0 || span_now >= TAIL_SCAN_MAX {
            if bad > 0 {
                log_event(
                    "jsonl_skipped",
                    json!({"file": path.display().to_string(), "lines": bad}),
                );
            }
            let skip = all.len().saturating_sub(limit);
            return Ok(all.split_off(skip));
        }
        span *= 4;
    }
}

/// A line reader with a cap on line length: a longer line is consumed
/// without being buffered and reported as `Some(None)`, so garbage without
/// newlines can never make a reader hold more than `max` bytes.
pub struct Lines<R> {
    r: R,
    max: usize,
    buf: Vec<u8>,
    /// Byte offset (from where reading began) of the next line.
    pub offset: u64,
}

impl<R: io::BufRead> Lines<R> {
    pub fn new(r: R, max: usize) -> Self {
        Lines {
            r,
            max,
            buf: Vec::new(),
            offset: 0,
        }
    }

    /// Drops everything up to and including the next `\n` (reading began
    /// inside a line).
    pub fn skip_partial(&mut self) -> io::Result<()> {
        let cap = self.max;
        self.max = 0;
        let r = self.next_line().map(|_| ());
        self.max = cap;
        r
    }

    /// The next line without its `\n`: `None` at the end, `Some(None)` for
    /// a line over the cap. A last line without `\n` (torn) is returned too;
    /// callers that parse it find out whether it is whole.
    pub fn next_line(&mut self) -> io::Result<Option<Option<&[u8]>>> {
        self.buf.clear();
        let mut too_long = false;
        let mut read_any = false;
        loop {
            let chunk = self.r.fill_buf()?;
            if chunk.is_empty() {
                break;
            }
            read_any = true;
            let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            let body = &chunk[..if done { take - 1 } else { take }];
            if !too_long && self.buf.len() + body.len() <= self.max {
                self.buf.extend_from_slice(body);
            } else {
                too_long = true;
                self.buf.clear();
            }
            self.r.consume(take);
            self.offset += take as u64;
            if done {
                break;
            }
        }
        if !read_any {
            return Ok(None);
        }
        Ok(Some(if too_long { None } else { Some(&self.buf) }))
    }
}

static LOG_FIELDS: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();

/// Fields every later log line of this process carries (the relay's mode
/// and node name). Set once; later calls are ignored.
pub fn set_log_fields(fields: Map<String, Value>) {
    let _ = LOG_FIELDS.set(fields);
}

/// One structured log line on stderr: `{"ts":…,"event":…, …fields}`.
/// Never pass pushed content or message text here.
pub fn log_event(event: &str, fields: Value) {
    let mut obj = Map::new();
    obj.insert("ts".into(), json!(rfc3339_now()));
    obj.insert("event".into(), json!(event));
    if let Some(common) = LOG_FIELDS.get() {
        obj.extend(common.clone());
    }
    if let Value::Object(f) = fields {
        obj.extend(f);
    }
    // One write(2) per line: `Display` of a Value writes token by token, and
    // stderr is unbuffered (that was ~40 system calls a line). A closed
    // stderr must not take the server down.
    let mut line = Value::Object(obj).to_string();
    line.push('\n');
    let _ = io::stderr().write_all(line.as_bytes());
}

/// Escapes text for safe inclusion in HTML element content or attributes.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Cuts `s` to at most `max` bytes without splitting a character; true
/// when something was cut.
pub fn truncate_utf8(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let cut = (0..=max)
        .rev()
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(0);
    s.truncate(cut);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_utf8_never_splits_a_character() {
        let mut s = "aé€".to_string(); // 1 + 2 + 3 bytes
        assert!(!truncate_utf8(&mut s, 6));
        assert!(truncate_utf8(&mut s, 5));
        assert_eq!(s, "aé");
        assert!(truncate_utf8(&mut s, 2));
        assert_eq!(s, "a");
        assert!(truncate_utf8(&mut s, 0));
        assert_eq!(s, "");
    }

    #[test]
    fn rfc3339_has_millis_and_utc() {
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn html_escape_neutralises_markup() {
        assert_eq!(
            html_escape("<b a=\"x\">&'"),
            "&lt;b a=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn lines_cap_their_length_and_return_a_torn_last_line() {
        let data = b"ab\n0123456789\n\ncd";
        let mut l = Lines::new(&data[..], 5);
        assert_eq!(l.next_line().unwrap(), Some(Some(&b"ab"[..])));
        assert_eq!(l.next_line().unwrap(), Some(None), "over the cap");
        assert_eq!(l.offset, 14);
        assert_eq!(l.next_line().unwrap(), Some(Some(&b""[..])));
        assert_eq!(l.next_line().unwrap(), Some(Some(&b"cd"[..])));
        assert_eq!(l.next_line().unwrap(), None);
        let mut l = Lines::new(&b"partial\nwhole\n"[..], 100);
        l.skip_partial().unwrap();
        assert_eq!(l.next_line().unwrap(), Some(Some(&b"whole"[..])));
    }

    #[test]
    fn tail_jsonl_skips_bad_lines_one_by_one() {
        let p = std::env::temp_dir().join(format!("wb-util-tail-{}", std::process::id()));
        let mut f = File::create(&p).unwrap();
        f.write_all(b"{\"a\":1}\n\xff\xfe\n{\"a\":2}\nnot json\n{\"a\":3}\n{\"a\":")
            .unwrap();
        let got = tail_jsonl(&p, 10).unwrap();
        assert_eq!(got, vec![json!({"a": 1}), json!({"a": 2}), json!({"a": 3})]);
        assert_eq!(
            tail_jsonl(&p, 2).unwrap(),
            vec![json!({"a": 2}), json!({"a": 3})]
        );
        fs::remove_file(&p).unwrap();
    }

    #[test]
    fn a_failed_atomic_write_leaves_no_temp_file() {
        let dir = std::env::temp_dir().join(format!("wb-util-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        // The target is a directory: the rename fails after the temp is written.
        let target = dir.join("sub");
        fs::create_dir_all(target.join("x")).unwrap();
        assert!(write_atomic(&target, b"data", 0o600).is_err());
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("sub")]);
        // A stale temp file of a dead process is removed; another file is not.
        fs::write(dir.join(".state.json.999999999.tmp"), b"x").unwrap();
        fs::write(dir.join("keep.tmp"), b"x").unwrap();
        assert_eq!(remove_stale_temp_files(&dir), 1);
        assert!(dir.join("keep.tmp").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
