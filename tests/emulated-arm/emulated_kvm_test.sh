#!/usr/bin/env bash
# The emulated ARM host test (issue 8 item 5): boots a Debian arm64 kernel in qemu-system-aarch64
# with EL2 (VHE, or nVHE with kvm-arm.mode=nvhe), runs the kvm backend's canary for h in
# {1,3,6} and the refused h=7 inside it, and judges the guest's serial console with
# check_results.py. On failure it prints the tail of the serial log.
#
# With --shim, the real arm64 fleetpmu-shim (dynamically linked: its ~70 shared libraries go
# into the initramfs) also runs a kvm config with `--run-for --summary=json`: case "shim".
#
# Usage: emulated_kvm_test.sh --canary ARM64_BINARY [--shim ARM64_SHIM] --kernel SUITE
#                             --mode vhe|nvhe [--work DIR]
#   ARM64_BINARY  the static fleetpmu-kvm-canary of an arm64 build
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
canary="" shim="" kernel="" mode="" work=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --canary) canary="$2"; shift 2 ;;
    --shim) shim="$2"; shift 2 ;;
    --kernel) kernel="$2"; shift 2 ;;
    --mode) mode="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    *) echo "emulated_kvm_test: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -x "$canary" ]] || { echo "emulated_kvm_test: no arm64 canary driver at '$canary' (build the arm64 preset)" >&2; exit 1; }
[[ -n "$work" ]] || work="$(mktemp -d)"
mkdir -p "$work"
aarch64-linux-gnu-strip -o "$work/fleetpmu-kvm-canary" "$canary"

# One counter in two runs SW_INCR (exact: 4 wraps of 64), the others CPU_CYCLES with a period long
# enough that an interrupt is rarely a whole period late; the cycle counter samples too. Host
# events: cycles and instructions pinned on every CPU.
cat >"$work/run.sh" <<'GUEST'
common="--events=0x00,0x11 --periods=64,20000000 --wraps=4 --cycle_counter --cycle_period=20000000
  --host_events=cycles:0x11,instructions:0x08 --guest_timeout=6s --host_timeout=60s"
for h in 1 3 6 7; do
  fleetpmu-kvm-canary --vm_id=canary-h$h --h=$h $common >/tmp/out.json 2>/tmp/err.txt
  rc=$?
  echo "FLEETPMU-JSON h$h $(cat /tmp/out.json)"
  while read -r line; do echo "FLEETPMU-ERR h$h $line"; done </tmp/err.txt
  echo "FLEETPMU-RC h$h $rc"
done
if [ -x /payload/bin/fleetpmu-shim ]; then
  fleetpmu-shim --config=/payload/kvm.textproto --run-for=20s --summary=json >/tmp/out.json 2>/tmp/err.txt
  rc=$?
  echo "FLEETPMU-JSON shim $(cat /tmp/out.json)"
  while read -r line; do echo "FLEETPMU-ERR shim $line"; done </tmp/err.txt
  echo "FLEETPMU-RC shim $rc"
fi
GUEST

adds=(--add "$work/fleetpmu-kvm-canary")
if [[ -n "$shim" ]]; then
  [[ -x "$shim" ]] || { echo "emulated_kvm_test: no arm64 shim at $shim" >&2; exit 1; }
  aarch64-linux-gnu-strip -o "$work/fleetpmu-shim" "$shim"
  adds+=(--add "$work/fleetpmu-shim")
  # h = N = 6 runs on every kernel; two vCPUs; the cycle counter is left out because 6.1 never
  # delivers its overflow interrupt (see check_results.py), which the canary cases cover.
  cat >"$work/kvm.textproto" <<'CONFIG'
backend: BACKEND_KVM
kvm {
  vms {
    vm_id: "shim-h6"
    tenant_id: "tenant-a"
    vcpus: 2
    h: 6
    canary { events: [0x00, 0x11] sample_periods: [64, 20000000] wraps: 4 use_cycle_counter: false
             timeout { seconds: 6 } }
  }
  host_events { name: "cycles" event_code: 0x11 pinned: true }
}
CONFIG
  adds+=(--add "$work/kvm.textproto:/payload/kvm.textproto")
  while read -r lib; do adds+=(--add "$lib:$lib"); done \
    < <("$here/arm64-libs.sh" "$shim" "$repo/build-arm64-sysroot/usr/lib/aarch64-linux-gnu")
fi

start=$(date +%s.%N)
status=0
"$here/run-in-guest.sh" --kernel "$kernel" --mode "$mode" --work "$work" --timeout 300 \
  "${adds[@]}" "$work/run.sh" >/dev/null 2>"$work/run-in-guest.err" || status=$?
end=$(date +%s.%N)
log="$work/SERIAL.log"
boot=$(sed -n 's/^FLEETPMU-EMU: boot \([0-9.]*\).*/\1/p' "$log" | head -n 1)
done_at=$(sed -n 's/^FLEETPMU-EMU: run.sh exit [0-9]* at \([0-9.]*\).*/\1/p' "$log" | head -n 1)
printf 'emulated %s %s: init at %ss, cases done at %ss guest uptime, %.1fs wall\n' "$kernel" "$mode" \
  "${boot:-?}" "${done_at:-?}" "$(awk -v a="$start" -v b="$end" 'BEGIN {print b - a}')"
if [[ $status -ne 0 ]] || ! python3 "$here/check_results.py" "$log" "$kernel" "$mode" ${shim:+--shim}; then
  cat "$work/run-in-guest.err" >&2 || true
  echo "---- last 60 lines of the guest's serial log ($log) ----"
  tail -n 60 "$log" | cut -c1-2000
  exit 1
fi
