//! MCP Apps (the `io.modelcontextprotocol/ui` extension, SEP-1865): each
//! project's live page as a `ui://workbench/<project>` resource a GUI host
//! renders inline, in a sandboxed frame with no origin of its own.
//!
//! The frame gets the project's own `index.html` with `static/mcp-app.js`
//! put first in its head. That shim speaks the extension's postMessage
//! protocol with the host (`ui/initialize`, size changes, teardown), points
//! the page's WebSocket at the project server (allowed by the resource's
//! CSP `connectDomains`), and sends what the page POSTs (events, snapshot
//! answers, goodbyes) through the host as calls of the app-only tool
//! `workbench_app_post`, since a sandboxed frame cannot make CORS requests to
//! the page server. Not here: the page itself (static/scaffold.html).

use std::time::Duration;

use serde_json::{json, Value};

use super::jsonrpc::{self, Id, RpcError};
use super::workers::Workers;
use super::Outbox;
use crate::control;
use crate::project::{self, Project, ProjectName, ServerInfo};

pub const EXTENSION: &str = "io.modelcontextprotocol/ui";
pub const MIME: &str = "text/html;profile=mcp-app";
/// The tool the inline page posts through (visible to the app only).
pub const APP_TOOL: &str = "workbench_app_post";
/// The resource named by the tools' `_meta.ui.resourceUri`: the page of the
/// project the call names (the shim learns which from the tool input).
pub const TOOL_RESOURCE: &str = "ui://workbench/app";
const PREFIX: &str = "ui://workbench/";
const SHIM: &str = include_str!("../../static/mcp-app.js");

/// Whether an `initialize` declares the extension with our MIME type (or
/// none listed). Other clients see the server exactly as before MCP Apps.
pub fn client_shows_apps(params: &Value) -> bool {
    let ext = &params["capabilities"]["extensions"][EXTENSION];
    ext.is_object()
        && ext["mimeTypes"]
            .as_array()
            .is_none_or(|m| m.iter().any(|t| t == MIME))
}

/// What `initialize` advertises under `capabilities.extensions`.
pub fn extension_capability() -> Value {
    json!({ EXTENSION: {"mimeTypes": [MIME]} })
}

/// `tools/list` with the UI metadata: the page for scaffold and state, and
/// the app-only tool the page posts through.
pub fn with_ui_meta(mut tools: Value) -> Value {
    if let Some(list) = tools.as_array_mut() {
        for t in list.iter_mut() {
            if matches!(
                t["name"].as_str(),
                Some("workbench_scaffold" | "workbench_state")
            ) {
                t["_meta"] = json!({"ui": {"resourceUri": TOOL_RESOURCE}});
            }
        }
        list.push(json!({
            "name": APP_TOOL,
            "title": "Inline page: send to the project server",
            "description": "Used by the workbench page shown inline as an MCP App to send the human's events to its project server. Not for the model: call workbench_wait to read events.",
            "inputSchema": {"type": "object", "properties": {
                "project": {"type": "string"},
                "path": {"type": "string", "description": "/api/event, /api/snapshot/<id> or /api/bye"},
                "body": {"type": "string", "description": "The JSON body the page would POST."}
            }, "required": ["project", "path", "body"], "additionalProperties": false},
            "_meta": {"ui": {"visibility": ["app"]}},
        }));
    }
    tools
}

fn origins(info: &ServerInfo) -> (String, String) {
    let http = info
        .url
        .trim_end_matches('/')
        .split('/')
        .take(3)
        .collect::<Vec<_>>()
        .join("/");
    let ws = http.replacen("http", "ws", 1);
    (http, ws)
}

fn resource_meta(infos: &[ServerInfo]) -> Value {
    let mut connect = Vec::new();
    for i in infos {
        let (h, w) = origins(i);
        connect.push(h);
        connect.push(w);
    }
    json!({"ui": {"csp": {"connectDomains": connect}, "prefersBorder": true}})
}

pub fn list_resources() -> Value {
    let mut out = Vec::new();
    for p in project::all_projects() {
        let info = ServerInfo::load(&p).ok().flatten();
        out.push(json!({
            "uri": format!("{PREFIX}{}", p.name.as_str()),
            "name": p.name.as_str(),
            "title": p.title().unwrap_or_else(|| p.name.as_str().to_string()),
            "description": "The project's live page, for hosts that show MCP Apps inline.",
            "mimeType": MIME,
            "_meta": resource_meta(info.as_slice()),
        }));
    }
    json!({"resources": out})
}

/// `resources/read` of `ui://workbench/<project>` (or the tools' generic
/// `ui://workbench/app`): the page with the shim, its server started if needed.
pub fn read_resource(params: &Value) -> Result<Value, RpcError> {
    let uri = params["uri"]
        .as_str()
        .ok_or_else(|| RpcError::InvalidParams("resources/read needs {uri}".into()))?;
    let name = uri.strip_prefix(PREFIX).ok_or_else(|| {
        RpcError::InvalidParams(format!("unknown resource {uri:?}; see resources/list"))
    })?;
    if uri == TOOL_RESOURCE {
        // Every running project's server may be the one the call names.
        let infos: Vec<ServerInfo> = project::all_projects()
            .iter()
            .filter_map(|p| ServerInfo::load(p).ok().flatten())
            .collect();
        // The page template, unfilled by any project (the shim names it).
        let template = project::SCAFFOLD_HTML
            .replace("{{TITLE}}", "Workbench")
            .replace("{{DESCRIPTION}}", "")
            .replace("{{PROJECT}}", "");
        let html = page(&template, &json!({"project": null}));
        return Ok(contents(uri, html, resource_meta(&infos)));
    }
    let p = ProjectName::parse(name)
        .map(Project::new)
        .ok()
        .filter(Project::exists)
        .ok_or_else(|| {
            RpcError::InvalidParams(format!(
                "no project {name:?}; call workbench_scaffold first"
            ))
        })?;
    let running =
        control::ensure_running(&p, &control::Launch::from_env()).map_err(RpcError::Internal)?;
    let index = std::fs::read_to_string(p.path("index.html"))
        .map_err(|e| RpcError::Internal(format!("cannot read the page: {e}")))?;
    let (http, ws) = origins(&running.info);
    // The frame's Origin is not the page server's: its socket opens the
    // keyed /app/<key>/ws instead of /ws (docs/page-limits.md).
    let ws = format!(
        "{ws}/app/{}",
        crate::page::origin::app_key(&running.info.token)
    );
    let cfg = json!({"project": name, "server": http, "ws": ws});
    let mut meta = resource_meta(std::slice::from_ref(&running.info));
    // The shim of the generic ui://workbench/app reads the server from here.
    meta["workbench"] = cfg.clone();
    Ok(contents(uri, page(&index, &cfg), meta))
}

fn contents(uri: &str, html: String, meta: Value) -> Value {
    json!({"contents": [{"uri": uri, "mimeType": MIME, "text": html, "_meta": meta}]})
}

/// The page with the shim and its settings first in `<head>`, so it runs
/// before the page's own script.
fn page(index: &str, cfg: &Value) -> String {
    // `</` inside a script would end it early.
    let cfg = cfg.to_string().replace("</", "<\\/");
    let tag = format!("<script>window.__WORKBENCH_APP__ = {cfg};\n{SHIM}</script>");
    // After the `<head …>` tag (any case, any attributes); without one, after
    // a leading doctype, so the page never drops into quirks mode.
    let lower = index.to_ascii_lowercase();
    let after = |tag_start: usize| lower[tag_start..].find('>').map(|e| tag_start + e + 1);
    let at = lower
        .find("<head")
        .filter(|i| lower[i + 5..].starts_with(|c: char| c == '>' || c.is_ascii_whitespace()))
        .and_then(after)
        .or_else(|| {
            lower
                .trim_start()
                .starts_with("<!doctype")
                .then(|| lower.find("<!doctype").and_then(after))
                .flatten()
        })
        .unwrap_or(0);
    format!("{}{tag}{}", &index[..at], &index[at..])
}

/// Whether a `tools/call` is for the app-only tool.
pub fn is_app_call(params: &Value) -> bool {
    params["name"] == APP_TOOL
}

/// Runs the app-only tool on a worker thread: a page POST relayed to the
/// project server over loopback, answered like any tool.
pub fn spawn_call(id: Id, params: Value, out: Outbox, workers: &Workers) {
    let thread_out = out.clone();
    let job = Box::new(move || {
        let result = app_post(&params["arguments"]);
        thread_out.send(jsonrpc::success_raw(
            &id,
            &super::tools::call_result_json(result),
        ));
    });
    if let Err(e) = workers.run(job) {
        out.send(jsonrpc::failure(
            &Id::null(),
            &RpcError::Internal(format!("cannot start a thread: {e}")),
        ));
    }
}

/// Answers `resources/read` on a worker thread (it reads the disk and may
/// start the project's server).
pub fn spawn_read(id: Id, params: Value, out: Outbox, workers: &Workers) {
    let thread_out = out.clone();
    let job = Box::new(move || {
        thread_out.send(match read_resource(&params) {
            Ok(v) => jsonrpc::success(&id, &v),
            Err(e) => jsonrpc::failure(&id, &e),
        })
    });
    if let Err(e) = workers.run(job) {
        out.send(jsonrpc::failure(
            &Id::null(),
            &RpcError::Internal(format!("cannot start a thread: {e}")),
        ));
    }
}

fn app_post(a: &Value) -> Result<Value, String> {
    let (Some(name), Some(path), Some(body)) = (
        a["project"].as_str(),
        a["path"].as_str(),
        a["body"].as_str(),
    ) else {
        return Err(format!(
            "{APP_TOOL} needs {{project, path, body}} as strings"
        ));
    };
    let allowed = path == "/api/event"
        || path == "/api/bye"
        || path.strip_prefix("/api/snapshot/").is_some_and(|id| {
            !id.is_empty()
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !allowed {
        return Err(format!(
            "{APP_TOOL} only relays /api/event, /api/snapshot/<id> and /api/bye, not {path:?}"
        ));
    }
    let p = Project::new(ProjectName::parse(name)?);
    let info =
        ServerInfo::load(&p)?.ok_or_else(|| format!("project '{name}' has no running server"))?;
    let r = crate::httpc::request(
        &info.connect_addr(),
        "POST",
        path,
        // The owner relays for its own app frame: events and snapshot
        // answers need a key the frame's page cannot send through the host.
        Some(&info.token),
        Some(body.as_bytes()),
        Duration::from_secs(10),
    )
    .map_err(|e| format!("the project server did not answer: {e}"))?;
    let answer = r.json().unwrap_or(Value::Null);
    Ok(json!({"status": r.status, "body": answer}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shim_goes_first_in_head_and_cannot_end_its_script() {
        let html = page(
            "<html><head><title>x</title></head><body><script>1</script></body></html>",
            &json!({"project": "</script><b>"}),
        );
        let shim = html.find("__WORKBENCH_APP__").unwrap();
        assert!(shim < html.find("<title>").unwrap());
        assert!(!html[..html.find("<title>").unwrap()].contains("</script><b>"));
    }

    #[test]
    fn the_shim_never_precedes_the_doctype() {
        let cfg = json!({});
        let p = page("<!DOCTYPE html><HTML><HEAD lang=x><title>t</title>", &cfg);
        assert!(
            p.starts_with("<!DOCTYPE html><HTML><HEAD lang=x><script>"),
            "{p}"
        );
        let p = page("<!doctype html><p>no head</p>", &cfg);
        assert!(p.starts_with("<!doctype html><script>"), "{p}");
        let p = page("<p>bare</p>", &cfg);
        assert!(p.starts_with("<script>") && p.ends_with("<p>bare</p>"));
        let p = page("<!doctype html><header>x</header>", &cfg);
        assert!(
            p.starts_with("<!doctype html><script>"),
            "a <header> is not the head: {p}"
        );
    }

    #[test]
    fn tools_get_ui_meta_and_the_app_tool_is_app_only() {
        let t = with_ui_meta(json!([{"name": "workbench_state"}, {"name": "workbench_log"}]));
        assert_eq!(t[0]["_meta"]["ui"]["resourceUri"], TOOL_RESOURCE);
        assert!(t[1].get("_meta").is_none());
        assert_eq!(t[2]["name"], APP_TOOL);
        assert_eq!(t[2]["_meta"]["ui"]["visibility"], json!(["app"]));
    }

    #[test]
    fn app_post_relays_only_page_routes() {
        for bad in [
            "/api/state",
            "/api/stop",
            "/api/snapshot/",
            "/api/snapshot/../x",
            "/",
        ] {
            let e = app_post(&json!({"project": "p", "path": bad, "body": "{}"})).unwrap_err();
            assert!(e.contains("only relays"), "{bad}: {e}");
        }
        assert!(app_post(&json!({"project": "p"})).is_err());
    }

    #[test]
    fn csp_names_the_page_server_for_http_and_websocket() {
        let info = ServerInfo {
            pid: 1,
            port: 8070,
            host: "0.0.0.0".into(),
            url: "http://127.0.0.1:8070/".into(),
            started: String::new(),
            token: String::new(),
            version: String::new(),
        };
        assert_eq!(
            resource_meta(&[info])["ui"]["csp"]["connectDomains"],
            json!(["http://127.0.0.1:8070", "ws://127.0.0.1:8070"])
        );
    }
}
