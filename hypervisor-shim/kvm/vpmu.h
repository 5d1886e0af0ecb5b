// The guest PMU of a VM through KVM's vCPU attributes (group KVM_ARM_VCPU_PMU_V3_CTRL, PMU.md
// section 7): what the kernel offers (ProbeVpmu), how h is enforced (ChooseCounterLimit), and
// the attribute sequence itself (ConfigureVmPmu, then ConfigureVcpuPmu on every vCPU).
//
// Order KVM requires, which the callers follow: every vCPU created and KVM_ARM_VCPU_INIT'ed,
// the vGIC initialised, then the VM-wide attributes (FILTER, SET_NR_COUNTERS, the partition
// attribute) once, then per vCPU IRQ, the PMCR_EL0.N fallback, and INIT; all before the first
// KVM_RUN.
#ifndef FLEETPMU_HYPERVISOR_SHIM_KVM_VPMU_H_
#define FLEETPMU_HYPERVISOR_SHIM_KVM_VPMU_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "hypervisor-shim/kvm/kvm_device.h"
#include "hypervisor-shim/kvm/vcpu.h"

namespace fleetpmu::kvm {

// PPI of the PMU overflow interrupt (canary_protocol.h CANARY_PMU_INTID).
inline constexpr uint32_t kPmuIrq = 23;

// What this kernel's KVM offers for the guest PMU, probed on a fresh vCPU.
struct VpmuSupport {
  bool irq = false;              // KVM_ARM_VCPU_PMU_V3_IRQ (required)
  bool filter = false;           // KVM_ARM_VCPU_PMU_V3_FILTER
  bool set_pmu = false;          // KVM_ARM_VCPU_PMU_V3_SET_PMU
  bool set_nr_counters = false;  // KVM_ARM_VCPU_PMU_V3_SET_NR_COUNTERS
  bool pmcr_n_writable = false;  // KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES (PMCR_EL0.N by SET_ONE_REG)
  bool partition = false;        // the proposed partition attribute (number 5)
  uint32_t host_n = 0;           // PMCR_EL0.N a guest gets by default: the event counters KVM offers
};

absl::StatusOr<VpmuSupport> ProbeVpmu(const Vcpu& vcpu, const KvmHostFacts& facts);

// How the guest's PMCR_EL0.N is made equal to h.
enum class CounterLimit {
  kAlreadyEqual,    // h == the host's N: nothing to do
  kSetNrCounters,   // KVM_ARM_VCPU_PMU_V3_SET_NR_COUNTERS (Linux 6.17+ / 7.x)
  kPmcrWrite,       // KVM_SET_ONE_REG of PMCR_EL0 with N = h (Linux 6.8+, the documented fallback)
};
const char* CounterLimitName(CounterLimit limit);

// Refuses h > N and an h < N that this kernel cannot enforce, with the reason.
absl::StatusOr<CounterLimit> ChooseCounterLimit(const VpmuSupport& support, uint32_t h, const std::string& vm);

// One range of KVM_ARM_VCPU_PMU_V3_FILTER.
struct PmuFilterRange {
  uint16_t base_event = 0;
  uint16_t nevents = 0;
  bool allow = true;
};

struct VpmuConfig {
  uint32_t h = 0;
  CounterLimit limit = CounterLimit::kAlreadyEqual;
  std::vector<PmuFilterRange> filter;  // empty: no filter (everything allowed)
  bool enable_partition = false;       // only when support.partition
};

// VM-wide attributes, through one vCPU (KVM applies them to the whole VM).
absl::Status ConfigureVmPmu(Vcpu& vcpu, const VpmuConfig& config, const VpmuSupport& support);
// Per-vCPU attributes and INIT.
absl::Status ConfigureVcpuPmu(Vcpu& vcpu, const VpmuConfig& config);

}  // namespace fleetpmu::kvm

#endif  // FLEETPMU_HYPERVISOR_SHIM_KVM_VPMU_H_
