// The documented defaults of ShimConfig, AgentConfig and ServerConfig, in one place.
//
// Apply*Defaults fills every unset field of a config (0, "", false, an absent message, an unset
// `optional`) with the default that config.proto and docs/config.md state, so that a daemon
// reads exactly one value per field and never re-derives a default. Fields that are set are
// left alone, even when their value is invalid: validation is config_validation.h's job.
//
// Guarantees: idempotent (applying twice equals applying once); never fails; pure (no clock,
// no filesystem, no hostname lookup: AgentConfig.host_id stays empty when unset and the agent
// resolves it at startup).
//
// One default is derived rather than constant: SimVm.h defaults to half the smallest N of the
// host's pCPUs (after the pCPU defaults), KvmVm.h stays unset because N is known only on the
// real host.
#ifndef FLEETPMU_PROTO_FLEETPMU_CONFIG_CONFIG_DEFAULTS_H_
#define FLEETPMU_PROTO_FLEETPMU_CONFIG_CONFIG_DEFAULTS_H_

#include <cstdint>

#include "fleetpmu/v1/config.pb.h"

namespace fleetpmu::config {

// Defaults that other code (tests, docs checks, the daemons' messages) may need by name.
inline constexpr char kDefaultShimSocket[] = "/run/fleetpmu/shim.sock";
inline constexpr uint32_t kDefaultSimCounters = 6;  // Neoverse cores implement N = 6
inline constexpr char kDefaultAgentMetricsListen[] = "127.0.0.1:9465";
inline constexpr char kDefaultServerIngestListen[] = "0.0.0.0:7443";
inline constexpr char kDefaultServerQueryListen[] = "127.0.0.1:7444";
inline constexpr char kDefaultServerMetricsListen[] = "127.0.0.1:9464";

void ApplyShimDefaults(fleetpmu::v1::ShimConfig* config);
void ApplyAgentDefaults(fleetpmu::v1::AgentConfig* config);
void ApplyServerDefaults(fleetpmu::v1::ServerConfig* config);

// The smallest N over the host's pCPUs as ApplyShimDefaults would fill them (an empty group list
// is the default group, an unset n_counters is kDefaultSimCounters). Used for SimVm.h's default
// and its validation.
uint32_t SmallestCounterCount(const fleetpmu::v1::SimHost& sim);

}  // namespace fleetpmu::config

#endif  // FLEETPMU_PROTO_FLEETPMU_CONFIG_CONFIG_DEFAULTS_H_
