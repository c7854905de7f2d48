//! `workbench relay`: run the AgentChat-compatible relay in the foreground.

use super::{arg_error, finish, usage_error, CliError, CliResult};
use crate::relay::conn::Limits;
use crate::relay::hub::HubConfig;
use crate::relay::server::{self, ServerConfig};

pub const USAGE: &str = "\
usage: workbench relay [--port 6667] [--host 0.0.0.0] [--name NAME] [--buffer-size 20] [--rate-burst 10] [--rate-per-sec 1] [--log-messages] [--max-connections 10000] [--max-frame 65536] [--outbox 256]

Runs an AgentChat 0.3.0 compatible WebSocket relay: agents IDENTIFY, JOIN
channels (#general and #agents exist from the start), send MSG to channels
or to @agent ids, and get the last --buffer-size channel messages replayed
when they join. Logs are JSON lines on stderr; the first is
{\"event\":\"listening\",\"port\":…}. Stops cleanly on Ctrl-C / SIGTERM.

options:
  --port N             TCP port (default 6667; 0 picks a free one)
  --host ADDR          address to bind (default 0.0.0.0: the whole LAN)
  --name NAME          server name sent in WELCOME (default: the hostname)
  --buffer-size N      messages replayed per channel (default 20)
  --rate-burst N       MSG token bucket size per connection (default 10)
  --rate-per-sec X     MSG tokens refilled per second (default 1)
  --log-messages       include message content in the logs (off by default)
  --max-connections N  refuse connections past N (default 10000)
  --max-frame BYTES    largest message accepted (default 65536)
  --outbox N           messages queued for a slow client before it is
                       dropped (default 256)

example:
  workbench relay --port 6667 --name lab-relay
  workbench listen ws://localhost:6667 '#general'
";

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "workbench-relay".into())
}

fn parse(mut args: pico_args::Arguments) -> Result<ServerConfig, CliError> {
    let e = arg_error(USAGE);
    let port: u16 = args
        .opt_value_from_str("--port")
        .map_err(&e)?
        .unwrap_or(6667);
    let host: String = args
        .opt_value_from_str("--host")
        .map_err(&e)?
        .unwrap_or_else(|| "0.0.0.0".into());
    let name: String = args
        .opt_value_from_str("--name")
        .map_err(&e)?
        .unwrap_or_else(hostname);
    let buffer_size: usize = args
        .opt_value_from_str("--buffer-size")
        .map_err(&e)?
        .unwrap_or(20);
    let rate_burst: f64 = args
        .opt_value_from_str("--rate-burst")
        .map_err(&e)?
        .unwrap_or(10.0);
    let rate_per_sec: f64 = args
        .opt_value_from_str("--rate-per-sec")
        .map_err(&e)?
        .unwrap_or(1.0);
    let max_connections: usize = args
        .opt_value_from_str("--max-connections")
        .map_err(&e)?
        .unwrap_or(10_000);
    let max_frame: usize = args
        .opt_value_from_str("--max-frame")
        .map_err(&e)?
        .unwrap_or(65_536);
    let outbox: usize = args
        .opt_value_from_str("--outbox")
        .map_err(&e)?
        .unwrap_or(256);
    let log_messages = args.contains("--log-messages");
    finish(args, USAGE)?;

    if name.is_empty() || name.len() > 64 {
        return Err(usage_error(USAGE, "--name must be 1 to 64 characters"));
    }
    if buffer_size > 10_000 {
        return Err(usage_error(USAGE, "--buffer-size must be at most 10000"));
    }
    if !(rate_burst.is_finite() && rate_burst >= 1.0) {
        return Err(usage_error(USAGE, "--rate-burst must be at least 1"));
    }
    if !(rate_per_sec.is_finite() && rate_per_sec >= 0.0) {
        return Err(usage_error(USAGE, "--rate-per-sec must be a number >= 0"));
    }
    if max_connections == 0 {
        return Err(usage_error(USAGE, "--max-connections must be at least 1"));
    }
    if !(1024..=16 << 20).contains(&max_frame) {
        return Err(usage_error(
            USAGE,
            "--max-frame must be between 1024 and 16777216",
        ));
    }
    if !(16..=1 << 20).contains(&outbox) {
        return Err(usage_error(
            USAGE,
            "--outbox must be between 16 and 1048576",
        ));
    }
    Ok(ServerConfig {
        host,
        port,
        max_connections,
        limits: Limits {
            max_message: max_frame,
            outbox,
        },
        hub: HubConfig {
            server_name: name,
            buffer_size,
            rate_burst,
            rate_per_sec,
            log_messages,
        },
    })
}

pub fn run(args: pico_args::Arguments) -> CliResult {
    let cfg = parse(args)?;
    let addr = format!("{}:{}", cfg.host, cfg.port);
    server::run(cfg).map_err(|e| CliError::Failed(format!("relay on {addr}: {e}")))
}
