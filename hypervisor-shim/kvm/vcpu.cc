#include "hypervisor-shim/kvm/vcpu.h"

#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "hypervisor-shim/kvm/kvm_error.h"
#include "hypervisor-shim/kvm/kvm_uapi.h"

namespace fleetpmu::kvm {
namespace {

// RequestStop() interrupts KVM_RUN with this signal; the handler does nothing, the point is the
// EINTR (installed without SA_RESTART).
constexpr int kKickSignal = SIGUSR1;

void InstallKickHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction action = {};
    action.sa_handler = [](int) {};
    sigemptyset(&action.sa_mask);
    sigaction(kKickSignal, &action, nullptr);
  });
}

const char* ExitReasonName(uint32_t reason) {
  switch (reason) {
    case KVM_EXIT_UNKNOWN: return "KVM_EXIT_UNKNOWN";
    case KVM_EXIT_HYPERCALL: return "KVM_EXIT_HYPERCALL";
    case KVM_EXIT_DEBUG: return "KVM_EXIT_DEBUG";
    case KVM_EXIT_MMIO: return "KVM_EXIT_MMIO";
    case KVM_EXIT_SHUTDOWN: return "KVM_EXIT_SHUTDOWN";
    case KVM_EXIT_FAIL_ENTRY: return "KVM_EXIT_FAIL_ENTRY";
    case KVM_EXIT_INTR: return "KVM_EXIT_INTR";
    case KVM_EXIT_INTERNAL_ERROR: return "KVM_EXIT_INTERNAL_ERROR";
    case KVM_EXIT_SYSTEM_EVENT: return "KVM_EXIT_SYSTEM_EVENT";
#ifdef KVM_EXIT_ARM_NISV
    case KVM_EXIT_ARM_NISV: return "KVM_EXIT_ARM_NISV";
#endif
  }
  return "an unknown exit reason";
}

}  // namespace

absl::StatusOr<std::unique_ptr<Vcpu>> Vcpu::Create(const KvmDevice& device, const Vm& vm, int index) {
  const std::string label = absl::StrCat("VM ", vm.name(), " vCPU ", index);
  const int fd = ioctl(vm.fd(), KVM_CREATE_VCPU, index);
  if (fd < 0) return SyscallError(absl::StrCat(label, ": creating the vCPU"), "KVM_CREATE_VCPU");
  std::unique_ptr<Vcpu> vcpu(new Vcpu(UniqueFd(fd), index, label));

  const int run_size = ioctl(device.fd(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (run_size <= 0) return SyscallError(absl::StrCat(label, ": sizing the kvm_run area"), "KVM_GET_VCPU_MMAP_SIZE");
  void* run = mmap(nullptr, static_cast<size_t>(run_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (run == MAP_FAILED) return SyscallError(absl::StrCat(label, ": mapping the kvm_run area"), "mmap");
  vcpu->run_ = static_cast<kvm_run*>(run);
  vcpu->run_size_ = static_cast<size_t>(run_size);

  // The host CPU's own target: the vCPU looks like the CPU it runs on.
  struct kvm_vcpu_init init = {};
  if (ioctl(vm.fd(), KVM_ARM_PREFERRED_TARGET, &init) < 0) {
    return SyscallError(absl::StrCat(label, ": asking for the preferred vCPU target"), "KVM_ARM_PREFERRED_TARGET");
  }
  // Powered on at creation (no KVM_ARM_VCPU_POWER_OFF): every vCPU enters the canary at once.
  init.features[0] |= (1u << KVM_ARM_VCPU_PSCI_0_2) | (1u << KVM_ARM_VCPU_PMU_V3);
  if (ioctl(fd, KVM_ARM_VCPU_INIT, &init) < 0) {
    return SyscallError(absl::StrCat(label, ": initialising the vCPU with PSCI 0.2 and PMUv3"), "KVM_ARM_VCPU_INIT");
  }
  return vcpu;
}

Vcpu::~Vcpu() {
  if (run_ != nullptr) munmap(run_, run_size_);
}

absl::StatusOr<uint64_t> Vcpu::GetReg(uint64_t id, const char* name) const {
  uint64_t value = 0;
  struct kvm_one_reg reg = {id, reinterpret_cast<uint64_t>(&value)};
  if (ioctl(fd_.get(), KVM_GET_ONE_REG, &reg) < 0) {
    return SyscallError(absl::StrCat(label_, ": reading ", name), "KVM_GET_ONE_REG");
  }
  return value;
}

absl::Status Vcpu::SetReg(uint64_t id, uint64_t value, const char* name) {
  struct kvm_one_reg reg = {id, reinterpret_cast<uint64_t>(&value)};
  if (ioctl(fd_.get(), KVM_SET_ONE_REG, &reg) < 0) {
    return SyscallError(absl::StrCat(label_, ": writing ", name, " = 0x", absl::Hex(value)), "KVM_SET_ONE_REG");
  }
  return absl::OkStatus();
}

bool Vcpu::HasAttr(uint32_t group, uint64_t attr) const {
  struct kvm_device_attr device_attr = {};
  device_attr.group = group;
  device_attr.attr = attr;
  return ioctl(fd_.get(), KVM_HAS_DEVICE_ATTR, &device_attr) == 0;
}

absl::Status Vcpu::SetAttr(const std::string& step, uint32_t group, uint64_t attr, const void* value) {
  struct kvm_device_attr device_attr = {};
  device_attr.group = group;
  device_attr.attr = attr;
  device_attr.addr = reinterpret_cast<uint64_t>(value);
  if (ioctl(fd_.get(), KVM_SET_DEVICE_ATTR, &device_attr) < 0) {
    return SyscallError(absl::StrCat(label_, ": ", step), "KVM_SET_DEVICE_ATTR");
  }
  return absl::OkStatus();
}

UniqueFd Vcpu::OpenStatsFd() const {
#ifdef KVM_GET_STATS_FD
  return UniqueFd(ioctl(fd_.get(), KVM_GET_STATS_FD, nullptr));
#else
  return UniqueFd();
#endif
}

void Vcpu::RequestStop() {
  stop_.store(true, std::memory_order_release);
  if (run_ != nullptr) run_->immediate_exit = 1;
  if (running_.load(std::memory_order_acquire)) pthread_kill(thread_, kKickSignal);
}

absl::StatusOr<VcpuStop> Vcpu::Run(const MmioHandler& handler, VcpuResidency* residency) {
  InstallKickHandler();
  sigset_t kick;
  sigemptyset(&kick);
  sigaddset(&kick, kKickSignal);
  pthread_sigmask(SIG_UNBLOCK, &kick, nullptr);
  thread_ = pthread_self();
  running_.store(true, std::memory_order_release);
  struct Running {
    std::atomic<bool>& flag;
    ~Running() { flag.store(false, std::memory_order_release); }
  } running{running_};

  for (;;) {
    if (stop_.load(std::memory_order_acquire)) return VcpuStop::kStopRequested;
    ++run_stats_.run_calls;
    if (residency != nullptr) residency->BeforeRun();
    const int ran = ioctl(fd_.get(), KVM_RUN, 0);
    const int run_errno = errno;
    if (residency != nullptr) residency->AfterRun();
    errno = run_errno;
    if (ran < 0) {
      if (errno == EINTR || errno == EAGAIN) {
        ++run_stats_.signal_exits;
        run_->immediate_exit = 0;
        continue;
      }
      return SyscallError(absl::StrCat(label_, ": running the guest"), "KVM_RUN");
    }
    switch (run_->exit_reason) {
      case KVM_EXIT_MMIO: {
        ++run_stats_.mmio_exits;
        auto& mmio = run_->mmio;
        if (!handler(mmio.phys_addr, mmio.is_write != 0, mmio.data, mmio.len)) return VcpuStop::kDone;
        break;
      }
      case KVM_EXIT_SYSTEM_EVENT:
        // PSCI SYSTEM_OFF or SYSTEM_RESET from the guest: it is finished either way.
        return VcpuStop::kSystemEvent;
      case KVM_EXIT_INTR:
        ++run_stats_.signal_exits;
        break;
      case KVM_EXIT_FAIL_ENTRY:
        return absl::InternalError(absl::StrCat(label_, ": KVM could not enter the guest (KVM_EXIT_FAIL_ENTRY, hardware reason 0x",
                                                absl::Hex(run_->fail_entry.hardware_entry_failure_reason), ")"));
      default:
        return absl::InternalError(absl::StrCat(label_, ": unexpected exit ", ExitReasonName(run_->exit_reason), " (",
                                                run_->exit_reason, ")"));
    }
  }
}

}  // namespace fleetpmu::kvm
