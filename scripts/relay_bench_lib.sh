# Shared by the relay benchmark scripts (source it).

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
