#!/usr/bin/env bash
# Builds the static release binary and reports its size against the 4 MiB
# target. Uses its own target dir so it never disturbs a debug build.
#
#   scripts/release-size.sh            # build, then report
#   TARGET_DIR=/tmp/x scripts/release-size.sh
#
# The build itself (profile, static glibc, link flags) is
# scripts/release-build.sh, which the Dockerfile runs too.
set -euo pipefail

cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-gnu
TARGET_DIR=${TARGET_DIR:-target/release-size}
LIMIT=$((4 * 1024 * 1024))

BIN=$(scripts/release-build.sh "$TARGET" "$TARGET_DIR")
BYTES=$(stat -c %s "$BIN")
MIB=$(awk -v b="$BYTES" 'BEGIN { printf "%.2f", b / 1048576 }')

echo
echo "binary:  $BIN"
echo "size:    $BYTES bytes ($MIB MiB)"
if [ "$BYTES" -le "$LIMIT" ]; then
  echo "target:  <= 4 MiB ($LIMIT bytes): OK"
else
  echo "target:  <= 4 MiB ($LIMIT bytes): OVER by $((BYTES - LIMIT)) bytes"
fi
echo "file:    $(file -b "$BIN" 2>/dev/null || echo 'file(1) not installed')"
echo -n "ldd:     "
# ldd exits non-zero for a static binary; that is the answer we want.
ldd "$BIN" 2>&1 || true
echo "version: $("$BIN" --version)"

[ "$BYTES" -le "$LIMIT" ]
