#!/usr/bin/env bash
# Fixture of the emulated ARM test: the kernels and busybox in the cache, and the arm64 build's
# canary driver present.
# Usage: prepare.sh CACHE_DIR ARM64_CANARY ARM64_SHIM
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/fetch-kernels.sh" "$1"
for program in "$2" "$3"; do
  if [[ ! -x "$program" ]]; then
    echo "prepare: $program is missing: build the arm64 preset first (make arm64)" >&2
    exit 1
  fi
done
