#!/usr/bin/env bash
# `make bench`: runs every benchmark binary of a Release build and writes one JSON file of
# figures per binary plus a readable summary. Not part of `make test`.
# Usage: deploy/bench.sh [build dir] (default build-release)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-release}
out="$build/bench-results"
mkdir -p "$out"
shopt -s nullglob
benches=("$build"/bench/*)
[[ ${#benches[@]} -gt 0 ]] || { echo "bench: no benchmarks under $build/bench: build the release preset first" >&2; exit 1; }
for b in "${benches[@]}"; do
  [[ -x "$b" ]] || continue
  name=$(basename "$b")
  echo "== $name"
  "$b" --benchmark_out="$out/$name.json" --benchmark_out_format=json --benchmark_min_time=0.5 | tee "$out/$name.txt"
done
echo "figures: $out/*.json"
