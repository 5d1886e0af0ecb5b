// fleetpmu-agent: the per-host agent (DESIGN.md): serves ShimTelemetry on a unix socket, spools
// reports durably and streams numbered batches to fleetpmu-server, with self-metrics on a
// loopback /metrics. Runs until SIGINT or SIGTERM.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "proto/fleetpmu/cli/program.h"
#include "proto/fleetpmu/config/daemon_config.h"
#include "agent/discovery/host_discovery.h"
#include "agent/intake/shim_intake.h"
#include "agent/metrics/agent_metrics.h"
#include "agent/spool/spool.h"
#include "agent/uplink/uplink.h"
#include "google/protobuf/text_format.h"

ABSL_FLAG(std::string, config, "",
          "AgentConfig in protobuf text format (example: deploy/examples/agent.textproto)");
ABSL_FLAG(bool, print_config, false,
          "print the effective config (every default filled in) as text format and exit");
ABSL_FLAG(bool, dry_run, false, "validate the config, print what would run, and exit");

namespace {

constexpr char kUsage[] = R"(Usage: fleetpmu-agent --config FILE

The per-host fleetpmu agent: receives telemetry from fleetpmu-shim on a unix socket, spools it
durably and streams it to fleetpmu-server with exactly-once delivery. Configuration:
docs/config.md.

Runs until SIGINT or SIGTERM; --dry-run validates the config and prints what would run.)";

std::chrono::milliseconds Millis(const google::protobuf::Duration& d) {
  return std::chrono::milliseconds(d.seconds() * 1000 + d.nanos() / 1000000);
}

std::string Hostname() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

int Run(const std::string& program, const fleetpmu::v1::AgentConfig& config) {
  // SIGINT/SIGTERM are taken by sigwait below, in this thread only.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const std::string host_id = config.host_id().empty() ? Hostname() : config.host_id();
  fleetpmu::v1::HostInfo facts;
  fleetpmu::agent::DiscoverHost({}, &facts);
  for (const auto& [k, v] : config.labels()) (*facts.mutable_labels())[k] = v;
  facts.set_agent_version(std::string(fleetpmu::cli::ProjectVersion()));

  auto spool = fleetpmu::agent::Spool::Open(
      {.path = config.spool_path(), .max_bytes = config.spool_max_bytes(), .overflow_policy = config.spool_overflow_policy()});
  if (!spool.ok()) {
    std::cerr << program << ": " << spool.status().message() << "\n";
    return fleetpmu::cli::kExitFailure;
  }
  fleetpmu::agent::ShimIntakeOptions intake_options;
  intake_options.socket_path = config.shim_socket();
  intake_options.socket_mode = config.shim_socket_mode();
  intake_options.host_id = host_id;
  intake_options.host_facts = facts;
  auto intake = fleetpmu::agent::ShimIntake::Start(intake_options, spool->get());
  if (!intake.ok()) {
    std::cerr << program << ": " << intake.status().message() << "\n";
    return fleetpmu::cli::kExitFailure;
  }
  fleetpmu::agent::UplinkOptions uplink_options;
  uplink_options.server_address = config.server_address();
  uplink_options.allow_plaintext = config.allow_plaintext() && !config.has_tls();
  uplink_options.ca_file = config.tls().ca_file();
  uplink_options.cert_file = config.tls().cert_file();
  uplink_options.key_file = config.tls().key_file();
  uplink_options.server_name = config.tls().server_name();
  uplink_options.host_id = host_id;
  uplink_options.agent_version = std::string(fleetpmu::cli::ProjectVersion());
  uplink_options.host_info = facts;
  uplink_options.backoff_min = Millis(config.backoff_min());
  uplink_options.backoff_max = Millis(config.backoff_max());
  auto uplink = fleetpmu::agent::Uplink::Start(uplink_options, spool->get());
  if (!uplink.ok()) {
    std::cerr << program << ": " << uplink.status().message() << "\n";
    return fleetpmu::cli::kExitFailure;
  }
  auto metrics = fleetpmu::agent::AgentMetrics::Start(config.metrics_listen(), host_id, spool->get(),
                                                      intake->get(), uplink->get());
  if (!metrics.ok()) {
    std::cerr << program << ": " << metrics.status().message() << "\n";
    return fleetpmu::cli::kExitFailure;
  }
  std::cerr << program << ": host " << host_id << ", shims on unix:" << config.shim_socket() << ", spool "
            << config.spool_path() << " (epoch " << (*spool)->epoch() << ", " << (*spool)->stats().batches
            << " batches waiting), server " << config.server_address() << ", metrics http://"
            << config.metrics_listen() << "/metrics\n";
  int signal = 0;
  sigwait(&signals, &signal);
  std::cerr << program << ": " << (signal == SIGINT ? "SIGINT" : "SIGTERM") << ", shutting down\n";
  // Intake first (no new reports), then the uplink (what is spooled stays for the next start).
  (*intake)->Shutdown();
  (*uplink)->Shutdown();
  metrics->reset();
  std::cerr << program << ": stopped with " << (*spool)->stats().batches << " batches spooled\n";
  return fleetpmu::cli::kExitOk;
}

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

  if (!absl::GetFlag(FLAGS_dry_run)) return Run(program, *config);

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
            << "  metrics      http://" << config->metrics_listen() << "/metrics\n";
  return fleetpmu::cli::kExitOk;
}
