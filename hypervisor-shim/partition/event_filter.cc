#include "hypervisor-shim/partition/event_filter.h"

namespace fleetpmu::partition {

void EventFilter::AddRange(uint16_t base, uint32_t count, Action action) {
  if (ranges_++ == 0 && action == Action::kAllow) denied_.set();  // first ALLOW: default deny
  const uint32_t end = base + count > 0x10000 ? 0x10000 : base + count;
  for (uint32_t e = base; e < end; ++e) denied_[e] = action == Action::kDeny;
}

}  // namespace fleetpmu::partition
