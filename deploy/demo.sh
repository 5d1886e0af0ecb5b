#!/usr/bin/env bash
# The README's `make demo`, at this stage of the project: the sim backend on the two example
# hosts (one all `reviewed`, one with tenant initech on `seed-v5`), summarised per tenant, then
# one register-level trace of the seed's stale-flag defect. It grows with the agent, server and
# dashboards (issues 5-7).
# Usage: deploy/demo.sh [--duration=<virtual seconds>] (0 or unset: 10)
set -euo pipefail
cd "$(dirname "$0")/.."
duration=10
for arg in "$@"; do
  case "$arg" in
    --duration=*) duration="${arg#--duration=}" ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "demo: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$duration" =~ ^[0-9]+$ ]] || { echo "demo: --duration must be whole seconds, got '$duration'" >&2; exit 2; }
[[ "$duration" -gt 0 ]] || duration=10
bin="${FLEETPMU_BIN:-build/bin}"
for b in fleetpmu-shim fleetpmu-pmu; do
  [[ -x "$bin/$b" ]] || { echo "demo: $bin/$b is missing: run 'make build' first" >&2; exit 1; }
done

read -r -d '' summary_py <<'PY' || true
import json, sys
d = json.load(sys.stdin)
print(f"  {d['switches']} vCPU switches in {d['virtual_seconds']:.0f} virtual s ({d['wall_seconds']:.2f} s wall)")
print(f"  {'tenant':<10} {'policy':<9} {'switches':>9} {'swaps':>8} {'skipped':>8} {'delivered':>10} {'lost':>8}  lost by reason")
for t in d["tenants"]:
    o = t["overflows"]
    reasons = ", ".join(f"{k}={v}" for k, v in t["lost_by_reason"].items() if v) or "-"
    print(f"  {t['tenant']:<10} {t['policy']:<9} {t['switches']:>9} {t['swaps']:>8} {t['swaps_skipped']:>8} {o['delivered']:>10} {o['lost']:>8}  {reasons}")
PY
summarise() { python3 -c "$summary_py"; }

for host in sim-host sim-host-seed-v5; do
  echo "== deploy/examples/$host.textproto, ${duration}s of virtual time"
  "$bin/fleetpmu-shim" --config "deploy/examples/$host.textproto" --run-for="${duration}s" | summarise
  echo
done

echo "== the seed's stale overflow flag, register by register (docs/pmu-trace.md)"
"$bin/fleetpmu-pmu" --check-invariants - <<'TRACE' || true
pmu N=6 fgt cpus=1
vcpu 0 h=3 policy=seed-v5
vcpu 1 h=3 policy=seed-v5
el 1
load 0
enter
guest write PMEVTYPER0_EL0 0x08
guest write PMEVCNTR0_EL0 0xffffffff
guest write PMINTENSET_EL1 1
guest write PMCNTENSET_EL0 1
guest write PMCR_EL0 1
guest event 0x08 1        # vCPU 0's counter wraps just before its slice ends
exit
put                       # seed-v5: the flag stays in hardware
load 1
enter
guest write PMINTENSET_EL1 1
guest write PMCR_EL0 1
hostirq                   # vCPU 1 is interrupted for vCPU 0's overflow
guest read PMOVSSET_EL0
guest write PMOVSCLR_EL0 1  # ... and its handler clears it: vCPU 0 never sees its overflow
show vcpu 0
show vcpu 1
TRACE
