//! Guards the relay's idle memory (issue 13): each idle agent may cost the
//! relay at most `BUDGET_KIB` of resident memory. The budget holds only
//! while the reader thread's stack under its blocking read stays shallow:
//! `conn::read_loop` calls `sys::trim_stack` before it blocks, and every
//! deep step (handshake, message handling) runs in its own frame below the
//! loop's, never inlined into it (see `relay/conn.rs`). A change that
//! breaks that rule, drops the trim, or grows per-connection buffers
//! shows up here as RSS, not as a timing: this asserts memory only. The
//! relay also turns glibc's per-thread malloc caches off (a re-exec with
//! GLIBC_TUNABLES, `sys::reexec_without_thread_caches`), checked here too.

mod support;

use std::time::Duration;

use support::{watchdog, Relay, Ws};

/// Connections held for the measurement.
const HELD: usize = 2000;
/// Connections opened first, so one-time growth (thread and allocator
/// bookkeeping, the hub's maps) is not charged to the held ones.
const WARM: usize = 100;
/// Budget per idle connection, KiB of relay RSS. Release: issue 13's target
/// (12 KiB; measured 11.8 here at 2,000, 11.3 before issue 12; scripts/test.sh
/// runs this file in release too). Tests
/// normally run the debug build, whose frames are larger: measured 15.8
/// KiB (15.3 before issue 12), and 31 KiB with
/// `trim_stack` removed. (Unoptimised code inlines nothing, so the
/// `#[inline(never)]` markers are pinned by the source check below.)
const BUDGET_KIB: f64 = if cfg!(debug_assertions) { 18.0 } else { 12.0 };

fn rss_kib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("relay status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS line")
}

/// An identified agent whose IDENTIFY and PING have both been handled.
fn idle_agent(relay: &Relay, name: &str) -> Ws {
    let (mut ws, _) = relay.agent(name);
    ws.ping();
    ws
}

#[test]
fn idle_connections_stay_within_the_rss_budget() {
    let _w = watchdog(Duration::from_secs(240));
    // Both this process and the relay (which inherits the limit) hold one
    // descriptor per connection.
    let limit = workbench::sys::raise_nofile_limit().expect("read the descriptor limit");
    let need = (HELD + WARM + 200) as u64;
    assert!(
        limit >= need,
        "this test needs `ulimit -n` of at least {need} (hard limit is {limit})"
    );
    // Every agent comes from 127.0.0.1: lift the per-address caps.
    let relay = Relay::start(&[
        "--max-per-ip",
        "100000",
        "--connect-rate-burst",
        "100000",
        "--connect-rate-per-sec",
        "100000",
    ]);
    let pid = relay.child.id();
    let warm: Vec<Ws> = (0..WARM)
        .map(|i| idle_agent(&relay, &format!("warm{i}")))
        .collect();
    // The last reader trims its stack just after its PONG is queued.
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(pid);
    let mut held: Vec<Ws> = (0..HELD)
        .map(|i| idle_agent(&relay, &format!("idle{i}")))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(pid);
    let per = (after - before) / HELD as f64;
    eprintln!(
        "relay RSS {before} -> {after} KiB: {per:.2} KiB per idle connection (budget {BUDGET_KIB})"
    );
    // Every connection is still served.
    held[0].ping();
    held[HELD - 1].ping();
    assert!(
        per <= BUDGET_KIB,
        "idle RSS per relay connection is {per:.2} KiB, over the {BUDGET_KIB} KiB budget \
         (did a deep call move into conn::read_loop's frame, or trim_stack stop running?)"
    );
    drop(warm);
}

/// The frames the budget depends on, by file: each must be a separate,
/// never-inlined function, so its stack lies below the read loop's frame,
/// where `trim_stack` gives it back (see `relay/conn.rs`).
const NEVER_INLINED: &[(&str, &str, &[&str])] = &[
    (
        "src/relay/conn.rs",
        include_str!("../src/relay/conn.rs"),
        &["handshake", "open", "read_loop", "handle_incoming", "close"],
    ),
    (
        "src/relay/hub.rs",
        include_str!("../src/relay/hub.rs"),
        &["handle"],
    ),
    (
        "src/relay/server.rs",
        include_str!("../src/relay/server.rs"),
        &["answer_health"],
    ),
    (
        "src/relay/transport.rs",
        include_str!("../src/relay/transport.rs"),
        &["read_tls"],
    ),
    ("src/sys.rs", include_str!("../src/sys.rs"), &["trim_stack"]),
];

/// True when the attributes and doc comments right above `fn name(` in
/// `src` include `#[inline(never)]`.
fn marked_never_inline(src: &str, name: &str) -> Option<bool> {
    let lines: Vec<&str> = src.lines().collect();
    let at = lines.iter().position(|l| {
        let l = l.trim_start();
        l.starts_with(&format!("fn {name}(")) || l.starts_with(&format!("pub fn {name}("))
    })?;
    Some(
        lines[..at]
            .iter()
            .rev()
            .map(|l| l.trim())
            .take_while(|l| l.starts_with("#[") || l.starts_with("//"))
            .any(|l| l == "#[inline(never)]"),
    )
}

#[test]
fn the_frames_trim_stack_relies_on_are_never_inlined() {
    for (file, src, names) in NEVER_INLINED {
        for name in *names {
            assert_eq!(
                marked_never_inline(src, name),
                Some(true),
                "{file}: `fn {name}` must exist and be #[inline(never)] (idle RSS per \
                 relay connection depends on it; see relay/conn.rs)"
            );
        }
    }
    // The checker itself can tell a marked function from an unmarked one.
    assert_eq!(
        marked_never_inline("#[inline(never)]\nfn a() {}", "a"),
        Some(true)
    );
    assert_eq!(marked_never_inline("/// doc\nfn a() {}", "a"), Some(false));
    assert_eq!(marked_never_inline("fn b() {}", "a"), None);
}

/// GLIBC_TUNABLES as the running process `pid` sees it.
fn tunables_of(pid: u32) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).expect("relay environ");
    env.split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix("GLIBC_TUNABLES="))
        .map(str::to_string)
}

#[test]
fn the_relay_runs_without_malloc_thread_caches_unless_told_otherwise() {
    let _w = watchdog(Duration::from_secs(60));
    // By default the relay re-execs itself (same pid) with the caches off.
    let relay = Relay::start(&[]);
    let got = tunables_of(relay.child.id()).unwrap_or_default();
    assert!(
        got.split(':').any(|t| t == "glibc.malloc.tcache_count=0"),
        "relay environment has GLIBC_TUNABLES={got:?}"
    );
    relay.client().ping();
    drop(relay);

    // An operator's own tcache setting is kept as it is.
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(support::BIN);
    cmd.args(["relay", "--ephemeral", "--port", "0", "--host", "127.0.0.1"])
        .env("GLIBC_TUNABLES", "glibc.malloc.tcache_count=3")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    support::die_with_parent(&mut cmd);
    let mut child = cmd.spawn().expect("spawn relay");
    let mut line = String::new();
    let stderr = child.stderr.take().expect("piped stderr");
    BufReader::new(stderr)
        .read_line(&mut line)
        .expect("relay's first log line");
    assert!(line.contains("\"listening\""), "{line}");
    let kept = tunables_of(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(kept.as_deref(), Some("glibc.malloc.tcache_count=3"));
}
