//! The AgentChat relay: protocol, hub, connections (built under issue 6).

pub mod handle_proposal;
pub mod identity;
pub mod proposals;
pub mod signing;
