#!/usr/bin/env bash
# Attachment and snapshot-image latency in Debian's headless Chromium
# (release build; issue 16). N=15 by default; N=30 for a steadier run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
[[ -d tests/browser/node_modules/playwright-core ]] || (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
WORKBENCH_BIN="$PWD/target/release/workbench" node scripts/bench_uploads.mjs
