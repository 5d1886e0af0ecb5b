// VcpuPmu: one vCPU's PMU as the hypervisor keeps it.
//
// The in-memory register copy is itself a Pmuv3 with N = h (the guest's view: HPMN = N = h, no
// EL2 traps). While the vCPU is GUEST_OWNED and loaded, the live state is in hardware and the copy
// is stale except for PMOVSSET, which stays canonical for the guest (PMU.md section 3). In trapped
// fallback the copy *is* the guest's PMU: trapped accesses and guest events act on it directly.
//
// Optionally the vCPU also carries an ideal vPMU: the same guest accesses and events applied to a
// private, never-shared PMU. What the guest reads must equal what the ideal vPMU answers
// (invariants 16, 17), and its wraps are the ground truth of overflow accounting.
//
// Owned by PartitionedHost; not thread-safe.
#ifndef FLEETPMU_HYPERVISOR_SHIM_PARTITION_VCPU_PMU_H_
#define FLEETPMU_HYPERVISOR_SHIM_PARTITION_VCPU_PMU_H_

#include <array>
#include <cstdint>
#include <memory>
#include "absl/strings/string_view.h"

#include "hypervisor-shim/partition/event_filter.h"
#include "hypervisor-shim/pmu/pmuv3.h"

namespace fleetpmu::partition {

// Which load/put the vCPU runs: the reviewed algorithm or the seed patch v5 17/24 as posted.
enum class SwitchPolicy : uint8_t { kReviewed, kSeedV5 };
absl::string_view SwitchPolicyName(SwitchPolicy policy);  // "reviewed", "seed-v5"

enum class PmuOwnership : uint8_t { kFree, kGuestOwned };

// How the vCPU's PMU runs on the pCPU it is loaded on.
enum class PmuMode : uint8_t {
  kPartitioned,  // guest counters [0,h) and PMCCNTR are the hardware's while loaded
  kTrapped,      // every access traps; the in-memory copy is an emulated PMU (HPMN = N)
};

struct VcpuPmuConfig {
  int h = 0;                         // guest event counters; the VM's PMCR.N
  SwitchPolicy policy = SwitchPolicy::kReviewed;
  bool partitioned = true;           // false: always the trapped (emulated) vPMU
  pmu::PmuFeatures features;         // the PMU type the VM was created for (num_counters = host N)
  EventFilter filter;
};

struct VcpuSwitchStats {
  uint64_t loads = 0;
  uint64_t puts = 0;
  uint64_t swaps_done = 0;        // loads that moved guest state into hardware
  uint64_t swaps_skipped = 0;     // loads of a FREE vCPU (nothing moved)
  uint64_t promotions = 0;        // FREE -> GUEST_OWNED on a first access
  uint64_t trapped_fallbacks = 0; // loads that stayed trapped (mismatch, h = 0 without HPMN0, ...)
  uint64_t load_register_accesses = 0;
  uint64_t put_register_accesses = 0;
  uint64_t entry_exit_register_accesses = 0;
  std::array<uint64_t, pmu::kPmuRegCount> traps_by_register{};
  uint64_t direct_accesses = 0;   // guest accesses that did not trap
  uint64_t host_irqs_attributed = 0;
  uint64_t virtual_irq_assertions = 0;
  uint64_t halted_wakes = 0;
  uint64_t invariant_violations = 0;  // found while this vCPU was the one being switched or run
};

struct VcpuPmu {
  VcpuPmu(int id, VcpuPmuConfig config, bool with_ideal);

  const int id;
  const VcpuPmuConfig config;
  uint32_t guest_mask() const { return pmu::GuestCounterMask(config.h); }

  pmu::Pmuv3 saved;                      // in-memory copy / emulated PMU
  std::unique_ptr<pmu::Pmuv3> ideal;     // ground truth, when enabled
  PmuOwnership ownership = PmuOwnership::kFree;
  PmuMode mode = PmuMode::kPartitioned;
  bool in_hardware = false;       // guest range state currently lives in the pCPU's PMU
  int loaded_on = -1;             // pCPU index while loaded
  bool in_guest = false;
  bool halted = false;
  bool virtual_irq_level = false; // the vPMU PPI as the hypervisor drives it
  VcpuSwitchStats stats;
};

}  // namespace fleetpmu::partition

#endif  // FLEETPMU_HYPERVISOR_SHIM_PARTITION_VCPU_PMU_H_
