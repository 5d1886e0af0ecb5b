// Vm: one KVM virtual machine and its guest RAM (one memory slot at CANARY_RAM_BASE).
//
// Owns the VM fd and the RAM mapping; vCPUs (vcpu.h) and the vGIC (vgic.h) hold the VM's fd
// number only and must be destroyed before it. Not thread-safe; after setup, vCPU threads only
// use their own vCPU.
#ifndef FLEETPMU_HYPERVISOR_SHIM_KVM_VM_H_
#define FLEETPMU_HYPERVISOR_SHIM_KVM_VM_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "hypervisor-shim/kvm/kvm_device.h"
#include "hypervisor-shim/kvm/unique_fd.h"

namespace fleetpmu::kvm {

class Vm {
 public:
  // Creates the VM (default 40-bit IPA space) and maps `ram_bytes` of zeroed guest RAM at
  // `ram_base` (guest physical). `name` only goes into error messages.
  static absl::StatusOr<Vm> Create(const KvmDevice& device, std::string name, uint64_t ram_base, size_t ram_bytes);
  Vm(Vm&& other) noexcept;
  Vm& operator=(Vm&&) = delete;
  Vm(const Vm&) = delete;
  ~Vm();

  int fd() const { return fd_.get(); }
  const std::string& name() const { return name_; }
  uint64_t ram_base() const { return ram_base_; }
  size_t ram_bytes() const { return ram_bytes_; }

  // Copies `image` to guest physical address `gpa`, before any vCPU runs. KVM cleans pages to
  // the point of coherency when it maps them for the guest, so a guest with its MMU off sees it.
  absl::Status Load(uint64_t gpa, absl::Span<const uint8_t> image);

 private:
  Vm(UniqueFd fd, std::string name) : fd_(std::move(fd)), name_(std::move(name)) {}
  UniqueFd fd_;
  std::string name_;
  uint64_t ram_base_ = 0;
  size_t ram_bytes_ = 0;
  void* ram_ = nullptr;
};

}  // namespace fleetpmu::kvm

#endif  // FLEETPMU_HYPERVISOR_SHIM_KVM_VM_H_
