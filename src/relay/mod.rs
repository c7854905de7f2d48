//! The AgentChat relay: protocol, hub, connections (built under issue 6).
