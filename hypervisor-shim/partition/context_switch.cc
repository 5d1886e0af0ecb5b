#include "hypervisor-shim/partition/context_switch.h"

namespace fleetpmu::partition {

const ContextSwitch& ContextSwitchFor(SwitchPolicy policy) {
  return policy == SwitchPolicy::kReviewed ? ReviewedContextSwitch() : SeedV5ContextSwitch();
}

}  // namespace fleetpmu::partition
