#!/usr/bin/env bash
# The project's one test command (README, and .ci/run calls exactly this):
# unit + integration tests of the real binary, then the real-browser tests
# in Debian's headless Chromium when it is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked
cargo test --locked --no-fail-fast -- --test-threads="${WORKBENCH_TEST_THREADS:-4}"

# An independent Node client of the AgentChat 0.3.0 wire protocol (signing
# with Node's crypto) against the real relay.
if command -v node >/dev/null && command -v npm >/dev/null; then
  [[ -d tests/compat/node_modules/ws ]] || (cd tests/compat && npm ci --no-audit --no-fund)
  echo "== AgentChat 0.3.0 wire-compatibility test (Node client)"
  node --test --test-concurrency=1 tests/compat/agentchat030.test.mjs
elif [[ "${WORKBENCH_REQUIRE_BROWSER:-0}" == 1 ]]; then
  echo "the Node compatibility test is required but node/npm is missing" >&2
  exit 1
else
  echo "== SKIPPED AgentChat compatibility test: node/npm not found"
fi

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [[ -x "$CHROMIUM" ]] && command -v node >/dev/null; then
  if [[ ! -d tests/browser/node_modules/playwright-core ]]; then
    (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
  fi
  echo "== browser tests (Chromium: $CHROMIUM)"
  node --test --test-concurrency=1 tests/browser/e2e.mjs
else
  if [[ "${WORKBENCH_REQUIRE_BROWSER:-0}" == 1 ]]; then
    echo "browser tests required but $CHROMIUM or node is missing" >&2
    exit 1
  fi
  echo "== SKIPPED browser tests: $CHROMIUM or node not found (apt-get install chromium nodejs npm to run them)"
fi
