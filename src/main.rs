//! The `workbench` binary: dispatch to a subcommand and decide the exit code
//! (0 ok, 1 failed, 2 bad usage). Everything else lives in the library.

use workbench::cli::{self, CliError};

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let code = match cli::dispatch(args) {
        Ok(()) => 0,
        Err(CliError::Usage(msg)) => {
            eprintln!("workbench: {msg}");
            2
        }
        Err(CliError::Failed(msg)) => {
            eprintln!("workbench: error: {msg}");
            1
        }
    };
    std::process::exit(code);
}
