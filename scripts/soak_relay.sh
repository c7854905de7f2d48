#!/usr/bin/env bash
# Relay spam soak (issue 12): does one abusive client grow the relay's memory
# or slow everyone else down?
#
#   scripts/soak_relay.sh [SPAM_SECS]      (default 600: the 10-minute soak)
#
# Loopback only (127.0.0.1), bounded in time, kills what it starts.
#  1. starts the release relay with its default limits, except the
#     per-address ones (every client here shares 127.0.0.1, so they would
#     throttle the honest agents too; tests/relay_trust.rs tests them);
#  2. honest agents: 20 listeners and 2 senders (one MSG/s each) in #general,
#     for the whole run; fan-out latency per 10 s window;
#  3. a quiet phase of min(60, SPAM_SECS) s, then SPAM_SECS of spam: 8
#     connections creating channels, inviting and proposing (to a listener)
#     as fast as the relay answers, with a fresh key whenever a quota bites;
#     then a second quiet phase as long as the first (the machine is shared:
#     quiet before and after bracket the spam, against drift);
#  4. relay RSS (VmRSS) sampled every 10 s; VmHWM at the end.
# Prints a JSON summary on stdout; details in $OUT (default a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."

SPAM_SECS=${1:-600}
[[ "$SPAM_SECS" =~ ^[0-9]+$ && "$SPAM_SECS" -ge 5 && "$SPAM_SECS" -le 3600 ]] \
  || { echo "usage: $0 [SPAM_SECS 5..3600]" >&2; exit 2; }
QUIET_SECS=$(( SPAM_SECS < 60 ? SPAM_SECS : 60 ))
OUT=${OUT:-$(mktemp -d /tmp/soak-relay.XXXXXX)}
mkdir -p "$OUT"

cargo build --release --quiet
if [[ ! -d tests/compat/node_modules/ws ]]; then
  (cd tests/compat && npm ci --silent --no-audit --no-fund >/dev/null)
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

target/release/workbench relay --ephemeral --host 127.0.0.1 --port 0 --name soak \
  --max-per-ip 100000 --ip-rate-burst 1000000 --ip-rate-per-sec 1000000 \
  2>"$OUT/relay.log" &
RELAY=$!
pids+=("$RELAY")
for _ in $(seq 100); do
  grep -q '"listening"' "$OUT/relay.log" 2>/dev/null && break
  sleep 0.1
done
PORT=$(head -1 "$OUT/relay.log" | sed -n 's/.*"port":\([0-9]*\).*/\1/p')
[[ -n "$PORT" ]] || { echo "relay did not start" >&2; cat "$OUT/relay.log" >&2; exit 1; }
URL="ws://127.0.0.1:$PORT"

rss() { awk '/^VmRSS/ {print $2}' "/proc/$RELAY/status"; }
# CPU seconds (user + system) a process has used so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }
hwm() { awk '/^VmHWM/ {print $2}' "/proc/$RELAY/status"; }

TOTAL=$(( QUIET_SECS + SPAM_SECS + QUIET_SECS ))
node scripts/soak_relay.mjs honest --url "$URL" --secs "$TOTAL" >"$OUT/honest.jsonl" &
pids+=("$!")
for _ in $(seq 100); do
  grep -q '"ready"' "$OUT/honest.jsonl" 2>/dev/null && break
  sleep 0.1
done
TARGET=$(head -1 "$OUT/honest.jsonl" | sed -n 's/.*"target":"\([^"]*\)".*/\1/p')
[[ -n "$TARGET" ]] || { echo "honest agents did not start" >&2; exit 1; }

: >"$OUT/rss.tsv"
sample() { # $1 = seconds, $2 = phase
  local end=$(( SECONDS + $1 ))
  while (( SECONDS < end )); do
    printf '%s\t%s\t%s\n' "$SECONDS" "$2" "$(rss)" >>"$OUT/rss.tsv"
    sleep $(( end - SECONDS < 10 ? (end - SECONDS > 0 ? end - SECONDS : 1) : 10 ))
  done
}

CPU0=$(cpu "$RELAY")
sample "$QUIET_SECS" quiet
RSS_BEFORE=$(rss)
CPU1=$(cpu "$RELAY")
node scripts/soak_relay.mjs spam --url "$URL" --secs "$SPAM_SECS" --target "$TARGET" >"$OUT/spam.json" &
SPAM=$!
pids+=("$SPAM")
sample "$SPAM_SECS" spam
CPU2=$(cpu "$RELAY")
SPAM_CPU=$(cpu "$SPAM" 2>/dev/null || echo null)
wait "$SPAM" || true
sleep 3
RSS_AFTER=$(rss)
sample $(( QUIET_SECS - 3 > 1 ? QUIET_SECS - 3 : 1 )) quiet-after
RSS_END=$(rss)
RSS_PEAK=$(hwm)
wait "${pids[1]}" || true
kill -TERM "$RELAY" 2>/dev/null || true
wait "$RELAY" 2>/dev/null || true
pids=()

CPU_QUIET=$(awk -v a="$CPU0" -v b="$CPU1" -v s="$QUIET_SECS" 'BEGIN {printf "%.1f", 100 * (b - a) / s}')
CPU_SPAM=$(awk -v a="$CPU1" -v b="$CPU2" -v s="$SPAM_SECS" 'BEGIN {printf "%.1f", 100 * (b - a) / s}')
node - "$OUT" "$QUIET_SECS" "$RSS_BEFORE" "$RSS_AFTER" "$RSS_PEAK" "$CPU_QUIET" "$CPU_SPAM" "$SPAM_CPU" "$SPAM_SECS" "$RSS_END" <<'EOF'
const fs = require('fs');
const [out, quiet, before, after, peak, cpuQuiet, cpuSpam, spamCpu, spamSecs, end] = process.argv.slice(2);
const lines = fs.readFileSync(`${out}/honest.jsonl`, 'utf8').trim().split('\n').map(JSON.parse).filter((l) => 'p99' in l);
const med = (xs) => { const s = xs.filter((x) => x !== null).sort((a, b) => a - b); return s.length ? s[Math.floor(s.length / 2)] : null; };
const [Q, S] = [Number(quiet), Number(spamSecs)];
// Windows are 10 s; the one straddling a phase change is left out.
const phase = (q) => lines.filter((l) => (q ? l.t <= Q || l.t > Q + S + 10 : l.t > Q + 10 && l.t <= Q + S));
const sum = (ls) => ({ windows: ls.length, median_window_p99_ms: med(ls.map((l) => l.p99)),
  median_window_last_p99_ms: med(ls.map((l) => l.last_p99)), worst_window_p99_ms: Math.max(...ls.map((l) => l.p99 ?? 0)),
  incomplete: ls.reduce((s, l) => s + l.incomplete, 0) });
const spam = JSON.parse(fs.readFileSync(`${out}/spam.json`, 'utf8').trim().split('\n').pop());
const logs = fs.readFileSync(`${out}/relay.log`, 'utf8').trim().split('\n');
const refused = logs.filter((l) => l.includes('"event":"refused"')).length;
console.log(JSON.stringify({ rss_kib: { before_spam: Number(before), after_spam: Number(after), after_quiet: Number(end), peak: Number(peak) },
  relay_cpu_percent: { quiet: Number(cpuQuiet), spam: Number(cpuSpam) },
  spam_client_cpu_percent: spamCpu === 'null' ? null : Math.round(1000 * Number(spamCpu) / Number(spamSecs)) / 10,
  quiet: sum(phase(true)), spam: sum(phase(false)), spammer: spam, relay_log_lines: logs.length, refusal_log_lines: refused, out }, null, 1));
EOF
