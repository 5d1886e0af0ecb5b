// PartitionedHost: the pCPUs, vCPUs and host events of one host, and the only way to drive them.
//
// Every load, guest entry, guest exit and put goes through the vCPU's ContextSwitch policy; every
// guest PMU access goes to the hardware model first, which decides whether it traps; trapped ones
// go to the hypervisor's handler. Guest events count on whatever PMU holds the vCPU's state. The
// overflow ledger sees every wrap, move and clear. With ground truth on, each vCPU also drives an
// ideal vPMU; with checking on, the invariant checker runs after every operation.
//
// The simulator, the trace tool, the property tests, the fuzzer and the benchmarks all drive this
// class. No I/O, no clock (SetTime), no threads: a host is driven by one thread.
#ifndef FLEETPMU_HYPERVISOR_SHIM_PARTITION_PARTITIONED_HOST_H_
#define FLEETPMU_HYPERVISOR_SHIM_PARTITION_PARTITIONED_HOST_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "hypervisor-shim/partition/invariant_checker.h"
#include "hypervisor-shim/partition/overflow_ledger.h"
#include "hypervisor-shim/partition/pcpu_pmu.h"
#include "hypervisor-shim/partition/switch_steps.h"
#include "hypervisor-shim/partition/vcpu_pmu.h"

namespace fleetpmu::partition {

struct PartitionedHostOptions {
  bool ground_truth = false;      // ideal vPMU per vCPU (needed for items 16, 17, counter_not_loaded)
  bool check_invariants = false;  // run the InvariantChecker after every operation
  // Where expected wraps come from: the ideal vPMU (register-exact, the property tests) or the
  // driver through mutable_ledger().RecordExpectedWraps (the simulator's workload, which expects
  // events / period samples the way perf does, whatever the guest got to see).
  bool expected_wraps_from_ideal = true;
};

class PartitionedHost {
 public:
  explicit PartitionedHost(PartitionedHostOptions options);
  ~PartitionedHost();
  PartitionedHost(const PartitionedHost&) = delete;
  PartitionedHost& operator=(const PartitionedHost&) = delete;

  // Configuration. AddPcpu refuses N > 31 and a static reservation larger than N; AddVcpu
  // refuses h > N (UNPREDICTABLE in MDCR_EL2.HPMN) and h < 0.
  // With `linux_perf_defaults` the host has set PMCR.E, LC (and LP, HLP with PMUv3p5) and HPME
  // as Linux perf does; without, every register is 0 and HPMN = N (a PE out of reset).
  absl::StatusOr<int> AddPcpu(const pmu::PmuFeatures& features, HostReservation reservation,
                              int static_guest_counters, bool linux_perf_defaults = true);
  absl::StatusOr<int> AddVcpu(VcpuPmuConfig config);
  absl::StatusOr<int> AddHostEvent(int pcpu, std::string name, uint16_t event, uint64_t period);

  // Virtual time for latencies and multiplexing.
  void SetTime(uint64_t now_ns);
  uint64_t now_ns() const { return now_ns_; }

  // The vCPU lifecycle on a pCPU. Errors name what was out of order; state is unchanged then.
  absl::Status Load(int vcpu, int pcpu);
  absl::Status EnterGuest(int pcpu);
  absl::Status ExitGuest(int pcpu);
  absl::Status Put(int pcpu);

  // A PMU instruction executed by the guest running on `pcpu` at EL0 or EL1. The result is what
  // the guest observes (kTrapToEl2 never escapes: the hypervisor handles it).
  absl::StatusOr<pmu::AccessResult> GuestAccess(int pcpu, pmu::PmuRegRef ref, uint64_t value,
                                                bool is_write, pmu::ExceptionLevel el);
  // An ISB executed by the guest.
  absl::Status GuestContextSynchronize(int pcpu);
  // `count` occurrences of `event` caused by the guest running on `pcpu`, at guest `el`.
  absl::Status CountGuestEvent(int pcpu, uint16_t event, uint64_t count, pmu::ExceptionLevel el);

  // Host code on `pcpu` at EL2, outside guest context (e.g. perf, or the trace tool).
  absl::StatusOr<pmu::AccessResult> HostAccess(int pcpu, pmu::PmuRegRef ref, uint64_t value,
                                               bool is_write);
  // `count` occurrences of `event` at EL2 on `pcpu`.
  absl::Status CountHostEvent(int pcpu, uint16_t event, uint64_t count);

  // The physical PMU interrupt line of `pcpu`, and its handler (host perf part, then guest flags
  // moved into the loaded vCPU's PMOVSSET and its virtual line raised).
  bool HostInterruptPending(int pcpu) const;
  absl::Status HandleHostInterrupt(int pcpu);
  // Multiplexing tick for squeezed host events.
  absl::Status RotateHostEvents(int pcpu);

  // End of run: flags left in hardware for owners that are not loaded there are lost.
  void FinishAccounting();

  int num_pcpus() const { return static_cast<int>(pcpus_.size()); }
  int num_vcpus() const { return static_cast<int>(vcpus_.size()); }
  const PcpuPmu& pcpu(int i) const { return *pcpus_[i]; }
  const VcpuPmu& vcpu(int i) const { return *vcpus_[i]; }
  const OverflowLedger& ledger() const { return ledger_; }
  OverflowLedger& mutable_ledger() { return ledger_; }
  const InvariantChecker& checker() const { return checker_; }
  bool checking() const { return options_.check_invariants; }
  // A vCPU that executed WFI: it is woken by a rising virtual PMU line (or by the caller).
  absl::Status SetHalted(int vcpu, bool halted);

  // The bare hardware of a pCPU, bypassing the hypervisor (trace tool, tests). Host-context
  // writes should go through HostAccess so that the host's own values are tracked.
  pmu::Pmuv3& RawHardware(int pcpu) { return pcpus_[pcpu]->hw; }

  // Runs the state invariants now (also done after every operation when checking is on).
  void CheckInvariants();

 private:
  class HardwareWraps;
  class MemoryWraps;
  class IdealWraps;

  absl::Status CheckPcpu(int pcpu) const;
  absl::StatusOr<VcpuPmu*> RunningVcpu(int pcpu);
  SwitchContext Context(PcpuPmu& p, VcpuPmu& v) { return SwitchContext{p, v, ledger_}; }
  // Runs the state checks after an operation and charges new violations to `vcpu` (if any).
  void AfterOperation(const PcpuPmu& pcpu, VcpuPmu* vcpu = nullptr);

  PartitionedHostOptions options_;
  uint64_t now_ns_ = 0;
  OverflowLedger ledger_;
  InvariantChecker checker_;
  std::vector<std::unique_ptr<PcpuPmu>> pcpus_;
  std::vector<std::unique_ptr<VcpuPmu>> vcpus_;
  std::vector<std::unique_ptr<pmu::OverflowObserver>> observers_;
  // The host's own PMUSERENR/PMSELR as host code last wrote them, per pCPU (item 12).
  std::vector<std::pair<uint64_t, uint64_t>> host_user_state_;
  int next_host_event_id_ = 0;
  uint64_t violations_charged_ = 0;
};

}  // namespace fleetpmu::partition

#endif  // FLEETPMU_HYPERVISOR_SHIM_PARTITION_PARTITIONED_HOST_H_
