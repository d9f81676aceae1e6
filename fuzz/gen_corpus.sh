#!/usr/bin/env bash
# Regenerates the seed corpus in fuzz/corpus/ with fuzz/gen_corpus.c
# (built by fuzz/build.sh).  Generated files are replaced; hand-added files
# (any name not written by the generator) are left alone.  Commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${FUZZ_BUILD:-build-fuzz}
[ -x "$OUT/gen_corpus" ] || fuzz/build.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ASAN_OPTIONS=detect_leaks=1 "$OUT/gen_corpus" "$tmp"
for d in "$tmp"/*; do
  sub=$(basename "$d")
  mkdir -p "fuzz/corpus/$sub"
  cp "$d"/* "fuzz/corpus/$sub/"
done
du -sh fuzz/corpus
