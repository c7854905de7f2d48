//! The type of a file from its first bytes, never from what a client or a
//! file name claims, and how `/files/` serves each type (`files.rs`).
//!
//! Only formats the page may show inline are recognised precisely (PNG,
//! JPEG, GIF, WebP, PDF); markup that a browser would run (HTML, SVG, XML)
//! is recognised so it is never mistaken for plain text; UTF-8 without NUL
//! bytes is text; anything else is binary.

/// How many leading bytes `sniff` looks at.
pub const SNIFF_BYTES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Png,
    Jpeg,
    Gif,
    Webp,
    Pdf,
    Html,
    Svg,
    Xml,
    Text,
    Binary,
}

impl Kind {
    /// Raster images an MCP client can take as an `image` content block.
    pub fn is_raster_image(self) -> bool {
        matches!(self, Kind::Png | Kind::Jpeg | Kind::Gif | Kind::Webp)
    }

    pub fn is_image(self) -> bool {
        self.is_raster_image() || self == Kind::Svg
    }
}

pub fn sniff(head: &[u8]) -> Kind {
    let h = &head[..head.len().min(SNIFF_BYTES)];
    if h.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Kind::Png;
    }
    if h.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Kind::Jpeg;
    }
    if h.starts_with(b"GIF87a") || h.starts_with(b"GIF89a") {
        return Kind::Gif;
    }
    if h.len() >= 12 && &h[..4] == b"RIFF" && &h[8..12] == b"WEBP" {
        return Kind::Webp;
    }
    if h.starts_with(b"%PDF-") {
        return Kind::Pdf;
    }
    if h.contains(&0) {
        return Kind::Binary;
    }
    // Markup: look past a BOM and whitespace, case-insensitively, the way
    // a browser's own sniffer would (WHATWG MIME Sniffing §7.1).
    let text = h.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(h);
    let lower: Vec<u8> = text.iter().map(u8::to_ascii_lowercase).collect();
    let start = lower
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(lower.len());
    let t = &lower[start..];
    const HTML_TAGS: [&[u8]; 16] = [
        b"<!doctype html",
        b"<html",
        b"<head",
        b"<script",
        b"<iframe",
        b"<h1",
        b"<div",
        b"<font",
        b"<table",
        b"<a",
        b"<style",
        b"<title",
        b"<b",
        b"<body",
        b"<br",
        b"<p",
    ];
    let has = |needle: &[u8]| lower.windows(needle.len()).any(|w| w == needle);
    if has(b"<svg") {
        return Kind::Svg;
    }
    if HTML_TAGS
        .iter()
        .any(|tag| t.starts_with(tag) && t.get(tag.len()).is_none_or(|b| b" >\t\n\r/".contains(b)))
        || has(b"<script")
        || has(b"<html")
    {
        return Kind::Html;
    }
    if t.starts_with(b"<?xml") {
        return Kind::Xml;
    }
    // A multi-byte character cut at the end of the sample is still text.
    match std::str::from_utf8(h) {
        Ok(_) => Kind::Text,
        Err(e) if e.error_len().is_none() => Kind::Text,
        Err(_) => Kind::Binary,
    }
}

/// The `Content-Type` for a file of this kind; for text the extension may
/// name a more precise text type (CSS, JavaScript, JSON, CSV, Markdown).
pub fn content_type(kind: Kind, ext: &str) -> &'static str {
    match kind {
        Kind::Png => "image/png",
        Kind::Jpeg => "image/jpeg",
        Kind::Gif => "image/gif",
        Kind::Webp => "image/webp",
        Kind::Pdf => "application/pdf",
        Kind::Html => "text/html; charset=utf-8",
        Kind::Svg => "image/svg+xml",
        Kind::Xml => "application/xml",
        Kind::Binary => "application/octet-stream",
        Kind::Text => match ext.to_ascii_lowercase().as_str() {
            "css" => "text/css; charset=utf-8",
            "js" | "mjs" => "text/javascript; charset=utf-8",
            "json" => "application/json",
            "csv" => "text/csv; charset=utf-8",
            _ => "text/plain; charset=utf-8",
        },
    }
}

/// The MIME type without parameters (what events and tools report).
pub fn mime(kind: Kind, ext: &str) -> &'static str {
    let ct = content_type(kind, ext);
    ct.split(';').next().unwrap_or(ct)
}

/// Whether a browser may show this kind in place; everything else is
/// served with `Content-Disposition: attachment`.
pub fn inline(kind: Kind, ext: &str) -> bool {
    kind.is_image()
        || kind == Kind::Pdf
        || (kind == Kind::Text && content_type(kind, ext).starts_with("text/plain"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_by_their_bytes() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest"), Kind::Png);
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0]), Kind::Jpeg);
        assert_eq!(sniff(b"GIF89a...."), Kind::Gif);
        assert_eq!(sniff(b"RIFF\x10\0\0\0WEBPVP8 "), Kind::Webp);
        assert_eq!(sniff(b"%PDF-1.7\n"), Kind::Pdf);
        assert_eq!(sniff(b"  <!DOCTYPE html><p>x"), Kind::Html);
        assert_eq!(sniff(b"<p>hello"), Kind::Html);
        assert_eq!(sniff(b"hello <script>alert(1)</script>"), Kind::Html);
        assert_eq!(
            sniff(b"<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\">"),
            Kind::Svg
        );
        assert_eq!(sniff(b"<?xml version=\"1.0\"?><a/>"), Kind::Xml);
        assert_eq!(sniff("volts,amps\n5.0,0.1\nµ".as_bytes()), Kind::Text);
        assert_eq!(sniff(b"\x01\x02\x00\x03"), Kind::Binary);
        assert_eq!(sniff(b"\xff\xfe\xfd"), Kind::Binary);
        assert_eq!(sniff(b""), Kind::Text);
    }

    #[test]
    fn only_images_pdf_and_plain_text_are_inline() {
        assert!(inline(Kind::Png, "png"));
        assert!(inline(Kind::Pdf, "pdf"));
        assert!(inline(Kind::Text, "txt"));
        assert!(!inline(Kind::Text, "js"));
        assert!(!inline(Kind::Html, "html"));
        assert!(!inline(Kind::Binary, "zip"));
        assert_eq!(mime(Kind::Text, "CSV"), "text/csv");
    }
}
