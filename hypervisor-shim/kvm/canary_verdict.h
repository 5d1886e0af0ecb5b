// The vPMU validity verdict from what the canary reported (PMU.md section 5 on real KVM): per
// counter the wraps its count proves, the interrupts taken, the ones that never came
// (irq_missing); per vCPU whether the vPMU is valid. "Valid" means all of:
//   * the canary ran to the end (status OK);
//   * PMCR_EL0.N as the guest sees it == h (PMU.md invariant 11);
//   * every programmed counter advanced: a dead vPMU reads all zeros, which is a failure, not
//     a quiet run;
//   * SW_INCR counters counted exactly what the canary wrote to PMSWINC_EL0;
//   * every wrap the counts prove was delivered as an interrupt or coalesced (none missing).
#ifndef FLEETPMU_HYPERVISOR_SHIM_KVM_CANARY_VERDICT_H_
#define FLEETPMU_HYPERVISOR_SHIM_KVM_CANARY_VERDICT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "hypervisor-shim/kvm/canary_vm.h"

namespace fleetpmu::kvm {

struct CounterVerdict {
  uint32_t counter = 0;         // 0..30 event counter, 31 cycle counter
  uint32_t event = 0;
  uint64_t period = 0;          // 0: counting only
  uint64_t count = 0;
  uint64_t expected_count = 0;  // SW_INCR: wraps * period; 0 where not exact
  bool exact = false;           // SW_INCR: the count must equal expected_count
  uint64_t wraps_planned = 0;
  uint64_t wraps = 0;           // wraps the count proves: count / period
  uint64_t interrupts = 0;      // delivered
  uint64_t coalesced = 0;
  uint64_t irq_missing = 0;     // wraps - interrupts - coalesced (lost, reason irq_missing)
  bool flag_at_end = false;
};

struct VcpuVerdict {
  int vcpu = 0;
  uint64_t status = 0;
  uint32_t pmcr_n = 0;
  uint32_t pmuver = 0;
  uint64_t psci_version = 0;
  std::vector<CounterVerdict> counters;
  std::vector<std::string> problems;  // empty iff valid
  bool valid() const { return problems.empty(); }
};

const char* CanaryStatusName(uint64_t status);
VcpuVerdict JudgeVcpu(const CanaryVmResult& vm, const CanaryVcpuResult& vcpu);

}  // namespace fleetpmu::kvm

#endif  // FLEETPMU_HYPERVISOR_SHIM_KVM_CANARY_VERDICT_H_
