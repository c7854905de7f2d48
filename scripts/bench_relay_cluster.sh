#!/usr/bin/env bash
# Issue 14 §2 speed: 3 `workbench relay --cluster` nodes on one local
# redis-server against a single relay node (the default, durable), in one
# invocation, with the same Rust load client (examples/relay_load.rs,
# agents spread round-robin over the nodes' URLs; the fan-out sender on the
# first node):
#   * fan-out to 100 and 500 agents: p50/p99 per delivery and the last
#     receiver (100 closed-loop messages per rep, 3 reps, medians);
#   * sustained 200 agents x 1 msg/1.1 s into one channel of 200: every
#     message delivered, CPU per delivery summed over the nodes, and
#     redis-server's CPU apart;
#   * Redis commands per delivered message in the sustained run (INFO
#     commandstats, reset just before it; heartbeats included).
# Rounds alternate single / cluster so machine noise hits both alike.
# Loopback only (redis-server on 127.0.0.1, a free port, its own temp dir).
#
# usage: scripts/bench_relay_cluster.sh [ROUNDS=1] [SUSTAIN_SECS=10]
#        (TABLE_ONLY=1: print the table of the last run's JSON again)
# Raw JSON is left in target/bench-relay-cluster/.

set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT="$ROOT/target/bench-relay-cluster"
ROUNDS=${1:-1}
SECS=${2:-10}
[ "${TABLE_ONLY:-0}" = 0 ] && rm -rf "$OUT"
mkdir -p "$OUT"
command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install redis-server)" >&2; exit 1; }

cargo build --release --quiet --bin workbench --example relay_load
LOAD=target/release/examples/relay_load
ulimit -n 20000 2>/dev/null || true

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# shellcheck source=scripts/relay_bench_lib.sh
. scripts/relay_bench_lib.sh
RATE=("${LIFTED[@]}" --outbox 4096)

start_relay() { # <label> <flags...>  -> sets R_PID R_PORT
  local label=$1; shift
  target/release/workbench relay --host 127.0.0.1 --port 0 "${RATE[@]}" "$@" 2>"$OUT/$label.err" >/dev/null &
  R_PID=$!
  PIDS+=("$R_PID")
  R_PORT=$(wait_port "$OUT/$label.err")
}

stop() { for p in "$@"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }

single_round() { # <round>
  local r=$1
  start_relay "single-$r" --data-dir "$OUT/data-single-$r"
  local pid=$R_PID port=$R_PORT
  echo "== single-$r (pid $pid, port $port)" >&2
  $LOAD --url "ws://127.0.0.1:$port" --pid "$pid" --only fanout --fanout 100,500 --reps 3 \
    >"$OUT/single-$r-fanout.json"
  $LOAD --url "ws://127.0.0.1:$port" --pid "$pid" --only sustained --sustain-secs "$SECS" \
    >"$OUT/single-$r-sustained.json"
  stop "$pid"
}

cluster_round() { # <round>
  local r=$1 rport
  rport=$(free_port)
  mkdir -p "$OUT/redis-$r"
  redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync everysec \
    --dir "$OUT/redis-$r" --daemonize no --logfile "$OUT/redis-$r/log" &
  local rpid=$!
  PIDS+=("$rpid")
  for _ in $(seq 1 100); do redis-cli -p "$rport" PING >/dev/null 2>&1 && break; sleep 0.1; done
  local url="redis://127.0.0.1:$rport" urls="" pids="" i
  local npids=()
  for i in 0 1 2; do
    start_relay "cluster-$r-n$i" --cluster "$url" --node-id "n$i"
    urls="${urls:+$urls,}ws://127.0.0.1:$R_PORT"
    pids="${pids:+$pids,}$R_PID"
    npids+=("$R_PID")
  done
  echo "== cluster-$r (nodes $pids, redis pid $rpid port $rport)" >&2
  $LOAD --url "$urls" --pid "$pids" --only fanout --fanout 100,500 --reps 3 \
    >"$OUT/cluster-$r-fanout.json"
  redis-cli -p "$rport" CONFIG RESETSTAT >/dev/null
  $LOAD --url "$urls" --pid "$pids" --redis-pid "$rpid" --only sustained --sustain-secs "$SECS" \
    >"$OUT/cluster-$r-sustained.json"
  redis-cli -p "$rport" INFO commandstats >"$OUT/cluster-$r-commandstats.txt"
  redis-cli -p "$rport" XLEN workbench:relay:log >"$OUT/cluster-$r-xlen.txt"
  stop "${npids[@]}" "$rpid"
}

if [ "${TABLE_ONLY:-0}" = 0 ]; then
  for r in $(seq 1 "$ROUNDS"); do
    single_round "$r"
    cluster_round "$r"
  done
fi

python3 - "$OUT" "$ROUNDS" <<'PY'
import json, re, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def load(name):
    return json.load(open(f"{out}/{name}.json"))
med = statistics.median
rows = []
def both(label, run, key):  # run: "fanout" or "sustained"
    s = [key(load(f"single-{r}-{run}")) for r in range(1, rounds + 1)]
    c = [key(load(f"cluster-{r}-{run}")) for r in range(1, rounds + 1)]
    rows.append((label, med(s), med(c)))
for n in (100, 500):
    both(f"fan-out {n} p50 per delivery (ms)", "fanout", lambda j, n=n: j[f"fanout_{n}"]["p50_ms"])
    both(f"fan-out {n} p99 per delivery (ms)", "fanout", lambda j, n=n: j[f"fanout_{n}"]["p99_ms"])
    both(f"fan-out {n} last receiver p50 (ms)", "fanout", lambda j, n=n: j[f"fanout_{n}"]["last_p50_ms"])
    both(f"fan-out {n} last receiver p99 (ms)", "fanout", lambda j, n=n: j[f"fanout_{n}"]["last_p99_ms"])
both("sustained 200x200 CPU µs per delivery (relay processes summed)", "sustained", lambda j: j["sustained"]["cpu_us_per_delivery"])
print(f"| metric (median of {rounds} round(s)) | single node | 3-node cluster | cluster/single |")
print("|---|---|---|---|")
for label, s, c in rows:
    print(f"| {label} | {s:.3f} | {c:.3f} | {c / s:.2f} |")
for r in range(1, rounds + 1):
    s, c = load(f"single-{r}-sustained")["sustained"], load(f"cluster-{r}-sustained")["sustained"]
    print(f"| sustained delivered/expected, round {r} | {s['delivered']}/{s['expected']} | {c['delivered']}/{c['expected']} | |")
    print(f"| redis-server CPU µs per delivery, round {r} | | {c['redis_cpu_us_per_delivery']:.3f} | |")
    stats = open(f"{out}/cluster-{r}-commandstats.txt").read()
    calls = {m.group(1): int(m.group(2)) for m in re.finditer(r"cmdstat_(\w+):calls=(\d+)", stats)}
    total = sum(calls.values())
    per = total / max(c["delivered"], 1)
    per_msg = total / max(c["sent"], 1)
    detail = ", ".join(f"{k} {v}" for k, v in sorted(calls.items(), key=lambda kv: -kv[1]))
    print(f"| Redis commands per delivered message, round {r} | | {per:.4f} ({total} commands: {detail}; {per_msg:.2f} per message sent to {c['agents']} members) | |")
PY
