#!/usr/bin/env bash
# Builds the static release binary: the one build that scripts/release-size.sh
# measures and the Dockerfile ships. Prints the binary's path last.
#
#   scripts/release-build.sh [TARGET] [TARGET_DIR]
#
# The release profile (Cargo.toml) sets lto, codegen-units=1, opt-level "z",
# strip and panic=abort. This adds, for the target's code only (--target
# keeps them off build scripts and proc macros, which cannot be static):
#   +crt-static                 glibc linked in: one file to copy anywhere
# and, on x86_64-unknown-linux-gnu, where rustc links with its own lld:
#   -z pack-relative-relocs     RELR: the static-pie's relocations in ~1 KB
#                               instead of ~115 KB, ASLR kept
#   --icf=all                   identical functions folded into one
#   --no-eh-frame-hdr           no unwind lookup table (~57 KB). With
#                               panic=abort nothing unwinds; a panic still
#                               prints its message and location, only the
#                               (already symbol-less, stripped) backtrace is
#                               empty.
# Figures: BENCHMARKS.md, "Release size".
set -euo pipefail

cd "$(dirname "$0")/.."
TARGET=${1:-x86_64-unknown-linux-gnu}
TARGET_DIR=${2:-target}

FLAGS="-C target-feature=+crt-static"
if [ "$TARGET" = x86_64-unknown-linux-gnu ]; then
  FLAGS="$FLAGS -C link-arg=-Wl,-z,pack-relative-relocs -C link-arg=-Wl,--icf=all -C link-arg=-Wl,--no-eh-frame-hdr"
fi

RUSTFLAGS="${RUSTFLAGS:-} $FLAGS" \
  cargo build --release --locked --target "$TARGET" --target-dir "$TARGET_DIR" >&2
echo "$TARGET_DIR/$TARGET/release/workbench"
