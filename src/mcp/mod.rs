//! The MCP stdio server (issue 4).
