//! `workbench list`: every project and whether its server runs.

use super::{finish, CliResult};
use crate::{control, project};

pub const USAGE: &str = "\
usage: workbench list [--json]

Lists the projects in $WORKBENCH_HOME (default ~/workbench) with their URL,
pid and viewers. A server record whose server is gone shows as not running.

options:
  --json   one JSON object per project per line

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
    if as_json {
        for r in &rows {
            println!("{r}");
        }
        return Ok(());
    }
    if rows.is_empty() {
        println!("no projects in {}", project::home().display());
        return Ok(());
    }
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
    Ok(())
}
