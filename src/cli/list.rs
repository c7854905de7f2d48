//! `workbench list`: not built yet.

use super::{CliError, CliResult};

pub const USAGE: &str = "usage: workbench list\n\nNot built yet.\n";

pub fn run(_args: pico_args::Arguments) -> CliResult {
    Err(CliError::Failed("`workbench list` is not built yet".into()))
}
