#include "hypervisor-shim/kvm/kvm_device.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/klog.h>

#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "hypervisor-shim/kvm/kvm_error.h"
#include "hypervisor-shim/kvm/kvm_uapi.h"

namespace fleetpmu::kvm {
namespace {

std::string ReadFile(const char* path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The kernel log, when this process may read it (root, or dmesg_restrict = 0).
std::string KernelLog() {
  const int size = klogctl(10 /* SYSLOG_ACTION_SIZE_BUFFER */, nullptr, 0);
  if (size <= 0) return "";
  std::vector<char> buffer(static_cast<size_t>(size));
  const int n = klogctl(3 /* SYSLOG_ACTION_READ_ALL */, buffer.data(), size);
  return n > 0 ? std::string(buffer.data(), static_cast<size_t>(n)) : "";
}

}  // namespace

const char* KvmModeName(KvmMode mode) {
  switch (mode) {
    case KvmMode::kVhe: return "vhe";
    case KvmMode::kNvhe: return "nvhe";
    case KvmMode::kProtected: return "protected";
    case KvmMode::kUnknown: break;
  }
  return "unknown";
}

KvmMode ParseKvmMode(const std::string& cmdline, const std::string& kernel_log) {
  // The command line wins: it is what the host was asked for and KVM honours it or fails.
  for (const absl::string_view word : absl::StrSplit(cmdline, absl::ByAnyChar(" \n\t"), absl::SkipEmpty())) {
    if (word == "kvm-arm.mode=nvhe") return KvmMode::kNvhe;
    if (word == "kvm-arm.mode=protected") return KvmMode::kProtected;
    if (word == "kvm-arm.mode=none") return KvmMode::kUnknown;
  }
  // arch/arm64/kvm/arm.c prints one of these when KVM comes up. Most specific first: "VHE mode"
  // is a substring of "nVHE mode".
  if (absl::StrContains(kernel_log, "Protected nVHE mode initialized successfully")) return KvmMode::kProtected;
  if (absl::StrContains(kernel_log, "Hyp mode initialized successfully") ||
      absl::StrContains(kernel_log, "nVHE mode initialized successfully")) {
    return KvmMode::kNvhe;
  }
  if (absl::StrContains(kernel_log, "VHE mode initialized successfully")) return KvmMode::kVhe;
  return KvmMode::kUnknown;
}

int KvmDevice::CheckExtension(long capability) const {
  const int r = ioctl(fd_.get(), KVM_CHECK_EXTENSION, capability);
  return r < 0 ? 0 : r;
}

absl::StatusOr<KvmDevice> KvmDevice::Open(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd.valid()) return SyscallError(absl::StrCat("opening the KVM device ", path), "open");
  KvmDevice device(std::move(fd), path);
  const int version = ioctl(device.fd(), KVM_GET_API_VERSION, 0);
  if (version < 0) return SyscallError(absl::StrCat("asking ", path, " for its API version"), "KVM_GET_API_VERSION");
  if (version != KVM_API_VERSION) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " speaks KVM API version ", version, ", this shim needs ", KVM_API_VERSION));
  }
  // Without these the canary cannot run at all: say which one is missing.
  struct Required {
    long capability;
    const char* name;
    const char* why;
  };
  for (const Required& required : {
           Required{KVM_CAP_ARM_PMU_V3, "KVM_CAP_ARM_PMU_V3", "the guest PMU (vCPU feature PMU_V3)"},
           Required{KVM_CAP_ARM_PSCI_0_2, "KVM_CAP_ARM_PSCI_0_2", "PSCI 0.2 for the vCPUs"},
           Required{KVM_CAP_DEVICE_CTRL, "KVM_CAP_DEVICE_CTRL", "the in-kernel vGICv3 device"},
           Required{KVM_CAP_ONE_REG, "KVM_CAP_ONE_REG", "setting the vCPUs' entry registers"},
       }) {
    if (device.CheckExtension(required.capability) <= 0) {
      return absl::UnimplementedError(absl::StrCat(path, " lacks ", required.name, ", needed for ", required.why));
    }
  }
  KvmHostFacts& facts = device.facts_;
  facts.api_version = version;
  facts.recommended_vcpus = device.CheckExtension(KVM_CAP_NR_VCPUS);
  facts.reg_mask_ranges = device.CheckExtension(KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES) > 0;
#ifdef KVM_CAP_BINARY_STATS_FD
  facts.binary_stats = device.CheckExtension(KVM_CAP_BINARY_STATS_FD) > 0;
#endif
  facts.mode = ParseKvmMode(ReadFile("/proc/cmdline"), KernelLog());
  return device;
}

}  // namespace fleetpmu::kvm
