#!/usr/bin/env bash
# Regenerates tests/vectors/ (issue 7): identities and signatures from Node's
# crypto (standing in for AgentChat 0.3.0) and Python's `cryptography`, plus
# an identity written by workbench itself that both of them load and sign with.
# Needs node (18+), python3 with `cryptography`, and cargo. The tests only read
# the checked-in files; nothing here runs during `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=tests/vectors
mkdir -p "$out"
cargo build --quiet
wb="$out/workbench_identity.json"
./target/debug/workbench identity --generate --force --name workbench-vector --file "$wb" >/dev/null
node scripts/identity_vectors.mjs "$out" "$wb"
python3 scripts/identity_vectors.py "$out" "$wb"
echo "vectors written to $out" >&2
