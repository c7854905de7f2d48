//! The layering rules of issue 13, checked on the sources: nothing outside
//! `src/cli/` and `src/main.rs` uses the `cli` module, and no file but
//! `src/sys.rs` has an `unsafe` block or function.

use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("read source");
            out.push((path.display().to_string(), text));
        }
    }
}

fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_start()))
        .filter(|(_, l)| !l.starts_with("//"))
}

/// `line` names the module `path` itself (`crate::cli::x`, `crate::cli;`),
/// not one that merely starts with its name (`super::clients`).
fn names_module(line: &str, path: &str) -> bool {
    line.match_indices(path).any(|(i, _)| {
        !line[i + path.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
    })
}

#[test]
fn names_module_matches_whole_names() {
    assert!(names_module("use crate::cli::VERSION;", "crate::cli"));
    assert!(names_module("x(crate::cli);", "crate::cli"));
    assert!(!names_module("use super::clients::{self};", "super::cli"));
}

#[test]
fn only_main_and_cli_use_the_cli_module() {
    let mut files = Vec::new();
    sources(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        &mut files,
    );
    assert!(files.len() > 20, "found only {} sources", files.len());
    let mut bad = Vec::new();
    for (path, text) in &files {
        if path.contains("/src/cli/") || path.ends_with("/src/main.rs") {
            continue;
        }
        for (n, line) in code_lines(text) {
            if names_module(line, "crate::cli") || names_module(line, "super::cli") {
                bad.push(format!("{path}:{n}: {line}"));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "modules outside cli/ import it:\n{}",
        bad.join("\n")
    );
}

#[test]
fn unsafe_code_lives_only_in_sys() {
    let mut files = Vec::new();
    sources(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        &mut files,
    );
    let mut bad = Vec::new();
    for (path, text) in &files {
        if path.ends_with("/src/sys.rs") {
            continue;
        }
        for (n, line) in code_lines(text) {
            if line.contains("unsafe {")
                || line.contains("unsafe fn")
                || line.contains("unsafe impl")
            {
                bad.push(format!("{path}:{n}: {line}"));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "unsafe outside src/sys.rs:\n{}",
        bad.join("\n")
    );
}
