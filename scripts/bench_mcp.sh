#!/usr/bin/env bash
# MCP speed: spawn → initialize, workbench_state round trip, RSS; each
# against a baseline measured in the same run. Release build, loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
cargo build --release --locked --quiet --example bench_mcp
./target/release/examples/bench_mcp ./target/release/workbench
