//! Surgical edits of one `[a.b]` table in a TOML file (Codex CLI's
//! `[mcp_servers.workbench]`), without a TOML crate: every line outside that
//! table keeps its bytes. Not a TOML parser: it tracks only what it must to
//! find statement and table boundaries (strings, multi-line strings and
//! arrays, comments), and refuses any file where that is not enough to be sure.

/// What one line is, given the scanner state at its start.
#[derive(Debug, PartialEq)]
enum Line {
    /// Blank or comment-only.
    Trivia,
    /// `[path]` or `[[path]]`.
    Header { path: Vec<String>, array: bool },
    /// `key = value`: the first line of a statement.
    Statement { key: Vec<String> },
    /// Inside a multi-line string or array that an earlier line opened.
    Continuation,
}

#[derive(Clone, Copy, Default)]
struct State {
    /// Inside `"""` (true) or `'''` (false).
    multiline: Option<bool>,
    /// Open `[` / `{` inside a value.
    depth: usize,
}

impl State {
    fn open(&self) -> bool {
        self.multiline.is_some() || self.depth > 0
    }
}

/// Scans a value (or a value's continuation) and updates `st`.
fn scan_value(s: &str, mut st: State) -> Result<State, String> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if let Some(basic) = st.multiline {
            let (delim, q) = if basic {
                (b"\"\"\"", b'"')
            } else {
                (b"'''", b'\'')
            };
            if basic && b[i] == b'\\' {
                i += 2;
                continue;
            }
            if b[i..].starts_with(delim) {
                i += 3;
                // Up to two quotes may sit right before the closing delimiter.
                while i < b.len() && b[i] == q {
                    i += 1;
                }
                st.multiline = None;
            } else {
                i += 1;
            }
            continue;
        }
        match b[i] {
            b'#' => break,
            b'"' if b[i..].starts_with(b"\"\"\"") => {
                st.multiline = Some(true);
                i += 3;
            }
            b'\'' if b[i..].starts_with(b"'''") => {
                st.multiline = Some(false);
                i += 3;
            }
            b'"' => {
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err("unterminated string".into()),
                        Some(b'\\') => i += 2,
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
                i += 1;
            }
            b'\'' => match s[i + 1..].find('\'') {
                Some(n) => i += n + 2,
                None => return Err("unterminated string".into()),
            },
            b'[' | b'{' => {
                st.depth += 1;
                i += 1;
            }
            b']' | b'}' => {
                st.depth = st
                    .depth
                    .checked_sub(1)
                    .ok_or_else(|| "unbalanced brackets".to_string())?;
                i += 1;
            }
            _ => i += 1,
        }
    }
    Ok(st)
}

/// Parses a dotted key (`a.b`, `"a".'b'`, `a . b`) and returns it with the
/// rest of the text.
fn parse_key(s: &str) -> Result<(Vec<String>, &str), String> {
    let mut parts = Vec::new();
    let mut rest = s.trim_start();
    loop {
        let (part, after) = if let Some(r) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = r.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err("unterminated quoted key".into()),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => out.push('\n'),
                        Some((_, 't')) => out.push('\t'),
                        Some((_, c)) => out.push(c),
                        None => return Err("unterminated quoted key".into()),
                    },
                    Some((_, c)) => out.push(c),
                }
            };
            (out, &r[end + 1..])
        } else if let Some(r) = rest.strip_prefix('\'') {
            let end = r.find('\'').ok_or("unterminated quoted key")?;
            (r[..end].to_string(), &r[end + 1..])
        } else {
            let n = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .unwrap_or(rest.len());
            if n == 0 {
                return Err(format!("cannot read a key at {:?}", first_chars(rest)));
            }
            (rest[..n].to_string(), &rest[n..])
        };
        parts.push(part);
        let after = after.trim_start();
        match after.strip_prefix('.') {
            Some(r) => rest = r.trim_start(),
            None => return Ok((parts, after)),
        }
    }
}

fn first_chars(s: &str) -> String {
    s.chars().take(20).collect()
}

/// Classifies one line and returns the state after it.
fn classify(line: &str, st: State) -> Result<(Line, State), String> {
    if st.open() {
        return Ok((Line::Continuation, scan_value(line, st)?));
    }
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return Ok((Line::Trivia, st));
    }
    if let Some(inner) = t.strip_prefix('[') {
        let array = inner.starts_with('[');
        let inner = if array { &inner[1..] } else { inner };
        let (path, rest) = parse_key(inner)?;
        let close = if array { "]]" } else { "]" };
        let rest = rest
            .strip_prefix(close)
            .ok_or_else(|| format!("bad table header {:?}", first_chars(t)))?
            .trim_start();
        if !(rest.is_empty() || rest.starts_with('#')) {
            return Err(format!("bad table header {:?}", first_chars(t)));
        }
        return Ok((Line::Header { path, array }, st));
    }
    let (key, rest) = parse_key(t)?;
    let value = rest
        .strip_prefix('=')
        .ok_or_else(|| format!("expected '=' after key in {:?}", first_chars(t)))?;
    Ok((Line::Statement { key }, scan_value(value, st)?))
}

/// A TOML file split into lines (each with its terminator) and classified.
struct Doc<'a> {
    lines: Vec<&'a str>,
    kinds: Vec<Line>,
}

fn parse(text: &str) -> Result<Doc<'_>, String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut kinds = Vec::with_capacity(lines.len());
    let mut st = State::default();
    for (n, line) in lines.iter().enumerate() {
        let (kind, next) = classify(line, st).map_err(|e| format!("line {}: {e}", n + 1))?;
        kinds.push(kind);
        st = next;
    }
    if st.open() {
        return Err("unterminated multi-line string or array at end of file".into());
    }
    Ok(Doc { lines, kinds })
}

/// Where the target table is: its header line and the lines of its body.
struct Located {
    header: usize,
    body_end: usize,
}

/// Finds `[path]`, refusing files where the same table is (or could be)
/// defined some other way, since appending or editing a header there would
/// produce invalid TOML or a second definition.
fn locate(doc: &Doc, path: &[&str]) -> Result<Option<Located>, String> {
    let target: Vec<String> = path.iter().map(|s| s.to_string()).collect();
    let parent = &target[..target.len() - 1];
    let mut table: Vec<String> = Vec::new();
    let mut found: Option<Located> = None;
    let dotted = target.join(".");
    for (n, kind) in doc.kinds.iter().enumerate() {
        match kind {
            Line::Header { path: p, array } => {
                if let Some(f) = found.as_mut() {
                    if f.body_end == usize::MAX {
                        f.body_end = n;
                    }
                }
                if *p == target || (p.as_slice() == parent && *array) {
                    if *array || found.is_some() {
                        return Err(format!(
                            "[{dotted}] is defined more than once or as an array of tables (line {})",
                            n + 1
                        ));
                    }
                    found = Some(Located {
                        header: n,
                        body_end: usize::MAX,
                    });
                }
                table = p.clone();
            }
            Line::Statement { key } => {
                let full: Vec<String> = table.iter().chain(key.iter()).cloned().collect();
                let inside = table.starts_with(&target);
                if (full.starts_with(&target) && !inside) || full.as_slice() == parent {
                    return Err(format!(
                        "line {}: {dotted} is written as an inline table or dotted keys; \
                         setup only edits a [{dotted}] table",
                        n + 1
                    ));
                }
            }
            _ => {}
        }
    }
    if let Some(f) = found.as_mut() {
        if f.body_end == usize::MAX {
            f.body_end = doc.lines.len();
        }
    }
    Ok(found)
}

/// The raw value text of `key = …` statements in `[path]` (continuation lines
/// joined), or `None` when the table does not exist.
pub fn read_table(text: &str, path: &[&str]) -> Result<Option<Vec<(String, String)>>, String> {
    let doc = parse(text)?;
    let Some(loc) = locate(&doc, path)? else {
        return Ok(None);
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for n in loc.header + 1..loc.body_end {
        match &doc.kinds[n] {
            Line::Statement { key } => {
                let line = doc.lines[n];
                let value = line.split_once('=').map(|x| x.1).unwrap_or("");
                out.push((key.join("."), value.to_string()));
            }
            Line::Continuation => {
                if let Some(last) = out.last_mut() {
                    last.1.push_str(doc.lines[n]);
                }
            }
            _ => {}
        }
    }
    Ok(Some(out))
}

/// Replaces the statements named in `body` inside `[path]` (keeping every
/// other statement and comment of that table), or appends the table at the
/// end of the file. `body` is `(key, rendered value)`. Returns `Ok(None)`
/// when the file would not change.
pub fn upsert_table(
    text: &str,
    path: &[&str],
    body: &[(&str, String)],
) -> Result<Option<String>, String> {
    upsert_table_without(text, path, body, &[])
}

/// `upsert_table` that also removes the table's statements named in `drop`.
pub fn upsert_table_without(
    text: &str,
    path: &[&str],
    body: &[(&str, String)],
    drop: &[&str],
) -> Result<Option<String>, String> {
    let nl = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let doc = parse(text)?;
    let ours: String = body.iter().map(|(k, v)| format!("{k} = {v}{nl}")).collect();
    let new_text = match locate(&doc, path)? {
        None => {
            let mut out = text.to_string();
            if !out.is_empty() {
                if !out.ends_with('\n') {
                    out.push_str(nl);
                }
                out.push_str(nl);
            }
            out.push_str(&format!("[{}]{nl}", path.join(".")));
            out.push_str(&ours);
            out
        }
        Some(loc) => {
            let mut out = String::with_capacity(text.len() + ours.len());
            for line in &doc.lines[..=loc.header] {
                out.push_str(line);
            }
            if !out.ends_with('\n') {
                out.push_str(nl);
            }
            out.push_str(&ours);
            let mut dropping = false;
            for n in loc.header + 1..loc.body_end {
                match &doc.kinds[n] {
                    Line::Statement { key } => {
                        dropping = key.len() == 1
                            && (body.iter().any(|(k, _)| *k == key[0])
                                || drop.contains(&key[0].as_str()));
                    }
                    Line::Continuation => {}
                    _ => dropping = false,
                }
                if !dropping {
                    out.push_str(doc.lines[n]);
                }
            }
            for line in &doc.lines[loc.body_end..] {
                out.push_str(line);
            }
            out
        }
    };
    // The result must itself be a file we can read back the same way.
    parse(&new_text).map_err(|e| format!("edit would produce invalid TOML ({e})"))?;
    Ok((new_text != text).then_some(new_text))
}

/// A TOML basic string for `s`.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Reads one TOML string value (basic or literal, single-line) from the start
/// of `s`; returns it and the rest.
fn read_string(s: &str) -> Option<(String, &str)> {
    let s = s.trim_start();
    if let Some(r) = s.strip_prefix('\'') {
        let end = r.find('\'')?;
        return Some((r[..end].to_string(), &r[end + 1..]));
    }
    let r = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = r.char_indices();
    loop {
        match chars.next()? {
            (i, '"') => return Some((out, &r[i + 1..])),
            (_, '\\') => match chars.next()?.1 {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'u' => {
                    let hex: String = (0..4).filter_map(|_| chars.next().map(|c| c.1)).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                c => out.push(c),
            },
            (_, c) => out.push(c),
        }
    }
}

fn strip_comment_tail(s: &str) -> bool {
    let t = s.trim();
    t.is_empty() || t.starts_with('#')
}

/// Parses a raw value that should be one string.
pub fn parse_string(raw: &str) -> Option<String> {
    let (s, rest) = read_string(raw)?;
    strip_comment_tail(rest).then_some(s)
}

/// Parses a raw value that should be an array of strings (possibly spread
/// over several lines, with comments and a trailing comma).
pub fn parse_string_array(raw: &str) -> Option<Vec<String>> {
    let mut rest = raw.trim_start().strip_prefix('[')?;
    let mut out = Vec::new();
    loop {
        // Skip whitespace, newlines and comments between elements.
        loop {
            rest = rest.trim_start();
            if rest.starts_with('#') {
                rest = rest.split_once('\n').map(|x| x.1).unwrap_or("");
            } else {
                break;
            }
        }
        if let Some(r) = rest.strip_prefix(']') {
            return strip_comment_tail(r).then_some(out);
        }
        let (s, r) = read_string(rest)?;
        out.push(s);
        rest = r.trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with(']') && !rest.starts_with('#') {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &[&str] = &["mcp_servers", "workbench"];

    fn body() -> Vec<(&'static str, String)> {
        vec![
            ("command", string("/bin/wb")),
            ("args", "[\"mcp\"]".to_string()),
        ]
    }

    #[test]
    fn appends_a_table_and_keeps_every_other_byte() {
        let text = "model = \"o3\"  # keep me\n\n[mcp_servers.git]\ncommand = \"uvx\"\nargs = [\n  \"mcp-server-git\", # why\n]\n";
        let out = upsert_table(text, PATH, &body()).unwrap().unwrap();
        assert_eq!(
            out,
            format!("{text}\n[mcp_servers.workbench]\ncommand = \"/bin/wb\"\nargs = [\"mcp\"]\n")
        );
        assert_eq!(upsert_table(&out, PATH, &body()).unwrap(), None);
    }

    #[test]
    fn replaces_only_our_keys_in_an_existing_table() {
        let text = "[mcp_servers.workbench]\n# note\nargs = [\n  \"old\",\n]\ncommand = '/old'\nstartup_timeout_sec = 20\n\n[mcp_servers.workbench.env]\nX = \"1\"\n[other]\na = 1\n";
        let out = upsert_table(text, PATH, &body()).unwrap().unwrap();
        assert_eq!(
            out,
            "[mcp_servers.workbench]\ncommand = \"/bin/wb\"\nargs = [\"mcp\"]\n# note\nstartup_timeout_sec = 20\n\n[mcp_servers.workbench.env]\nX = \"1\"\n[other]\na = 1\n"
        );
        assert_eq!(upsert_table(&out, PATH, &body()).unwrap(), None);
    }

    #[test]
    fn brackets_inside_strings_are_not_headers() {
        let text = "prompt = \"\"\"\n[mcp_servers.workbench]\n\"\"\"\n";
        let out = upsert_table(text, PATH, &body()).unwrap().unwrap();
        assert!(out.starts_with(text));
        assert!(
            out.ends_with("\n[mcp_servers.workbench]\ncommand = \"/bin/wb\"\nargs = [\"mcp\"]\n")
        );
        assert_eq!(read_table(text, PATH).unwrap(), None);
    }

    #[test]
    fn refuses_inline_or_dotted_definitions_and_broken_files() {
        for bad in [
            "mcp_servers = { workbench = { command = \"x\" } }\n",
            "[mcp_servers]\nworkbench = { command = \"x\" }\n",
            "[mcp_servers]\nworkbench.command = \"x\"\n",
            "mcp_servers.workbench.command = \"x\"\n",
            "[mcp_servers.workbench]\n[mcp_servers.workbench]\n",
            "a = \"unterminated\n",
            "a = [1, 2\n",
            "[bad header\n",
            "just words\n",
        ] {
            assert!(upsert_table(bad, PATH, &body()).is_err(), "{bad}");
        }
    }

    #[test]
    fn quoted_and_spaced_headers_are_recognised() {
        let text = "[ mcp_servers . \"workbench\" ]\ncommand = \"/bin/wb\"\nargs = [\"mcp\"]\n";
        let t = read_table(text, PATH).unwrap().unwrap();
        assert_eq!(parse_string(&t[0].1).as_deref(), Some("/bin/wb"));
        assert_eq!(parse_string_array(&t[1].1), Some(vec!["mcp".to_string()]));
        assert_eq!(upsert_table(text, PATH, &body()).unwrap(), None);
    }

    #[test]
    fn values_parse() {
        assert_eq!(
            parse_string(" \"a\\\\b\\\"c\" # x\n").as_deref(),
            Some("a\\b\"c")
        );
        assert_eq!(parse_string(" 'C:\\x'\n").as_deref(), Some("C:\\x"));
        assert_eq!(
            parse_string_array(" [\n 'a', # c\n \"b\",\n]\n"),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(parse_string_array(" [1]\n"), None);
        assert_eq!(string("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }

    #[test]
    fn crlf_files_stay_crlf() {
        let text = "a = 1\r\n";
        let out = upsert_table(text, PATH, &body()).unwrap().unwrap();
        assert_eq!(
            out,
            "a = 1\r\n\r\n[mcp_servers.workbench]\r\ncommand = \"/bin/wb\"\r\nargs = [\"mcp\"]\r\n"
        );
    }
}
