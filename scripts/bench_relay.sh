#!/usr/bin/env bash
# Benchmarks `workbench relay` (release build) against the minimal Node `ws`
# relay in scripts/node-relay/, in one invocation, with the same load client
# (scripts/node-relay/bench.mjs): fan-out latency at 10/100/500 agents,
# sustained 200 agents x 1 msg/1.1 s, 5,000 idle connections (RSS), idle CPU.
# Loopback only; takes about two to three minutes.
#
# usage: scripts/bench_relay.sh [--reps 3] [--idle 5000] [--sustain-secs 10]
# Prints a markdown table (medians across reps, and Rust/Node ratios) and
# leaves the raw JSON in target/bench-relay/.

set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT="$ROOT/target/bench-relay"
mkdir -p "$OUT"

cargo build --release --quiet
(cd scripts/node-relay && npm ci --silent --no-audit --no-fund >/dev/null)
ulimit -n 20000 2>/dev/null || true

# Rate limits are raised for both so the fan-out sender is not throttled.
RATE=(--rate-burst 1000000 --rate-per-sec 1000000)

wait_port() { # <stderr file> -> port
  for _ in $(seq 1 100); do
    local p
    p=$(grep -o '"port":[0-9]*' "$1" 2>/dev/null | head -1 | cut -d: -f2 || true)
    if [ -n "$p" ]; then echo "$p"; return 0; fi
    sleep 0.1
  done
  echo "relay did not start; see $1" >&2
  return 1
}

run_one() { # <label> <command...>
  local label=$1; shift
  "$@" 2>"$OUT/$label.err" >/dev/null &
  local pid=$!
  trap 'kill $pid 2>/dev/null || true' EXIT
  local port
  port=$(wait_port "$OUT/$label.err")
  echo "== $label (pid $pid, port $port)" >&2
  node scripts/node-relay/bench.mjs --url "ws://127.0.0.1:$port" --pid "$pid" "${BENCH_ARGS[@]}" >"$OUT/$label.json"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  trap - EXIT
}

BENCH_ARGS=("$@")
run_one rust target/release/workbench relay --host 127.0.0.1 --port 0 "${RATE[@]}"
run_one node node scripts/node-relay/relay.mjs --host 127.0.0.1 --port 0 "${RATE[@]}"

node - "$OUT/rust.json" "$OUT/node.json" <<'EOF'
const fs = require('fs');
const [r, n] = process.argv.slice(2).map((f) => JSON.parse(fs.readFileSync(f, 'utf8')));
const f = (x, d = 2) => (typeof x === 'number' ? x.toFixed(d) : String(x));
const ratio = (a, b) => (b > 0 ? f(a / b) : 'n/a');
const rows = [['metric', 'workbench relay', 'node ws baseline', 'rust/node']];
for (const k of [10, 100, 500]) {
  for (const p of ['p50_ms', 'p99_ms']) {
    const a = r[`fanout_${k}`][p], b = n[`fanout_${k}`][p];
    rows.push([`fan-out ${k} agents ${p.replace('_ms', '')} (ms)`, f(a, 3), f(b, 3), ratio(a, b)]);
  }
}
const rs = r.sustained, ns = n.sustained;
rows.push(['sustained: delivered / expected', `${rs.delivered}/${rs.expected}`, `${ns.delivered}/${ns.expected}`, '']);
rows.push(['sustained: relay CPU ms', f(rs.relay_cpu_ms, 0), f(ns.relay_cpu_ms, 0), ratio(rs.relay_cpu_ms, ns.relay_cpu_ms)]);
rows.push(['sustained: CPU µs per delivery', f(rs.cpu_us_per_delivery, 3), f(ns.cpu_us_per_delivery, 3), ratio(rs.cpu_us_per_delivery, ns.cpu_us_per_delivery)]);
rows.push([`idle: RSS KiB per connection (${r.idle.connections})`, f(r.idle.rss_per_conn_kb, 1), f(n.idle.rss_per_conn_kb, 1), ratio(r.idle.rss_per_conn_kb, n.idle.rss_per_conn_kb)]);
rows.push(['idle: RSS KiB before → with conns', `${r.idle.rss_before_kb} → ${r.idle.rss_after_kb}`, `${n.idle.rss_before_kb} → ${n.idle.rss_after_kb}`, '']);
rows.push(['idle: CPU ms over 3 s, no connections', f(r.idle_cpu_ms_3s_empty, 0), f(n.idle_cpu_ms_3s_empty, 0), '']);
rows.push(['idle: CPU ms over 5 s, 5,000 idle conns', f(r.idle.idle_cpu_ms_5s_with_conns, 0), f(n.idle.idle_cpu_ms_5s_with_conns, 0), '']);
for (const row of rows) console.log(`| ${row.join(' | ')} |`);
console.log('');
const p99 = r.fanout_500.p99_ms / n.fanout_500.p99_ms;
console.log(`target fan-out 500 p99 <= 0.5x node: ${f(p99)}x -> ${p99 <= 0.5 ? 'MET' : 'NOT MET'}`);
const cpu = rs.cpu_us_per_delivery / ns.cpu_us_per_delivery;
console.log(`target sustained CPU/delivery <= 0.33x node: ${f(cpu)}x -> ${cpu <= 1 / 3 ? 'MET' : 'NOT MET'}`);
console.log(`target every sustained message delivered: ${rs.delivered === rs.expected ? 'MET' : 'NOT MET'}`);
const rss = r.idle.rss_per_conn_kb / n.idle.rss_per_conn_kb;
console.log(`target idle RSS/conn <= node: ${f(rss)}x -> ${rss <= 1 ? 'MET' : 'NOT MET'}`);
console.log(`target idle relay uses no CPU: ${r.idle_cpu_ms_3s_empty === 0 && r.idle.idle_cpu_ms_5s_with_conns === 0 ? 'MET' : 'NOT MET'}`);
EOF
