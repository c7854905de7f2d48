#!/usr/bin/env bash
# The project's one test command (README, and .ci/run calls exactly this):
# unit + integration tests of the real binary, then the real-browser tests
# in Debian's headless Chromium when it is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked
# The Compose and Akash schemas tests/deploy.rs validates against (npm pack).
if command -v npm >/dev/null; then ./scripts/deploy_schemas.sh; fi
# tests/chat_mcp.rs runs a 0.3.0-style Node peer with tests/compat's `ws`.
if command -v npm >/dev/null && [[ ! -d tests/compat/node_modules/ws ]]; then
  (cd tests/compat && npm ci --no-audit --no-fund)
fi
cargo test --locked --no-fail-fast -- --test-threads="${WORKBENCH_TEST_THREADS:-4}"
# The idle-RSS guard again in the build it guards: release frames differ
# from debug ones (a release-only regression, 20 KiB per idle connection,
# once passed the debug run unseen).
cargo test --release --locked --test relay_idle_rss

# An independent Node client of the AgentChat 0.3.0 wire protocol (signing
# with Node's crypto) against the real relay.
if command -v node >/dev/null && command -v npm >/dev/null; then
  [[ -d tests/compat/node_modules/ws ]] || (cd tests/compat && npm ci --no-audit --no-fund)
  echo "== AgentChat 0.3.0 wire-compatibility test (Node client)"
  node --test --test-concurrency=1 tests/compat/agentchat030.test.mjs
  ./scripts/compat_tls.sh
elif [[ "${WORKBENCH_REQUIRE_BROWSER:-0}" == 1 ]]; then
  echo "the Node compatibility test is required but node/npm is missing" >&2
  exit 1
else
  echo "== SKIPPED AgentChat compatibility test: node/npm not found"
fi

# MCP over Streamable HTTP with the official clients (conformance suite,
# Inspector CLI, ext-apps host in Chromium); see tests/mcp_http/run.sh.
if [[ -x tests/mcp_http/node_modules/node/bin/node ]]; then
  echo "== MCP over HTTP: official clients"
  ./tests/mcp_http/run.sh
elif [[ "${WORKBENCH_REQUIRE_BROWSER:-0}" == 1 ]]; then
  echo "tests/mcp_http needs its npm packages: (cd tests/mcp_http && npm ci)" >&2
  exit 1
else
  echo "== SKIPPED MCP over HTTP client tests: run (cd tests/mcp_http && npm ci) to install them"
fi

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [[ -x "$CHROMIUM" ]] && command -v node >/dev/null; then
  if [[ ! -d tests/browser/node_modules/playwright-core ]]; then
    (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
  fi
  echo "== browser tests (Chromium: $CHROMIUM)"
  node --test --test-concurrency=1 tests/browser/e2e.mjs tests/browser/uploads.mjs
  echo "== browser tests over HTTPS"
  node --test --test-concurrency=1 tests/browser/tls.mjs
else
  if [[ "${WORKBENCH_REQUIRE_BROWSER:-0}" == 1 ]]; then
    echo "browser tests required but $CHROMIUM or node is missing" >&2
    exit 1
  fi
  echo "== SKIPPED browser tests: $CHROMIUM or node not found (apt-get install chromium nodejs npm to run them)"
fi
