#!/usr/bin/env bash
# Builds the static release binary and reports its size against the 4 MiB
# target. Uses its own target dir so it never disturbs a debug build.
#
#   scripts/release-size.sh            # build, then report
#   TARGET_DIR=/tmp/x scripts/release-size.sh
#
# The release profile (Cargo.toml) already sets lto, codegen-units=1,
# strip and panic=abort; this adds a statically linked glibc (+crt-static)
# so the one file can be copied onto lab machines and into a scratch image.
set -euo pipefail

cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-gnu
TARGET_DIR=${TARGET_DIR:-target/release-size}
LIMIT=$((4 * 1024 * 1024))

# --target is required: with it, RUSTFLAGS apply to our code only, not to
# build scripts and proc macros (which cannot be static).
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release --locked --target "$TARGET" --target-dir "$TARGET_DIR"

BIN="$TARGET_DIR/$TARGET/release/workbench"
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
