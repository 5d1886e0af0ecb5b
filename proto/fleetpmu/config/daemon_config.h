// Loading a daemon's configuration in one call: read the text-format file, apply the documented
// defaults, validate. This is what fleetpmu-shim, fleetpmu-agent and fleetpmu-server call at
// startup; the config they get back is complete (every default filled in) and trusted.
//
// Errors (no exceptions, nothing logged):
//   * unreadable file or text-format error: as LoadTextConfig (text_config.h), e.g.
//     "deploy/x.textproto:12:5: Message type "fleetpmu.v1.ShimConfig" has no field named ...".
//   * semantic error: InvalidArgument with the problems of config_validation.h, one per line,
//     each prefixed with the file, e.g.
//     "shim.textproto: sim.vms[2].h: 7 exceeds the smallest N=6 of the pCPUs (...)".
//
// Thread-safe: no global state.
#ifndef FLEETPMU_PROTO_FLEETPMU_CONFIG_DAEMON_CONFIG_H_
#define FLEETPMU_PROTO_FLEETPMU_CONFIG_DAEMON_CONFIG_H_

#include <string>

#include "absl/status/statusor.h"
#include "fleetpmu/v1/config.pb.h"

namespace fleetpmu::config {

absl::StatusOr<fleetpmu::v1::ShimConfig> LoadShimConfig(const std::string& path);
absl::StatusOr<fleetpmu::v1::AgentConfig> LoadAgentConfig(const std::string& path);
absl::StatusOr<fleetpmu::v1::ServerConfig> LoadServerConfig(const std::string& path);

}  // namespace fleetpmu::config

#endif  // FLEETPMU_PROTO_FLEETPMU_CONFIG_DAEMON_CONFIG_H_
