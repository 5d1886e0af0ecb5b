// Vcpu: one KVM vCPU of a Vm: creation with the features this backend needs (PSCI 0.2 and
// PMU_V3), its registers, device attributes (the PMU's, see vpmu.h) and the run loop.
//
// Threading: created on the setup thread, then Run() is called on the vCPU's own thread only.
// RequestStop() is the one call another thread may make.
#ifndef FLEETPMU_HYPERVISOR_SHIM_KVM_VCPU_H_
#define FLEETPMU_HYPERVISOR_SHIM_KVM_VCPU_H_

#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "hypervisor-shim/kvm/kvm_device.h"
#include "hypervisor-shim/kvm/unique_fd.h"
#include "hypervisor-shim/kvm/vcpu_residency.h"
#include "hypervisor-shim/kvm/vm.h"

struct kvm_run;

namespace fleetpmu::kvm {

// What Run() saw. Counts are exits back to this process, not the exits KVM handled itself.
struct VcpuRunStats {
  uint64_t run_calls = 0;   // KVM_RUN ioctls: each is one vcpu_load/vcpu_put pair in KVM
  uint64_t mmio_exits = 0;
  uint64_t signal_exits = 0;
};

// Why Run() returned.
enum class VcpuStop { kDone, kSystemEvent, kStopRequested };

class Vcpu {
 public:
  // An MMIO access by the guest outside RAM. For a read, fill `data` (len bytes). Return true to
  // keep running, false to stop (the guest is done).
  using MmioHandler = std::function<bool(uint64_t address, bool is_write, uint8_t* data, uint32_t len)>;

  // KVM_CREATE_VCPU + KVM_ARM_VCPU_INIT with KVM_ARM_VCPU_PSCI_0_2 and KVM_ARM_VCPU_PMU_V3.
  static absl::StatusOr<std::unique_ptr<Vcpu>> Create(const KvmDevice& device, const Vm& vm, int index);
  ~Vcpu();
  Vcpu(const Vcpu&) = delete;
  Vcpu& operator=(const Vcpu&) = delete;

  int index() const { return index_; }
  int fd() const { return fd_.get(); }
  // "VM canary-h3 vCPU 0", for messages.
  const std::string& label() const { return label_; }

  absl::StatusOr<uint64_t> GetReg(uint64_t id, const char* name) const;
  absl::Status SetReg(uint64_t id, uint64_t value, const char* name);

  // KVM_HAS_DEVICE_ATTR: true if the kernel knows (group, attr) for this vCPU.
  bool HasAttr(uint32_t group, uint64_t attr) const;
  // KVM_SET_DEVICE_ATTR; `step` says what it was for in the error.
  absl::Status SetAttr(const std::string& step, uint32_t group, uint64_t attr, const void* value);

  // Runs until the handler says stop, the guest powers off (PSCI SYSTEM_OFF/RESET), or
  // RequestStop(); an unexpected exit is an error naming the exit reason. `residency`, if given
  // (and started on this thread), is told of every KVM_RUN call.
  absl::StatusOr<VcpuStop> Run(const MmioHandler& handler, VcpuResidency* residency = nullptr);
  // Makes Run() return kStopRequested soon, from any thread.
  void RequestStop();
  const VcpuRunStats& run_stats() const { return run_stats_; }

  // KVM_GET_STATS_FD (-1 if the kernel has none).
  UniqueFd OpenStatsFd() const;

 private:
  Vcpu(UniqueFd fd, int index, std::string label) : fd_(std::move(fd)), index_(index), label_(std::move(label)) {}
  UniqueFd fd_;
  int index_;
  std::string label_;
  kvm_run* run_ = nullptr;
  size_t run_size_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<bool> running_{false};
  pthread_t thread_{};
  VcpuRunStats run_stats_;
};

}  // namespace fleetpmu::kvm

#endif  // FLEETPMU_HYPERVISOR_SHIM_KVM_VCPU_H_
