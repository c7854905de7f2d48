#!/usr/bin/env bash
# Relay chat over MCP: chat_send on agent A's pipe -> agent B's pending
# chat_wait answered (p50/p90/p99), against bare relay clients in the same
# run; then each idle session process's CPU and RSS. Release build,
# loopback only, bounded (about 30 s).  usage: scripts/bench_chat.sh [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
cargo build --release --locked --quiet --example bench_chat
./target/release/examples/bench_chat ./target/release/workbench "${1:-300}"
