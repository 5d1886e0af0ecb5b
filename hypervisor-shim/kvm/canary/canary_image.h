// The canary guest's raw image (canary.c + start.S, linked at CANARY_RAM_BASE, objcopy'd to a
// flat binary), embedded in the shim by canary_image.S. The VMM loads it at CANARY_RAM_BASE.
#ifndef FLEETPMU_HYPERVISOR_SHIM_KVM_CANARY_CANARY_IMAGE_H_
#define FLEETPMU_HYPERVISOR_SHIM_KVM_CANARY_CANARY_IMAGE_H_

#include <cstdint>

#include "absl/types/span.h"

extern "C" const uint8_t fleetpmu_canary_image_begin[];
extern "C" const uint8_t fleetpmu_canary_image_end[];

namespace fleetpmu::kvm {

inline absl::Span<const uint8_t> CanaryImage() {
  return absl::Span<const uint8_t>(fleetpmu_canary_image_begin,
                                   static_cast<size_t>(fleetpmu_canary_image_end - fleetpmu_canary_image_begin));
}

}  // namespace fleetpmu::kvm

#endif  // FLEETPMU_HYPERVISOR_SHIM_KVM_CANARY_CANARY_IMAGE_H_
