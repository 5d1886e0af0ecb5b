// Host reservation: where the host's perf events may sit, and what happens to them when a
// partitioned vCPU claims [0,h) and PMCCNTR (PMU.md section 2).
//
// Static: host events live on [static_guest_counters, N) and never move. Dynamic: host events may
// use every counter (and PMCCNTR for cycles) while no partitioned vCPU is loaded; at load they are
// moved off the guest's counters onto free host counters, or squeezed off the PMU when none is
// free, and they come back after put. Events that do not fit are multiplexed by rotation.
//
// Every function runs at EL2 on the pCPU's hardware and counts its register accesses there.
#ifndef FLEETPMU_HYPERVISOR_SHIM_PARTITION_HOST_RESERVATION_H_
#define FLEETPMU_HYPERVISOR_SHIM_PARTITION_HOST_RESERVATION_H_

#include <cstdint>

#include "hypervisor-shim/partition/overflow_ledger.h"
#include "hypervisor-shim/partition/pcpu_pmu.h"

namespace fleetpmu::partition {

// Counters the host may place events on right now (bit 31 = PMCCNTR).
uint32_t HostUsableCounters(const PcpuPmu& pcpu);

// Brings every host event's enabled/running time up to `now_ns`.
void AccountHostEventTime(PcpuPmu& pcpu, uint64_t now_ns);

// Places unscheduled host events on free usable counters.
void ScheduleHostEvents(PcpuPmu& pcpu, OverflowLedger& ledger);

// Takes host events off the counters in `claimed` (a vCPU's guest mask), moving each to a free
// usable counter or squeezing it. Returns the number of events that had to leave.
int EvictHostEvents(PcpuPmu& pcpu, uint32_t claimed, OverflowLedger& ledger);

// Multiplexing tick: when events are waiting, the longest-running scheduled one yields.
void RotateHostEvents(PcpuPmu& pcpu, OverflowLedger& ledger);

// The host perf handler's part of a PMU interrupt: counts and re-arms host events whose flags are
// in `flags`, clears those flags. Returns the flags it handled.
uint32_t HandleHostEventOverflows(PcpuPmu& pcpu, uint32_t flags, OverflowLedger& ledger);

}  // namespace fleetpmu::partition

#endif  // FLEETPMU_HYPERVISOR_SHIM_PARTITION_HOST_RESERVATION_H_
