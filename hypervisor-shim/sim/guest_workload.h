// GuestWorkload: what a simulated guest does with its PMU, the way Linux perf drives PMUv3.
//
// The plan is derived once from the VM's Workload config and its h: which events sit on which
// counters (CPU_CYCLES on PMCCNTR, the rest on [0,h) in order; events beyond h are not
// programmed, as perf would multiplex them inside the guest), the preset that makes a counter
// wrap after `period` events, and the rates. Counting workloads are perf stat: Linux still
// enables the overflow interrupt to widen 32-bit counters, so they are sampling with the
// counter's full width as period. IDLE never touches the PMU.
//
// The Program/Handler functions issue the guest's register accesses through PartitionedHost at
// EL1, exactly as the guest kernel would.
#ifndef FLEETPMU_HYPERVISOR_SHIM_SIM_GUEST_WORKLOAD_H_
#define FLEETPMU_HYPERVISOR_SHIM_SIM_GUEST_WORKLOAD_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "fleetpmu/v1/config.pb.h"
#include "hypervisor-shim/partition/partitioned_host.h"

namespace fleetpmu::sim {

struct ProgrammedCounter {
  int counter = 0;       // 0..h-1, or 31 for PMCCNTR
  uint16_t event = 0;
  uint64_t preset = 0;   // value written at arm time (wraps after `period` events)
  uint64_t period = 0;   // events between wraps
};

struct WorkloadPlan {
  v1::Workload::Kind kind = v1::Workload::COUNTING;
  std::vector<ProgrammedCounter> counters;
  uint32_t counter_mask = 0;          // bitmap of counters used
  std::vector<uint16_t> generated;    // events the guest's execution produces (programmed + host's)
  uint64_t rate_hz = 0;               // per generated event
  uint64_t handler_latency_ns = 0;
  uint64_t run_between_halts_ns = 0;  // 0 = never halts
  uint64_t halt_ns = 0;
  bool long_counters = false;         // PMCR.LP: 64-bit event counters (PMUv3p5)
};

// `host_events`: event codes the host counts, which guest execution also produces.
WorkloadPlan PlanWorkload(const v1::Workload& workload, int h, bool p5,
                          const std::vector<uint16_t>& host_events);

// perf's PMU probe: the number of event counters the guest sees, PMCR_EL0.N read at EL1 (under
// a partitioned PMU, MDCR_EL2.HPMN = h).
absl::StatusOr<uint32_t> ProbeCounterCount(partition::PartitionedHost& host, int pcpu);

// perf's event setup on a fresh PMU: types, presets, interrupt and counter enables, PMCR.E.
absl::Status ProgramCounters(partition::PartitionedHost& host, int pcpu, const WorkloadPlan& plan);

// perf's overflow handler: read PMOVSSET, re-arm each overflowed counter, clear the flags.
// Returns the flags handled.
absl::StatusOr<uint32_t> RunOverflowHandler(partition::PartitionedHost& host, int pcpu,
                                            const WorkloadPlan& plan);

}  // namespace fleetpmu::sim

#endif  // FLEETPMU_HYPERVISOR_SHIM_SIM_GUEST_WORKLOAD_H_
