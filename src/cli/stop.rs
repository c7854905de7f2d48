//! `workbench stop <name>`: stop a project's server cleanly, or a relay
//! chat session's process.

use super::{finish, positional, usage_error, CliError, CliResult};
use crate::chat::{self, SessionDir, SessionName};
use crate::control;
use crate::project::{Project, ProjectName};

pub const USAGE: &str = "\
usage: workbench stop <name> | --chat <session>

Stops the project's server through its API (SIGTERM only if that fails and
the pid really is its server), records the session end in cost-log.jsonl
and removes .server.json. The project's files stay.

With --chat (or when there is no project <name> but a chat session of that
name), ends the relay chat session instead: it says goodbye to the relay
and exits; its inbox stays, and chat_connect starts it again.

example:
  workbench stop bench1
  workbench stop --chat alice
";

pub fn run(mut args: pico_args::Arguments) -> CliResult {
    let chat_only = args.contains("--chat");
    let name: String = positional(&mut args, USAGE, "name")?;
    finish(args, USAGE)?;
    let session = SessionName::parse(&name).ok().map(SessionDir::new);
    let project = ProjectName::parse(&name).ok().map(Project::new);
    if chat_only || !project.as_ref().is_some_and(Project::exists) {
        if let Some(dir) = session.filter(SessionDir::exists) {
            match chat::stop(&dir).map_err(CliError::Failed)? {
                true => println!("stopped chat session '{name}'"),
                false => println!("chat session '{name}' was not running"),
            }
            return Ok(());
        }
        if chat_only {
            return Err(CliError::Failed(format!(
                "no chat session '{name}' in {}",
                chat::root().display()
            )));
        }
    }
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
