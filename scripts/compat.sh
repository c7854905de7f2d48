#!/usr/bin/env bash
# AgentChat 0.3.0 wire-compatibility test: builds `workbench`, installs the
# test's one npm dependency (ws, pinned by tests/compat/package-lock.json)
# and runs tests/compat/agentchat030.test.mjs against the real relay binary
# on loopback. Needs node >= 20 and npm.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked
if [[ ! -d tests/compat/node_modules/ws ]]; then
  (cd tests/compat && npm ci --no-audit --no-fund)
fi
echo "== AgentChat 0.3.0 compatibility test"
node --test --test-concurrency=1 tests/compat/agentchat030.test.mjs
