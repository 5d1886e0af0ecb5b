// The KVM arm64 ABI this backend speaks, on top of <linux/kvm.h>: constants that newer kernels
// define but the build machine's headers (Linux 6.1) may lack. Each value is the upstream one;
// each is probed at run time (KVM_CHECK_EXTENSION, KVM_HAS_DEVICE_ATTR) before it is used.
#ifndef FLEETPMU_HYPERVISOR_SHIM_KVM_KVM_UAPI_H_
#define FLEETPMU_HYPERVISOR_SHIM_KVM_KVM_UAPI_H_

#include <linux/kvm.h>
#include <stddef.h>

// Linux 6.8: userspace can read the writable masks of ID and other registers. Where it exists,
// KVM also accepts a PMCR_EL0.N below the host's by KVM_SET_ONE_REG before the first run
// (ARM-EMULATION.md: on 6.1 that write caused an interrupt storm; never try it there).
#ifndef KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES
#define KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES 230
#endif

#ifndef KVM_ARM_VCPU_PMU_V3_SET_PMU
#define KVM_ARM_VCPU_PMU_V3_SET_PMU 3
#endif
// Caps PMCR_EL0.N as the guest sees it (PMU.md section 7); before INIT and the first run.
#ifndef KVM_ARM_VCPU_PMU_V3_SET_NR_COUNTERS
#define KVM_ARM_VCPU_PMU_V3_SET_NR_COUNTERS 4
#endif
// The partitioned-PMU attribute as proposed (not upstream; its number is contested). Only ever
// used after KVM_HAS_DEVICE_ATTR said yes.
#define FLEETPMU_KVM_ARM_VCPU_PMU_V3_ENABLE_PARTITION 5

namespace fleetpmu::kvm {

// KVM_{GET,SET}_ONE_REG ids.
constexpr uint64_t CoreRegId(size_t offset_in_kvm_regs) {
  return KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | (offset_in_kvm_regs / sizeof(__u32));
}
constexpr uint64_t SysRegId(uint64_t op0, uint64_t op1, uint64_t crn, uint64_t crm, uint64_t op2) {
  return KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM64_SYSREG |
         (op0 << KVM_REG_ARM64_SYSREG_OP0_SHIFT) | (op1 << KVM_REG_ARM64_SYSREG_OP1_SHIFT) |
         (crn << KVM_REG_ARM64_SYSREG_CRN_SHIFT) | (crm << KVM_REG_ARM64_SYSREG_CRM_SHIFT) |
         (op2 << KVM_REG_ARM64_SYSREG_OP2_SHIFT);
}
inline constexpr uint64_t kRegPc = CoreRegId(offsetof(struct kvm_regs, regs.pc));
inline constexpr uint64_t kRegPstate = CoreRegId(offsetof(struct kvm_regs, regs.pstate));
inline constexpr uint64_t kRegX0 = CoreRegId(offsetof(struct kvm_regs, regs.regs[0]));
inline constexpr uint64_t kRegSpEl1 = CoreRegId(offsetof(struct kvm_regs, sp_el1));
inline constexpr uint64_t kRegPmcrEl0 = SysRegId(3, 3, 9, 12, 0);

// PSTATE at entry: EL1h (SP_EL1) with D, A, I and F masked.
inline constexpr uint64_t kPstateEl1hMasked = 0x3c5;

}  // namespace fleetpmu::kvm

#endif  // FLEETPMU_HYPERVISOR_SHIM_KVM_KVM_UAPI_H_
