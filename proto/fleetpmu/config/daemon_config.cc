#include "proto/fleetpmu/config/daemon_config.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "proto/fleetpmu/config/config_defaults.h"
#include "proto/fleetpmu/config/config_validation.h"
#include "proto/fleetpmu/config/text_config.h"

namespace fleetpmu::config {
namespace {

// Validation runs on the config as written (it applies the defaults to its own copy, and can then
// tell "unset" from "set" in its hints); its errors are prefixed with the file so the user knows
// which config to edit. The caller gets the config with defaults applied.
template <typename ConfigT>
absl::StatusOr<ConfigT> Load(const std::string& path, void (*apply_defaults)(ConfigT*),
                             absl::Status (*validate)(const ConfigT&)) {
  absl::StatusOr<ConfigT> config = LoadTextConfig<ConfigT>(path);
  if (!config.ok()) return config.status();
  if (absl::Status status = validate(*config); !status.ok()) {
    std::vector<std::string> lines;
    for (absl::string_view problem : absl::StrSplit(status.message(), '\n')) {
      lines.push_back(absl::StrCat(path, ": ", problem));
    }
    return absl::Status(status.code(), absl::StrJoin(lines, "\n"));
  }
  apply_defaults(&*config);
  return config;
}

}  // namespace

absl::StatusOr<fleetpmu::v1::ShimConfig> LoadShimConfig(const std::string& path) {
  return Load<fleetpmu::v1::ShimConfig>(path, &ApplyShimDefaults, &ValidateShimConfig);
}

absl::StatusOr<fleetpmu::v1::AgentConfig> LoadAgentConfig(const std::string& path) {
  return Load<fleetpmu::v1::AgentConfig>(path, &ApplyAgentDefaults, &ValidateAgentConfig);
}

absl::StatusOr<fleetpmu::v1::ServerConfig> LoadServerConfig(const std::string& path) {
  return Load<fleetpmu::v1::ServerConfig>(path, &ApplyServerDefaults, &ValidateServerConfig);
}

}  // namespace fleetpmu::config
