// HostCounters: the host's own perf events on the host counter range, one pinned (or not)
// per-CPU event per configured event and CPU, through perf_event_open; read as totals and as
// the multiplexing ratio time_running / time_enabled (PMU.md section 6, "Host side").
//
// On a partitioned host these land on [h,N) because [0,h) belongs to the guest; on an emulated
// vPMU host (upstream KVM) they compete with the guests' own perf events for the same N
// counters, and the ratio shows it. A pinned event that cannot get a counter goes into error
// state and reads as never running. Not thread-safe.
#ifndef FLEETPMU_HYPERVISOR_SHIM_KVM_HOST_COUNTERS_H_
#define FLEETPMU_HYPERVISOR_SHIM_KVM_HOST_COUNTERS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "hypervisor-shim/kvm/unique_fd.h"

namespace fleetpmu::kvm {

struct HostEventSpec {
  std::string name;
  uint32_t event_code = 0;   // PMUv3 event number, counted as a raw event of the CPU's PMU
  bool pinned = true;
  std::vector<int> cpus;     // empty: every online CPU
};

// Totals since Open, per CPU.
struct HostCpuCounters {
  int cpu = 0;
  uint32_t events = 0;
  uint64_t enabled_ns = 0;   // sum over the CPU's events of perf time_enabled
  uint64_t running_ns = 0;   // sum of time_running: running / enabled is the multiplexing ratio
  uint64_t value = 0;        // sum of the counts (scaled by nothing)
};

class HostCounters {
 public:
  // Opens every event; a CPU's PMU type comes from /sys/bus/event_source/devices (the arm_pmu
  // instance whose `cpus` covers it), PERF_TYPE_RAW where none is found.
  static absl::StatusOr<HostCounters> Open(const std::vector<HostEventSpec>& events);
  HostCounters(HostCounters&&) = default;

  // Current totals per CPU that has events, sorted by CPU.
  absl::StatusOr<std::vector<HostCpuCounters>> Read() const;
  size_t size() const { return events_.size(); }

 private:
  HostCounters() = default;
  struct OpenEvent {
    int cpu;
    std::string name;
    UniqueFd fd;
  };
  std::vector<OpenEvent> events_;
};

// Online CPUs from /sys/devices/system/cpu/online.
std::vector<int> OnlineCpus();
// Parses the kernel's CPU list syntax ("0-3,8").
std::vector<int> ParseCpuList(const std::string& list);

}  // namespace fleetpmu::kvm

#endif  // FLEETPMU_HYPERVISOR_SHIM_KVM_HOST_COUNTERS_H_
