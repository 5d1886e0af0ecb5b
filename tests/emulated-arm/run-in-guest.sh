#!/usr/bin/env bash
# Runs a shell script as root on an emulated arm64 KVM host and prints the guest's serial
# console. For tests and for trying things by hand (e.g. the agent's host discovery on arm64).
#
# Usage: run-in-guest.sh [options] SCRIPT
#   --kernel SUITE     bookworm | trixie-backports (default trixie-backports): Debian kernel
#                      fetched by fetch-kernels.sh into the cache
#   --mode MODE        vhe | nvhe (default vhe)
#   --add SRC[:DEST]   copy SRC into the guest at DEST (default /payload/bin/<name>); repeatable.
#                      Dynamically linked arm64 programs also need their libraries: add them with
#                      their absolute paths as DEST (see tests/emulated-arm/README.md)
#   --cache DIR        kernel/busybox cache (default <repo>/build-emu/cache)
#   --work DIR         where the initramfs and the serial log go (default: a temporary folder)
#   --timeout SECONDS  QEMU's limit (default 240)
# SCRIPT runs as /payload/run.sh with /payload/bin on PATH. The serial log is SERIAL.log in the
# work folder and is printed at the end. Exit status: 0 if the script ran to its end (marker
# "FLEETPMU-EMU: run.sh exit"), 1 otherwise (boot failure or timeout).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
kernel=trixie-backports mode=vhe cache="$repo/build-emu/cache" work="" limit=240
adds=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --kernel) kernel="$2"; shift 2 ;;
    --mode) mode="$2"; shift 2 ;;
    --add) adds+=("$2"); shift 2 ;;
    --cache) cache="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --timeout) limit="$2"; shift 2 ;;
    -*) echo "run-in-guest: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[[ $# -eq 1 ]] || { echo "usage: run-in-guest.sh [options] SCRIPT" >&2; exit 2; }
script="$1"
if [[ -z "$work" ]]; then work="$(mktemp -d)"; fi
mkdir -p "$work"

"$here/fetch-kernels.sh" "$cache" >/dev/null
image="$cache/kernels/$kernel/Image"
[[ -s "$image" ]] || { echo "run-in-guest: no kernel for $kernel in $cache" >&2; exit 2; }

payload="$work/payload"
rm -rf "$payload"
mkdir -p "$payload/payload/bin"
cp "$script" "$payload/payload/run.sh"
for add in "${adds[@]}"; do
  src="${add%%:*}"
  dest="payload/bin/$(basename "$src")"
  [[ "$add" == *:* ]] && dest="${add#*:}"
  mkdir -p "$payload/$(dirname "${dest#/}")"
  cp -L "$src" "$payload/${dest#/}"
done
"$here/make-initramfs.sh" "$cache/busybox/bin/busybox" "$payload" "$work/initramfs.cpio.gz"

log="$work/SERIAL.log"
start=$(date +%s.%N)
status=0
"$here/boot-guest.sh" "$image" "$work/initramfs.cpio.gz" "$mode" "$log" "$limit" || status=$?
end=$(date +%s.%N)
cat "$log"
printf 'run-in-guest: %s %s: %.1fs wall%s\n' "$kernel" "$mode" "$(awk -v a="$start" -v b="$end" 'BEGIN {print b - a}')" \
  "$([[ $status -eq 124 ]] && echo ", TIMED OUT after ${limit}s")" >&2
grep -q '^FLEETPMU-EMU: run.sh exit' "$log"
