// KvmBackend: the shim's kvm backend. Runs every VM of a KvmHost config as a canary VM on this
// host's KVM (canary_vm.h), counts the host events (host_counters.h), and turns what the
// guests and the kernel reported into the same telemetry the sim backend produces
// (TelemetryReport: VmInfo, VcpuStats, OverflowEvents, HostCounterStats; HostInfo with
// KvmPmuSupport, OwnershipSamples). It never makes numbers up: what KVM cannot tell (swap
// latencies, traps per register, host events' residency) is left empty.
//
// How the records are derived:
//   * VcpuStats.loads/puts: KVM does a vcpu_load/vcpu_put around every KVM_RUN ioctl and at
//     every preemption of the vCPU thread, so loads = puts = KVM_RUN calls + the thread's
//     context switches during the run (getrusage). An approximation from above: a voluntary
//     switch inside a halt may not put the vCPU. run_time_ns is the thread's CPU time.
//   * Overflows: per counter, the wraps its count proves (count / period); delivered = the
//     interrupts the canary took, coalesced = wraps found late, lost (LOST_REASON_IRQ_MISSING)
//     = the rest. One OverflowEvent per wrap, stamped with the end of the VM's run (the canary
//     reports counts, not times), on the pCPU where the vCPU thread last ran; lost ones first,
//     at most telemetry_ring_capacity per report, the rest counted as DROP_STAGE_SHIM_RING.
//   * HostCounterStats: deltas of perf time_enabled/time_running per pCPU since the last report.
//   * OwnershipSample, one per pCPU of HostInfo: KVM loads a vCPU's PMU context on the pCPU its
//     thread runs on inside KVM_RUN (at entry and every sched-in) and puts it at every exit and
//     sched-out, so each vCPU holds GENMASK(h-1,0) | BIT(31) on pCPU p for as long as its thread
//     ran there (vcpu_residency.h: per-CPU perf task clocks of the thread, or, without perf, its
//     CPU time per KVM_RUN charged to the CPU sampled at the exit). Only guest owners: the host
//     events' residency is not observable from user space. With KVM's emulated vPMU (no
//     partition attribute) the mask is the guest's view: its h counters are perf events that KVM
//     schedules on the hardware while the vCPU is loaded, not necessarily counters [0,h).
//
// A VM that cannot run (h > N, h < N on a kernel that cannot limit N, a missing capability) is
// refused with the reason: it appears in refused() and in the summary, and in no VcpuStats.
// Not thread-safe: one thread calls RunRound and TakeReport.
#ifndef FLEETPMU_HYPERVISOR_SHIM_KVM_KVM_BACKEND_H_
#define FLEETPMU_HYPERVISOR_SHIM_KVM_KVM_BACKEND_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "fleetpmu/v1/config.pb.h"
#include "fleetpmu/v1/telemetry.pb.h"
#include "hypervisor-shim/kvm/canary_vm.h"
#include "hypervisor-shim/kvm/host_counters.h"
#include "hypervisor-shim/kvm/kvm_device.h"

namespace fleetpmu::kvm {

struct KvmBackendOptions {
  std::string shim_version;
  size_t overflow_event_limit = 4096;  // ShimConfig.telemetry_ring_capacity
};

class KvmBackend {
 public:
  // `config` must have passed ValidateShimConfig with defaults applied. Opens the KVM device,
  // probes what it offers a guest PMU (on a throwaway VM) and opens the host events.
  static absl::StatusOr<std::unique_ptr<KvmBackend>> Create(const v1::KvmHost& config, KvmBackendOptions options);

  // Runs every VM's canary once, one VM after the other. A refused VM is not an error here
  // (see refused()); an error is a failure of the host itself (e.g. reading host counters).
  absl::Status RunRound();

  // The report for [previous report, now). The first report carries host_info().
  v1::TelemetryReport TakeReport();
  const v1::HostInfo& host_info() const { return host_info_; }

  // The last round, as JSON (kvm_summary.h) and as a verdict.
  std::string SummaryJson(double wall_seconds) const;
  bool valid() const;
  const std::vector<std::pair<std::string, std::string>>& refused() const { return refused_; }

 private:
  KvmBackend(v1::KvmHost config, KvmBackendOptions options, KvmDevice device, HostCounters host)
      : config_(std::move(config)), options_(std::move(options)), device_(std::move(device)), host_(std::move(host)) {}
  CanaryVmConfig VmConfig(const v1::KvmVm& vm) const;

  const v1::KvmHost config_;
  const KvmBackendOptions options_;
  KvmDevice device_;
  HostCounters host_;
  v1::HostInfo host_info_;
  bool host_info_sent_ = false;
  VpmuSupport support_;
  std::vector<CanaryVmResult> results_;                    // last round
  std::vector<CanaryVmResult> unreported_;                 // rounds not yet in a report
  std::vector<std::pair<std::string, std::string>> refused_;
  std::map<int, HostCpuCounters> host_baseline_;
  int64_t reported_until_unix_ns_ = 0;
};

}  // namespace fleetpmu::kvm

#endif  // FLEETPMU_HYPERVISOR_SHIM_KVM_KVM_BACKEND_H_
