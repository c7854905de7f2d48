#!/usr/bin/env bash
# Issue 14 §1 speed: the durable relay (the default: journal in a data
# directory, --fsync interval) against --ephemeral (0.3.0's memory-only
# behaviour), in one invocation, with the same load client
# (scripts/node-relay/bench.mjs --only core): fan-out to 500 agents (p50/p99,
# 100 closed-loop messages per rep) and sustained 200 agents x 1 msg/1.1 s
# into one channel of 200 (deliveries and relay CPU per delivery).
# Rounds alternate ephemeral / durable / durable --fsync always, so machine
# noise hits all alike; the table gives medians over rounds and ratios
# against ephemeral. Loopback only; about 3-4 minutes at the defaults.
#
# usage: [ALWAYS=0] scripts/bench_relay_durable.sh [ROUNDS=3] [SUSTAIN_SECS=10]
# (ALWAYS=0 skips the --fsync always runs)
# Raw JSON is left in target/bench-relay-durable/.

set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT="$ROOT/target/bench-relay-durable"
ROUNDS=${1:-3}
SECS=${2:-10}
rm -rf "$OUT"
mkdir -p "$OUT"

cargo build --release --quiet
(cd scripts/node-relay && npm ci --silent --no-audit --no-fund >/dev/null)
ulimit -n 20000 2>/dev/null || true
# shellcheck source=scripts/relay_bench_lib.sh
. scripts/relay_bench_lib.sh
RATE=("${LIFTED[@]}")

run_one() { # <label> <relay flags...>
  local label=$1; shift
  target/release/workbench relay --host 127.0.0.1 --port 0 "${RATE[@]}" "$@" 2>"$OUT/$label.err" >/dev/null &
  local pid=$!
  trap 'kill $pid 2>/dev/null || true' EXIT
  local port
  port=$(wait_port "$OUT/$label.err")
  echo "== $label (pid $pid, port $port)" >&2
  node scripts/node-relay/bench.mjs --url "ws://127.0.0.1:$port" --pid "$pid" --only core \
    --reps 3 --sustain-secs "$SECS" >"$OUT/$label.json"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  trap - EXIT
}

for r in $(seq 1 "$ROUNDS"); do
  run_one "ephemeral-$r" --ephemeral
  run_one "durable-$r" --data-dir "$OUT/data-durable-$r"
  if [ "${ALWAYS:-1}" != 0 ]; then
    run_one "always-$r" --data-dir "$OUT/data-always-$r" --fsync always
  else
    cp "$OUT/durable-$r.json" "$OUT/always-$r.json" # placeholder column, marked below
  fi
  du -sb "$OUT"/data-*-"$r" >&2
done

node - "$OUT" "$ROUNDS" <<'JS'
const fs = require('fs');
const [dir, rounds] = [process.argv[2], Number(process.argv[3])];
const med = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const load = (mode) => Array.from({ length: rounds }, (_, i) => JSON.parse(fs.readFileSync(`${dir}/${mode}-${i + 1}.json`, 'utf8')));
const modes = { ephemeral: load('ephemeral'), durable: load('durable'), always: load('always') };
if (process.env.ALWAYS === '0') console.log('(ALWAYS=0: the --fsync always columns repeat the durable runs; ignore them)\n');
const get = {
  'fan-out 500 p50 (ms)': (r) => r.fanout_500.p50_ms,
  'fan-out 500 p99 (ms)': (r) => r.fanout_500.p99_ms,
  'sustained CPU µs per delivery': (r) => r.sustained.cpu_us_per_delivery,
};
const f = (x, d = 3) => x.toFixed(d);
console.log('| metric (median of ' + rounds + ' rounds) | --ephemeral | durable (--fsync interval) | durable/ephemeral | --fsync always | always/ephemeral |');
console.log('|---|---|---|---|---|---|');
for (const [k, g] of Object.entries(get)) {
  const e = med(modes.ephemeral.map(g)), d = med(modes.durable.map(g)), a = med(modes.always.map(g));
  console.log(`| ${k} | ${f(e)} | ${f(d)} | ${f(d / e, 2)} | ${f(a)} | ${f(a / e, 2)} |`);
}
const dl = (m) => modes[m].map((r) => `${r.sustained.delivered}/${r.sustained.expected}`).join(', ');
console.log(`| sustained delivered/expected (each round) | ${dl('ephemeral')} | ${dl('durable')} | | ${dl('always')} | |`);
console.log('');
for (const [k, g] of Object.entries(get)) {
  console.log(`${k}: per round ephemeral ${modes.ephemeral.map(g).map((x) => f(x)).join(' ')}; durable ${modes.durable.map(g).map((x) => f(x)).join(' ')}; always ${modes.always.map(g).map((x) => f(x)).join(' ')}`);
}
const e = modes.ephemeral, d = modes.durable;
const cpu = med(d.map(get['sustained CPU µs per delivery'])) / med(e.map(get['sustained CPU µs per delivery']));
const p99 = med(d.map(get['fan-out 500 p99 (ms)'])) / med(e.map(get['fan-out 500 p99 (ms)']));
const all = d.every((r) => r.sustained.delivered === r.sustained.expected);
console.log(`target durable CPU/delivery <= 1.25x ephemeral: ${f(cpu, 2)}x -> ${cpu <= 1.25 ? 'MET' : 'NOT MET'}`);
console.log(`target durable fan-out 500 p99 <= 1.25x ephemeral: ${f(p99, 2)}x -> ${p99 <= 1.25 ? 'MET' : 'NOT MET'}`);
console.log(`target every sustained message delivered (durable): ${all ? 'MET' : 'NOT MET'}`);
JS
