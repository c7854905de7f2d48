#!/usr/bin/env bash
# Benchmarks `workbench relay` (release build) against the minimal Node `ws`
# relay in scripts/node-relay/ and against the send floor, in one
# invocation, with one Rust load client (examples/relay_load.rs, a blocking
# reader thread per agent) for both relays. Issue 13's scenarios:
#   floor      examples/send_floor.rs: the same frames to the same 200
#              loopback sockets on the same schedule, nothing else
#   sustained  200 agents x 1 msg / 1.1 s in one channel: relay CPU per
#              delivery (utime+stime), and our writer's sendmsg calls
#   fan-out    10/100/500 agents, closed loop: p50/p99 per delivery and
#              for the last receiver of each message
#   idle       5,000 identified connections on a fresh relay: RSS growth
#              per connection, and CPU while idle
# Each round runs every scenario once, relays alternating, each on a fresh
# process; the summary gives the median over rounds and the min-max range.
# Loopback only; about 2.5 minutes per round.
#
# usage: scripts/bench_relay.sh [--rounds 3] [--reps 3] [--idle 5000] [--sustain-secs 10]
#        (--reps: fan-out runs per size per round; their median is the round's figure)
# Raw JSON is left in target/bench-relay/.

set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT="$ROOT/target/bench-relay"
rm -rf "$OUT"
mkdir -p "$OUT"

ROUNDS=3 REPS=3 IDLE=5000 SECS=10
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --idle) IDLE=$2; shift 2 ;;
    --sustain-secs) SECS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

nice cargo build --release --quiet --bin workbench --example relay_load --example send_floor
(cd scripts/node-relay && npm ci --silent --no-audit --no-fund >/dev/null)
# 5,000 held connections need 5,000 descriptors on each side.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((IDLE + 500)) ]; then
  echo "ulimit -n is $(ulimit -n); need $((IDLE + 500)) for --idle $IDLE" >&2
  exit 1
fi

LOAD=target/release/examples/relay_load
# Rate limits are raised for both so the senders are never throttled; ours
# also has per-address and per-channel limits (issue 12), and every agent
# here comes from 127.0.0.1.
# (Ours: LIFTED, from relay_bench_lib.sh; Node's relay has only these.)
RATE=(--rate-burst 1000000 --rate-per-sec 1000000)
RELAY_PID=
# shellcheck source=scripts/relay_bench_lib.sh
. scripts/relay_bench_lib.sh

stop_relay() {
  if [ -n "$RELAY_PID" ]; then
    kill "$RELAY_PID" 2>/dev/null || true
    wait "$RELAY_PID" 2>/dev/null || true
    RELAY_PID=
  fi
}
trap stop_relay EXIT

one() { # <which: rust|node> <label> <relay_load args...>
  local which=$1 label=$2; shift 2
  if [ "$which" = rust ]; then
    # --ephemeral: memory only, like the Node baseline (and never the
    # real home's data dir); durable vs ephemeral: bench_relay_durable.sh.
    target/release/workbench relay --ephemeral --host 127.0.0.1 --port 0 "${LIFTED[@]}" 2>"$OUT/$label.err" >/dev/null &
  else
    node scripts/node-relay/relay.mjs --host 127.0.0.1 --port 0 "${RATE[@]}" 2>"$OUT/$label.err" >/dev/null &
  fi
  RELAY_PID=$!
  local port
  port=$(wait_port "$OUT/$label.err")
  echo "== $label (pid $RELAY_PID, port $port)" >&2
  "$LOAD" --url "ws://127.0.0.1:$port" --pid "$RELAY_PID" "$@" >"$OUT/$label.json"
  stop_relay
}

for r in $(seq 1 "$ROUNDS"); do
  echo "== round $r: floor" >&2
  target/release/examples/send_floor --sockets 200 --secs "$SECS" >"$OUT/floor-$r.json"
  for which in rust node; do
    one "$which" "$which-sustained-$r" --only sustained --sustain-secs "$SECS"
  done
  for which in rust node; do
    one "$which" "$which-fanout-$r" --only fanout --reps "$REPS"
  done
  for which in rust node; do
    one "$which" "$which-idle-$r" --only empty,idle --idle "$IDLE"
  done
done

python3 - "$OUT" "$ROUNDS" <<'EOF'
import json, re, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def load(name):
    with open(f"{out}/{name}.json") as f:
        return json.load(f)
def stopped(name):
    # The relay's last log line carries the writer's totals.
    for line in reversed(open(f"{out}/{name}.err").read().splitlines()):
        if '"stopped"' in line:
            return json.loads(line).get("writer")
    return None
rows = []
def row(metric, vals_rust, vals_node=None, fmt="{:.3f}", ratio=True):
    def cell(vs):
        if not vs: return ""
        m = statistics.median(vs)
        return f"{fmt.format(m)} ({fmt.format(min(vs))}–{fmt.format(max(vs))})" if len(vs) > 1 else fmt.format(m)
    r = ""
    if vals_node and ratio:
        rs = [a / b for a, b in zip(vals_rust, vals_node) if b]
        r = cell(rs) if rs else ""
    rows.append([metric, cell(vals_rust), cell(vals_node) if vals_node else "", r])
R = range(1, rounds + 1)
floor = [load(f"floor-{r}") for r in R]
rs = [load(f"rust-sustained-{r}")["sustained"] for r in R]
ns = [load(f"node-sustained-{r}")["sustained"] for r in R]
rf = [load(f"rust-fanout-{r}") for r in R]
nf = [load(f"node-fanout-{r}") for r in R]
ri = [load(f"rust-idle-{r}") for r in R]
ni = [load(f"node-idle-{r}") for r in R]
w = [stopped(f"rust-sustained-{r}") for r in R]
fl = [f["cpu_us_per_delivery"] for f in floor]
rows.append(["metric", "workbench relay", "node ws baseline", "rust/node"])
for k in (10, 100, 500):
    for p in ("p50_ms", "p99_ms", "last_p50_ms", "last_p99_ms", "last_p99_pooled_ms"):
        name = p.replace("_ms", "").replace("last_", "last receiver ").replace("_pooled", " pooled over the round's runs")
        row(f"fan-out {k}: {name} (ms)", [x[f"fanout_{k}"][p] for x in rf], [x[f"fanout_{k}"][p] for x in nf])
row("sustained: delivered / expected (round 1)", [], None)
rows[-1][1] = f"{rs[0]['delivered']}/{rs[0]['expected']}"; rows[-1][2] = f"{ns[0]['delivered']}/{ns[0]['expected']}"
row("sustained: CPU µs per delivery", [x["cpu_us_per_delivery"] for x in rs], [x["cpu_us_per_delivery"] for x in ns])
row("send floor: CPU µs per delivery", fl, None)
rows.append(["sustained: relay / floor (same round)", "", "", ""])
rf_ratio = [a["cpu_us_per_delivery"] / b for a, b in zip(rs, fl)]
nf_ratio = [a["cpu_us_per_delivery"] / b for a, b in zip(ns, fl)]
rows[-1][1] = "{:.2f} ({:.2f}–{:.2f})".format(statistics.median(rf_ratio), min(rf_ratio), max(rf_ratio))
rows[-1][2] = "{:.2f} ({:.2f}–{:.2f})".format(statistics.median(nf_ratio), min(nf_ratio), max(nf_ratio))
if all(w):
    calls = [x["sendmsg_calls"] for x in w]; frames = [x["frames"] for x in w]
    row("sustained run: sendmsg calls per frame written", [c / f for c, f in zip(calls, frames)], None)
    row("sustained run: sendmsg calls per delivery", [c / x["delivered"] for c, x in zip(calls, rs)], None)
row(f"idle: RSS KiB per connection ({ri[0]['idle']['connections']})", [x["idle"]["rss_per_conn_kb"] for x in ri], [x["idle"]["rss_per_conn_kb"] for x in ni], fmt="{:.2f}")
row("idle: CPU ms over 3 s, no connections", [x["idle_cpu_ms_3s_empty"] for x in ri], [x["idle_cpu_ms_3s_empty"] for x in ni], fmt="{:.0f}", ratio=False)
row("idle: CPU ms over 5 s with the idle connections", [x["idle"]["idle_cpu_ms_5s_with_conns"] for x in ri], [x["idle"]["idle_cpu_ms_5s_with_conns"] for x in ni], fmt="{:.0f}", ratio=False)
print(f"medians over {rounds} rounds (min–max in brackets)\n")
for r_ in rows:
    print("| " + " | ".join(r_) + " |")
    if r_[0] == "metric":
        print("|---|---|---|---|")
med = statistics.median
fan = med([a["fanout_500"]["last_p99_pooled_ms"] / b["fanout_500"]["last_p99_pooled_ms"] for a, b in zip(rf, nf)])
fan_med = med([a["fanout_500"]["last_p99_pooled_ms"] for a in rf]) / med([b["fanout_500"]["last_p99_pooled_ms"] for b in nf])
cpu = med(rf_ratio)
rss = med([x["idle"]["rss_per_conn_kb"] for x in ri])
print()
print(f"target sustained CPU/delivery <= 1.3x floor: {cpu:.2f}x -> {'MET' if cpu <= 1.3 else 'NOT MET'}")
print(f"target fan-out 500 last-receiver p99 (pooled per round) <= 0.6x node: median of round ratios {fan:.2f}x, "
      f"ratio of medians {fan_med:.2f}x -> {'MET' if max(fan, fan_med) <= 0.6 else 'NOT MET'}")
print(f"target idle RSS/conn <= 12 KiB: {rss:.2f} KiB -> {'MET' if rss <= 12 else 'NOT MET'}")
ok = all(x["delivered"] == x["expected"] for x in rs)
print(f"every sustained message delivered (rust, all rounds): {'MET' if ok else 'NOT MET'}")
EOF
