//! `workbench list`: every project and whether its server runs, then
//! every relay chat session and whether its process runs.

use super::{finish, CliResult};
use crate::{chat, control, project};

pub const USAGE: &str = "\
usage: workbench list [--json]

Lists the projects in $WORKBENCH_HOME (default ~/workbench) with their URL,
pid and viewers. A server record whose server is gone shows as not running.
Then the relay chat sessions (started by the MCP tool chat_connect): their
agent id, relay, channels and whether their process runs.

options:
  --json   one JSON object per project per line, then one per chat
           session (those have a \"session\" key instead of \"name\")

example:
  workbench list
";

pub fn run(mut args: pico_args::Arguments) -> CliResult {
    let as_json = args.contains("--json");
    finish(args, USAGE)?;
    let rows: Vec<serde_json::Value> = project::all_projects()
        .iter()
        .map(control::describe)
        .collect();
    let sessions: Vec<serde_json::Value> =
        chat::all_sessions().iter().map(chat::describe).collect();
    if as_json {
        for r in rows.iter().chain(&sessions) {
            println!("{r}");
        }
        return Ok(());
    }
    if rows.is_empty() && sessions.is_empty() {
        println!("no projects in {}", project::home().display());
        return Ok(());
    }
    if !rows.is_empty() {
        print_projects(rows);
    }
    if !sessions.is_empty() {
        print_sessions(&sessions);
    }
    Ok(())
}

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

fn print_sessions(sessions: &[serde_json::Value]) {
    println!(
        "\n{:<20} {:<8} {:<8} {:<10} {:<24} CHANNELS",
        "CHAT SESSION", "RUNNING", "PID", "AGENT", "RELAY"
    );
    for s in sessions {
        let running = match (s["running"] == true, s["connected"] == true) {
            (true, true) => "yes",
            (true, false) => "offline",
            _ => "no",
        };
        let channels: Vec<String> = s["channels"]
            .as_array()
            .map(|a| a.iter().map(text).collect())
            .unwrap_or_default();
        println!(
            "{:<20} {:<8} {:<8} {:<10} {:<24} {}",
            text(&s["session"]),
            running,
            text(&s["pid"]),
            text(&s["agent_id"]),
            text(&s["server"]),
            channels.join(",")
        );
    }
}

fn print_projects(rows: Vec<serde_json::Value>) {
    println!(
        "{:<20} {:<8} {:<8} {:<8} URL",
        "NAME", "RUNNING", "PID", "VIEWERS"
    );
    for r in rows {
        let s = |k: &str| match &r[k] {
            serde_json::Value::Null => "-".to_string(),
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let running = if r["running"] == true {
            "yes"
        } else if r.get("stale").is_some() {
            "stale"
        } else {
            "no"
        };
        println!(
            "{:<20} {:<8} {:<8} {:<8} {}",
            s("name"),
            running,
            s("pid"),
            s("viewers"),
            s("url")
        );
    }
}
