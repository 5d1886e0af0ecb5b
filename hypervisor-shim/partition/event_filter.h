// EventFilter: which PMU events a VM's guest may count, as KVM_ARM_VCPU_PMU_V3_FILTER defines it.
//
// Ranges are applied in order; the action of the first range decides the default for events no
// range names (first range ALLOW: everything else denied; first range DENY: everything else
// allowed; no ranges: all allowed). A later range overrides an earlier one for the events it names.
// A denied event never counts: the context switch programs it to exclude EL0 and EL1 in hardware
// while the guest still reads back the type it wrote.
#ifndef FLEETPMU_HYPERVISOR_SHIM_PARTITION_EVENT_FILTER_H_
#define FLEETPMU_HYPERVISOR_SHIM_PARTITION_EVENT_FILTER_H_

#include <bitset>
#include <cstdint>

namespace fleetpmu::partition {

class EventFilter {
 public:
  enum class Action : uint8_t { kAllow, kDeny };

  // Applies one range [base, base + count). Events at or above 0x10000 are ignored.
  void AddRange(uint16_t base, uint32_t count, Action action);

  bool Allows(uint16_t event) const { return !denied_[event]; }
  bool empty() const { return ranges_ == 0; }

 private:
  std::bitset<0x10000> denied_;
  int ranges_ = 0;
};

}  // namespace fleetpmu::partition

#endif  // FLEETPMU_HYPERVISOR_SHIM_PARTITION_EVENT_FILTER_H_
