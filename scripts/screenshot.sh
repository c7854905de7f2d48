#!/usr/bin/env bash
# Regenerates docs/screenshot.png from the demo in headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --quiet
WORKBENCH_SCREENSHOT="$PWD/docs/screenshot.png" node --test --test-name-pattern="demo" tests/browser/e2e.mjs
