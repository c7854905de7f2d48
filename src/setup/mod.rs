//! Registering `workbench mcp` with AI CLIs (Claude Code, Codex CLI, Gemini
//! CLI, Cursor) by editing their own config files, and writing START.md.
//! Shared by `workbench setup` (writes) and `workbench doctor` (reads); the
//! command-line handling lives in `cli/setup.rs` and `cli/doctor.rs`.

pub mod clients;
pub mod json_edit;
pub mod remote;
pub mod start_md;
pub mod toml_edit;
