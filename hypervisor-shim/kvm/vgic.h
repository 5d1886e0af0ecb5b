// Vgic: the VM's in-kernel GICv3 (KVM_DEV_TYPE_ARM_VGIC_V3), at the addresses the canary
// expects (canary_protocol.h). Two steps because KVM wants them apart: Create() before the
// vCPUs exist (device and addresses), Initialize() after all of them exist and before the PMU
// of any vCPU is initialised (KVM_ARM_VCPU_PMU_V3_INIT needs an initialised vGIC).
#ifndef FLEETPMU_HYPERVISOR_SHIM_KVM_VGIC_H_
#define FLEETPMU_HYPERVISOR_SHIM_KVM_VGIC_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "hypervisor-shim/kvm/unique_fd.h"
#include "hypervisor-shim/kvm/vm.h"

namespace fleetpmu::kvm {

class Vgic {
 public:
  // Interrupt IDs the vGIC implements: 32 private (SGIs, PPIs) and 32 SPIs, which the canary
  // never uses; the minimum KVM accepts.
  static constexpr uint32_t kNrIrqs = 64;

  static absl::StatusOr<Vgic> Create(const Vm& vm, int vcpus);
  absl::Status Initialize();

 private:
  Vgic(UniqueFd fd, std::string vm_name) : fd_(std::move(fd)), vm_name_(std::move(vm_name)) {}
  absl::Status SetAttr(const char* step, uint32_t group, uint64_t attr, const void* value);
  UniqueFd fd_;
  std::string vm_name_;
};

}  // namespace fleetpmu::kvm

#endif  // FLEETPMU_HYPERVISOR_SHIM_KVM_VGIC_H_
