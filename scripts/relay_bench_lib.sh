# Shared by the relay benchmark scripts (source it).

# Every agent of a benchmark comes from 127.0.0.1: the relay's
# per-connection, per-address and per-channel limits (issue 12) are lifted
# so that no sender is ever throttled.
LIFTED=(--rate-burst 1000000 --rate-per-sec 1000000
  --max-per-ip 100000 --connect-rate-burst 100000 --connect-rate-per-sec 100000
  --ip-rate-burst 1000000 --ip-rate-per-sec 1000000
  --channel-rate-burst 1000000 --channel-rate-per-sec 1000000)

wait_port() { # <stderr file> -> the port of its `listening` log line
  for _ in $(seq 1 100); do
    local p
    p=$(grep -o '"event":"listening"[^}]*"port":[0-9]*' "$1" 2>/dev/null | grep -o '"port":[0-9]*' | head -1 | cut -d: -f2 || true)
    if [ -n "$p" ]; then echo "$p"; return 0; fi
    sleep 0.1
  done
  echo "relay did not start; see $1" >&2
  return 1
}
