//! The MCP tools: one table (`TOOLS`) of their names, JSON Schemas (what the
//! AI reads) and implementations, each a function from its arguments to a
//! JSON result; `tools/list`, the name check and `tools/call` all read it.
//! Every result goes out as `structuredContent` and as the same JSON in a
//! text item, because some clients show the model only one of the two.
//! A failure the AI can fix is a result with `isError: true`, not a
//! protocol error.

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::file_tools;
use super::jsonrpc::{self, Id, RpcError};
use super::workers::Workers;
use super::Outbox;
use crate::control;
use crate::project::{self, Project, ProjectName};

/// Results larger than this are trimmed (clients choke well before 10 MiB).
const MAX_RESULT_BYTES: usize = 1 << 20;

fn obj(props: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
}

fn out_schema(props: Value) -> Value {
    json!({"type": "object", "properties": props})
}

fn project_prop() -> Value {
    json!({"type": "string", "description": "Project name given to workbench_scaffold (letters, digits, '_' and '-')."})
}

fn event_schema() -> Value {
    // A `lost` marker ({"type":"lost","name":"lost","seq","from_seq","to_seq",
    // "count","reason"}) stands for numbers that can no longer be read
    // (see docs/events.md); it is passed through like any event.
    json!({"type": "object", "properties": {
        "seq": {"type": "integer"}, "ts": {"type": "string"}, "name": {"type": "string"},
        "data": {}, "from": {"type": "object"}, "type": {"type": "string", "enum": ["lost"]},
        "from_seq": {"type": "integer"}, "to_seq": {"type": "integer"}, "count": {"type": "integer"},
        "reason": {"type": "string"}}})
}

/// What a tool's function gets besides its arguments.
pub struct Ctx {
    /// The tool's name, for messages.
    pub tool: &'static str,
    /// The client's progress token and the outbox to send progress on.
    pub progress: Option<(Value, Outbox)>,
    /// Where the answer goes; it says when nobody waits for it any more.
    pub out: Outbox,
}

/// One tool: what `tools/list` shows, and the function that runs it. This
/// table is the only list of tools: `tools/list`, the name check and the
/// dispatch of `tools/call` all read it. To add a tool, add an entry.
pub struct Tool {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    /// JSON Schemas, built once for `tools/list` (`json!` is not const).
    pub input_schema: fn() -> Value,
    pub output_schema: fn() -> Value,
    /// Runs on its own thread; gets the raw `arguments` (null when absent).
    pub run: fn(Value, &Ctx) -> ToolResult,
}

pub static TOOLS: &[Tool] = &[
    Tool {
        name: "workbench_scaffold",
        title: "Create or reopen a live page",
        description: "Create a project (a live web page on the LAN) if it does not exist, and make sure its server is running. Reuses a running server. Returns the URL to give the human; call this once before the other tools.",
        input_schema: || obj(json!({
            "name": {"type": "string", "description": "Project name: 1-64 letters, digits, '_' or '-', starting with a letter or digit. Example: psu-bringup."},
            "title": {"type": "string", "description": "Page title shown at the top (new projects only)."},
            "description": {"type": "string", "description": "One line under the title (new projects only)."}
        }), &["name"]),
        output_schema: || out_schema(json!({
            "path": {"type": "string"}, "url": {"type": "string"}, "port": {"type": "integer"}, "reused": {"type": "boolean"}
        })),
        run: |a, c| scaffold(args(c.tool, a)?),
    },
    Tool {
        name: "workbench_state",
        title: "Push content to the page",
        description: "Push HTML/CSS/JS to every open browser at once. `template` replaces the page body, `styles` replaces the page's dynamic stylesheet, `script` runs once in the page (register handlers with workbench.on('data', fn)), `data` is any JSON handed to those handlers without re-rendering (use it for live readings, 10+ times a second is fine). Send only the fields that change; null clears a field. Inside the page: <form data-workbench=\"name\"> and data-workbench-click=\"name\" send answers you read with workbench_wait.",
        input_schema: || obj(json!({
            "project": project_prop(),
            "template": {"type": ["string", "null"], "description": "HTML for the content area."},
            "styles": {"type": ["string", "null"], "description": "CSS for the page."},
            "script": {"type": ["string", "null"], "description": "JavaScript run once per push."},
            "data": {"description": "Any JSON value passed to workbench.on('data') handlers."}
        }), &["project"]),
        output_schema: || out_schema(json!({"viewers": {"type": "integer"}, "bytes": {"type": "integer"}, "seq": {"type": "integer"}})),
        run: |a, c| state(c.tool, a),
    },
    Tool {
        name: "workbench_log",
        title: "Add a line to the session log",
        description: "Append a line to the session log shown under the page and saved in session.md / session.jsonl. Rendered as plain text.",
        input_schema: || obj(json!({
            "project": project_prop(),
            "message": {"type": "string", "description": "The text to log."},
            "level": {"type": "string", "enum": ["info", "success", "warn", "error"], "description": "Default info."}
        }), &["project", "message"]),
        output_schema: || out_schema(json!({"ts": {"type": "string"}})),
        run: |a, c| log(args(c.tool, a)?),
    },
    Tool {
        name: "workbench_read_log",
        title: "Read the session log",
        description: "The most recent session log entries (yours, and the human's events), oldest first.",
        input_schema: || obj(json!({
            "project": project_prop(),
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "description": "How many entries (default 50, max 1000)."}
        }), &["project"]),
        output_schema: || out_schema(json!({"entries": {"type": "array"}, "count": {"type": "integer"}, "truncated": {"type": "boolean"}})),
        run: |a, c| read_log(args(c.tool, a)?),
    },
    Tool {
        name: "workbench_list",
        title: "List projects",
        description: "Every project on this machine with its URL and whether its server is running (servers survive restarts of your CLI).",
        input_schema: || obj(json!({}), &[]),
        output_schema: || out_schema(json!({"projects": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "title": {"type": ["string", "null"]}, "url": {"type": ["string", "null"]},
            "running": {"type": "boolean"}, "pid": {"type": ["integer", "null"]}, "port": {"type": ["integer", "null"]},
            "viewers": {"type": "integer"}, "started": {"type": ["string", "null"]}}}}})),
        run: |a, c| {
            let _: Empty = args(c.tool, a)?;
            Ok(json!({"projects": project::all_projects().iter().map(control::describe).collect::<Vec<_>>()}))
        },
    },
    Tool {
        name: "workbench_stop",
        title: "Stop a project's server",
        description: "Stop the project's page server and record the session end. The files stay; workbench_scaffold starts it again.",
        input_schema: || obj(json!({"project": project_prop()}), &["project"]),
        output_schema: || out_schema(json!({"stopped": {"type": "boolean"}, "was_running": {"type": "boolean"}})),
        run: |a, c| stop(args(c.tool, a)?),
    },
    Tool {
        name: "workbench_wait",
        title: "Wait for the human's answer",
        description: "Return the human's events (form submits, data-workbench-click buttons, typed messages, workbench.send calls) after cursor `since`, or block until one arrives. On timeout returns status 'pending' with the same cursor: just call again. Always pass the cursor from the previous result; nothing sent meanwhile is lost. If the page's events outgrew the disk quota, an item with type 'lost' says which numbers (from_seq..to_seq, count) can no longer be read.",
        input_schema: || obj(json!({
            "project": project_prop(),
            "since": {"type": "integer", "minimum": 0, "description": "Cursor from the previous workbench_wait/workbench_events result (0 = from the beginning)."},
            "names": {"type": "array", "items": {"type": "string"}, "description": "Only these event names, e.g. [\"reading\"]."},
            "timeout_seconds": {"type": "number", "description": "How long to block, clamped to 1-50 (default 25)."}
        }), &["project"]),
        output_schema: || out_schema(json!({"status": {"type": "string", "enum": ["events", "pending"]}, "events": {"type": "array", "items": event_schema()}, "cursor": {"type": "integer"}})),
        run: |a, c| wait(args(c.tool, a)?, c.progress.as_ref(), &c.out),
    },
    Tool {
        name: "workbench_events",
        title: "Read the human's events",
        description: "Like workbench_wait but never blocks: the events after cursor `since`.",
        input_schema: || obj(json!({
            "project": project_prop(),
            "since": {"type": "integer", "minimum": 0, "description": "Cursor (0 = from the beginning)."},
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "description": "At most this many (default 100)."}
        }), &["project"]),
        output_schema: || out_schema(json!({"events": {"type": "array", "items": event_schema()}, "cursor": {"type": "integer"}})),
        run: |a, c| events(args(c.tool, a)?),
    },
    Tool {
        name: "workbench_snapshot",
        title: "See what the human sees",
        description: "Ask a connected browser for the page as rendered now: the content's HTML, its visible text, and current form values; with image: true also a PNG of the browser's window as an image block (drawn by the page itself; cross-origin images and canvases come out blank, see docs/files.md). Says so when no browser is connected.",
        input_schema: || obj(json!({"project": project_prop(), "image": {"type": "boolean", "description": "Also return a PNG of what the browser shows (default false)."}}), &["project"]),
        output_schema: || out_schema(json!({"connected": {"type": "boolean"}, "viewer": {"type": ["string", "null"]},
            "html": {"type": "string"}, "text": {"type": "string"}, "forms": {"type": "array"}, "message": {"type": "string"},
            "image": {"type": "object"}, "image_error": {"type": "string"}})),
        run: |a, c| snapshot(args(c.tool, a)?),
    },
    // Files both ways (issue 16): src/mcp/file_tools.rs, docs/files.md.
    Tool {
        name: "workbench_read_file",
        title: "Read a project file",
        description: file_tools::READ_DESCRIPTION,
        input_schema: || file_tools::read_input_schema(project_prop()),
        output_schema: file_tools::read_output_schema,
        run: |a, c| file_tools::read_file(c.tool, a, existing),
    },
    Tool {
        name: "workbench_write_file",
        title: "Put a file on the page's server",
        description: file_tools::WRITE_DESCRIPTION,
        input_schema: || file_tools::write_input_schema(project_prop()),
        output_schema: file_tools::write_output_schema,
        run: |a, c| file_tools::write_file(c.tool, a, existing),
    },
];

/// The page tools, then the relay chat tools (`chat_tools::TOOLS`).
pub fn all() -> impl Iterator<Item = &'static Tool> {
    TOOLS.iter().chain(super::chat_tools::TOOLS)
}

/// The tool called `name`, if there is one.
pub fn find(name: &str) -> Option<&'static Tool> {
    all().find(|t| t.name == name)
}

/// Every tool, as `tools/list` returns it.
pub fn list() -> Value {
    Value::Array(
        all()
            .map(|t| {
                json!({
                    "name": t.name,
                    "title": t.title,
                    "description": t.description,
                    "inputSchema": (t.input_schema)(),
                    "outputSchema": (t.output_schema)(),
                })
            })
            .collect(),
    )
}

/// The `tools/list` result as JSON text, built once per process.
pub fn list_result_json() -> &'static str {
    static LIST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LIST.get_or_init(|| json!({"tools": list()}).to_string())
}

/// A tool's outcome: a JSON result, or a message the AI can act on.
pub(super) type ToolResult = Result<Value, String>;

#[derive(Deserialize)]
struct CallParams {
    name: String,
    #[serde(default)]
    arguments: Option<Value>,
    #[serde(default, rename = "_meta")]
    meta: Option<Value>,
}

/// Runs a `tools/call` on a worker thread and sends the answer to the writer.
pub fn spawn_call(id: Id, params: Value, out: Outbox, workers: &Workers) {
    let call: CallParams = match serde_json::from_value(params) {
        Ok(c) => c,
        Err(e) => {
            let err = RpcError::InvalidParams(format!("tools/call needs {{name, arguments}}: {e}"));
            return out.send(jsonrpc::failure(&id, &err));
        }
    };
    let Some(tool) = find(&call.name) else {
        let err = RpcError::InvalidParams(format!(
            "unknown tool '{}'; tools/list has the available tools",
            call.name
        ));
        return out.send(jsonrpc::failure(&id, &err));
    };
    let thread_out = out.clone();
    let spawned = workers.run(Box::new(move || {
        let progress = call
            .meta
            .as_ref()
            .and_then(|m| m.get("progressToken"))
            .cloned();
        let ctx = Ctx {
            tool: tool.name,
            progress: progress.map(|t| (t, thread_out.clone())),
            out: thread_out.clone(),
        };
        let result = (tool.run)(call.arguments.unwrap_or(Value::Null), &ctx);
        thread_out.send(jsonrpc::success_raw(&id, &call_result_json(result)));
    }));
    if let Err(e) = spawned {
        out.send(jsonrpc::failure(
            &Id::null(),
            &RpcError::Internal(format!("cannot start tool thread: {e}")),
        ));
    }
}

/// The `tools/call` result as JSON text: the value is serialised once and
/// that text is used twice, as `structuredContent` and (escaped) as the text item.
pub(super) fn call_result_json(result: ToolResult) -> String {
    match result {
        Ok(mut v) => {
            // Image and resource blocks go beside the JSON (file_tools).
            let extra = v
                .as_object_mut()
                .and_then(|m| m.remove(file_tools::CONTENT_KEY));
            let text = v.to_string();
            let mut items = vec![json!({"type": "text", "text": text})];
            if let Some(Value::Array(blocks)) = extra {
                items.extend(blocks);
            }
            let items = Value::Array(items);
            format!(r#"{{"content":{items},"isError":false,"structuredContent":{text}}}"#)
        }
        Err(msg) => {
            json!({"content": [{"type": "text", "text": msg}], "isError": true}).to_string()
        }
    }
}

pub(super) fn args<T: DeserializeOwned>(tool: &str, v: Value) -> Result<T, String> {
    let v = if v.is_null() { json!({}) } else { v };
    serde_json::from_value(v).map_err(|e| bad_args(tool, e))
}

fn bad_args(tool: &str, e: impl std::fmt::Display) -> String {
    format!("bad arguments for {tool}: {e}; see its inputSchema in tools/list")
}

fn project(name: &str) -> Result<Project, String> {
    Ok(Project::new(ProjectName::parse(name)?))
}

fn existing(name: &str) -> Result<Project, String> {
    let p = project(name)?;
    if !p.exists() {
        return Err(format!(
            "project '{name}' does not exist; call workbench_scaffold first"
        ));
    }
    Ok(p)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaffoldArgs {
    name: String,
    title: Option<String>,
    description: Option<String>,
}

fn scaffold(a: ScaffoldArgs) -> ToolResult {
    let p = project(&a.name)?;
    p.create(a.title.as_deref(), a.description.as_deref())
        .map_err(|e| format!("cannot create {}: {e}", p.dir.display()))?;
    let running = control::ensure_running(&p, &control::Launch::from_env())?;
    Ok(json!({
        "path": p.dir.display().to_string(),
        "url": running.info.url,
        "port": running.info.port,
        "reused": running.reused,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectArgs {
    project: String,
}

/// The push goes on as the client sent it, less `project`: read from the
/// arguments once, written once as the request body. The server refuses
/// unknown fields with a message that names the allowed ones.
fn state(tool: &str, a: Value) -> ToolResult {
    let mut fields = match a {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        other => return Err(bad_args(tool, format!("expected an object, got {other}"))),
    };
    let name = match fields.remove("project") {
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(bad_args(
                tool,
                format!("invalid type: {other}, expected a string for `project`"),
            ))
        }
        None => return Err(bad_args(tool, "missing field `project`")),
    };
    let p = existing(&name)?;
    if fields.is_empty() {
        return Err("nothing to push: give at least one of template, styles, script, data".into());
    }
    let r = control::call_project(
        &p,
        "POST",
        "/api/state",
        Some(&Value::Object(fields)),
        Duration::from_secs(30),
    )?;
    Ok(json!({"viewers": r["viewers"], "bytes": r["bytes"], "seq": r["seq"]}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogArgs {
    project: String,
    message: String,
    level: Option<String>,
}

fn log(a: LogArgs) -> ToolResult {
    let p = existing(&a.project)?;
    let body = json!({"message": a.message, "level": a.level});
    let r = control::call_project(&p, "POST", "/api/log", Some(&body), Duration::from_secs(10))?;
    Ok(json!({"ts": r["ts"]}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadLogArgs {
    project: String,
    limit: Option<u64>,
}

fn read_log(a: ReadLogArgs) -> ToolResult {
    let p = existing(&a.project)?;
    let limit = a.limit.unwrap_or(50).clamp(1, 1000) as usize;
    // A server that died is restarted, as for every project tool; the log
    // itself is read from disk, so a deliberately stopped project stays stopped.
    if let control::Status::Stale(..) = control::status(&p) {
        control::ensure_running(&p, &control::Launch::from_env())?;
    }
    let mut entries =
        crate::util::tail_jsonl(&p.path("session.jsonl"), limit).map_err(|e| e.to_string())?;
    let mut truncated = false;
    let mut size: usize = entries.iter().map(|e| e.to_string().len() + 1).sum();
    while size > MAX_RESULT_BYTES && !entries.is_empty() {
        size -= entries.remove(0).to_string().len() + 1;
        truncated = true;
    }
    Ok(json!({"count": entries.len(), "entries": entries, "truncated": truncated}))
}

fn stop(a: ProjectArgs) -> ToolResult {
    let p = existing(&a.project)?;
    let was_running = control::stop(&p)?;
    Ok(json!({"stopped": true, "was_running": was_running}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitArgs {
    project: String,
    since: Option<i64>,
    names: Option<Vec<String>>,
    timeout_seconds: Option<f64>,
}

fn events_path(since: u64, names: &[String], limit: usize, wait: u64) -> String {
    let names = names.join(",");
    let enc: String = names
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.:,".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("/api/events?since={since}&limit={limit}&wait={wait}&names={enc}")
}

/// Keeps a result well under clients' 10 MiB limit: the oldest events that
/// fit in `MAX_RESULT_BYTES` (at least one), with the cursor moved to the
/// last one kept, so the next call returns the rest and nothing is lost.
fn fit_events(mut events: Vec<Value>, cursor: u64) -> (Vec<Value>, u64) {
    let mut size = 0;
    let keep = events
        .iter()
        .position(|e| {
            size += e.to_string().len();
            size > MAX_RESULT_BYTES
        })
        .unwrap_or(events.len())
        .max(1);
    if keep >= events.len() {
        return (events, cursor);
    }
    events.truncate(keep);
    let cursor = events
        .last()
        .and_then(|e| e["seq"].as_u64())
        .unwrap_or(cursor);
    (events, cursor)
}

fn check_since(since: Option<i64>) -> Result<u64, String> {
    match since {
        None => Ok(0),
        Some(n) if n >= 0 => Ok(n as u64),
        Some(n) => Err(format!(
            "since must be a cursor ≥ 0 (got {n}); use 0 to read from the beginning"
        )),
    }
}

/// What one slice of a [`long_wait`] found: the answer, or the answer to
/// give if the time is up.
pub(super) enum Slice {
    Found(Value),
    Nothing(Value),
}

/// A wait of up to `timeout_seconds` (default 25, clamped to 1–50 so that no
/// client's tool timeout is ever hit; NaN counts as the default) for what
/// `attempt` finds while blocking up to the duration it is given. With a
/// progress token, or a client that can go away (HTTP), it blocks in slices
/// of at most 5 s: a progress notification (`message`) goes out between
/// them, so clients that reset their timeout on progress never give up, and
/// a call nobody waits for any more ends within one slice.
pub(super) fn long_wait(
    timeout_seconds: Option<f64>,
    progress: Option<&(Value, Outbox)>,
    out: &Outbox,
    message: &str,
    mut attempt: impl FnMut(Duration) -> Result<Slice, String>,
) -> ToolResult {
    let t = timeout_seconds
        .filter(|t| t.is_finite())
        .unwrap_or(25.0)
        .clamp(1.0, 50.0);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(t);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let slice = if progress.is_some() || out.cancellable() {
            left.min(Duration::from_secs(5))
        } else {
            left
        };
        match attempt(slice)? {
            Slice::Found(v) => return Ok(v),
            Slice::Nothing(v) if Instant::now() + Duration::from_millis(200) >= deadline => {
                return Ok(v)
            }
            Slice::Nothing(_) => {}
        }
        if out.cancelled() {
            return Err("cancelled: the client went away".into());
        }
        if let Some((token, out)) = progress {
            out.send(jsonrpc::notification(
                "notifications/progress",
                json!({"progressToken": token, "progress": started.elapsed().as_secs(), "total": t.round() as u64, "message": message}),
            ));
        }
    }
}

fn wait(a: WaitArgs, progress: Option<&(Value, Outbox)>, out: &Outbox) -> ToolResult {
    let p = existing(&a.project)?;
    let since = check_since(a.since)?;
    let names = a.names.unwrap_or_default();
    let message = "waiting for the human at the page";
    long_wait(a.timeout_seconds, progress, out, message, |slice| {
        // The page server waits in whole seconds; 0 only when no time is left.
        let secs = slice
            .as_secs_f64()
            .round()
            .max(if slice.is_zero() { 0.0 } else { 1.0 }) as u64;
        let r = control::call_project(
            &p,
            "GET",
            &events_path(since, &names, 100, secs),
            None,
            Duration::from_secs(secs + 15),
        )?;
        let events = r["events"].as_array().cloned().unwrap_or_default();
        if events.is_empty() {
            return Ok(Slice::Nothing(
                json!({"status": "pending", "events": [], "cursor": since}),
            ));
        }
        let (events, cursor) = fit_events(events, r["cursor"].as_u64().unwrap_or(since));
        let mut found = json!({"status": "events", "events": events, "cursor": cursor});
        file_tools::attach_images(&p, &mut found);
        Ok(Slice::Found(found))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsArgs {
    project: String,
    since: Option<i64>,
    limit: Option<u64>,
}

fn events(a: EventsArgs) -> ToolResult {
    let p = existing(&a.project)?;
    let since = check_since(a.since)?;
    let limit = a.limit.unwrap_or(100).clamp(1, 1000) as usize;
    let r = control::call_project(
        &p,
        "GET",
        &events_path(since, &[], limit, 0),
        None,
        Duration::from_secs(10),
    )?;
    let events = r["events"].as_array().cloned().unwrap_or_default();
    let (events, cursor) = fit_events(events, r["cursor"].as_u64().unwrap_or(since));
    let mut out = json!({"events": events, "cursor": cursor});
    file_tools::attach_images(&p, &mut out);
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotArgs {
    project: String,
    image: Option<bool>,
}

fn snapshot(a: SnapshotArgs) -> ToolResult {
    let p = existing(&a.project)?;
    let image = a.image.unwrap_or(false);
    let path = if image {
        "/api/snapshot?image=1"
    } else {
        "/api/snapshot"
    };
    let r = control::call_project(&p, "GET", path, None, Duration::from_secs(40))?;
    if r["viewer"].is_null() {
        return Ok(
            json!({"connected": false, "viewer": null, "message": "no browser has the page open right now; give the human the URL from workbench_scaffold"}),
        );
    }
    let s = &r["snapshot"];
    let mut html = s["html"].as_str().unwrap_or("").to_string();
    crate::util::truncate_utf8(&mut html, MAX_RESULT_BYTES / 2);
    // Visible text and form values are capped too: the whole answer stays near 1 MiB.
    let text: String = s["text"]
        .as_str()
        .unwrap_or("")
        .chars()
        .take(MAX_RESULT_BYTES / 4)
        .collect();
    let forms = if s["forms"].to_string().len() > MAX_RESULT_BYTES / 4 {
        json!([])
    } else {
        s["forms"].clone()
    };
    let mut out = json!({"connected": true, "viewer": r["viewer"], "html": html, "text": text, "forms": forms, "title": s["title"]});
    if image {
        match s["png"].as_str().and_then(file_tools::png_block) {
            Some((block, info)) => {
                out["image"] = info;
                out[file_tools::CONTENT_KEY] = json!([block]);
            }
            None => {
                out["image_error"] =
                    json!(s["png_error"].as_str().unwrap_or("the browser sent no PNG"));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_schemas_and_a_description() {
        let tools = list();
        let tools = tools.as_array().unwrap();
        let table: Vec<&Tool> = all().collect();
        assert_eq!(tools.len(), table.len());
        for (i, t) in tools.iter().enumerate() {
            let name = t["name"].as_str().unwrap();
            assert!(
                std::ptr::eq(find(name).unwrap(), table[i]),
                "{name} is unique"
            );
            assert!(
                t["description"].as_str().unwrap().len() > 40,
                "{}",
                t["name"]
            );
            assert_eq!(t["inputSchema"]["type"], "object");
            assert_eq!(t["outputSchema"]["type"], "object");
        }
    }

    #[test]
    fn tools_list_is_built_once_from_the_table() {
        let v: Value = serde_json::from_str(list_result_json()).unwrap();
        assert_eq!(v["tools"], list());
        assert!(std::ptr::eq(list_result_json(), list_result_json()));
        assert!(find("workbench_nope").is_none());
    }

    #[test]
    fn big_event_batches_are_split_without_losing_any() {
        let big = "x".repeat(60 << 10);
        let events: Vec<Value> = (1..=40).map(|i| json!({"seq": i, "data": big})).collect();
        let (kept, cursor) = fit_events(events, 40);
        assert!(kept.len() < 40 && !kept.is_empty());
        assert_eq!(
            cursor,
            kept.len() as u64,
            "the cursor points at the last event returned"
        );
        let (small, c) = fit_events(vec![json!({"seq": 7})], 7);
        assert_eq!((small.len(), c), (1, 7));
    }

    #[test]
    fn events_path_encodes_names() {
        assert_eq!(
            events_path(3, &["a b".into(), "c".into()], 10, 5),
            "/api/events?since=3&limit=10&wait=5&names=a%20b,c"
        );
    }
}
