//! `workbench accept|reject|complete|dispute`: not built yet.

use super::{CliError, CliResult};

pub const ACCEPT_USAGE: &str = "usage: workbench accept <server> <proposal_id>\n\nNot built yet.\n";
pub const REJECT_USAGE: &str = "usage: workbench reject <server> <proposal_id>\n\nNot built yet.\n";
pub const COMPLETE_USAGE: &str =
    "usage: workbench complete <server> <proposal_id>\n\nNot built yet.\n";
pub const DISPUTE_USAGE: &str =
    "usage: workbench dispute <server> <proposal_id> <reason>\n\nNot built yet.\n";

fn not_yet(_args: pico_args::Arguments) -> CliResult {
    Err(CliError::Failed(
        "proposal commands are not built yet".into(),
    ))
}
pub fn accept(a: pico_args::Arguments) -> CliResult {
    not_yet(a)
}
pub fn reject(a: pico_args::Arguments) -> CliResult {
    not_yet(a)
}
pub fn complete(a: pico_args::Arguments) -> CliResult {
    not_yet(a)
}
pub fn dispute(a: pico_args::Arguments) -> CliResult {
    not_yet(a)
}
