// fleetpmu-server: ingest, storage, /metrics and the Query API (DESIGN.md; docs/server.md).
// Loads and validates its ServerConfig, runs FleetpmuServer until SIGINT or SIGTERM, then shuts
// down cleanly: in-flight ingest streams finish their commits, queued storage writes are
// applied, nothing acked is lost.
#include <signal.h>

#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "google/protobuf/text_format.h"
#include "proto/fleetpmu/cli/program.h"
#include "proto/fleetpmu/config/daemon_config.h"
#include "server/fleetpmu_server.h"

ABSL_FLAG(std::string, config, "",
          "ServerConfig in protobuf text format (example: deploy/examples/server.textproto)");
ABSL_FLAG(bool, print_config, false,
          "print the effective config (every default filled in) as text format and exit");
ABSL_FLAG(int32_t, ingest_window, 8,
          "batches of one ingest stream between read and ack (backpressure beyond)");
ABSL_FLAG(int64_t, storage_queue_ops, 1024,
          "storage write queue bound, operations; a full queue answers RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, storage_queue_bytes, int64_t{256} << 20,
          "storage write queue bound, bytes of queued batches");
ABSL_FLAG(int64_t, metrics_max_series, 10000,
          "label sets per metric family; more are counted in "
          "fleetpmu_metrics_series_rejected_total, not exported");
ABSL_FLAG(absl::Duration, retention_period, absl::Minutes(1),
          "how often raw rows past storage.raw_retention are rolled up and old rollups deleted");
ABSL_FLAG(absl::Duration, max_future_skew, absl::Minutes(5),
          "report timestamps this far ahead of the server's clock are still accepted");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(10),
          "on SIGINT/SIGTERM, how long Query calls in progress may finish before they are "
          "cancelled (agent streams are cancelled at once; they resend what was not acked)");

namespace {

constexpr char kUsage[] = R"(Usage: fleetpmu-server --config FILE

The fleetpmu server: accepts telemetry from fleetpmu-agents (Ingest, gRPC + mTLS), stores it
in SQLite, exports Prometheus metrics and answers the Query API used by fleetpmuctl.
Runs until SIGINT or SIGTERM, then stops cleanly.
Configuration: docs/config.md; the server itself: docs/server.md.)";

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args = fleetpmu::cli::InitProgram(argc, argv, kUsage);
  const std::string program = fleetpmu::cli::ProgramName(argv[0]);
  if (args.size() > 1) {
    return fleetpmu::cli::UsageError(program,
                                     absl::StrCat("unexpected argument \"", args[1], "\""));
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

  std::vector<std::string> problems;
  if (absl::GetFlag(FLAGS_ingest_window) < 1) problems.push_back("--ingest_window must be >= 1");
  if (absl::GetFlag(FLAGS_storage_queue_ops) < 1) {
    problems.push_back("--storage_queue_ops must be >= 1");
  }
  if (absl::GetFlag(FLAGS_storage_queue_bytes) < 1) {
    problems.push_back("--storage_queue_bytes must be >= 1");
  }
  if (absl::GetFlag(FLAGS_metrics_max_series) < 1) {
    problems.push_back("--metrics_max_series must be >= 1");
  }
  if (absl::GetFlag(FLAGS_retention_period) <= absl::ZeroDuration()) {
    problems.push_back("--retention_period must be > 0");
  }
  if (absl::GetFlag(FLAGS_max_future_skew) < absl::ZeroDuration()) {
    problems.push_back("--max_future_skew must be >= 0");
  }
  if (!problems.empty()) {
    std::string joined;
    for (const std::string& problem : problems) absl::StrAppend(&joined, problem, "\n");
    joined.pop_back();
    return fleetpmu::cli::UsageError(program, joined);
  }

  // SIGINT and SIGTERM are taken synchronously by this thread (sigwait); every thread started
  // from here on inherits the mask, so no signal handler runs anywhere.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  fleetpmu::server::ServerRuntimeOptions options;
  options.ingest_window = static_cast<uint32_t>(absl::GetFlag(FLAGS_ingest_window));
  options.storage_queue_ops = static_cast<size_t>(absl::GetFlag(FLAGS_storage_queue_ops));
  options.storage_queue_bytes = static_cast<size_t>(absl::GetFlag(FLAGS_storage_queue_bytes));
  options.metrics_max_series = static_cast<size_t>(absl::GetFlag(FLAGS_metrics_max_series));
  options.retention_period = absl::GetFlag(FLAGS_retention_period);
  options.max_future_skew = absl::GetFlag(FLAGS_max_future_skew);
  options.log = [program](const std::string& line) {
    std::cerr << program << ": " << line << std::endl;
  };

  absl::StatusOr<std::unique_ptr<fleetpmu::server::FleetpmuServer>> server =
      fleetpmu::server::FleetpmuServer::Start(*config, options);
  if (!server.ok()) {
    std::cerr << program << ": " << server.status().message() << std::endl;
    return fleetpmu::cli::kExitFailure;
  }
  std::cerr << program << ": ready" << std::endl;

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  std::cerr << program << ": " << (signal_number == SIGINT ? "SIGINT" : "SIGTERM")
            << ": shutting down" << std::endl;
  (*server)->Shutdown(absl::GetFlag(FLAGS_shutdown_grace));
  return fleetpmu::cli::kExitOk;
}
