#include "hypervisor-shim/partition/vcpu_pmu.h"

#include <utility>

namespace fleetpmu::partition {
namespace {

// The guest's own view of a PMU: N = h counters, all of them in the first range.
pmu::PmuFeatures GuestView(const VcpuPmuConfig& config) {
  pmu::PmuFeatures view = config.features;
  view.num_counters = config.h;
  view.fgt = false;  // the guest sees no EL2
  return view;
}

}  // namespace

absl::string_view SwitchPolicyName(SwitchPolicy policy) {
  return policy == SwitchPolicy::kReviewed ? "reviewed" : "seed-v5";
}

VcpuPmu::VcpuPmu(int id_in, VcpuPmuConfig config_in, bool with_ideal)
    : id(id_in), config(std::move(config_in)), saved(GuestView(config)) {
  if (with_ideal) ideal = std::make_unique<pmu::Pmuv3>(GuestView(config));
}

}  // namespace fleetpmu::partition
