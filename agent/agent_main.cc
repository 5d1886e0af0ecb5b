// fleetpmu-agent: the per-host agent (DESIGN.md). It will serve ShimTelemetry on a unix socket,
// spool reports durably and stream numbered batches to fleetpmu-server. Today it loads and
// validates its AgentConfig and says what it would run: the data path arrives issue by issue.
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "proto/fleetpmu/cli/program.h"
#include "proto/fleetpmu/config/daemon_config.h"
#include "google/protobuf/text_format.h"

ABSL_FLAG(std::string, config, "",
          "AgentConfig in protobuf text format (example: deploy/examples/agent.textproto)");
ABSL_FLAG(bool, print_config, false,
          "print the effective config (every default filled in) as text format and exit");

namespace {

constexpr char kUsage[] = R"(Usage: fleetpmu-agent --config FILE

The per-host fleetpmu agent: receives telemetry from fleetpmu-shim on a unix socket, spools it
durably and streams it to fleetpmu-server with exactly-once delivery. Configuration:
docs/config.md.

Status: this build loads and validates the config and prints what it would run; the shim
intake, spool and uplink are not implemented yet.)";

absl::Duration FromProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

std::string Transport(const fleetpmu::v1::AgentConfig& config) {
  if (!config.has_tls()) return "plaintext (allow_plaintext)";
  return config.tls().cert_file().empty() ? "TLS" : "mTLS";
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args = fleetpmu::cli::InitProgram(argc, argv, kUsage);
  const std::string program = fleetpmu::cli::ProgramName(argv[0]);
  if (args.size() > 1) {
    return fleetpmu::cli::UsageError(program, absl::StrCat("unexpected argument \"", args[1],
                                                           "\""));
  }
  const std::string path = absl::GetFlag(FLAGS_config);
  if (path.empty()) return fleetpmu::cli::UsageError(program, "missing --config FILE");

  absl::StatusOr<fleetpmu::v1::AgentConfig> config = fleetpmu::config::LoadAgentConfig(path);
  if (!config.ok()) {
    return fleetpmu::cli::ConfigError(program, std::string(config.status().message()));
  }

  if (absl::GetFlag(FLAGS_print_config)) {
    std::string text;
    google::protobuf::TextFormat::PrintToString(*config, &text);
    std::cout << text;
    return fleetpmu::cli::kExitOk;
  }

  const std::string host_id =
      config->host_id().empty() ? "(this machine's hostname)" : config->host_id();
  std::cout << program << ": " << path << " is valid; this agent would run as:\n"
            << "  host_id      " << host_id << "\n"
            << absl::StrFormat("  shim intake  unix:%s (mode %#o)\n", config->shim_socket(),
                               config->shim_socket_mode())
            << absl::StrFormat("  spool        %s (at most %d bytes, %s when full)\n",
                               config->spool_path(), config->spool_max_bytes(),
                               fleetpmu::v1::SpoolOverflowPolicy_Name(
                                   config->spool_overflow_policy()))
            << absl::StrFormat(
                   "  uplink       %s over %s, batches of at most %d reports / %d bytes, "
                   "backoff %s..%s\n",
                   config->server_address(), Transport(*config), config->batch_max_records(),
                   config->batch_max_bytes(),
                   absl::FormatDuration(FromProto(config->backoff_min())),
                   absl::FormatDuration(FromProto(config->backoff_max())))
            << "  metrics      http://" << config->metrics_listen() << "/metrics\n"
            << program << ": the agent's data path is not implemented yet; exiting.\n";
  return fleetpmu::cli::kExitOk;
}
