// The steps the partitioned context switch is made of (PMU.md section 3), each a small function
// that performs its register accesses at EL2 on the pCPU's hardware. The two policies compose
// them: reviewed_switch.cc in the order the review settled on, seed_v5_switch.cc as the seed patch
// posted it. Hot path: no allocation, no locks, no logging.
#ifndef FLEETPMU_HYPERVISOR_SHIM_PARTITION_SWITCH_STEPS_H_
#define FLEETPMU_HYPERVISOR_SHIM_PARTITION_SWITCH_STEPS_H_

#include <cstdint>

#include "hypervisor-shim/partition/overflow_ledger.h"
#include "hypervisor-shim/partition/pcpu_pmu.h"
#include "hypervisor-shim/partition/vcpu_pmu.h"

namespace fleetpmu::partition {

struct SwitchContext {
  PcpuPmu& pcpu;
  VcpuPmu& vcpu;
  OverflowLedger& ledger;
};

// Load step 1: not partitioned, a PMU that does not match the VM's, h > N, h above a static
// reservation, or h = 0 without HPMN0.
bool NeedsTrappedFallback(const PcpuPmu& pcpu, const VcpuPmu& vcpu);
// An enabled counter in the guest range or a pending overflow condition in the saved state.
bool WantsOwnershipAtLoad(const VcpuPmu& vcpu);
// Whether the VM's event filter governs `event` (everything but SW_INCR and CHAIN, as in KVM).
bool FilterApplies(uint16_t event);
// The type to program in hardware for a guest type: NSH cleared (the guest never counts at EL2)
// and, for an event the VM's filter denies, EL0 and EL1 excluded.
uint32_t HardwareEventType(uint32_t guest_type, uint16_t event, const EventFilter& filter);
// The MDCR_EL2 of guest context for a GUEST_OWNED vCPU.
uint64_t GuestMdcr(const PcpuPmu& pcpu, const VcpuPmu& vcpu);

// Load step 1: counts the load and, for a vCPU that cannot be partitioned here, settles it in
// trapped mode. Returns true when the load is done (trapped).
bool SettleTrappedFallback(SwitchContext& ctx);
// Load step 2: under dynamic reservation the host leaves [0,h) and PMCCNTR; a vCPU that wants
// no counters stays FREE. Returns true when the guest state must be loaded.
bool ClaimGuestRange(SwitchContext& ctx);

void ClearGuestOverflowFlags(SwitchContext& ctx);  // load step 3
void WriteGuestCounters(SwitchContext& ctx);       // load step 4
void WriteGuestEventTypes(SwitchContext& ctx);     // load step 5
void WriteGuestEnables(SwitchContext& ctx);        // load step 6
// Entry step 7, user part: saves what the host has not saved yet, installs guest PMUSERENR and
// PMSELR.
void InstallGuestUserState(SwitchContext& ctx);
// Entry step 7, control part: host PMCR saved, guest PMCR (stateful bits) and MDCR_EL2 installed,
// fine-grained traps for PMOVS*, PMEVTYPER<n>, PMCCFILTR when FGT is used.
void InstallGuestControl(SwitchContext& ctx);
// Guest context in which every PMU access traps (FREE vCPUs, trapped fallback): hardware
// PMUSERENR opened so that EL0 accesses reach the EL2 trap, MDCR_EL2.TPM set; HPMN = h with the
// guest-context bits for a `partitioned` (FREE) vCPU, HPMN = N for the trapped fallback.
void InstallTrapEverything(SwitchContext& ctx, bool partitioned);
// Put step 1, guest part: saves guest PMSELR and PMUSERENR (if `user_state`) and PMCR.
void SaveGuestExitState(SwitchContext& ctx, bool user_state);
// Put step 1, host part: restores whatever entry saved, host PMCR and MDCR_EL2 (HPMN = N).
void RestoreHostState(SwitchContext& ctx);
void ReadGuestCounters(SwitchContext& ctx);  // put step 2
void HarvestOverflows(SwitchContext& ctx);   // put step 3
void DisableGuestRange(SwitchContext& ctx);  // put step 4

// Recomputes the vPMU interrupt line from the canonical state (in-memory PMOVSSET with the live
// or saved PMINTEN and PMCR.E), counting assertions and waking a halted vCPU on a rising edge.
void UpdateVirtualIrq(VcpuPmu& vcpu, const PcpuPmu* pcpu);

}  // namespace fleetpmu::partition

#endif  // FLEETPMU_HYPERVISOR_SHIM_PARTITION_SWITCH_STEPS_H_
