//! `$WORKBENCH_HOME/START.md`: the page an AI reads at the start of a session
//! to learn what workbench is on this machine and how to drive it. Only the
//! text; `workbench setup` decides when to write it.

use std::net::Ipv4Addr;
use std::path::Path;

/// Facts about this machine that go into START.md.
pub struct Facts<'a> {
    pub binary: &'a str,
    pub version: &'a str,
    pub home: &'a Path,
    pub lan: Option<Ipv4Addr>,
    /// `(label, config path, registered)` for every client setup knows.
    pub clients: Vec<(&'static str, String, bool)>,
}

pub fn render(f: &Facts) -> String {
    let host = f
        .lan
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "127.0.0.1".into());
    let lan_line = match f.lan {
        Some(ip) => format!(
            "- LAN address: **{ip}**. Pages are served at `http://{ip}:<port>/` to every \
             browser on this network (ports 8070-8079 by default)."
        ),
        None => "- LAN address: **none found** (no network interface besides loopback). Pages \
                 are reachable only from this machine, at `http://127.0.0.1:<port>/`."
            .to_string(),
    };
    let configured: Vec<String> = f
        .clients
        .iter()
        .map(|(label, path, on)| {
            if *on {
                format!("  - {label}: configured (`{path}`)")
            } else {
                format!("  - {label}: not configured")
            }
        })
        .collect();
    format!(
        r#"# Workbench on this machine

Workbench gives you (the AI) a live web page per project, served on the LAN.
You push HTML, CSS, JS and data to it through MCP tools; every open browser
updates at once; what the human clicks, submits or types comes back to you as
events. Use it for hardware diagnostics, guided procedures, dashboards and data
collection: anything a bench display does better than a terminal.

- Binary: `{binary}` (workbench {version}); MCP server: `{binary} mcp`
{lan_line}
- Projects live in `{home}/<name>/` (session.md, session.jsonl, events.jsonl,
  state.json, files/). A project's server keeps running when you restart;
  a later session finds it again through `<name>/.server.json`.
- AI CLIs registered by `workbench setup`:
{configured}

If something does not work, run `workbench doctor`: it checks this machine and
prints a fix for each problem.

## Tools

| tool | what it does |
|---|---|
| `workbench_scaffold(name, title?, description?)` | create project `name` (1-64 letters, digits, `_`, `-`) if needed and make sure its page server runs; returns the URL to give the human. Call it first; calling it again reuses the project and its running server. |
| `workbench_state(project, template?, styles?, script?, data?)` | push to every open browser. `template`: HTML for the content area; `styles`: CSS; `script`: JS run once per push; `data`: any JSON handed to `workbench.on('data', fn)` without re-rendering (fine 10+ times a second). Send only what changes; `null` clears a field. |
| `workbench_log(project, message, level?)` | append a line to the session log (shown under the page as plain text, kept in session.md and session.jsonl). `level`: info (default), success, warn, error. |
| `workbench_read_log(project, limit?)` | the latest log entries, oldest first (default 50). |
| `workbench_list()` | every project with its URL and whether its server is running. |
| `workbench_stop(project)` | stop a project's server; its files stay and `workbench_scaffold` starts it again. |
| `workbench_wait(project, since?, names?, timeout_seconds?)` | the human's events (form submits, buttons, typed messages, `workbench.send`) after cursor `since`, blocking until one arrives. `timeout_seconds` is 1-50 (default 25); on timeout it returns status `pending` with the same cursor: call again. Always pass the cursor from the previous result; nothing is lost meanwhile. |
| `workbench_events(project, since?, limit?)` | the same events without blocking (default 100). |
| `workbench_snapshot(project)` | what a connected browser shows now: the content's HTML, its visible text and current form values (says so when no browser is connected). |

## The page runtime (for the HTML and JS you push)

- `workbench.on('data', fn)`: `fn(data)` runs for each `data` you push. Push the
  template and script once, then stream readings as `data`: it is cheap and keeps
  the human's form inputs intact.
- `workbench.send(name, data)`: send an event to you from page JS.
- `<form data-workbench="name">`: on submit, its fields arrive as event `name`.
- `<button data-workbench-click="name">`: a click arrives as event `name`.
- The human can also type a message under the page; it arrives as event `message`.
- A new `script` replaces the handlers the previous one registered.
- Log messages are shown as text, never HTML.

## A typical session

1. `workbench_scaffold("bench1", "PSU bring-up")` and tell the human the URL
   (e.g. `http://{host}:8070/`).
2. `workbench_state("bench1", template="<h2>Step 1</h2><form data-workbench=\"step1\">…</form>")`
3. `workbench_wait("bench1", since=0, names=["step1"])`; if it says `pending`, call it
   again with the returned cursor; act on the answer.
4. `workbench_log("bench1", "Rail 3V3 measured 3.29 V", "success")`; keep the log
   honest, it is the record of the session.
5. `workbench_stop("bench1")` when the work is done (or leave it running for the human).

Without MCP, a human can run `workbench serve <name>` and `workbench list` by hand.
"#,
        binary = f.binary,
        version = f.version,
        home = f.home.display(),
        configured = configured.join("\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_the_facts_and_every_tool() {
        let text = render(&Facts {
            binary: "/usr/local/bin/workbench",
            version: "9.9.9",
            home: Path::new("/home/u/workbench"),
            lan: Some(Ipv4Addr::new(192, 168, 1, 20)),
            clients: vec![("Codex CLI", "/home/u/.codex/config.toml".into(), true)],
        });
        for needle in [
            "/usr/local/bin/workbench",
            "9.9.9",
            "192.168.1.20",
            "Codex CLI: configured",
            "workbench_scaffold(name, title?, description?)",
            "workbench_state(project, template?, styles?, script?, data?)",
            "workbench_log(project, message, level?)",
            "workbench_read_log(project, limit?)",
            "workbench_list()",
            "workbench_stop(project)",
            "workbench_wait(project, since?, names?, timeout_seconds?)",
            "workbench_events(project, since?, limit?)",
            "workbench_snapshot(project)",
            "workbench.on('data', fn)",
            "workbench.send(name, data)",
            "data-workbench=\"name\"",
            "data-workbench-click=\"name\"",
        ] {
            assert!(text.contains(needle), "missing {needle}");
        }
    }
}
