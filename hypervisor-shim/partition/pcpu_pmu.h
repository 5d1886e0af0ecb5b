// PcpuPmu: one physical CPU's PMU hardware and the host's use of it.
//
// Holds the hardware model, the host's own PMU register values (what the host expects to find
// whenever no guest context is installed), the host perf events placed on host counters, which
// owner's state each hardware counter currently holds (for overflow attribution), and the vCPU
// loaded here, if any. Owned by PartitionedHost; not thread-safe.
#ifndef FLEETPMU_HYPERVISOR_SHIM_PARTITION_PCPU_PMU_H_
#define FLEETPMU_HYPERVISOR_SHIM_PARTITION_PCPU_PMU_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "hypervisor-shim/partition/overflow_ledger.h"
#include "hypervisor-shim/partition/vcpu_pmu.h"
#include "hypervisor-shim/pmu/pmuv3.h"

namespace fleetpmu::partition {

enum class HostReservation : uint8_t {
  kStatic,   // the host keeps [guest_counters, N) forever; guests may use [0, guest_counters)
  kDynamic,  // the host uses all N counters and PMCCNTR except while a partitioned vCPU is loaded
};

// A host perf event pinned to this pCPU (perf_event_open per CPU, counting or sampling).
struct HostEvent {
  int id = 0;               // unique per host; overflow owner id
  std::string name;
  uint16_t event = 0;
  uint64_t period = 0;      // sampling period in events; 0 = counting only
  int counter = -1;         // hardware counter it sits on (31 = PMCCNTR), -1 = not scheduled
  uint64_t count = 0;       // events counted so far (perf's running total)
  uint64_t enabled_ns = 0;  // time the event wanted to count
  uint64_t running_ns = 0;  // time it was on a counter
  uint64_t overflows_handled = 0;
  uint64_t times_moved = 0;     // moved to another counter at a vCPU load
  uint64_t times_squeezed = 0;  // taken off the PMU at a vCPU load for lack of a counter
};

struct SavedHostState {
  bool pmuserenr_saved = false;
  bool pmselr_saved = false;
  bool control_saved = false;
  uint64_t pmuserenr = 0;
  uint64_t pmselr = 0;
  uint64_t pmcr = 0;
};

struct PcpuPmu {
  PcpuPmu(int index, const pmu::PmuFeatures& features, HostReservation reservation,
          int static_guest_counters, bool linux_perf_defaults);

  const int index;
  pmu::Pmuv3 hw;
  const HostReservation reservation;
  const int static_guest_counters;  // static reservation: guests may use [0, this)

  // The host's values in host context. MDCR_EL2 keeps HPMN = N and no EL2-counting ban.
  uint64_t host_pmcr;
  uint64_t host_mdcr;

  SavedHostState saved_host;  // what guest entry saved, restored at exit
  VcpuPmu* loaded = nullptr;
  bool preemption_disabled = false;
  uint64_t now_ns = 0;        // last time host event accounting was brought up to date

  std::array<OverflowOwner, 32> counter_owner{};  // whose state each hardware counter holds
  std::vector<HostEvent> host_events;

  uint64_t host_reservation_accesses = 0;  // register accesses spent moving host events
  uint64_t events_moved_at_load = 0;
  uint64_t events_squeezed_at_load = 0;
};

}  // namespace fleetpmu::partition

#endif  // FLEETPMU_HYPERVISOR_SHIM_PARTITION_PCPU_PMU_H_
