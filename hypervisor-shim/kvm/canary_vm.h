// RunCanaryVm: one VM of the kvm backend, start to finish. Creates the VM with its RAM, the
// in-kernel vGICv3 and the vCPUs, sets up the guest PMU (vpmu.h) so that the guest sees
// PMCR_EL0.N = h, loads the embedded canary guest, runs every vCPU on its own thread until its
// canary reports (canary_protocol.h) or the deadline passes, and returns what each vCPU
// reported with what the host saw of its thread and its KVM statistics.
//
// Nothing is made up here: every number in the result comes from the guest's report, from
// KVM, or from the kernel's accounting of the vCPU threads. Errors name the VM and the step.
#ifndef FLEETPMU_HYPERVISOR_SHIM_KVM_CANARY_VM_H_
#define FLEETPMU_HYPERVISOR_SHIM_KVM_CANARY_VM_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "hypervisor-shim/kvm/canary/canary_protocol.h"
#include "hypervisor-shim/kvm/kvm_device.h"
#include "hypervisor-shim/kvm/vcpu.h"
#include "hypervisor-shim/kvm/vcpu_residency.h"
#include "hypervisor-shim/kvm/vpmu.h"

namespace fleetpmu::kvm {

struct CanaryVmConfig {
  std::string vm_id = "canary";
  std::string tenant_id = "canary";
  int vcpus = 1;
  std::optional<uint32_t> h;           // unset: half the host's N, rounded down
  uint64_t memory_bytes = 16ull << 20;
  std::vector<uint32_t> events = {0x08};  // per event counter, round-robin
  std::vector<uint64_t> periods;          // parallel to events; missing or 0: sample_period
  uint64_t sample_period = 100000;
  uint64_t wraps = 1000;
  bool use_cycle_counter = true;
  uint64_t cycle_period = 0;              // 0: sample_period
  std::vector<PmuFilterRange> filter;
  bool enable_partition = true;           // set the partition attribute where the kernel has it
  absl::Duration guest_timeout = absl::Seconds(30);  // the canary's own budget (generic timer)
  absl::Duration grace = absl::Milliseconds(50);
  absl::Duration host_timeout = absl::Seconds(60);   // the VMM stops the vCPUs after this
};

struct CanaryVcpuResult {
  int vcpu = 0;
  bool done = false;                 // the canary wrote CANARY_DONE
  uint64_t done_status = CANARY_STATUS_NONE;
  canary_report report = {};
  std::string console;               // what the canary printed (errors only)
  std::string error;                 // the VMM's own failure for this vCPU, if any
  VcpuRunStats run_stats;
  std::map<std::string, uint64_t> kvm_stats;  // KVM_GET_STATS_FD at the end (empty if none)
  uint64_t voluntary_switches = 0;   // the vCPU thread's context switches while it ran
  uint64_t involuntary_switches = 0;
  uint64_t thread_cpu_ns = 0;
  uint64_t wall_ns = 0;
  int last_cpu = -1;                 // where the vCPU thread ran last (sched_getcpu)
  // Where the vCPU thread ran while it ran the guest, ns per pCPU (vcpu_residency.h says how).
  std::map<int, uint64_t> resident_ns_by_cpu;
  ResidencyMethod residency_method = ResidencyMethod::kNone;
};

struct CanaryVmResult {
  CanaryVmConfig config;
  uint32_t h = 0;
  VpmuSupport support;
  CounterLimit limit = CounterLimit::kAlreadyEqual;
  bool partition_enabled = false;
  canary_params params = {};
  int64_t start_unix_ns = 0;
  int64_t end_unix_ns = 0;
  std::vector<CanaryVcpuResult> vcpus;
};

// The params the canary reads for `h` (exposed for tests).
canary_params MakeCanaryParams(const CanaryVmConfig& config, uint32_t h);

absl::StatusOr<CanaryVmResult> RunCanaryVm(const KvmDevice& device, const CanaryVmConfig& config);

// What KVM offers a guest PMU on this host, probed on a throwaway VM with one vCPU (no vGIC, no
// run): for HostInfo before any canary VM ran.
absl::StatusOr<VpmuSupport> ProbeHostVpmu(const KvmDevice& device);

}  // namespace fleetpmu::kvm

#endif  // FLEETPMU_HYPERVISOR_SHIM_KVM_CANARY_VM_H_
