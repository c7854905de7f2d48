//! `workbench`: one binary for two systems that share a core.
//!
//! * the workbench: `workbench mcp` (an MCP server on stdio) drives per-project
//!   page servers (`workbench serve <name>`) that push live HTML to browsers;
//! * the relay: `workbench relay`, an AgentChat 0.3.0 compatible WebSocket
//!   relay, and its shell clients (`send`, `listen`, …).
//!
//! The library exists so integration tests and benchmarks can reuse the
//! small clients (`httpc`); the binary in `main.rs` only dispatches.

pub mod chat;
pub mod cli;
/// This build's version, as `/health`, `.server.json`, MCP's `serverInfo`
/// and `workbench --version` report it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub mod control;
pub mod httpc;
pub mod mcp;
pub mod page;
pub mod project;
pub mod ratelimit;
pub mod relay;
pub mod setup;
pub mod sys;
pub mod tls;
pub mod util;
