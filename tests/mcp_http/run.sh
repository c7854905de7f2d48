#!/usr/bin/env bash
# Official MCP clients against `workbench mcp --http` (scripts/test.sh runs
# this): the conformance suite's server scenarios (through auth_proxy.mjs,
# which adds the bearer token the suite cannot send), then the MCP
# Inspector CLI listing the tools with --transport http. Everything on
# loopback; a temporary WORKBENCH_HOME; every process is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")"
NODE="$PWD/node_modules/node/bin/node"   # Node >= 22 from the npm package `node`
BIN="${WORKBENCH_BIN:-$(cd ../.. && pwd)/target/debug/workbench}"
home=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in "$home"/*/.server.json; do
    [[ -f $f ]] && kill "$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' "$f")" 2>/dev/null || true
  done
  rm -rf "$home"
}
trap cleanup EXIT
export WORKBENCH_HOME="$home" HOME="$home" WORKBENCH_HOST=127.0.0.1 WORKBENCH_SERVE_HOST=127.0.0.1

"$BIN" mcp --http --port 0 >"$home/server.out" 2>"$home/server.err" &
pids+=($!)
for _ in $(seq 50); do [[ -s "$home/server.out" ]] && break; sleep 0.1; done
url=$(sed -n 's/.* at \(http[^ ]*\).*/\1/p' "$home/server.out")
[[ -n $url ]] || { echo "the server did not start"; cat "$home/server.err"; exit 1; }
port=${url##*:}; port=${port%/mcp}
token=$("$BIN" mcp --http --show-token)

"$NODE" auth_proxy.mjs "$port" "$token" >"$home/proxy.out" &
pids+=($!)
for _ in $(seq 50); do [[ -s "$home/proxy.out" ]] && break; sleep 0.1; done
pport=$(sed 's/proxy //' "$home/proxy.out")

echo "== MCP conformance suite, server scenarios (baseline: conformance-baseline.yml)"
timeout 600 "$NODE" node_modules/.bin/conformance server --url "http://localhost:$pport/mcp" \
  --expected-failures conformance-baseline.yml -o "$home/results" >"$home/conformance.txt" 2>&1 \
  || { cat "$home/conformance.txt"; exit 1; }
sed -n '/=== SUMMARY ===/,$p' "$home/conformance.txt"

echo "== MCP Inspector CLI: tools/list over --transport http"
out=$(timeout 120 "$NODE" node_modules/.bin/mcp-inspector --cli --transport http --server-url "$url" \
  --header "Authorization: Bearer $token" --method tools/list)
for tool in workbench_scaffold workbench_state workbench_log workbench_read_log workbench_list \
            workbench_stop workbench_wait workbench_events workbench_snapshot; do
  grep -q "\"$tool\"" <<<"$out" || { echo "Inspector did not list $tool:"; echo "$out" | head -20; exit 1; }
done
echo "Inspector listed all 9 workbench tools"
# Without the token the Inspector gets nothing.
if timeout 60 "$NODE" node_modules/.bin/mcp-inspector --cli --transport http --server-url "$url" \
     --method tools/list >"$home/noauth.txt" 2>&1; then
  echo "Inspector listed tools without a token"; exit 1
fi
echo "Inspector without the token was refused"

if [[ -x "${CHROMIUM:-/usr/bin/chromium}" ]]; then
  echo "== Chromium: a wait over HTTP with progress, and the page inline as an MCP App (ext-apps AppBridge host)"
  WORKBENCH_BIN="$BIN" "$NODE" --test --test-concurrency=1 apps.test.mjs
elif [[ "${WORKBENCH_REQUIRE_BROWSER:-0}" == 1 ]]; then
  echo "Chromium is required for the MCP Apps test" >&2; exit 1
else
  echo "== SKIPPED MCP Apps browser test: no Chromium"
fi
