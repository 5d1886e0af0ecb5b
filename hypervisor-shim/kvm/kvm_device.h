// KvmDevice: the open /dev/kvm and what it offers. Owns the fd; creating VMs is vm.h's job.
//
// What it promises: Open() succeeds only for KVM API version 12 with the capabilities every VM of
// this backend needs (KVM_CAP_ARM_PMU_V3, KVM_CAP_ARM_PSCI_0_2, an in-kernel irqchip); anything
// missing is an error naming the capability. The optional ones are facts, probed once.
// Thread-safe after Open (read-only).
#ifndef FLEETPMU_HYPERVISOR_SHIM_KVM_KVM_DEVICE_H_
#define FLEETPMU_HYPERVISOR_SHIM_KVM_KVM_DEVICE_H_

#include <string>

#include "absl/status/statusor.h"
#include "hypervisor-shim/kvm/unique_fd.h"

namespace fleetpmu::kvm {

// How KVM runs on this host (kvm-arm.mode). Partitioning needs VHE (PMU.md section 2).
enum class KvmMode { kUnknown, kVhe, kNvhe, kProtected };
const char* KvmModeName(KvmMode mode);

struct KvmHostFacts {
  int api_version = 0;
  // KVM_CAP_NR_VCPUS: the recommended (not the maximum) vCPUs per VM.
  int recommended_vcpus = 0;
  // KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES (Linux 6.8): KVM validates writes of PMCR_EL0.N, so
  // N can be lowered with KVM_SET_ONE_REG where SET_NR_COUNTERS is missing.
  bool reg_mask_ranges = false;
  // KVM_CAP_BINARY_STATS_FD: per-vCPU statistics (exits, halts) for VcpuStats.
  bool binary_stats = false;
  // From /proc/cmdline (kvm-arm.mode=...) or, failing that, the kernel log line KVM prints.
  KvmMode mode = KvmMode::kUnknown;
};

class KvmDevice {
 public:
  static absl::StatusOr<KvmDevice> Open(const std::string& path);

  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }
  const KvmHostFacts& facts() const { return facts_; }
  // KVM_CHECK_EXTENSION on /dev/kvm: 0 = absent, otherwise the capability's value.
  int CheckExtension(long capability) const;

 private:
  KvmDevice(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  UniqueFd fd_;
  std::string path_;
  KvmHostFacts facts_;
};

// kvm-arm.mode as the host was booted; exposed for tests.
KvmMode ParseKvmMode(const std::string& cmdline, const std::string& kernel_log);

}  // namespace fleetpmu::kvm

#endif  // FLEETPMU_HYPERVISOR_SHIM_KVM_KVM_DEVICE_H_
