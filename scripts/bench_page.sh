#!/usr/bin/env bash
# Page server speed: push latency to 100 viewers (baseline: 1 viewer, same
# run), 1000 viewers held, idle CPU and RSS. Release build, loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
cargo build --release --locked --quiet --example bench_page
./target/release/examples/bench_page ./target/release/workbench
