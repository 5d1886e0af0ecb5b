// IntervalReporter: turns what the host simulator counted since it started into one
// fleetpmu.v1.TelemetryReport per report interval (PMU.md section 6, telemetry.proto).
//
// What it owns and what it touches:
//   * It installs itself as the simulator's overflow sink (HostSimulator::set_overflow_sink)
//     and uninstalls itself when destroyed; the simulator must outlive it. Every classified
//     overflow goes into a bounded single-producer ring (spsc_ring.h) and is drained into
//     OverflowEvents at report time. A full ring drops the record and counts it as
//     DROP_STAGE_SHIM_RING. Lost wraps are protected: once the ring is half full, delivered and
//     coalesced records are dropped (and counted) so that the rest stays free for lost ones.
//     Wraps lost as counter_not_loaded have no record (the ledger derives them from ground
//     truth, with no time or counter): they appear in the counts only.
//   * Everything else is read from the simulator's cumulative counters (VcpuSwitchStats, the
//     overflow ledger, the pCPUs' host events) and turned into deltas against the values of
//     the previous report. OverflowCounts.pending is the exception: it is the number of wraps
//     still flagged at interval end, as telemetry.proto defines it.
//
// Threading: not thread-safe. Construction, TakeReport and the simulator's RunUntil must all
// happen on the simulation thread (the sink is called from inside RunUntil).
//
// Determinism: no clock, no randomness. Interval timestamps are start_unix_ns + virtual ns, so
// the same SimHost config, seed, start_unix_ns and sequence of TakeReport calls give
// byte-identical reports (serialized deterministically, because VcpuStats has maps).
//
// How simulator time maps onto intervals. HostSimulator::RunUntil(t) runs every time slice that
// starts before t to its end, so a slice may reach past t by up to one time slice. The counts of
// a slice (loads, puts, traps, wraps, ...) belong to the interval in which it started. Times are
// kept honest: run_time_ns and OwnerResidency.resident_ns are capped at the interval length and
// the excess is carried into the next interval (what is still owed after the final report, less
// than a time slice, is not reported); an OverflowEvent whose time is at or after the
// interval end waits for the report whose interval contains it (the final report takes
// everything, with such times clamped to its last nanosecond).
//
// Swap latency model. The simulator has no clock, so load and put latencies are modelled
// deterministically: kNsPerRegisterAccess per PMU system-register access the swap performed.
// The simulator counts register accesses per vCPU, not per swap, so the accesses of an interval
// are spread over its swaps as evenly as integers allow: the histogram is exact when every swap
// of the vCPU in the interval cost the same (same pCPU kind), and shows their mean otherwise. The
// sample count is swaps_done: every full load (at vcpu_load or by promotion) is undone by exactly
// one swapping put in the same time slice. sum_ns is exact (all load or put accesses).
#ifndef FLEETPMU_HYPERVISOR_SHIM_TELEMETRY_INTERVAL_REPORTER_H_
#define FLEETPMU_HYPERVISOR_SHIM_TELEMETRY_INTERVAL_REPORTER_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fleetpmu/v1/telemetry.pb.h"
#include "hypervisor-shim/partition/overflow_ledger.h"
#include "hypervisor-shim/partition/vcpu_pmu.h"
#include "hypervisor-shim/sim/host_simulator.h"
#include "hypervisor-shim/telemetry/spsc_ring.h"

namespace fleetpmu::telemetry {

// Modelled cost of one PMU system-register access (MSR/MRS plus its share of the ISB), ns.
inline constexpr uint64_t kNsPerRegisterAccess = 10;
// Upper bounds of the load/put latency buckets, ns. A partitioned swap of h counters costs
// roughly 2h + 8 accesses, so these cover h = 0..31 at kNsPerRegisterAccess.
inline constexpr std::array<uint64_t, 10> kSwapLatencyBucketsNs = {50,  100, 150, 200,  300,
                                                                   400, 600, 800, 1200, 1600};

struct IntervalReporterOptions {
  // Unix time of virtual time 0, ns. Tests pass a constant; the shim passes its start time.
  int64_t start_unix_ns = 0;
  // Overflow records held between two reports (ShimConfig.telemetry_ring_capacity).
  size_t overflow_ring_capacity = 4096;
  // Reported as HostInfo.shim_version.
  std::string shim_version;
};

class IntervalReporter {
 public:
  // `sim` must outlive the reporter; its config must have passed ValidateShimConfig with
  // defaults applied.
  IntervalReporter(sim::HostSimulator* sim, IntervalReporterOptions options);
  ~IntervalReporter();
  IntervalReporter(const IntervalReporter&) = delete;
  IntervalReporter& operator=(const IntervalReporter&) = delete;

  // What the shim knows about the host: pCPUs and their PMUs, reservation, backend, shim
  // version; host_id is the simulated host's (the agent overrides it). Sent in ShimHello and in
  // the first report.
  v1::HostInfo host_info() const { return host_info_; }

  // Drops that happened elsewhere (the sender) go into the next report.
  void AddDrops(v1::DropStage stage, uint64_t count, uint64_t bytes);

  // The report for [previous end, end_ns) in virtual time; the first interval starts at 0.
  // Call after sim->RunUntil(end_ns); end_ns must be greater than the previous end. `final`
  // marks the last report of the run (call sim->Finish() before it so that flags stranded in
  // hardware are reported as lost): it also carries the overflow events held back for later.
  v1::TelemetryReport TakeReport(uint64_t end_ns, bool final = false);

  // Virtual time the reports cover so far, and how many were taken.
  uint64_t reported_until_ns() const { return reported_until_ns_; }
  uint64_t reports_taken() const { return reports_taken_; }

 private:
  // One classified overflow as the sink saw it, with what is only known at that moment.
  struct RingedOverflow {
    partition::OverflowRecord record;
    int pcpu = 0;             // record.pcpu, or where the vCPU was when the flag sat in memory
    uint32_t event_code = 0;  // event the counter counted for its owner
  };
  class Sink;
  // Cumulative values already reported, per vCPU.
  struct VcpuBaseline {
    partition::VcpuSwitchStats stats;
    partition::OverflowCounts overflows;  // delivered, coalesced, lost_by_reason, misattributed
    uint64_t run_ns = 0;
    uint64_t run_carry_ns = 0;  // run time past an interval end, owed to the next interval
  };
  // A residency not yet reported: (owner, mask) and the time owed.
  struct PendingResidency {
    v1::OwnerKind kind = v1::OWNER_KIND_UNSPECIFIED;
    int vcpu = -1;  // sim vCPU id for guests, -1 for the host
    uint32_t mask = 0;
    uint64_t ns = 0;
  };
  struct PcpuBaseline {
    uint64_t moved = 0;
    uint64_t squeezed = 0;
    uint64_t enabled_ns = 0;
    uint64_t running_ns = 0;
    partition::OverflowCounts host_overflows;
    std::vector<PendingResidency> residencies;
  };
  struct HostEventName {
    std::string name;
    uint32_t event_code = 0;
  };

  void OnOverflow(const partition::OverflowRecord& record);
  void BuildHostInfo();
  void FillVms(v1::TelemetryReport* report) const;
  void FillVcpuStats(const v1::Interval& interval, uint64_t length_ns, v1::TelemetryReport* report);
  void FillOverflowEvents(uint64_t end_ns, bool final, v1::TelemetryReport* report);
  void FillOwnership(const v1::Interval& interval, uint64_t length_ns, v1::TelemetryReport* report);
  void FillHostCounters(const v1::Interval& interval, v1::TelemetryReport* report);
  void FillDrops(const v1::Interval& interval, v1::TelemetryReport* report);
  int64_t UnixNs(uint64_t virtual_ns) const;

  sim::HostSimulator* const sim_;
  const IntervalReporterOptions options_;
  std::unique_ptr<Sink> sink_;
  SpscRing<RingedOverflow> ring_;
  uint64_t ring_dropped_ = 0;          // drops by the lost-wrap protection (sink, sim thread)
  uint64_t ring_dropped_reported_ = 0;  // ring_.dropped() + ring_dropped_ already reported
  std::vector<RingedOverflow> held_events_;  // drained, but at or after the interval end
  std::vector<int> last_pcpu_;               // per vCPU: last pCPU it was seen on
  std::vector<HostEventName> host_event_names_;  // by host event id
  std::vector<VcpuBaseline> vcpus_;
  std::vector<PcpuBaseline> pcpus_;
  std::array<uint64_t, v1::DropStage_ARRAYSIZE> extra_drop_count_{};
  std::array<uint64_t, v1::DropStage_ARRAYSIZE> extra_drop_bytes_{};
  v1::HostInfo host_info_;
  uint64_t reported_until_ns_ = 0;
  uint64_t reports_taken_ = 0;
};

// Deterministic serialization (map entries sorted), for digests and byte comparisons.
std::string SerializeDeterministically(const google::protobuf::Message& message);

}  // namespace fleetpmu::telemetry

#endif  // FLEETPMU_HYPERVISOR_SHIM_TELEMETRY_INTERVAL_REPORTER_H_
