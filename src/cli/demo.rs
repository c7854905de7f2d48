//! `workbench demo`: scaffold a `demo` project, serve it, and drive it the
//! way an AI would through the MCP tools (a checklist, a live chart fed by
//! `data` pushes, a form whose answers are echoed into the log), so a
//! newcomer sees every capability in a browser without any AI CLI.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{arg_error, finish, usage_error, CliError, CliResult};
use crate::control::{self, Launch};
use crate::project::{Project, ProjectName, ServerInfo};
use crate::sys;

pub const USAGE: &str = "\
usage: workbench demo [--name N] [--host H] [--port P] [--seconds S]

Scaffolds a demo project, serves it on the LAN, prints the URL and drives it
like an AI would: a guided checklist, a live 5 V rail chart updated 10 times
a second through `data` pushes, and a form whose answers are echoed back
into the session log. Open the URL, click the buttons, fill the form.
Ctrl-C stops it cleanly (the server is stopped too).

options:
  --name N      project name (default demo)
  --host H      address to listen on (default 0.0.0.0; 127.0.0.1 = this machine only)
  --port P      port (default: first free from 8070)
  --seconds S   stop by itself after S seconds (default: run until Ctrl-C)

example:
  workbench demo
";

const TEMPLATE: &str = include_str!("../../static/demo/template.html");
const STYLES: &str = include_str!("../../static/demo/styles.css");
const SCRIPT: &str = include_str!("../../static/demo/script.js");

enum Event {
    Human(Value),
    WaitFailed(String),
    Stop,
}

pub fn run(mut args: pico_args::Arguments) -> CliResult {
    let err = arg_error(USAGE);
    let name: String = args
        .opt_value_from_str("--name")
        .map_err(&err)?
        .unwrap_or_else(|| "demo".into());
    let host: Option<String> = args.opt_value_from_str("--host").map_err(&err)?;
    let port: Option<u16> = args.opt_value_from_str("--port").map_err(&err)?;
    let seconds: Option<u64> = args.opt_value_from_str("--seconds").map_err(&err)?;
    finish(args, USAGE)?;
    let project = Project::new(ProjectName::parse(&name).map_err(|e| usage_error(USAGE, e))?);

    let signals = sys::shutdown_signals();
    project
        .create(
            Some("Workbench demo"),
            Some("A guided procedure, a live chart and a form, driven by `workbench demo`."),
        )
        .map_err(|e| CliError::Failed(format!("cannot create {}: {e}", project.dir.display())))?;
    let running =
        control::ensure_running(&project, &Launch { host, port }).map_err(CliError::Failed)?;
    let info = running.info;
    // Answer every event from now on, none left over from earlier sessions.
    let cursor = control::call(
        &info,
        "GET",
        "/api/events?since=0&limit=1",
        None,
        Duration::from_secs(10),
    )
    .ok()
    .and_then(|r| r["last_seq"].as_u64())
    .unwrap_or(0);
    println!(
        "workbench demo: open {} in a browser  (Ctrl-C to stop)",
        info.url
    );

    let (tx, rx) = mpsc::channel();
    let stop_tx = tx.clone();
    std::thread::Builder::new()
        .name("signal-relay".into())
        .spawn(move || {
            if signals.recv().is_ok() {
                let _ = stop_tx.send(Event::Stop);
            }
        })
        .expect("spawn signal relay");
    let result = drive(&info, cursor, &tx, &rx, seconds.map(Duration::from_secs));
    let stopped = control::stop(&project);
    println!("workbench demo: stopped");
    result?;
    stopped.map(|_| ()).map_err(CliError::Failed)
}

fn call(info: &ServerInfo, path: &str, body: Value) -> Result<Value, CliError> {
    control::call(info, "POST", path, Some(&body), Duration::from_secs(10))
        .map_err(|e| CliError::Failed(e.to_string()))
}

/// Long-polls the page's events and forwards them, as `workbench_wait` does.
/// Starts after `cursor`: events from earlier sessions are not answered,
/// every event since the URL was printed is.
fn spawn_waiter(info: ServerInfo, tx: mpsc::Sender<Event>, mut cursor: u64) {
    std::thread::Builder::new()
        .name("demo-waiter".into())
        .spawn(move || loop {
            let path = format!("/api/events?since={cursor}&wait=25");
            match control::call(&info, "GET", &path, None, Duration::from_secs(40)) {
                Ok(r) => {
                    cursor = r["cursor"].as_u64().unwrap_or(cursor);
                    for ev in r["events"].as_array().cloned().unwrap_or_default() {
                        if tx.send(Event::Human(ev)).is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Event::WaitFailed(e.to_string()));
                    return;
                }
            }
        })
        .expect("spawn demo waiter");
}

fn drive(
    info: &ServerInfo,
    cursor: u64,
    tx: &mpsc::Sender<Event>,
    rx: &mpsc::Receiver<Event>,
    limit: Option<Duration>,
) -> CliResult {
    call(
        info,
        "/api/state",
        json!({"template": TEMPLATE, "styles": STYLES, "script": SCRIPT, "data": {"steps_done": [], "answers": []}}),
    )?;
    call(
        info,
        "/api/log",
        json!({"message": "Demo started: follow the procedure, the AI (this demo) is watching.", "level": "info"}),
    )?;
    spawn_waiter(info.clone(), tx.clone(), cursor);

    let started = Instant::now();
    let tick = Duration::from_millis(100);
    let mut next_tick = Instant::now() + tick;
    let mut steps: Vec<u64> = Vec::new();
    let mut answers: Vec<String> = Vec::new();
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d ^ crate::util::now_ms();
    loop {
        if limit.is_some_and(|l| started.elapsed() >= l) {
            return Ok(());
        }
        match rx.recv_timeout(next_tick.saturating_duration_since(Instant::now())) {
            Err(RecvTimeoutError::Timeout) => {
                next_tick += tick;
                // A plausible 5 V rail: slow drift, a little ripple, some noise.
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let noise = (rng % 1000) as f64 / 1000.0 - 0.5;
                let t = started.elapsed().as_secs_f64();
                let volts = 5.0 + 0.012 * (t * 0.7).sin() + 0.006 * noise;
                let amps = 0.42 + 0.03 * (t * 0.3).sin() + 0.004 * noise;
                call(
                    info,
                    "/api/state",
                    json!({"data": {"volts": volts, "amps": amps, "steps_done": steps, "answers": answers}}),
                )?;
            }
            Err(RecvTimeoutError::Disconnected) | Ok(Event::Stop) => return Ok(()),
            Ok(Event::WaitFailed(e)) => {
                return Err(CliError::Failed(format!("lost the page server: {e}")))
            }
            Ok(Event::Human(ev)) => {
                let (msg, level) = respond(&ev, &mut steps, &mut answers);
                call(info, "/api/log", json!({"message": msg, "level": level}))?;
            }
        }
    }
}

/// What the "AI" says back to one event from the page.
fn respond(ev: &Value, steps: &mut Vec<u64>, answers: &mut Vec<String>) -> (String, &'static str) {
    let data = &ev["data"];
    match ev["name"].as_str().unwrap_or("") {
        "step-done" => {
            let n: u64 = data["step"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if !steps.contains(&n) {
                steps.push(n);
            }
            let next = if steps.len() >= 4 {
                "All steps done — nice work.".to_string()
            } else {
                format!("{} of 4 done.", steps.len())
            };
            (format!("Step {n} done ✓ {next}"), "success")
        }
        "reading" => {
            let v = data["volts"].as_f64();
            let note = data["note"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(|s| format!(" — \"{s}\""))
                .unwrap_or_default();
            let ripple = if data["ripple_ok"] == true {
                "ripple ok"
            } else {
                "ripple not confirmed"
            };
            match v {
                Some(v) if (4.75..=5.25).contains(&v) => {
                    answers.push(format!("TP3 = {v:.3} V, {ripple}{note}"));
                    (
                        format!("Recorded TP3 = {v:.3} V: within 5 V ± 5 %, {ripple}{note}"),
                        "success",
                    )
                }
                Some(v) => {
                    answers.push(format!("TP3 = {v:.3} V (out of range){note}"));
                    (format!("TP3 = {v:.3} V is outside 4.75–5.25 V: check the regulator before going on{note}"), "warn")
                }
                None => (
                    "That reading had no number in it; try again.".to_string(),
                    "warn",
                ),
            }
        }
        "message" => (
            format!(
                "You said: \"{}\" — noted.",
                data["text"].as_str().unwrap_or("")
            ),
            "info",
        ),
        other => (format!("Got event '{other}'."), "info"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responds_to_each_kind_of_event() {
        let (mut steps, mut answers) = (Vec::new(), Vec::new());
        let (m, l) = respond(
            &json!({"name": "step-done", "data": {"step": "2"}}),
            &mut steps,
            &mut answers,
        );
        assert_eq!((m.as_str(), l), ("Step 2 done ✓ 1 of 4 done.", "success"));
        let (m, l) = respond(
            &json!({"name": "reading", "data": {"volts": 5.02, "ripple_ok": true}}),
            &mut steps,
            &mut answers,
        );
        assert!(
            m.starts_with("Recorded TP3 = 5.020 V") && l == "success",
            "{m}"
        );
        let (_, l) = respond(
            &json!({"name": "reading", "data": {"volts": 3.3}}),
            &mut steps,
            &mut answers,
        );
        assert_eq!(l, "warn");
        assert_eq!(answers.len(), 2);
    }
}
