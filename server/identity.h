// Identities on the wire (docs/proto.md "Conventions"): host_id, tenant_id, vm_id and the
// like are 1..128 bytes of [A-Za-z0-9._-]. They become SQL rows, Prometheus labels and file
// names, so every entry point checks them with this one function.
#ifndef FLEETPMU_SERVER_IDENTITY_H_
#define FLEETPMU_SERVER_IDENTITY_H_

#include <algorithm>

#include "absl/strings/string_view.h"

namespace fleetpmu::server {

inline bool IsValidIdentity(absl::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

}  // namespace fleetpmu::server

#endif  // FLEETPMU_SERVER_IDENTITY_H_
