// The hypervisor's handler for a guest PMU access that trapped to EL2.
//
// Trapped fallback (and the seed without FGT): the access acts on the vCPU's in-memory PMU.
// FREE vCPU: promotion by a full load; the guest then retries the access (retry = true).
// GUEST_OWNED: PMOVS* are served from the canonical in-memory PMOVSSET together with any flag
// still in hardware; PMEVTYPER<n>/PMCCFILTR keep the guest's value in memory and program the
// filtered one in hardware; everything else is written through to the hardware with the guest's
// view (HPMN = h). Indices >= h are UNDEFINED to the guest.
#ifndef FLEETPMU_HYPERVISOR_SHIM_PARTITION_PMU_TRAP_HANDLER_H_
#define FLEETPMU_HYPERVISOR_SHIM_PARTITION_PMU_TRAP_HANDLER_H_

#include <cstdint>

#include "hypervisor-shim/partition/context_switch.h"
#include "hypervisor-shim/pmu/pmuv3.h"

namespace fleetpmu::partition {

struct TrapResult {
  pmu::AccessResult access;
  bool retry = false;  // the guest re-executes the instruction (after a promotion)
};

TrapResult HandlePmuTrap(SwitchContext& ctx, const ContextSwitch& policy, pmu::PmuRegRef ref,
                         uint64_t value, bool is_write, pmu::ExceptionLevel el);

}  // namespace fleetpmu::partition

#endif  // FLEETPMU_HYPERVISOR_SHIM_PARTITION_PMU_TRAP_HANDLER_H_
