#!/usr/bin/env bash
# The AgentChat 0.3.0 wire-compatibility test (tests/compat) again, over
# wss://: a test CA and a localhost certificate are made here with the
# openssl CLI, the relay runs with --cert/--key, Node's `ws` client trusts
# the CA through NODE_EXTRA_CA_CERTS, and our CLI through --ca.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
openssl req -x509 "${ec[@]}" -days 30 -keyout "$DIR/ca.key" -out "$DIR/ca.pem" \
  -subj "/CN=workbench compat CA" 2>/dev/null
openssl req "${ec[@]}" -keyout "$DIR/server.key" -out "$DIR/server.csr" -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
  > "$DIR/ext.cnf"
openssl x509 -req -in "$DIR/server.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" -CAcreateserial \
  -out "$DIR/server.pem" -days 10 -extfile "$DIR/ext.cnf" 2>/dev/null
echo "== AgentChat 0.3.0 wire-compatibility test over wss:// (Node ws client, test CA)"
WORKBENCH_COMPAT_CERT="$DIR/server.pem" WORKBENCH_COMPAT_KEY="$DIR/server.key" \
  NODE_EXTRA_CA_CERTS="$DIR/ca.pem" \
  node --test --test-concurrency=1 tests/compat/agentchat030.test.mjs
