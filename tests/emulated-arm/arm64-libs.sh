#!/usr/bin/env bash
# Prints the shared libraries an arm64 program needs (recursively, by DT_NEEDED), and its
# dynamic loader, as absolute paths on this machine (Debian multiarch :arm64 packages and the
# private sysroot of deploy/install-cross-deps.sh). Used to put the real fleetpmu-shim into the
# emulated host's initramfs.
# Usage: arm64-libs.sh PROGRAM [EXTRA_LIB_DIR...]
set -euo pipefail
dirs=(/lib/aarch64-linux-gnu /usr/lib/aarch64-linux-gnu "${@:2}")
declare -A seen=()
queue=("$1")
echo /lib/ld-linux-aarch64.so.1
while [[ ${#queue[@]} -gt 0 ]]; do
  file="${queue[0]}"
  queue=("${queue[@]:1}")
  while read -r lib; do
    [[ -n "${seen[$lib]:-}" ]] && continue
    seen[$lib]=1
    found=""
    for d in "${dirs[@]}"; do
      if [[ -e "$d/$lib" ]]; then found="$d/$lib"; break; fi
    done
    [[ -n "$found" ]] || { echo "arm64-libs: $lib (needed by $file) not found in ${dirs[*]}" >&2; exit 1; }
    echo "$found"
    queue+=("$found")
  done < <(aarch64-linux-gnu-readelf -d "$file" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
done
