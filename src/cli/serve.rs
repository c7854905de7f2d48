//! `workbench serve <name>`: create the project if needed and serve its live
//! page in the foreground (the seed's standalone mode).

use super::{arg_error, finish, positional, usage_error, CliError, CliResult};
use crate::page::{self, PortChoice, ServeConfig};
use crate::project::{Project, ProjectName};

pub const USAGE: &str = "\
usage: workbench serve <name> [--title T] [--description D] [--host H] [--port N | --prefer-port N] [--public-host H] [--max-body BYTES]
                       [--events-max-bytes B] [--events-segment-bytes B] [--events-memory-bytes B]
                       [--events-rate N] [--events-client-rate N] [--allow-origin O]... [--cert FILE --key FILE] [limits, below]
                       [--upload-max-bytes B] [--uploads-max-bytes B] [--uploads-max-files N] [--uploads-rate N]

Creates ~/workbench/<name>/ if missing (an existing project keeps its files)
and serves its live page on the LAN until Ctrl-C or SIGTERM.

options:
  --title T          page title for a new project (HTML-escaped)
  --description D    short description shown under the title
  --host H           address to listen on (default 0.0.0.0: the whole LAN;
                     use 127.0.0.1 to keep it on this machine)
  --port N           port (default: first free from 8070 up; 0 = any free port)
  --prefer-port N    port N if it is free, else any free port (the URL it
                     prints says which)
  --public-host H    host shown in the URL (default: this machine's LAN
                     address; also WORKBENCH_HOST)
  --allow-origin O   also accept this origin (http://name:port) or host name
                     in Origin/Host checks; repeatable (also WORKBENCH_ALLOW_ORIGIN,
                     comma-separated). The server's own names are always allowed.
  --max-body BYTES   largest owner push / snapshot answer (default 8388608)
  --events-max-bytes B      events log quota on disk, all segments (default
                            67108864 = 64 MiB; the oldest segment goes first)
  --events-segment-bytes B  start a new events segment at this size (default 4194304)
  --events-memory-bytes B   newest events kept in memory (default 8388608)
  --events-rate N           events per second from all viewers together (default 50)
  --events-client-rate N    events per second per address or IPv6 /64 (default 5)
  --upload-max-bytes B      largest file the page may upload (default 33554432 = 32 MiB)
  --uploads-max-bytes B     all of files/uploads/ together (default 1073741824 = 1 GiB)
  --uploads-max-files N     files in files/uploads/ (default 2000)
  --uploads-rate N          uploads per second per address or IPv6 /64 (default 2, bursts of 4x)
  --cert FILE        serve HTTPS with this PEM certificate chain (the page's
                     socket becomes wss://, its URL https://); needs --key.
                     Plain HTTP is then served only to this machine
                     (loopback), for the owner's own tools
  --key FILE         the certificate's PEM private key

limits (defaults and what happens over them: docs/page-limits.md):
  --max-connections N            open connections in total (1024; lowered to fit the open-file limit)
  --max-connections-per-client N per client address, IPv6 per /64 (128)
  --max-viewers N                WebSocket viewers in total (256)
  --max-viewers-per-client N     viewers per client address (32)
  --header-timeout SECS          first byte to end of headers (10)
  --body-timeout SECS            whole request body (30)
  --idle-timeout SECS            a read that gets nothing (30)

environment: WORKBENCH_HOME (default ~/workbench), WORKBENCH_HOST, WORKBENCH_ALLOW_ORIGIN; each
--events-* option also reads WORKBENCH_EVENTS_MAX_BYTES, _SEGMENT_BYTES,
_MEMORY_BYTES, _RATE, _CLIENT_RATE (the option wins), and the upload options
WORKBENCH_UPLOAD_MAX_BYTES, WORKBENCH_UPLOADS_MAX_BYTES, _MAX_FILES, _RATE,
so servers started by `workbench mcp` take them from its environment.
WORKBENCH_CERT and WORKBENCH_KEY are the defaults for --cert/--key (set them
where `workbench mcp` runs and the servers it starts use HTTPS).

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
    let prefer: Option<u16> = args.opt_value_from_str("--prefer-port").map_err(&err)?;
    let public_host: Option<String> = args.opt_value_from_str("--public-host").map_err(&err)?;
    let max_body: usize = args
        .opt_value_from_str("--max-body")
        .map_err(&err)?
        .unwrap_or(page::DEFAULT_MAX_BODY);
    let d = page::EventsQuota::default();
    let max_bytes = events_opt(
        &mut args,
        "--events-max-bytes",
        "WORKBENCH_EVENTS_MAX_BYTES",
    )?
    .unwrap_or(d.max_bytes);
    let segment_bytes = events_opt(
        &mut args,
        "--events-segment-bytes",
        "WORKBENCH_EVENTS_SEGMENT_BYTES",
    )?
    .unwrap_or(d.segment_bytes);
    let memory_bytes = events_opt(
        &mut args,
        "--events-memory-bytes",
        "WORKBENCH_EVENTS_MEMORY_BYTES",
    )?
    .unwrap_or(d.memory_bytes as u64);
    let rate = events_opt(&mut args, "--events-rate", "WORKBENCH_EVENTS_RATE")?.unwrap_or(50);
    let client_rate = events_opt(
        &mut args,
        "--events-client-rate",
        "WORKBENCH_EVENTS_CLIENT_RATE",
    )?
    .unwrap_or(5);
    let cert: Option<std::path::PathBuf> = args.opt_value_from_str("--cert").map_err(&err)?;
    let key: Option<std::path::PathBuf> = args.opt_value_from_str("--key").map_err(&err)?;
    let mut allow_origins: Vec<String> = args.values_from_str("--allow-origin").map_err(&err)?;
    if let Ok(env) = std::env::var("WORKBENCH_ALLOW_ORIGIN") {
        allow_origins.extend(
            env.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from),
        );
    }
    let limits = limits(&mut args)?;
    let u = page::uploads::UploadLimits::default();
    let uploads = page::uploads::UploadLimits {
        max_file_bytes: events_opt(
            &mut args,
            "--upload-max-bytes",
            "WORKBENCH_UPLOAD_MAX_BYTES",
        )?
        .unwrap_or(u.max_file_bytes),
        max_total_bytes: events_opt(
            &mut args,
            "--uploads-max-bytes",
            "WORKBENCH_UPLOADS_MAX_BYTES",
        )?
        .unwrap_or(u.max_total_bytes),
        max_files: events_opt(
            &mut args,
            "--uploads-max-files",
            "WORKBENCH_UPLOADS_MAX_FILES",
        )?
        .unwrap_or(u.max_files),
        per_client_per_sec: events_opt(&mut args, "--uploads-rate", "WORKBENCH_UPLOADS_RATE")?
            .map(|n| n as f64)
            .unwrap_or(u.per_client_per_sec),
    };
    let name: String = positional(&mut args, USAGE, "name")?;
    finish(args, USAGE)?;
    let files = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => page::tls::env_files().map_err(|e| usage_error(USAGE, e))?,
        _ => return Err(usage_error(USAGE, "--cert and --key go together")),
    };
    let tls = match files {
        None => None,
        Some((c, k)) => {
            Some(page::tls::PageTls::load(&c, &k).map_err(|e| CliError::Usage(e.to_string()))?)
        }
    };
    let name = ProjectName::parse(&name).map_err(|e| usage_error(USAGE, e))?;
    let port = match (port, prefer) {
        (Some(_), Some(_)) => {
            return Err(usage_error(USAGE, "give --port or --prefer-port, not both"))
        }
        (Some(p), None) => PortChoice::Exact(p),
        (None, Some(p)) => PortChoice::Prefer(p),
        (None, None) => PortChoice::Auto,
    };
    if max_body < 1024 {
        return Err(usage_error(USAGE, "--max-body must be at least 1024 bytes"));
    }
    if segment_bytes < 4096 || max_bytes < 2 * segment_bytes {
        return Err(usage_error(
            USAGE,
            "--events-segment-bytes must be at least 4096 and --events-max-bytes at least twice it",
        ));
    }
    if memory_bytes < 4096 || rate == 0 || client_rate == 0 {
        return Err(usage_error(
            USAGE,
            "--events-memory-bytes must be at least 4096 and the --events-*rate options at least 1",
        ));
    }
    let cfg = ServeConfig {
        project: Project::new(name),
        title,
        description,
        host,
        port,
        public_host,
        max_body,
        events_quota: page::EventsQuota {
            max_bytes,
            segment_bytes,
            memory_bytes: memory_bytes as usize,
        },
        event_limits: page::EventLimits::per_second(client_rate as f64, rate as f64),
        tls,
        allow_origins,
        limits,
        uploads,
    };
    page::serve(cfg).map_err(CliError::Failed)
}

/// A whole number from `--flag`, else from the environment variable.
fn events_opt(
    args: &mut pico_args::Arguments,
    flag: &'static str,
    env: &str,
) -> Result<Option<u64>, CliError> {
    if let Some(v) = args
        .opt_value_from_str::<_, u64>(flag)
        .map_err(arg_error(USAGE))?
    {
        return Ok(Some(v));
    }
    match std::env::var(env) {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse().map(Some).map_err(|_| {
                usage_error(USAGE, format!("{env} must be a whole number (got {v:?})"))
            })
        }
        _ => Ok(None),
    }
}

/// The connection, viewer and time limits (docs/page-limits.md); each at least 1.
fn limits(args: &mut pico_args::Arguments) -> Result<page::Limits, CliError> {
    let d = page::Limits::default();
    let mut count = |flag: &'static str, default: usize| -> Result<usize, CliError> {
        match args
            .opt_value_from_str::<_, usize>(flag)
            .map_err(arg_error(USAGE))?
        {
            Some(0) => Err(usage_error(USAGE, format!("{flag} must be at least 1"))),
            Some(n) => Ok(n),
            None => Ok(default),
        }
    };
    let secs = |d: std::time::Duration| d.as_secs() as usize;
    let from_secs = |n: usize| std::time::Duration::from_secs(n as u64);
    Ok(page::Limits {
        max_connections: count("--max-connections", d.max_connections)?,
        max_connections_per_client: count(
            "--max-connections-per-client",
            d.max_connections_per_client,
        )?,
        max_viewers: count("--max-viewers", d.max_viewers)?,
        max_viewers_per_client: count("--max-viewers-per-client", d.max_viewers_per_client)?,
        header_timeout: from_secs(count("--header-timeout", secs(d.header_timeout))?),
        body_timeout: from_secs(count("--body-timeout", secs(d.body_timeout))?),
        idle_timeout: from_secs(count("--idle-timeout", secs(d.idle_timeout))?),
        ..d
    })
}
