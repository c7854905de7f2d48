//! The AgentChat relay (`workbench relay`) and the client the relay CLI
//! commands share. Wire types live in `protocol`, frame reading in `frame`,
//! shared state and message handling in `hub`, one connection's reader and
//! writer in `conn`, the process (listen, accept, signals) in `server`, and
//! the blocking client in `client`. Identities and proposals (issue 7)
//! extend `protocol::ClientMsg` and the `hub` dispatch.

pub mod client;
pub mod conn;
pub mod frame;
pub mod hub;
pub mod protocol;
pub mod server;
