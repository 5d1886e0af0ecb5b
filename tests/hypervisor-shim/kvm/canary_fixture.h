// Canary results as a test would have the guest report them.
#ifndef FLEETPMU_TESTS_HYPERVISOR_SHIM_KVM_CANARY_FIXTURE_H_
#define FLEETPMU_TESTS_HYPERVISOR_SHIM_KVM_CANARY_FIXTURE_H_

#include "hypervisor-shim/kvm/canary_vm.h"

namespace fleetpmu::kvm::testing {

// A VM with h = 2: counter 0 SW_INCR (period 64), counter 1 CPU_CYCLES (period 1000), each with
// 4 planned wraps, all delivered; one vCPU that finished.
inline CanaryVmResult HealthyRun() {
  CanaryVmResult vm;
  vm.config.vm_id = "vm-a";
  vm.config.tenant_id = "tenant-a";
  vm.config.wraps = 4;
  vm.h = 2;
  vm.support.host_n = 6;
  vm.start_unix_ns = 1'000'000'000;
  vm.end_unix_ns = 2'000'000'000;
  CanaryVcpuResult vcpu;
  vcpu.done = true;
  vcpu.done_status = CANARY_STATUS_OK;
  vcpu.last_cpu = 1;
  vcpu.run_stats.run_calls = 10;
  vcpu.involuntary_switches = 3;
  vcpu.thread_cpu_ns = 500'000'000;
  canary_report& r = vcpu.report;
  r.magic = CANARY_MAGIC;
  r.pmcr_n = 2;
  r.cntfrq = 1'000'000;
  auto counter = [&r](unsigned n, uint64_t event, uint64_t period, uint64_t count, uint64_t irqs) {
    canary_counter_report& c = r.counter[n];
    c.programmed = 1;
    c.event = event;
    c.period = period;
    c.count = count;
    c.interrupts = irqs;
    c.wraps_planned = 4;
  };
  counter(0, CANARY_EVENT_SW_INCR, 64, 256, 4);
  counter(1, CANARY_EVENT_CPU_CYCLES, 1000, 4100, 4);
  vm.vcpus.push_back(vcpu);
  return vm;
}

}  // namespace fleetpmu::kvm::testing

#endif  // FLEETPMU_TESTS_HYPERVISOR_SHIM_KVM_CANARY_FIXTURE_H_
