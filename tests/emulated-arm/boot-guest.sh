#!/usr/bin/env bash
# Boots one emulated arm64 host (qemu-system-aarch64 with EL2, GICv3, -cpu max) with a Debian
# kernel and an initramfs from make-initramfs.sh, and records its serial console.
#
# Usage: boot-guest.sh KERNEL_IMAGE INITRAMFS MODE SERIAL_LOG [TIMEOUT_SECONDS] [EXTRA_APPEND]
#                     [-- QEMU_ARGS...]
#   MODE       vhe (KVM's default on a VHE-capable CPU) or nvhe (kvm-arm.mode=nvhe)
#   QEMU_ARGS  appended to QEMU's command line; without a -netdev/-nic among them the guest
#              has no network (-nic none)
# QEMU always runs under `timeout`; its exit status says nothing about the guest (the caller
# reads the markers in SERIAL_LOG). Exits 124 if the timeout hit, else 0.
set -euo pipefail

kernel="$1" initrd="$2" mode="$3" log="$4" limit="${5:-180}" extra="${6:-}"
[[ "$limit" == -- ]] && limit=180
[[ "$extra" == -- ]] && extra=""
qemu_args=()
while [[ $# -gt 0 ]]; do
  if [[ "$1" == -- ]]; then shift; qemu_args=("$@"); break; fi
  shift
done
nic=(-nic none)
for arg in "${qemu_args[@]}"; do
  [[ "$arg" == -netdev || "$arg" == -nic ]] && nic=()
done
case "$mode" in
  vhe) append="" ;;
  nvhe) append="kvm-arm.mode=nvhe" ;;
  *) echo "boot-guest: mode must be vhe or nvhe, not $mode" >&2; exit 2 ;;
esac
# pauth-impdef=on: QEMU's cheap pointer-authentication algorithm, boots ~2.5x faster.
status=0
timeout --kill-after=10 "$limit" qemu-system-aarch64 \
  -M virt,virtualization=on,gic-version=3 -cpu max,pauth-impdef=on -smp 2 -m 1024 \
  -nographic -no-reboot "${nic[@]}" \
  -kernel "$kernel" -initrd "$initrd" \
  -append "console=ttyAMA0 panic=-1 quiet loglevel=4 $append $extra" \
  "${qemu_args[@]}" </dev/null >"$log" 2>&1 || status=$?
if [[ $status -eq 124 || $status -eq 137 ]]; then exit 124; fi
exit 0
