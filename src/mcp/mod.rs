//! `workbench mcp`: the MCP server on stdio. A reader loop parses each line
//! into a typed message and answers at once; tool calls run on worker
//! threads of their own (`workers.rs`, so a long `workbench_wait` never
//! delays a `ping`), and every outgoing line goes through one writer thread
//! that owns stdout. Until `initialize` is answered only `ping` is served.
//! Stdout carries protocol only; stderr stays quiet (a few lines a session).
//! `http.rs` is the Streamable HTTP transport: each of its sessions is a
//! `Session` too, so both transports answer every message alike.

pub mod apps;
mod chat_tools;
mod file_tools;
pub mod http;
pub mod jsonrpc;
mod tools;
mod workers;

pub use tools::list as tool_list;

use std::io::{self, BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;

use serde_json::{json, Value};

use jsonrpc::{Id, Message, RpcError};

/// Protocol versions we speak, newest first.
pub const PROTOCOL_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
/// Longest line accepted on stdin; a state push is at most 8 MiB of JSON.
pub const MAX_LINE: usize = 9 << 20;

const INSTRUCTIONS: &str = "\
Workbench gives you a live web page on the LAN that you control: the human at the bench opens the URL in a browser and sees whatever HTML/CSS/JS you push, instantly, on every open screen.
1. Call workbench_scaffold(name, title) once per task; tell the human the returned url.
2. Render with workbench_state(project, template=HTML, styles=CSS, script=JS). For fast-changing numbers push only `data` and let your script render it: workbench.on('data', d => ...).
3. Narrate with workbench_log(project, message, level).
4. To get answers from the human, render <form data-workbench=\"reading\"> or <button data-workbench-click=\"step1-done\">, or let them type in the message box; then call workbench_wait(project, since=cursor) and pass the returned cursor next time. A 'pending' status is normal: call again.
5. workbench_snapshot shows you what the page currently displays. Servers survive restarts of this MCP server; workbench_list shows them.";

/// An outgoing line for the writer, or a request to confirm all is written.
pub enum Out {
    Line(String),
    Flush(SyncSender<()>),
}

/// Sends protocol lines to the transport's single writer (stdout, or one
/// HTTP response). `cancel` flags say the answer is no longer wanted (the
/// HTTP client went away, cancelled, or ended its session): long tools stop early.
#[derive(Clone)]
pub struct Outbox {
    tx: Sender<Out>,
    cancel: Vec<Arc<AtomicBool>>,
}

impl Outbox {
    pub fn new(tx: Sender<Out>, cancel: Vec<Arc<AtomicBool>>) -> Outbox {
        Outbox { tx, cancel }
    }

    pub fn send(&self, line: String) {
        let _ = self.tx.send(Out::Line(line));
    }

    /// Whether `cancelled` can ever become true.
    pub fn cancellable(&self) -> bool {
        !self.cancel.is_empty()
    }

    /// True once nobody waits for this answer any more.
    pub fn cancelled(&self) -> bool {
        self.cancel.iter().any(|c| c.load(Ordering::Relaxed))
    }
}

fn writer(rx: Receiver<Out>) {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    for msg in rx {
        match msg {
            Out::Line(mut line) => {
                // One write(2) per message: the line with its newline.
                line.push('\n');
                let ok = out.write_all(line.as_bytes()).and_then(|_| out.flush());
                if ok.is_err() {
                    // The client closed our stdout: nobody is listening any more.
                    std::process::exit(0);
                }
            }
            Out::Flush(done) => {
                let _ = out.flush();
                let _ = done.send(());
            }
        }
    }
}

/// Reads one line of at most `MAX_LINE` bytes. `Ok(None)` at EOF;
/// `Err(n)` when a line was too long (its `n` bytes were skipped).
fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<Option<Result<(), usize>>> {
    buf.clear();
    let mut skipped = 0usize;
    loop {
        let chunk = input.fill_buf()?;
        if chunk.is_empty() {
            return Ok(if buf.is_empty() && skipped == 0 {
                None
            } else if skipped > 0 {
                Some(Err(skipped))
            } else {
                Some(Ok(()))
            });
        }
        let (part, found) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        if skipped > 0 || buf.len() + part.len() > MAX_LINE {
            skipped += buf.len() + part.len();
            buf.clear();
        } else {
            buf.extend_from_slice(part);
        }
        let used = found.unwrap_or(chunk.len());
        input.consume(used);
        if found.is_some() {
            return Ok(Some(if skipped > 0 { Err(skipped) } else { Ok(()) }));
        }
    }
}

pub fn run() -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    let writer_thread = std::thread::Builder::new()
        .name("stdout-writer".into())
        .spawn(move || writer(rx))
        .expect("spawn writer");
    let out = Outbox::new(tx.clone(), Vec::new());
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut buf = Vec::new();
    let mut session = Session::new(workers::Workers::new());
    loop {
        match read_line(&mut input, &mut buf) {
            Ok(None) => break,
            Ok(Some(Err(n))) => out.send(jsonrpc::failure(
                &Id::null(),
                &RpcError::InvalidRequest(format!(
                    "message of {n} bytes is over the {MAX_LINE}-byte limit"
                )),
            )),
            Ok(Some(Ok(()))) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim();
                if !line.is_empty() {
                    session.handle_line(line, &out);
                }
            }
            Err(e) => {
                crate::util::log_event("stdin_error", json!({"error": e.to_string()}));
                break;
            }
        }
    }
    // EOF: the client is going away. Make sure every answer is written.
    let (done_tx, done_rx) = mpsc::sync_channel(1);
    let _ = tx.send(Out::Flush(done_tx));
    let _ = done_rx.recv();
    drop(writer_thread);
    Ok(())
}

/// What the server knows about one client: stdio's one, or one HTTP
/// session. Both transports hand it every parsed message.
#[derive(Clone)]
pub struct Session {
    /// The threads tool calls run on.
    workers: workers::Workers,
    /// `initialize` has been answered. Until then only `ping` is served: "the
    /// client SHOULD NOT send requests other than pings before the server has
    /// responded to the initialize request" (MCP 2025-11-25, Lifecycle).
    initialized: bool,
    /// The client declared the MCP Apps extension at `initialize`: only it is
    /// shown the UI metadata, the `ui://` resources and the app-only tool.
    ui: bool,
}

impl Session {
    pub fn new(workers: workers::Workers) -> Session {
        Session {
            workers,
            initialized: false,
            ui: false,
        }
    }

    /// A fresh session sharing this one's worker threads.
    pub fn fresh(&self) -> Session {
        Session::new(self.workers.clone())
    }

    fn handle_line(&mut self, line: &str, out: &Outbox) {
        match jsonrpc::parse(line) {
            Err((id, err)) => out.send(jsonrpc::failure(&id, &err)),
            Ok(msg) => self.handle_message(msg, out),
        }
    }

    /// Handles one parsed message: the answer (and any progress before it)
    /// goes to `out`; tool calls answer from a worker thread.
    pub fn handle_message(&mut self, msg: Message, out: &Outbox) {
        match msg {
            Message::Notification { .. } | Message::Response => {}
            Message::Request { id, method, params } => {
                let gated = matches!(
                    method.as_str(),
                    "tools/list" | "tools/call" | "resources/list" | "resources/read"
                );
                if gated && !self.initialized {
                    // The spec gives no code for this; the request is not
                    // valid in this state, which is JSON-RPC's Invalid Request.
                    // Unknown methods still get -32601 below, which is what
                    // newer clients probing (e.g. `server/discover`) expect.
                    let err = RpcError::InvalidRequest(format!(
                        "the server is not initialized: send \"initialize\" before \"{method}\""
                    ));
                    return out.send(jsonrpc::failure(&id, &err));
                }
                match method.as_str() {
                    "tools/call" if self.ui && apps::is_app_call(&params) => {
                        apps::spawn_call(id, params, out.clone(), &self.workers)
                    }
                    "tools/call" => tools::spawn_call(id, params, out.clone(), &self.workers),
                    "tools/list" if self.ui => out.send(jsonrpc::success(
                        &id,
                        &json!({"tools": apps::with_ui_meta(tools::list())}),
                    )),
                    "tools/list" => out.send(jsonrpc::success_raw(&id, tools::list_result_json())),
                    "resources/list" if self.ui => {
                        out.send(jsonrpc::success(&id, &apps::list_resources()))
                    }
                    "resources/list" => out.send(jsonrpc::success_raw(&id, r#"{"resources":[]}"#)),
                    "resources/templates/list" => {
                        out.send(jsonrpc::success_raw(&id, r#"{"resourceTemplates":[]}"#))
                    }
                    // Reads disk and may start a server: off the reader thread.
                    "resources/read" => apps::spawn_read(id, params, out.clone(), &self.workers),
                    "initialize" => {
                        self.initialized = true;
                        self.ui = apps::client_shows_apps(&params);
                        out.send(jsonrpc::success(&id, &initialize(&params)));
                    }
                    "ping" => out.send(jsonrpc::success_raw(&id, "{}")),
                    other => out.send(jsonrpc::failure(
                        &id,
                        &RpcError::MethodNotFound(other.to_string()),
                    )),
                }
            }
        }
    }
}

/// Answers the client's protocol version when we speak it, else our newest.
pub fn negotiate(requested: Option<&str>) -> &'static str {
    PROTOCOL_VERSIONS
        .iter()
        .find(|v| Some(**v) == requested)
        .copied()
        .unwrap_or(PROTOCOL_VERSIONS[0])
}

fn initialize(params: &Value) -> Value {
    let version = negotiate(params.get("protocolVersion").and_then(Value::as_str));
    json!({
        "protocolVersion": version,
        "capabilities": {
            "tools": {"listChanged": false},
            "resources": {"listChanged": false},
            "extensions": apps::extension_capability(),
        },
        "serverInfo": {"name": "workbench", "title": "Workbench", "version": crate::VERSION},
        "instructions": format!("{INSTRUCTIONS}\n{}", chat_tools::INSTRUCTIONS),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_known_versions_and_falls_back_to_newest() {
        assert_eq!(negotiate(Some("2024-11-05")), "2024-11-05");
        assert_eq!(negotiate(Some("2025-06-18")), "2025-06-18");
        assert_eq!(negotiate(Some("1999-01-01")), "2025-11-25");
        assert_eq!(negotiate(None), "2025-11-25");
    }

    #[test]
    fn reads_lines_and_skips_overlong_ones() {
        let long = "x".repeat(MAX_LINE + 10);
        let data = format!("a\n{long}\nb");
        let mut input = io::BufReader::with_capacity(4096, data.as_bytes());
        let mut buf = Vec::new();
        assert_eq!(read_line(&mut input, &mut buf).unwrap(), Some(Ok(())));
        assert_eq!(buf, b"a");
        assert_eq!(
            read_line(&mut input, &mut buf).unwrap(),
            Some(Err(MAX_LINE + 10))
        );
        assert_eq!(read_line(&mut input, &mut buf).unwrap(), Some(Ok(())));
        assert_eq!(buf, b"b");
        assert_eq!(read_line(&mut input, &mut buf).unwrap(), None);
    }
}
