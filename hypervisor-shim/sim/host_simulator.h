// HostSimulator: a deterministic discrete-event simulation of one virtualized ARM host (backend
// `sim`), built on PartitionedHost.
//
// pCPUs (possibly heterogeneous) each run a time-sliced queue of vCPUs. A slice is: load, guest
// entry, guest execution (events at the workload's rate, split at every counter wrap, host
// interrupt, guest overflow handler and halt), guest exit, put. The host interrupt arrives a
// fixed latency after a wrap, so a wrap near the end of a slice meets the put first (the race
// the seed patch loses). At slice end a vCPU may migrate to another pCPU; a halted vCPU sleeps
// until its timer or a PMU interrupt wakes it. Host perf events count on the host range, and are
// moved, squeezed and rotated as the reservation mode dictates.
//
// Determinism: the same SimHost config and seed give the same sequence of operations, hence the
// same telemetry. Nothing reads a clock; RunUntil() takes virtual time.
//
// Not thread-safe: one simulator is driven by one thread.
#ifndef FLEETPMU_HYPERVISOR_SHIM_SIM_HOST_SIMULATOR_H_
#define FLEETPMU_HYPERVISOR_SHIM_SIM_HOST_SIMULATOR_H_

#include <cstdint>
#include <memory>
#include <queue>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fleetpmu/v1/config.pb.h"
#include "hypervisor-shim/partition/partitioned_host.h"
#include "hypervisor-shim/sim/guest_workload.h"

namespace fleetpmu::sim {

// Time an owner held a set of counters on one pCPU (PMU.md section 6, ownership).
struct OwnershipResidency {
  partition::OverflowOwner owner;  // a vCPU (its guest mask while GUEST_OWNED) or a host event
  uint32_t counter_mask = 0;       // bit 31 = PMCCNTR
  uint64_t resident_ns = 0;
};

struct SimulatorOptions {
  bool check_invariants = false;  // run PMU.md section 4 after every operation
  bool ground_truth = true;       // ideal vPMU per vCPU for invariants 16/17; expected wraps
                                  // come from the workload (events / period) either way
};

// Identity of each simulated vCPU, indexed by its PartitionedHost vCPU id.
struct SimVcpuInfo {
  std::string vm_id;
  std::string tenant_id;
  int vcpu_index = 0;  // within its VM
  int h = 0;
  v1::Policy policy = v1::POLICY_REVIEWED;
  int observed_n = -1;  // PMCR_EL0.N the guest read when it first ran; -1 before
};

class HostSimulator {
 public:
  // Host interrupt latency after a counter wrap (virtual time).
  static constexpr uint64_t kHostIrqLatencyNs = 2000;
  // Host time between a put and the next load on the same pCPU.
  static constexpr uint64_t kSwitchGapNs = 1000;

  // `config` must have passed ValidateShimConfig with defaults applied.
  static absl::StatusOr<std::unique_ptr<HostSimulator>> Create(const v1::SimHost& config,
                                                               SimulatorOptions options);

  // Advances every pCPU until virtual time `until_ns` (from the start of the simulation).
  absl::Status RunUntil(uint64_t until_ns);
  // Ends the run: overflow flags stranded in hardware are classified as lost.
  void Finish() { host_->FinishAccounting(); }

  uint64_t now_ns() const { return now_ns_; }
  uint64_t switches() const { return switches_; }
  const partition::PartitionedHost& host() const { return *host_; }
  partition::OverflowLedger& mutable_ledger() { return host_->mutable_ledger(); }
  const std::vector<SimVcpuInfo>& vcpus() const { return info_; }
  uint64_t vcpu_run_ns(int vcpu) const { return vcpus_[vcpu].run_ns; }
  // pCPUs a vCPU has run on, and pCPUs where one of its overflows was lost (from the ledger's
  // records), as bitmaps over pCPU indices.
  const std::vector<bool>& ran_on(int vcpu) const { return vcpus_[vcpu].ran_on; }
  const std::vector<bool>& lost_on(int vcpu) const { return vcpus_[vcpu].lost_on; }
  // Ownership of each pCPU's counters since the last call, then starts a new interval.
  std::vector<OwnershipResidency> TakeOwnership(int pcpu);

  // Further consumer of classified overflows (telemetry); the simulator keeps its own tally too.
  void set_overflow_sink(partition::OverflowRecordSink* sink) { tally_.next = sink; }
  const v1::SimHost& config() const { return config_; }

 private:
  struct Vcpu {
    int id = 0;
    const WorkloadPlan* plan = nullptr;
    bool programmed = false;
    bool halted = false;
    uint64_t wake_at_ns = 0;
    uint64_t next_halt_ns = 0;     // run time at which it next halts
    uint64_t run_ns = 0;
    bool handler_due = false;      // virtual line seen high; handler runs after its latency
    std::vector<uint64_t> since_arm;  // events since each programmed counter was armed
    uint64_t rate_remainder = 0;   // sub-event carry of rate * time
    std::vector<bool> ran_on;
    std::vector<bool> lost_on;
  };
  // Notes where each vCPU's overflows were lost, then passes records on.
  struct LossTally final : partition::OverflowRecordSink {
    HostSimulator* sim = nullptr;
    partition::OverflowRecordSink* next = nullptr;
    void OnOverflowRecord(const partition::OverflowRecord& r) override;
  };
  struct Pcpu {
    std::vector<int> runqueue;  // FIFO of sim vCPU indices
    size_t head = 0;
    std::vector<OwnershipResidency> ownership;  // this interval, merged by (owner, mask)
  };
  void AddResidency(int pcpu, partition::OverflowOwner owner, uint32_t mask, uint64_t ns);
  void RecordOwnership(int pcpu, const Vcpu& v, uint64_t ns);
  struct Wake {
    uint64_t at_ns;
    int pcpu;
    bool operator>(const Wake& o) const { return at_ns != o.at_ns ? at_ns > o.at_ns : pcpu > o.pcpu; }
  };

  HostSimulator(const v1::SimHost& config, SimulatorOptions options);
  absl::Status Build();
  // Runs one slice on `pcpu` starting at `start_ns`; returns when the pCPU is next free.
  absl::StatusOr<uint64_t> RunSlice(int pcpu, uint64_t start_ns);
  absl::Status RunGuest(int pcpu, Vcpu& v, uint64_t start_ns, uint64_t end_ns, uint64_t* stopped_ns);
  uint64_t EventsIn(Vcpu& v, uint64_t ns);
  uint64_t NsUntilWrap(const Vcpu& v) const;
  int PickVcpu(int pcpu, uint64_t now_ns);
  double Uniform() { return static_cast<double>(rng_() >> 11) * (1.0 / 9007199254740992.0); }

  v1::SimHost config_;
  SimulatorOptions options_;
  std::unique_ptr<partition::PartitionedHost> host_;
  std::vector<std::unique_ptr<WorkloadPlan>> plans_;
  std::vector<Vcpu> vcpus_;
  std::vector<SimVcpuInfo> info_;
  std::vector<Pcpu> pcpus_;
  std::priority_queue<Wake, std::vector<Wake>, std::greater<Wake>> queue_;
  std::mt19937_64 rng_;
  LossTally tally_;
  uint64_t slice_ns_ = 0;
  double migration_probability_ = 0;
  uint64_t now_ns_ = 0;
  uint64_t switches_ = 0;
};

}  // namespace fleetpmu::sim

#endif  // FLEETPMU_HYPERVISOR_SHIM_SIM_HOST_SIMULATOR_H_
