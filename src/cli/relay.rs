//! `workbench relay`: run the AgentChat-compatible relay in the foreground.

use std::path::PathBuf;
use std::time::Duration;

use super::{arg_error, finish, usage_error, CliError, CliResult};
use crate::ratelimit::Rate;
use crate::relay::cluster;
use crate::relay::conn::Limits;
use crate::relay::hub::{HubConfig, Quotas, TrustConfig};
use crate::relay::proposals::StoreLimits;
use crate::relay::server::{self, ServerConfig, StateMode};
use crate::relay::store::{self, Fsync, JournalConfig};
use crate::relay::trust::Allowlist;

pub const USAGE: &str = "\
usage: workbench relay [--data-dir DIR | --ephemeral | --cluster redis://HOST:PORT[/DB]] [--fsync interval] [--port 6667] [--host 0.0.0.0] [--name NAME] [--buffer-size 20] [--rate-burst 10] [--rate-per-sec 1] [--log-messages] [--max-connections 10000] [--max-per-ip 50] [--max-frame 65536] [--outbox 256] [--require-proof] [--allow FILE] [--no-ephemeral] [--cert FILE --key FILE] [trust and quota options below]

Runs an AgentChat 0.3.0 compatible WebSocket relay: agents IDENTIFY, JOIN
channels (#general and #agents exist from the start), send MSG to channels
or to @agent ids, and get the last --buffer-size channel messages replayed
when they join. Logs are JSON lines on stderr; the first is
{\"event\":\"listening\",\"port\":…}, and every line names the mode and the
node (--name, or --node-id in a cluster). Stops cleanly on Ctrl-C / SIGTERM. `GET /health` on the
relay port answers JSON without a WebSocket upgrade (for load balancers:
`curl http://HOST:6667/health`).

modes and where state lives (docs/relay-state.md):
  durable (default)    channels (invite-only status, creator, invites),
                       each channel's replay buffer, proposals (status,
                       history, expiry, signatures) and the id-to-key
                       bindings are kept in a journal in the data
                       directory, written before any client sees the
                       change acknowledged: a restart or a kill -9 loses
                       none of it. Connections, presence and rate buckets
                       are not kept (clients reconnect and JOIN again).
  --ephemeral          memory only, as AgentChat 0.3.0: a restart loses all
  --cluster URL        one node of a cluster (docs/relay-cluster.md): all of
                       the durable state, and presence, live in Redis (a
                       stream and a snapshot key); every node applies the
                       same records in the same order, so any number of
                       nodes behind a TCP load balancer act as one relay. A
                       node's restart or loss loses nothing but its
                       connections (its agents leave within ~12 s and
                       reconnect to another node); Redis keeps the state
                       across its own restarts only with AOF on (appendonly
                       yes). No data directory is used.

cluster (docs/relay-cluster.md; example HAProxy config with the /health
check: docs/relay-cluster.haproxy.cfg):
  --cluster URL        redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] (port 6379,
                       database 0 by default); rediss:// (TLS) is refused in
                       this build. Unreachable at start: exit 1. While Redis
                       is away, requests get ERROR CLUSTER_UNAVAILABLE,
                       sessions stay, /health answers 503, and the node
                       reconnects with backoff.
  --node-id ID         this node's name in logs and in Redis (default:
                       hostname plus random digits); keep it across restarts
                       so a restarted node takes over its old session at once
  --cluster-snapshot-every N  records between snapshots of the state in
                       Redis; the stream is trimmed behind them (default 10000)
  behind a load balancer every client has the balancer's address: raise
  --max-per-ip and --connect-rate-* (or limit at the balancer).

durable state:
  --data-dir DIR       where (default $XDG_STATE_HOME/workbench/relay, else
                       ~/.local/state/workbench/relay); one relay per
                       directory: a second is refused
  --fsync POLICY       when the journal is forced to the disk itself:
                       interval (default): within 1 s of a change; a power
                       cut or kernel crash may lose that last second of
                       acknowledged changes (a relay crash or kill -9 loses
                       nothing). always: before each answer (survives a
                       power cut; every change waits for the disk). never:
                       when the kernel writes back (about 30 s).
  --compact-at BYTES   compact the journal into a snapshot once it holds
                       this much (default 16777216; at least 4096)

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
  --max-per-ip N       connections per client address, IPv6 per /64
                       (default 50)
  --connect-rate-burst N, --connect-rate-per-sec X
                       new connections per client address (default 60, 10)

trust (docs/relay-trust.md):
  --require-proof      a keyed IDENTIFY gets a CHALLENGE; WELCOME only after
                       a verified VERIFY_IDENTITY (0.3.0 keyed clients are
                       told PROOF_REQUIRED and closed; key-less ones work)
  --challenge-timeout S  seconds to answer a CHALLENGE (default 60)
  --identify-timeout S   a connection that has not identified after S
                       seconds is closed (default 10)
  --ts-window S        a signed MSG's ts may be S seconds from the relay's
                       clock (default 300); its signature is accepted once
  --allow FILE         only the keys in FILE (PEMs or exported identities)
                       may IDENTIFY with a pubkey; re-read on SIGHUP
  --no-ephemeral       refuse clients without a key

quotas (every refusal is an ERROR with a code, and a log line):
  --max-channels N     channels in total (default 1000)
  --channels-per-hour K  CREATE_CHANNEL per agent per hour (default 10; a
                       client address may create 4K)
  --channel-idle S     a created channel empty for S seconds is freed
                       (default 600; #general and #agents stay)
  --max-invites N      invitations per channel (default 1000)
  --ip-rate-burst N, --ip-rate-per-sec X
                       MSG / INVITE / proposal messages per client address
                       over all its connections (default 6x and 10x the
                       per-connection rate)
  --channel-rate-burst N, --channel-rate-per-sec X
                       MSGs per channel from all senders (default 20x the
                       per-connection rate)
  --max-proposals N    proposals held in total (default 10000)
  --max-pending N      pending proposals per proposer (default 100)
  --proposal-expiry S  expiry of a proposal that sets none (default 3600;
                       0: never, as 0.3.0)

tls (docs/tls.md):
  --cert FILE          serve wss:// with this PEM certificate chain (leaf
                       first); needs --key. A missing, unreadable, non-PEM
                       or expired file, or a key that does not match, exits 2
  --key FILE           the certificate's PEM private key (RSA, ECDSA, Ed25519)

example:
  workbench relay --port 6667 --name lab-relay
  workbench relay --ephemeral --port 7000
  workbench relay --data-dir /var/lib/workbench-relay --fsync always
  workbench relay --require-proof --allow team-keys.txt --no-ephemeral
  workbench relay --cluster redis://:PASSWORD@10.0.0.5:6379/0 --node-id relay-1
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
    let max_per_ip: usize = args
        .opt_value_from_str("--max-per-ip")
        .map_err(&e)?
        .unwrap_or(50);
    let require_proof = args.contains("--require-proof");
    let no_ephemeral = args.contains("--no-ephemeral");
    let secs = |args: &mut pico_args::Arguments, flag: &'static str, default: u64| {
        args.opt_value_from_str::<_, u64>(flag)
            .map_err(&e)
            .map(|v| v.unwrap_or(default))
    };
    let challenge_s = secs(&mut args, "--challenge-timeout", 60)?;
    let identify_s = secs(&mut args, "--identify-timeout", 10)?;
    let window_s = secs(&mut args, "--ts-window", 300)?;
    let idle_s = secs(&mut args, "--channel-idle", 600)?;
    let expiry_s = secs(&mut args, "--proposal-expiry", 3600)?;
    let allow_file: Option<PathBuf> = args
        .opt_value_from_os_str("--allow", |s| {
            Ok::<_, std::convert::Infallible>(PathBuf::from(s))
        })
        .map_err(&e)?;
    let count = |args: &mut pico_args::Arguments, flag: &'static str, default: usize| {
        args.opt_value_from_str::<_, usize>(flag)
            .map_err(&e)
            .map(|v| v.unwrap_or(default))
    };
    let max_channels = count(&mut args, "--max-channels", 1000)?;
    let per_hour = count(&mut args, "--channels-per-hour", 10)?;
    let max_invites = count(&mut args, "--max-invites", 1000)?;
    let max_proposals = count(&mut args, "--max-proposals", 10_000)?;
    let max_pending = count(&mut args, "--max-pending", 100)?;
    let rate = |args: &mut pico_args::Arguments, flag: &'static str| {
        args.opt_value_from_str::<_, f64>(flag).map_err(&e)
    };
    let ip_burst = rate(&mut args, "--ip-rate-burst")?;
    let ip_per_sec = rate(&mut args, "--ip-rate-per-sec")?;
    let ch_burst = rate(&mut args, "--channel-rate-burst")?;
    let ch_per_sec = rate(&mut args, "--channel-rate-per-sec")?;
    let conn_burst = rate(&mut args, "--connect-rate-burst")?.unwrap_or(60.0);
    let conn_per_sec = rate(&mut args, "--connect-rate-per-sec")?.unwrap_or(10.0);
    let cert: Option<std::path::PathBuf> = args.opt_value_from_str("--cert").map_err(&e)?;
    let key: Option<std::path::PathBuf> = args.opt_value_from_str("--key").map_err(&e)?;
    let ephemeral = args.contains("--ephemeral");
    let data_dir: Option<PathBuf> = args
        .opt_value_from_os_str("--data-dir", |s| {
            Ok::<_, std::convert::Infallible>(PathBuf::from(s))
        })
        .map_err(&e)?;
    let fsync: Option<String> = args.opt_value_from_str("--fsync").map_err(&e)?;
    let compact_at: Option<u64> = args.opt_value_from_str("--compact-at").map_err(&e)?;
    let cluster: Option<String> = args.opt_value_from_str("--cluster").map_err(&e)?;
    let node_id: Option<String> = args.opt_value_from_str("--node-id").map_err(&e)?;
    let snapshot_every: Option<usize> = args
        .opt_value_from_str("--cluster-snapshot-every")
        .map_err(&e)?;
    finish(args, USAGE)?;
    let tls = match (cert, key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(
            crate::tls::load_server(&cert, &key)
                .map_err(|e| CliError::Usage(e.to_string()))?
                .config,
        ),
        _ => return Err(usage_error(USAGE, "--cert and --key go together")),
    };

    let state = if let Some(url) = cluster {
        let local = ephemeral || data_dir.is_some() || fsync.is_some() || compact_at.is_some();
        cluster_mode(&url, node_id, snapshot_every, local)?
    } else if node_id.is_some() || snapshot_every.is_some() {
        return Err(usage_error(
            USAGE,
            "--node-id and --cluster-snapshot-every go with --cluster",
        ));
    } else if ephemeral {
        if data_dir.is_some() || fsync.is_some() || compact_at.is_some() {
            return Err(usage_error(
                USAGE,
                "--ephemeral keeps nothing: it does not go with --data-dir, --fsync or --compact-at",
            ));
        }
        StateMode::Ephemeral
    } else {
        let fsync = match fsync.as_deref() {
            None => Fsync::Interval(store::FSYNC_INTERVAL),
            Some(f) => Fsync::parse(f)
                .ok_or_else(|| usage_error(USAGE, "--fsync must be always, interval or never"))?,
        };
        let compact_at = compact_at.unwrap_or(store::COMPACT_AT);
        if compact_at < 4096 {
            return Err(usage_error(USAGE, "--compact-at must be at least 4096"));
        }
        let dir = match data_dir {
            Some(d) if d.as_os_str().is_empty() => {
                return Err(usage_error(USAGE, "--data-dir must not be empty"))
            }
            Some(d) => d,
            None => store::default_dir().ok_or_else(|| {
                usage_error(
                    USAGE,
                    "no default data directory (neither XDG_STATE_HOME nor HOME is set): \
                     give --data-dir DIR, or --ephemeral",
                )
            })?,
        };
        StateMode::Durable(JournalConfig {
            dir,
            fsync,
            compact_at,
        })
    };

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
    if max_per_ip == 0 {
        return Err(usage_error(USAGE, "--max-per-ip must be at least 1"));
    }
    for (flag, v) in [
        ("--challenge-timeout", challenge_s),
        ("--identify-timeout", identify_s),
        ("--ts-window", window_s),
    ] {
        if !(1..=86_400).contains(&v) {
            return Err(usage_error(
                USAGE,
                format!("{flag} must be 1 to 86400 seconds"),
            ));
        }
    }
    if max_channels < 2 {
        return Err(usage_error(USAGE, "--max-channels must be at least 2"));
    }
    if per_hour == 0 || per_hour > 1_000_000 || max_invites == 0 || max_pending == 0 {
        return Err(usage_error(
            USAGE,
            "--channels-per-hour, --max-invites and --max-pending must be at least 1",
        ));
    }
    if max_proposals == 0 {
        return Err(usage_error(USAGE, "--max-proposals must be at least 1"));
    }
    for (flag, v) in [
        ("--ip-rate-burst", ip_burst),
        ("--channel-rate-burst", ch_burst),
        ("--connect-rate-burst", Some(conn_burst)),
    ] {
        if v.is_some_and(|b| !(b.is_finite() && b >= 1.0)) {
            return Err(usage_error(USAGE, format!("{flag} must be at least 1")));
        }
    }
    for (flag, v) in [
        ("--ip-rate-per-sec", ip_per_sec),
        ("--channel-rate-per-sec", ch_per_sec),
        ("--connect-rate-per-sec", Some(conn_per_sec)),
    ] {
        if v.is_some_and(|r| !(r.is_finite() && r >= 0.0)) {
            return Err(usage_error(USAGE, format!("{flag} must be a number >= 0")));
        }
    }
    // An unreadable or invalid allowlist stops the start (exit 2), naming
    // the file and line.
    let allow = match &allow_file {
        Some(f) => {
            Some(Allowlist::load(f).map_err(|m| usage_error(USAGE, format!("--allow: {m}")))?)
        }
        None => None,
    };
    let mut quotas = Quotas::for_rate(Rate::new(rate_burst, rate_per_sec));
    quotas.max_channels = max_channels;
    quotas.channels_per_hour = per_hour as u32;
    quotas.channel_idle = Duration::from_secs(idle_s);
    quotas.max_invites = max_invites;
    quotas.ip_rate = Rate::new(
        ip_burst.unwrap_or(quotas.ip_rate.burst),
        ip_per_sec.unwrap_or(quotas.ip_rate.per_sec),
    );
    quotas.channel_rate = Rate::new(
        ch_burst.unwrap_or(quotas.channel_rate.burst),
        ch_per_sec.unwrap_or(quotas.channel_rate.per_sec),
    );
    quotas.proposals = StoreLimits {
        max_total: max_proposals,
        max_pending_per_agent: max_pending,
        default_expiry_secs: expiry_s,
    };
    Ok(ServerConfig {
        host,
        port,
        max_connections,
        max_per_ip,
        connect_rate: Rate::new(conn_burst, conn_per_sec),
        allow_file,
        state,
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
            trust: TrustConfig {
                require_proof,
                challenge_ms: challenge_s * 1000,
                identify_ms: identify_s * 1000,
                ts_window_ms: window_s * 1000,
                no_ephemeral,
                allow,
            },
            quotas,
        },
        tls,
    })
}

/// `--cluster URL [--node-id ID]` (docs/relay-cluster.md): state lives in
/// Redis, so no data directory options go with it.
fn cluster_mode(
    url: &str,
    node_id: Option<String>,
    snapshot_every: Option<usize>,
    local_state: bool,
) -> Result<StateMode, CliError> {
    if local_state {
        return Err(usage_error(
            USAGE,
            "--cluster keeps the relay's state in Redis: it does not go with --ephemeral, \
             --data-dir, --fsync or --compact-at",
        ));
    }
    let (target, shown) = cluster::parse_url(url).map_err(|m| usage_error(USAGE, m))?;
    let node_id = match node_id {
        Some(n) => n,
        None => {
            let tail =
                crate::util::random_hex(3).unwrap_or_else(|_| format!("{}", std::process::id()));
            let host: String = hostname()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .take(40)
                .collect();
            format!("{host}-{tail}")
        }
    };
    let ok = (1..=64).contains(&node_id.len())
        && node_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if !ok {
        return Err(usage_error(
            USAGE,
            "--node-id must be 1 to 64 characters: letters, digits, - _ . :",
        ));
    }
    let snapshot_every = snapshot_every.unwrap_or(10_000);
    if !(100..=10_000_000).contains(&snapshot_every) {
        return Err(usage_error(
            USAGE,
            "--cluster-snapshot-every must be between 100 and 10000000",
        ));
    }
    Ok(StateMode::Cluster(cluster::ClusterConfig {
        target,
        shown,
        node_id,
        snapshot_every,
    }))
}

pub fn run(args: pico_args::Arguments) -> CliResult {
    let cfg = parse(args)?;
    let addr = format!("{}:{}", cfg.host, cfg.port);
    server::run(cfg).map_err(|e| CliError::Failed(format!("relay on {addr}: {e}")))
}
