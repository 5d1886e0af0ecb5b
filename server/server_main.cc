// fleetpmu-server: ingest, storage, /metrics and the Query API (DESIGN.md). Today it loads and
// validates its ServerConfig and says what it would run: the services arrive issue by issue.
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "proto/fleetpmu/cli/program.h"
#include "proto/fleetpmu/config/daemon_config.h"
#include "google/protobuf/text_format.h"

ABSL_FLAG(std::string, config, "",
          "ServerConfig in protobuf text format (example: deploy/examples/server.textproto)");
ABSL_FLAG(bool, print_config, false,
          "print the effective config (every default filled in) as text format and exit");

namespace {

constexpr char kUsage[] = R"(Usage: fleetpmu-server --config FILE

The fleetpmu server: accepts telemetry from fleetpmu-agents (Ingest, gRPC + mTLS), stores it
in SQLite, exports Prometheus metrics and answers the Query API used by fleetpmuctl.
Configuration: docs/config.md.

Status: this build loads and validates the config and prints what it would run; ingest,
storage, metrics and query are not implemented yet.)";

std::string Format(const google::protobuf::Duration& d) {
  return absl::FormatDuration(absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos()));
}

std::string IngestTransport(const fleetpmu::v1::ServerConfig& config) {
  if (!config.has_tls()) return "plaintext (allow_plaintext)";
  return config.tls().require_client_cert() ? "mTLS, host_id from the client certificate"
                                            : "TLS, no client certificate";
}

std::string QueryAuth(const fleetpmu::v1::ServerConfig& config) {
  if (config.tokens_file().empty()) return "no tokens: every caller is admin (allow_plaintext)";
  return absl::StrCat("bearer tokens from ", config.tokens_file());
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

  absl::StatusOr<fleetpmu::v1::ServerConfig> config = fleetpmu::config::LoadServerConfig(path);
  if (!config.ok()) {
    return fleetpmu::cli::ConfigError(program, std::string(config.status().message()));
  }

  if (absl::GetFlag(FLAGS_print_config)) {
    std::string text;
    google::protobuf::TextFormat::PrintToString(*config, &text);
    std::cout << text;
    return fleetpmu::cli::kExitOk;
  }

  const fleetpmu::v1::StorageConfig& storage = config->storage();
  const fleetpmu::v1::ServerLimits& limits = config->limits();
  std::cout << program << ": " << path << " is valid; this server would run as:\n"
            << "  ingest   " << config->ingest_listen() << " (" << IngestTransport(*config)
            << "; at most " << limits.max_streams() << " streams, "
            << limits.max_message_bytes() << "-byte messages, " << limits.max_batch_records()
            << " reports per batch)\n"
            << "  query    " << config->query_listen() << " (" << QueryAuth(*config) << ")\n"
            << "  metrics  http://" << config->metrics_listen() << "/metrics"
            << (config->export_per_vcpu_series() ? " (with per-vCPU series)" : "") << "\n"
            << "  storage  sqlite " << storage.sqlite_path() << ", raw rows for "
            << Format(storage.raw_retention()) << ", " << Format(storage.rollup_interval())
            << " rollups for " << Format(storage.rollup_retention()) << "\n"
            << program << ": the server's services are not implemented yet; exiting.\n";
  return fleetpmu::cli::kExitOk;
}
