//! `workbench stop`: not built yet.

use super::{CliError, CliResult};

pub const USAGE: &str = "usage: workbench stop\n\nNot built yet.\n";

pub fn run(_args: pico_args::Arguments) -> CliResult {
    Err(CliError::Failed("`workbench stop` is not built yet".into()))
}
