// The one-line JSON summary of a simulation run (`fleetpmu-shim --summary=json`): time, and per
// (tenant, policy) the switches, swaps and the fate of every overflow.
#ifndef FLEETPMU_HYPERVISOR_SHIM_SIM_RUN_SUMMARY_H_
#define FLEETPMU_HYPERVISOR_SHIM_SIM_RUN_SUMMARY_H_

#include <string>

#include "hypervisor-shim/sim/host_simulator.h"

namespace fleetpmu::sim {

// {"virtual_seconds": x, "wall_seconds": y, "switches": n, "switches_per_wall_second": r,
//  "tenants": [{"tenant": "...", "policy": "reviewed|seed-v5", "vcpus": n, "switches": n,
//  "swaps": n, "swaps_skipped": n, "promotions": n, "trapped_fallbacks": n,
//  "overflows": {"delivered": n, "coalesced": n, "lost": n, "pending": n},
//  "lost_by_reason": {"<reason>": n, ...}, "misattributed": n, "invariant_violations": n,
//  "pcpus_run": [..], "pcpus_with_lost": [..]}]}
// Tenants are sorted by name, then policy. Call after HostSimulator::Finish().
std::string RunSummaryJson(const HostSimulator& sim, double wall_seconds);

}  // namespace fleetpmu::sim

#endif  // FLEETPMU_HYPERVISOR_SHIM_SIM_RUN_SUMMARY_H_
