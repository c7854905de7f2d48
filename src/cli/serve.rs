//! `workbench serve <name>`: create the project if needed and serve its live
//! page in the foreground (the seed's standalone mode).

use super::{arg_error, finish, positional, usage_error, CliError, CliResult};
use crate::page::{self, PortChoice, ServeConfig};
use crate::project::{Project, ProjectName};

pub const USAGE: &str = "\
usage: workbench serve <name> [--title T] [--description D] [--host H] [--port N] [--public-host H] [--max-body BYTES]

Creates ~/workbench/<name>/ if missing (an existing project keeps its files)
and serves its live page on the LAN until Ctrl-C or SIGTERM.

options:
  --title T          page title for a new project (HTML-escaped)
  --description D    short description shown under the title
  --host H           address to listen on (default 0.0.0.0: the whole LAN;
                     use 127.0.0.1 to keep it on this machine)
  --port N           port (default: first free from 8070 up; 0 = any free port)
  --public-host H    host shown in the URL (default: this machine's LAN
                     address; also WORKBENCH_HOST)
  --max-body BYTES   largest request body accepted (default 8388608)

environment: WORKBENCH_HOME (default ~/workbench), WORKBENCH_HOST

example:
  workbench serve bench1 --title \"PSU bring-up\"
";

pub fn run(mut args: pico_args::Arguments) -> CliResult {
    let err = arg_error(USAGE);
    let title: Option<String> = args.opt_value_from_str("--title").map_err(&err)?;
    let description: Option<String> = args.opt_value_from_str("--description").map_err(&err)?;
    let host: String = args
        .opt_value_from_str("--host")
        .map_err(&err)?
        .unwrap_or_else(|| "0.0.0.0".into());
    let port: Option<u16> = args.opt_value_from_str("--port").map_err(&err)?;
    let public_host: Option<String> = args.opt_value_from_str("--public-host").map_err(&err)?;
    let max_body: usize = args
        .opt_value_from_str("--max-body")
        .map_err(&err)?
        .unwrap_or(page::DEFAULT_MAX_BODY);
    let name: String = positional(&mut args, USAGE, "name")?;
    finish(args, USAGE)?;
    let name = ProjectName::parse(&name).map_err(|e| usage_error(USAGE, e))?;
    if max_body < 1024 {
        return Err(usage_error(USAGE, "--max-body must be at least 1024 bytes"));
    }
    let cfg = ServeConfig {
        project: Project::new(name),
        title,
        description,
        host,
        port: port.map(PortChoice::Exact).unwrap_or(PortChoice::Auto),
        public_host,
        max_body,
    };
    page::serve(cfg).map_err(CliError::Failed)
}
