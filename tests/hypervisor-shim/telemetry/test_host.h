// A small simulated host for the telemetry tests: three pCPUs (one without FGT), dynamic
// reservation with two host events, a reviewed and a seed-v5 sampling VM (the latter loses
// overflows), a counting VM that halts and an idle VM. 1 ms slices keep runs short.
#ifndef FLEETPMU_TESTS_HYPERVISOR_SHIM_TELEMETRY_TEST_HOST_H_
#define FLEETPMU_TESTS_HYPERVISOR_SHIM_TELEMETRY_TEST_HOST_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "fleetpmu/v1/config.pb.h"
#include "proto/fleetpmu/config/config_defaults.h"
#include "proto/fleetpmu/config/config_validation.h"
#include "proto/fleetpmu/config/text_config.h"

namespace fleetpmu::telemetry::testing {

// The text of a ShimConfig for the test host; `extra` is appended inside the sim block
// (e.g. "speed: 0 duration { seconds: 1 }"), `top` at top level.
inline std::string TestHostText(const std::string& agent_socket, uint64_t seed = 7,
                                const std::string& extra = "", const std::string& top = "") {
  return absl::StrCat(R"(
shim_id: "test-shim"
backend: BACKEND_SIM
agent_socket: ")", agent_socket, R"("
report_interval { nanos: 100000000 }
)", top, R"(
sim {
  seed: )", seed, R"(
  host_id: "test-host"
  reservation_mode: RESERVATION_MODE_DYNAMIC
  time_slice { nanos: 1000000 }
  migration_probability: 0.05
  pcpu_groups { count: 2 n_counters: 6 fgt: true hpmn0: true p5: true pmu_id: "armv8_pmuv3_0" cpu_model: "sim-a" }
  pcpu_groups { count: 1 n_counters: 6 fgt: false hpmn0: true p5: true pmu_id: "armv8_pmuv3_0" cpu_model: "sim-b" }
  vms { vm_id: "web-1" tenant_id: "acme" vcpus: 2 h: 3 policy: POLICY_REVIEWED
        workload { kind: SAMPLING events: [0x11, 0x08] sample_period: 200000 } }
  vms { vm_id: "legacy-1" tenant_id: "globex" vcpus: 2 h: 3 policy: POLICY_SEED_V5
        workload { kind: SAMPLING events: [0x08] sample_period: 100000 } }
  vms { vm_id: "batch-1" tenant_id: "acme" vcpus: 1 h: 2
        workload { kind: COUNTING events: [0x03, 0x10] run_between_halts { nanos: 2000000 } } }
  vms { vm_id: "idle-1" tenant_id: "globex" workload { kind: IDLE } }
  host_events { name: "host-cycles" event_code: 0x11 pinned: true sample_period: 1000000 }
  host_events { name: "host-llc-miss" event_code: 0x33 sample_period: 100000 pcpus: [0] }
  )", extra, R"(
}
)");
}

// Parsed, validated, defaults applied: what the shim would run.
inline absl::StatusOr<v1::ShimConfig> TestHostConfig(const std::string& agent_socket, uint64_t seed = 7,
                                                    const std::string& extra = "") {
  v1::ShimConfig config;
  if (absl::Status s = config::ParseTextConfig(TestHostText(agent_socket, seed, extra), "test-host", &config);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = config::ValidateShimConfig(config); !s.ok()) return s;
  config::ApplyShimDefaults(&config);
  return config;
}

}  // namespace fleetpmu::telemetry::testing

#endif  // FLEETPMU_TESTS_HYPERVISOR_SHIM_TELEMETRY_TEST_HOST_H_
