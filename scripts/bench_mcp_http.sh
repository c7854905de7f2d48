#!/usr/bin/env bash
# MCP over Streamable HTTP (issue 18): workbench_state round trip over one
# kept-alive HTTP connection vs stdio, interleaved in the same run (release
# build); then push-to-DOM through an MCP Apps frame beside a plain tab, in
# Chromium (needs tests/mcp_http/node_modules). Loopback only, bounded.
# usage: scripts/bench_mcp_http.sh [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
cargo build --release --locked --quiet --example bench_mcp_http
./target/release/examples/bench_mcp_http ./target/release/workbench "${1:-300}"
if [[ -x tests/mcp_http/node_modules/node/bin/node && -x "${CHROMIUM:-/usr/bin/chromium}" ]]; then
  WORKBENCH_BIN="$PWD/target/release/workbench" WORKBENCH_BENCH_PUSHES="${2:-60}" \
    tests/mcp_http/node_modules/node/bin/node tests/mcp_http/bench_apps.mjs
else
  echo "(push-to-DOM part skipped: needs Chromium and (cd tests/mcp_http && npm ci))"
fi
