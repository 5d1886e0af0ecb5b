// VcpuResidency: on which pCPUs one vCPU thread ran, and for how long, while it ran its guest.
// This is the kvm backend's source of OwnershipSample (PMU.md section 6, "Ownership"): while a
// vCPU thread is on pCPU p inside KVM_RUN, KVM has loaded that vCPU's PMU context on p (it
// loads at entry and at every sched-in, puts at exit and at every sched-out), so the guest holds
// its counters [0,h) and the cycle counter there.
//
// Two ways to measure, chosen at Start():
//   * kPerfTaskClock (preferred): one software perf event PERF_COUNT_SW_TASK_CLOCK per online
//     CPU on this thread (perf_event_open(tid, cpu)); the kernel's scheduler accounts the
//     thread's on-CPU time of each CPU exactly, migrations included. It covers the whole of
//     Run(), so the VMM's own handling of each exit (microseconds per MMIO exit) is included.
//   * kSampledAtExits (fallback, when perf_event_open fails): the thread's CPU time over each
//     KVM_RUN call is charged to the CPU that sched_getcpu() names right after the call returns.
//     A migration inside one KVM_RUN charges its whole time to the CPU it exited on.
//
// Threading: Start(), BeforeRun(), AfterRun() and Stop() are called on the vCPU thread only;
// BeforeRun/AfterRun run around every KVM_RUN and allocate, lock and log nothing.
#ifndef FLEETPMU_HYPERVISOR_SHIM_KVM_VCPU_RESIDENCY_H_
#define FLEETPMU_HYPERVISOR_SHIM_KVM_VCPU_RESIDENCY_H_

#include <cstdint>
#include <map>
#include <vector>

#include "hypervisor-shim/kvm/unique_fd.h"

namespace fleetpmu::kvm {

enum class ResidencyMethod { kNone, kPerfTaskClock, kSampledAtExits };
const char* ResidencyMethodName(ResidencyMethod method);

class VcpuResidency {
 public:
  VcpuResidency() = default;
  VcpuResidency(const VcpuResidency&) = delete;
  VcpuResidency& operator=(const VcpuResidency&) = delete;

  // Starts measuring the calling thread on `cpus` (the online CPUs).
  void Start(const std::vector<int>& cpus);
  // Around every KVM_RUN ioctl (used by the kSampledAtExits method only).
  void BeforeRun();
  void AfterRun();
  // Stops measuring; returns ns per CPU (CPUs with 0 ns left out).
  std::map<int, uint64_t> Stop();

  ResidencyMethod method() const { return method_; }

 private:
  struct CpuClock {
    int cpu;
    UniqueFd fd;
  };
  ResidencyMethod method_ = ResidencyMethod::kNone;
  std::vector<CpuClock> clocks_;       // kPerfTaskClock
  std::vector<uint64_t> sampled_ns_;   // kSampledAtExits, indexed by CPU
  uint64_t run_start_cpu_ns_ = 0;
};

}  // namespace fleetpmu::kvm

#endif  // FLEETPMU_HYPERVISOR_SHIM_KVM_VCPU_RESIDENCY_H_
