//! `workbench serve`: not built yet.

use super::{CliError, CliResult};

pub const USAGE: &str = "usage: workbench serve\n\nNot built yet.\n";

pub fn run(_args: pico_args::Arguments) -> CliResult {
    Err(CliError::Failed(
        "`workbench serve` is not built yet".into(),
    ))
}
