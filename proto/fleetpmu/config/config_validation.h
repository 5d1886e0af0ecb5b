// Semantic validation of ShimConfig, AgentConfig and ServerConfig: the rules that the text
// parser cannot check (ranges, cross-field constraints, PMU architecture limits, security
// requirements). docs/config.md lists every rule.
//
// Contract:
//   * Each Validate*Config checks the config as the daemon would run it: it applies the
//     documented defaults to a copy first (config_defaults.h), so a raw config straight from
//     the file and one with defaults already applied give the same answer.
//   * OK means the daemon may trust every field without checking again (Envoy style: validate
//     once at load, then trust).
//   * On failure: InvalidArgument whose message lists every problem found, one per line (at
//     most 20, then a line "and N more problems"). Each problem starts with the field path in
//     proto field names with repeated indices, then the offending value, then why, e.g.
//       sim.vms[2].h: 7 exceeds the smallest N=6 of the pCPUs
//       tls: not set; a plaintext connection needs allow_plaintext: true
//   * Pure: no filesystem, network, clock or hostname access. Whether a certificate file
//     exists is checked when the daemon opens it.
//   * Thread-safe: no global state.
#ifndef FLEETPMU_PROTO_FLEETPMU_CONFIG_CONFIG_VALIDATION_H_
#define FLEETPMU_PROTO_FLEETPMU_CONFIG_CONFIG_VALIDATION_H_

#include "absl/status/status.h"
#include "fleetpmu/v1/config.pb.h"

namespace fleetpmu::config {

absl::Status ValidateShimConfig(const fleetpmu::v1::ShimConfig& config);
absl::Status ValidateAgentConfig(const fleetpmu::v1::AgentConfig& config);
absl::Status ValidateServerConfig(const fleetpmu::v1::ServerConfig& config);

}  // namespace fleetpmu::config

#endif  // FLEETPMU_PROTO_FLEETPMU_CONFIG_CONFIG_VALIDATION_H_
