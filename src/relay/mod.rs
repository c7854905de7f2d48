//! The AgentChat relay (`workbench relay`) and the client the relay CLI
//! commands share. Wire types live in `protocol`, frame reading in `frame`,
//! shared state and message handling in `hub`, one connection's reader in
//! `conn`, the frames queued for a socket in `outbox`, the one thread
//! that writes every socket in `writer`, the process
//! (listen, accept, signals) in `server`, and the blocking client in
//! `client`. Identities and proposals (issue 7):
//! keys and the identity file in `identity`, the exact signed texts in
//! `signing`, the proposal store in `proposals`, their wire form in
//! `proposal_wire`, and their handling in `handle_proposal`, which `hub`
//! dispatches to. Trust (issue 12): key bindings, replay memory, the
//! allowlist and the proof challenge in `trust`; what a terminal may be
//! shown of a relay's text in `display`. A cluster node (issue 14 §2):
//! Redis in `cluster`, the hub as a replica in `hub/replica`.

pub mod client;
pub mod cluster;
pub mod conn;
pub mod display;
pub mod frame;
pub mod handle_proposal;
pub mod handshake;
pub mod hub;
pub mod identity;
pub mod outbox;
pub mod proposal_wire;
pub mod proposals;
pub mod protocol;
pub mod server;
pub mod signing;
pub mod store;
pub mod transport;
pub mod trust;
pub mod writer;
