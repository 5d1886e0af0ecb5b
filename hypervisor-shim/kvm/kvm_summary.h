// The kvm backend's JSON summary of one canary run: host facts, per VM the KVM attributes it
// found and how h was enforced, per vCPU the validity verdict with per-counter counts,
// interrupts and wraps, and the host counters. Printed by `fleetpmu-shim --run-for` with the
// kvm backend and by the fleetpmu-kvm-canary driver; tests/emulated-arm reads it.
#ifndef FLEETPMU_HYPERVISOR_SHIM_KVM_KVM_SUMMARY_H_
#define FLEETPMU_HYPERVISOR_SHIM_KVM_KVM_SUMMARY_H_

#include <string>
#include <utility>
#include <vector>

#include "hypervisor-shim/kvm/canary_vm.h"
#include "hypervisor-shim/kvm/host_counters.h"
#include "hypervisor-shim/kvm/kvm_device.h"

namespace fleetpmu::kvm {

struct KvmRunSummary {
  KvmHostFacts facts;
  std::string kernel;                    // uname -r
  std::vector<CanaryVmResult> vms;       // VMs that ran
  std::vector<std::pair<std::string, std::string>> refused;  // (vm_id, why) for VMs that did not
  std::vector<HostCpuCounters> host_counters;
  double wall_seconds = 0;
};

// True iff every VM ran, and every vCPU of every VM is valid (canary_verdict.h).
bool SummaryValid(const KvmRunSummary& summary);
std::string KvmSummaryJson(const KvmRunSummary& summary);
// uname -r.
std::string KernelRelease();

}  // namespace fleetpmu::kvm

#endif  // FLEETPMU_HYPERVISOR_SHIM_KVM_KVM_SUMMARY_H_
