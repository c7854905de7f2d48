//! `workbench identity`: not built yet (see the open issues).

use super::{CliError, CliResult};

pub const USAGE: &str = "usage: workbench identity\n\nNot built yet.\n";

pub fn run(_args: pico_args::Arguments) -> CliResult {
    Err(CliError::Failed(
        "`workbench identity` is not built yet".into(),
    ))
}
