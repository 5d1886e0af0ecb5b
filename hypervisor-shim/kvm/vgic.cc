#include "hypervisor-shim/kvm/vgic.h"

#include <sys/ioctl.h>

#include "absl/strings/str_cat.h"
#include "hypervisor-shim/kvm/canary/canary_protocol.h"
#include "hypervisor-shim/kvm/kvm_error.h"
#include "hypervisor-shim/kvm/kvm_uapi.h"

namespace fleetpmu::kvm {

absl::StatusOr<Vgic> Vgic::Create(const Vm& vm, int vcpus) {
  struct kvm_create_device create = {};
  create.type = KVM_DEV_TYPE_ARM_VGIC_V3;
  if (ioctl(vm.fd(), KVM_CREATE_DEVICE, &create) < 0) {
    const int err = errno;
    absl::Status status = SyscallError(absl::StrCat("VM ", vm.name(), ": creating the in-kernel vGICv3"),
                                       "KVM_CREATE_DEVICE", err);
    if (err == ENODEV) {
      return absl::UnimplementedError(absl::StrCat(status.message(), " (the host's GIC cannot virtualise a GICv3)"));
    }
    return status;
  }
  Vgic vgic(UniqueFd(static_cast<int>(create.fd)), vm.name());
  const uint64_t dist = CANARY_GICD_BASE;
  const uint64_t redist = CANARY_GICR_BASE;
  if (absl::Status s = vgic.SetAttr("placing the vGIC distributor", KVM_DEV_ARM_VGIC_GRP_ADDR,
                                    KVM_VGIC_V3_ADDR_TYPE_DIST, &dist);
      !s.ok()) {
    return s;
  }
  if (CANARY_GICR_BASE + static_cast<uint64_t>(vcpus) * CANARY_GICR_STRIDE > CANARY_MMIO_BASE) {
    return absl::InvalidArgumentError(absl::StrCat("VM ", vm.name(), ": ", vcpus, " redistributors do not fit below 0x",
                                                   absl::Hex(CANARY_MMIO_BASE)));
  }
  if (absl::Status s = vgic.SetAttr("placing the vGIC redistributors", KVM_DEV_ARM_VGIC_GRP_ADDR,
                                    KVM_VGIC_V3_ADDR_TYPE_REDIST, &redist);
      !s.ok()) {
    return s;
  }
  return vgic;
}

absl::Status Vgic::SetAttr(const char* step, uint32_t group, uint64_t attr, const void* value) {
  struct kvm_device_attr device_attr = {};
  device_attr.group = group;
  device_attr.attr = attr;
  device_attr.addr = reinterpret_cast<uint64_t>(value);
  if (ioctl(fd_.get(), KVM_SET_DEVICE_ATTR, &device_attr) < 0) {
    return SyscallError(absl::StrCat("VM ", vm_name_, ": ", step), "KVM_SET_DEVICE_ATTR");
  }
  return absl::OkStatus();
}

absl::Status Vgic::Initialize() {
  const uint32_t nr_irqs = kNrIrqs;
  if (absl::Status s = SetAttr("setting the vGIC's number of interrupts", KVM_DEV_ARM_VGIC_GRP_NR_IRQS, 0, &nr_irqs);
      !s.ok()) {
    return s;
  }
  return SetAttr("initialising the vGIC (all vCPUs created)", KVM_DEV_ARM_VGIC_GRP_CTRL,
                 KVM_DEV_ARM_VGIC_CTRL_INIT, nullptr);
}

}  // namespace fleetpmu::kvm
