#!/usr/bin/env bash
# TLS fan-out beside plain ws:// (issue 15), in one invocation: two release
# relays (one plain, one with --cert/--key from a test CA made here with
# openssl), the same Node `ws` load client (scripts/node-relay/bench_tls.mjs) against
# both, reps alternating. Fan-out to 500 agents: p50/p99 latency per
# delivery and the relay's CPU per delivery; RSS per idle connection.
# Medians across reps, wss/ws ratios. Loopback only; about a minute.
#
# usage: scripts/bench_tls.sh [--reps 3] [--agents 500] [--messages 100] [--idle 1000]
# Raw JSON is left in target/bench-tls/. WORKBENCH_BIN=path uses that binary
# instead of building target/release/workbench.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=target/bench-tls
mkdir -p "$OUT"
BIN=${WORKBENCH_BIN:-target/release/workbench}
[ -n "${WORKBENCH_BIN:-}" ] || cargo build --release --quiet
(cd scripts/node-relay && npm ci --silent --no-audit --no-fund >/dev/null)
ulimit -n 20000 2>/dev/null || true

DIR=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT
ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
openssl req -x509 "${ec[@]}" -days 30 -keyout "$DIR/ca.key" -out "$DIR/ca.pem" -subj "/CN=bench CA" 2>/dev/null
openssl req "${ec[@]}" -keyout "$DIR/s.key" -out "$DIR/s.csr" -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n' > "$DIR/ext.cnf"
openssl x509 -req -in "$DIR/s.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" -CAcreateserial \
  -out "$DIR/s.pem" -days 2 -extfile "$DIR/ext.cnf" 2>/dev/null

# Memory-only relays: this compares transports, and two durable relays
# would refuse to share the default data directory. The limits are lifted
# (LIFTED): every agent here comes from 127.0.0.1.
# shellcheck source=scripts/relay_bench_lib.sh
. scripts/relay_bench_lib.sh
start() { # <label> <args...>; sets PORT and PID
  local label=$1; shift
  "$BIN" relay --ephemeral --host 127.0.0.1 --port 0 "${LIFTED[@]}" "$@" 2>"$OUT/$label.err" >/dev/null &
  PID=$!
  pids+=("$PID")
  PORT=$(wait_port "$OUT/$label.err") || exit 1
}
start ws; WS_PORT=$PORT; WS_PID=$PID
start wss --cert "$DIR/s.pem" --key "$DIR/s.key"; WSS_PORT=$PORT; WSS_PID=$PID

NODE_EXTRA_CA_CERTS="$DIR/ca.pem" \
  node scripts/node-relay/bench_tls.mjs --ws "ws://127.0.0.1:$WS_PORT" --ws-pid "$WS_PID" \
  --wss "wss://localhost:$WSS_PORT" --wss-pid "$WSS_PID" "$@" > "$OUT/result.json"

node - "$OUT/result.json" <<'JS'
const r = JSON.parse(require('fs').readFileSync(process.argv[2], 'utf8'));
const f = (x, d = 3) => x.toFixed(d);
console.log('| metric (500 agents, medians) | ws:// | wss:// | wss/ws |');
console.log('|---|---|---|---|');
for (const [k, name] of [['p50_ms', 'fan-out p50 (ms)'], ['p99_ms', 'fan-out p99 (ms)'], ['cpu_us_per_delivery', 'relay CPU µs per delivery']]) {
  console.log(`| ${name} | ${f(r.ws[k])} | ${f(r.wss[k])} | ${f(r.wss[k] / r.ws[k], 2)} |`);
}
console.log(`| RSS KiB per idle connection | ${f(r.ws.idle.rss_per_conn_kb, 1)} | ${f(r.wss.idle.rss_per_conn_kb, 1)} | ${f(r.wss.idle.rss_per_conn_kb / r.ws.idle.rss_per_conn_kb, 2)} |`);
JS
