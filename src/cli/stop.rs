//! `workbench stop <name>`: stop a project's server cleanly.

use super::{finish, positional, usage_error, CliError, CliResult};
use crate::control;
use crate::project::{Project, ProjectName};

pub const USAGE: &str = "\
usage: workbench stop <name>

Stops the project's server through its API (SIGTERM only if that fails and
the pid really is its server), records the session end in cost-log.jsonl
and removes .server.json. The project's files stay.

example:
  workbench stop bench1
";

pub fn run(mut args: pico_args::Arguments) -> CliResult {
    let name: String = positional(&mut args, USAGE, "name")?;
    finish(args, USAGE)?;
    let project = Project::new(ProjectName::parse(&name).map_err(|e| usage_error(USAGE, e))?);
    if !project.exists() {
        return Err(CliError::Failed(format!(
            "no project '{name}' in {}",
            crate::project::home().display()
        )));
    }
    match control::stop(&project).map_err(CliError::Failed)? {
        true => println!("stopped '{name}'"),
        false => println!("'{name}' was not running"),
    }
    Ok(())
}
