// ContextSwitch: the vCPU PMU load, guest entry, guest exit and put, one implementation per
// SwitchPolicy (PMU.md section 3).
//
// Contract for every method: the caller holds the pCPU with preemption disabled
// (PcpuPmu::preemption_disabled for Load and Put), Load and Put are paired on one pCPU, Enter and
// Exit are paired between them. All register accesses happen at EL2 on ctx.pcpu.hw. Flag moves and
// clears are reported to ctx.ledger. Implementations hold no state.
#ifndef FLEETPMU_HYPERVISOR_SHIM_PARTITION_CONTEXT_SWITCH_H_
#define FLEETPMU_HYPERVISOR_SHIM_PARTITION_CONTEXT_SWITCH_H_

#include "hypervisor-shim/partition/switch_steps.h"
#include "hypervisor-shim/partition/vcpu_pmu.h"

namespace fleetpmu::partition {

class ContextSwitch {
 public:
  virtual ~ContextSwitch() = default;

  // The vCPU is scheduled onto the pCPU (kvm_arch_vcpu_load).
  virtual void Load(SwitchContext& ctx) const = 0;
  // Right before ERET into the guest.
  virtual void EnterGuest(SwitchContext& ctx) const = 0;
  // Right after the guest exits to EL2.
  virtual void ExitGuest(SwitchContext& ctx) const = 0;
  // The vCPU is descheduled (kvm_arch_vcpu_put).
  virtual void Put(SwitchContext& ctx) const = 0;
  // A FREE vCPU's first PMU access trapped while in guest context: full load, guest state
  // installed. The guest then retries the access.
  virtual void Promote(SwitchContext& ctx) const = 0;
  // Whether trapped accesses of a GUEST_OWNED vCPU reach the hardware (false: the seed without
  // FGT, which services them from the in-memory copy and never loads it).
  virtual bool LoadsIntoHardware(const PcpuPmu& pcpu) const = 0;
};

const ContextSwitch& ReviewedContextSwitch();
const ContextSwitch& SeedV5ContextSwitch();
const ContextSwitch& ContextSwitchFor(SwitchPolicy policy);

}  // namespace fleetpmu::partition

#endif  // FLEETPMU_HYPERVISOR_SHIM_PARTITION_CONTEXT_SWITCH_H_
