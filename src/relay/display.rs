//! What a terminal may be shown of text a relay sent. Anything a relay (or
//! another agent through it) sends is untrusted: ANSI escapes can rewrite
//! the screen, bidi overrides can make `evil.sh` read as `hs.live`, and
//! zero-width characters hide text. The relay CLI commands pass every byte
//! they print that came from a relay through here. Not here: the relay's
//! own logs (JSON, escaped by serde_json) or what is sent to a relay.

/// Invisible or direction-changing code points: bidi marks, embeddings,
/// overrides and isolates; zero-width spaces and joiners; the BOM; word
/// joiners and invisible operators; interlinear annotation; the line and
/// paragraph separators (which some terminals treat as newlines); tags.
fn is_invisible(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180B..=0x180F
        | 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F
        | 0xFEFF | 0xFFA0 | 0xFFF9..=0xFFFB | 0x1D173..=0x1D17A | 0xE0000..=0xE0FFF)
}

/// Whether `c` must not reach a terminal as itself: control characters
/// (C0, DEL, C1; tab is kept) and the invisible ones above.
pub fn is_unsafe(c: char) -> bool {
    (c.is_control() && c != '\t') || is_invisible(c)
}

/// `s` with every unsafe character written as a visible escape
/// (`\u{1b}`, `\u{202e}`), everything else as is.
pub fn terminal_safe(s: &str) -> String {
    if !s.chars().any(is_unsafe) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if is_unsafe(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// A JSON value as one line of JSON in which every unsafe character is a
/// `\uXXXX` escape: the same value for a JSON reader, inert on a terminal.
/// (serde_json already escapes C0 controls; this adds DEL, C1 and the
/// invisible ones, which can only occur inside strings.)
pub fn json_line(v: &serde_json::Value) -> String {
    let text = v.to_string();
    if !text.chars().any(is_unsafe) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_unsafe(c) {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_controls_bidi_and_zero_width() {
        assert_eq!(
            terminal_safe("hi\u{1b}[2J\r\u{7}there\tok"),
            "hi\\u{1b}[2J\\u{d}\\u{7}there\tok"
        );
        assert_eq!(
            terminal_safe("a\u{202e}b\u{200b}c\u{2066}"),
            "a\\u{202e}b\\u{200b}c\\u{2066}"
        );
        assert_eq!(terminal_safe("\u{9b}31m\u{7f}"), "\\u{9b}31m\\u{7f}");
        assert_eq!(terminal_safe("héllo ✓ 日本"), "héllo ✓ 日本");
        assert_eq!(terminal_safe("tag\u{e0041}"), "tag\\u{e0041}");
    }

    #[test]
    fn json_lines_stay_valid_and_equal() {
        let v = json!({"content": "x\u{1b}[31m\u{202e}y\u{200d}\u{7f}\u{e0041}", "n": 1});
        let line = json_line(&v);
        assert!(!line.chars().any(is_unsafe), "{line}");
        assert!(line.contains("\\u202e") && line.contains("\\udb40\\udc41"));
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back, v);
        assert_eq!(json_line(&json!({"a": "plain é"})), r#"{"a":"plain é"}"#);
    }
}
