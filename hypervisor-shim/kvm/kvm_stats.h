// Reads a KVM binary statistics fd (KVM_GET_STATS_FD, Documentation/virt/kvm/api.rst 4.134):
// name -> value for every cumulative, instant and peak statistic (histograms are skipped).
// The kernel publishes no PMU statistics (PMU.md section 7); exits and halts are what it has.
#ifndef FLEETPMU_HYPERVISOR_SHIM_KVM_KVM_STATS_H_
#define FLEETPMU_HYPERVISOR_SHIM_KVM_KVM_STATS_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"

namespace fleetpmu::kvm {

absl::StatusOr<std::map<std::string, uint64_t>> ReadKvmStats(int stats_fd);

}  // namespace fleetpmu::kvm

#endif  // FLEETPMU_HYPERVISOR_SHIM_KVM_KVM_STATS_H_
