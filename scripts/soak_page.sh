#!/usr/bin/env bash
# Soak of the page server under mixed abuse from several loopback addresses
# (issue 11): idle sockets, header drip, stalled bodies, an event flood and
# never-reading viewers from 127.0.0.2-127.0.0.10, while a real client on
# 127.0.0.1 pushes 10 times a second and a Chromium viewer watches.
#
#   scripts/soak_page.sh [ABUSE_SECONDS]     default 180; e.g. 20 for a quick check
#
# Prints one JSON report: push-to-DOM p50/p99 in a quiet phase and under
# abuse, peak RSS, bytes on disk, what each abuse got back, and whether every
# acknowledged event is on disk. Exits 1 if the server died or lost one.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
[[ -d tests/browser/node_modules/playwright-core ]] || (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
# 400+ sockets on the client side, on top of the server's.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
WORKBENCH_BIN="$PWD/target/release/workbench" node scripts/soak_page.mjs "${1:-180}"
