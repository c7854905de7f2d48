//! Surgical edits of a JSON config's `mcpServers.<name>` entry: the rest of
//! the file keeps its bytes, key order and indentation. Not a JSON parser:
//! serde_json validates the text first, and this only locates spans in text
//! already known to be valid.

use serde_json::{Map, Value};

/// A key/value member of an object, as byte offsets into the text.
struct Member {
    key: String,
    key_start: usize,
    value_end: usize,
    value_start: usize,
}

/// An object's braces and members, as byte offsets into the text.
struct ObjectSpan {
    open: usize,
    close: usize,
    members: Vec<Member>,
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// End (exclusive) of the string starting at `i` (which is a `"`).
fn string_end(b: &[u8], i: usize) -> Result<usize, String> {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Ok(j + 1),
            _ => j += 1,
        }
    }
    Err("unterminated string".into())
}

/// End (exclusive) of the value starting at `i`.
fn value_end(b: &[u8], i: usize) -> Result<usize, String> {
    match b.get(i) {
        Some(b'"') => string_end(b, i),
        Some(b'{') | Some(b'[') => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            Err("unbalanced brackets".into())
        }
        Some(_) => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            Ok(j)
        }
        None => Err("unexpected end of text".into()),
    }
}

fn scan_object(text: &str, open: usize) -> Result<ObjectSpan, String> {
    let b = text.as_bytes();
    if b.get(open) != Some(&b'{') {
        return Err("expected an object".into());
    }
    let mut members = Vec::new();
    let mut i = skip_ws(b, open + 1);
    if b.get(i) == Some(&b'}') {
        return Ok(ObjectSpan {
            open,
            close: i,
            members,
        });
    }
    loop {
        let key_start = i;
        let key_end = string_end(b, i)?;
        let key: String =
            serde_json::from_str(&text[key_start..key_end]).map_err(|e| format!("bad key: {e}"))?;
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return Err("expected ':'".into());
        }
        let value_start = skip_ws(b, i + 1);
        let end = value_end(b, value_start)?;
        members.push(Member {
            key,
            key_start,
            value_start,
            value_end: end,
        });
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => {
                return Ok(ObjectSpan {
                    open,
                    close: i,
                    members,
                })
            }
            _ => return Err("expected ',' or '}'".into()),
        }
    }
}

/// The leading whitespace of the line that contains byte `pos`.
fn line_indent(text: &str, pos: usize) -> &str {
    let start = text[..pos].rfind('\n').map(|n| n + 1).unwrap_or(0);
    let rest = &text[start..];
    let n = rest.len() - rest.trim_start_matches([' ', '\t']).len();
    &rest[..n]
}

/// How members of `obj` are laid out: `Some(indent)` when each sits on its
/// own line, `None` when the object is written on one line.
fn member_layout(text: &str, obj: &ObjectSpan, unit: &str) -> Option<String> {
    match obj.members.first() {
        Some(m) => {
            let gap = &text[obj.open + 1..m.key_start];
            gap.rfind('\n').map(|n| gap[n + 1..].to_string())
        }
        None => Some(format!("{}{unit}", line_indent(text, obj.open))),
    }
}

/// Pretty-prints `v` with `unit` per level, every line after the first
/// prefixed by `indent` so it nests under a member at that indentation.
fn render(v: &Value, indent: Option<&str>, unit: &str, nl: &str) -> String {
    match indent {
        None => serde_json::to_string(v).expect("JSON values serialise"),
        Some(indent) => {
            let mut buf = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(unit.as_bytes());
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
            serde::Serialize::serialize(v, &mut ser).expect("JSON values serialise");
            let s = String::from_utf8(buf).expect("serde_json writes UTF-8");
            s.replace('\n', &format!("{nl}{indent}"))
        }
    }
}

/// Renders an object whose first keys come in the given order (serde_json's
/// map sorts keys; we want `type, command, args` first, as the docs show).
fn render_entry(fields: &[(String, Value)], indent: Option<&str>, unit: &str, nl: &str) -> String {
    if fields.is_empty() {
        return "{}".into();
    }
    let inner = indent.map(|i| format!("{i}{unit}"));
    let parts: Vec<String> = fields
        .iter()
        .map(|(k, v)| {
            let key = serde_json::to_string(k).expect("strings serialise");
            format!("{key}: {}", render(v, inner.as_deref(), unit, nl))
        })
        .collect();
    match (indent, inner) {
        (Some(indent), Some(inner)) => format!(
            "{{{nl}{inner}{}{nl}{indent}}}",
            parts.join(&format!(",{nl}{inner}"))
        ),
        _ => format!("{{{}}}", parts.join(", ")),
    }
}

fn find_unique<'a>(obj: &'a ObjectSpan, key: &str) -> Result<Option<&'a Member>, String> {
    let mut found = obj.members.iter().filter(|m| m.key == key);
    let first = found.next();
    if found.next().is_some() {
        return Err(format!(
            "key \"{key}\" appears more than once; remove the duplicate by hand"
        ));
    }
    Ok(first)
}

/// Inserts `"key": {fields}` as the last member of `obj`.
fn insert_member(
    text: &str,
    obj: &ObjectSpan,
    key: &str,
    fields: &[(String, Value)],
    unit: &str,
    nl: &str,
) -> String {
    let layout = member_layout(text, obj, unit);
    let rendered = render_entry(fields, layout.as_deref(), unit, nl);
    insert_raw_member(text, obj, key, &rendered, unit, nl)
}

/// Sets `mcpServers.<name>` so that it holds `fields` (in that order), keeping
/// any other keys the entry already has (an `env`, a `timeout`). Returns
/// `Ok(None)` when `is_current` says the entry already matches, and `Err`
/// with a message a human can act on when the file is not safe to edit.
pub fn upsert_server(
    text: &str,
    name: &str,
    fields: &[(String, Value)],
    is_current: impl Fn(&Value) -> bool,
) -> Result<Option<String>, String> {
    upsert_server_without(text, name, fields, &[], is_current)
}

/// `upsert_server` that also removes the entry's keys named in `drop` (a
/// remote entry must lose the `command` of a local one, and back).
pub fn upsert_server_without(
    text: &str,
    name: &str,
    fields: &[(String, Value)],
    drop: &[&str],
    is_current: impl Fn(&Value) -> bool,
) -> Result<Option<String>, String> {
    let nl = if text.contains("\r\n") { "\r\n" } else { "\n" };
    if text.trim().is_empty() {
        let entry = render_entry(fields, Some("    "), "  ", nl);
        let key = serde_json::to_string(name).expect("strings serialise");
        return Ok(Some(format!(
            "{{{nl}  \"mcpServers\": {{{nl}    {key}: {entry}{nl}  }}{nl}}}{nl}"
        )));
    }
    let root: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e})"))?;
    let Value::Object(root_map) = &root else {
        return Err("the top level is not a JSON object".into());
    };
    let servers = match root_map.get("mcpServers") {
        None => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => return Err("\"mcpServers\" is not a JSON object".into()),
    };
    if let Some(existing) = servers.and_then(|s| s.get(name)) {
        if is_current(existing) {
            return Ok(None);
        }
    }

    // The entry we want: our fields first, then whatever else was there.
    let mut wanted_fields: Vec<(String, Value)> = fields.to_vec();
    if let Some(Value::Object(old)) = servers.and_then(|s| s.get(name)) {
        for (k, v) in old {
            if !fields.iter().any(|(f, _)| f == k) && !drop.contains(&k.as_str()) {
                wanted_fields.push((k.clone(), v.clone()));
            }
        }
    }
    let wanted: Value = Value::Object(wanted_fields.iter().cloned().collect::<Map<_, _>>());

    let start = skip_ws(text.as_bytes(), 0);
    // A leading byte-order mark would have failed serde_json already.
    let root_span = scan_object(text, start)?;
    let unit = match member_layout(text, &root_span, "  ") {
        Some(i) if !i.is_empty() && !root_span.members.is_empty() => i,
        _ => "  ".to_string(),
    };
    let new_text = match find_unique(&root_span, "mcpServers")? {
        None => {
            let key = serde_json::to_string(name).expect("strings serialise");
            // Render {"<name>": {...}} with the entry's fields in our order.
            let layout = member_layout(text, &root_span, &unit);
            let servers_indent = layout.clone();
            let inner = servers_indent.as_deref().map(|i| format!("{i}{unit}"));
            let entry = render_entry(&wanted_fields, inner.as_deref(), &unit, nl);
            let block = match (servers_indent, inner) {
                (Some(si), Some(inner)) => format!("{{{nl}{inner}{key}: {entry}{nl}{si}}}"),
                _ => format!("{{{key}: {entry}}}"),
            };
            insert_raw_member(text, &root_span, "mcpServers", &block, &unit, nl)
        }
        Some(servers_member) => {
            let servers_span = scan_object(text, servers_member.value_start)?;
            match find_unique(&servers_span, name)? {
                None => insert_member(text, &servers_span, name, &wanted_fields, &unit, nl),
                Some(m) => {
                    let layout = member_layout(text, &servers_span, &unit);
                    let rendered = render_entry(&wanted_fields, layout.as_deref(), &unit, nl);
                    format!(
                        "{}{}{}",
                        &text[..m.value_start],
                        rendered,
                        &text[m.value_end..]
                    )
                }
            }
        }
    };
    verify(&root, &new_text, name, &wanted)?;
    Ok(Some(new_text))
}

/// Like `insert_member`, with the value already rendered.
fn insert_raw_member(
    text: &str,
    obj: &ObjectSpan,
    key: &str,
    rendered: &str,
    unit: &str,
    nl: &str,
) -> String {
    let layout = member_layout(text, obj, unit);
    let key = serde_json::to_string(key).expect("strings serialise");
    let member = format!("{key}: {rendered}");
    match (obj.members.last(), layout) {
        (Some(last), Some(indent)) => format!(
            "{},{nl}{indent}{member}{}",
            &text[..last.value_end],
            &text[last.value_end..]
        ),
        (Some(last), None) => format!(
            "{}, {member}{}",
            &text[..last.value_end],
            &text[last.value_end..]
        ),
        (None, Some(indent)) => format!(
            "{}{nl}{indent}{member}{nl}{}{}",
            &text[..=obj.open],
            line_indent(text, obj.open),
            &text[obj.close..]
        ),
        (None, None) => format!("{}{member}{}", &text[..=obj.open], &text[obj.close..]),
    }
}

/// The edit must change exactly one thing: `mcpServers.<name>`. Anything else
/// means the span logic misread the file, and we refuse rather than write.
fn verify(old: &Value, new_text: &str, name: &str, wanted: &Value) -> Result<(), String> {
    let fail =
        || "could not edit this file safely (left untouched); add the entry by hand".to_string();
    let new: Value = serde_json::from_str(new_text).map_err(|_| fail())?;
    let (Value::Object(o), Value::Object(n)) = (old, &new) else {
        return Err(fail());
    };
    let mut expect = o.clone();
    let mut servers = match o.get("mcpServers") {
        Some(Value::Object(s)) => s.clone(),
        _ => Map::new(),
    };
    servers.insert(name.to_string(), wanted.clone());
    expect.insert("mcpServers".into(), Value::Object(servers));
    if &expect == n {
        Ok(())
    } else {
        Err(fail())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields() -> Vec<(String, Value)> {
        vec![
            ("command".into(), json!("/bin/wb")),
            ("args".into(), json!(["mcp"])),
        ]
    }

    fn current(v: &Value) -> bool {
        v.get("command") == Some(&json!("/bin/wb")) && v.get("args") == Some(&json!(["mcp"]))
    }

    #[test]
    fn empty_file_gets_a_fresh_document() {
        let out = upsert_server("", "workbench", &fields(), current)
            .unwrap()
            .unwrap();
        assert_eq!(
            out,
            "{\n  \"mcpServers\": {\n    \"workbench\": {\n      \"command\": \"/bin/wb\",\n      \"args\": [\n        \"mcp\"\n      ]\n    }\n  }\n}\n"
        );
    }

    #[test]
    fn appends_to_existing_servers_keeping_bytes() {
        let text = "{\n    \"theme\": \"dark\",\n    \"mcpServers\": {\n        \"git\": {\"command\": \"uvx\"}\n    }\n}\n";
        let out = upsert_server(text, "workbench", &fields(), current)
            .unwrap()
            .unwrap();
        assert!(out.starts_with("{\n    \"theme\": \"dark\",\n    \"mcpServers\": {\n        \"git\": {\"command\": \"uvx\"},\n        \"workbench\": {\n            \"command\": \"/bin/wb\","), "{out}");
        assert!(out.ends_with("\n    }\n}\n"), "{out}");
        // Idempotent.
        assert_eq!(
            upsert_server(&out, "workbench", &fields(), current).unwrap(),
            None
        );
    }

    #[test]
    fn adds_mcp_servers_when_missing() {
        let text = "{\"a\": 1, \"b\": [1, 2]}";
        let out = upsert_server(text, "workbench", &fields(), current)
            .unwrap()
            .unwrap();
        assert_eq!(
            out,
            "{\"a\": 1, \"b\": [1, 2], \"mcpServers\": {\"workbench\": {\"command\": \"/bin/wb\", \"args\": [\"mcp\"]}}}"
        );
    }

    #[test]
    fn empty_servers_object_is_filled() {
        let text = "{\n  \"mcpServers\": {}\n}";
        let out = upsert_server(text, "workbench", &fields(), current)
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["mcpServers"]["workbench"]["command"], "/bin/wb");
        assert!(
            out.contains("\n    \"workbench\": {\n      \"command\""),
            "{out}"
        );
    }

    #[test]
    fn stale_entry_is_replaced_keeping_its_other_keys() {
        let text = "{\"mcpServers\": {\"workbench\": {\"command\": \"/old\", \"env\": {\"X\": \"1\"}}, \"z\": {}}}";
        let out = upsert_server(text, "workbench", &fields(), current)
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["mcpServers"]["workbench"]["command"], "/bin/wb");
        assert_eq!(v["mcpServers"]["workbench"]["env"]["X"], "1");
        assert!(v["mcpServers"]["z"].is_object());
    }

    #[test]
    fn refuses_what_it_cannot_edit() {
        assert!(upsert_server("{", "w", &fields(), current)
            .unwrap_err()
            .contains("not valid JSON"));
        assert!(upsert_server("[1]", "w", &fields(), current)
            .unwrap_err()
            .contains("top level"));
        assert!(
            upsert_server("{\"mcpServers\": []}", "w", &fields(), current)
                .unwrap_err()
                .contains("not a JSON object")
        );
    }

    #[test]
    fn strings_with_braces_do_not_confuse_the_scanner() {
        let text = "{\"x\": \"}{\\\"\", \"mcpServers\": {\"a\": {\"args\": [\"]\"]}}}";
        let out = upsert_server(text, "workbench", &fields(), current)
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["x"], "}{\"");
        assert_eq!(v["mcpServers"]["a"]["args"][0], "]");
        assert_eq!(v["mcpServers"]["workbench"]["args"][0], "mcp");
    }
}
