// fleetpmu-shim: runs the guests of one host (backend sim or kvm) and records what happens to
// the partitioned PMU at every vCPU switch (DESIGN.md). Today it loads and validates its
// ShimConfig and says what it would run: the backends arrive issue by issue.
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "proto/fleetpmu/cli/program.h"
#include "proto/fleetpmu/config/daemon_config.h"
#include "google/protobuf/text_format.h"
#include "hypervisor-shim/sim/host_simulator.h"
#include "hypervisor-shim/sim/run_summary.h"

ABSL_FLAG(std::string, config, "",
          "ShimConfig in protobuf text format (example: deploy/examples/shim-sim.textproto)");
ABSL_FLAG(bool, print_config, false,
          "print the effective config (every default filled in) as text format and exit");
ABSL_FLAG(absl::Duration, run_for, absl::ZeroDuration(),
          "sim backend: simulate this much virtual time as fast as possible, with no agent, then "
          "print a summary (e.g. --run-for=10s)");
ABSL_FLAG(std::string, summary, "json", "format of the --run-for summary: json");
ABSL_FLAG(bool, check_invariants, false,
          "run the PMU.md section 4 invariant checker after every operation (also settable in "
          "the config)");

namespace {

constexpr char kUsage[] = R"(Usage: fleetpmu-shim --config FILE

The fleetpmu hypervisor shim: runs the guests of one host, either in a deterministic simulation
(backend sim) or on arm64 KVM with a canary guest (backend kvm), and sends per-interval PMU
telemetry to fleetpmu-agent over a unix socket. Configuration: docs/config.md.

  fleetpmu-shim --config FILE --run-for=10s [--summary=json] [--check-invariants]
      runs the simulated host for 10 virtual seconds at full speed, with no agent, and prints
      one JSON object: per tenant and policy the switches, swaps and the fate of every overflow.

Status: the sim backend runs with --run-for; streaming to the agent and the kvm backend are not
implemented yet.)";

int RunSimulation(const std::string& program, const fleetpmu::v1::ShimConfig& config) {
  if (absl::GetFlag(FLAGS_summary) != "json") {
    return fleetpmu::cli::UsageError(program, "--summary supports only json");
  }
  const absl::Duration run_for = absl::GetFlag(FLAGS_run_for);
  if (run_for <= absl::ZeroDuration()) return fleetpmu::cli::UsageError(program, "--run-for must be positive");
  fleetpmu::sim::SimulatorOptions options;
  options.check_invariants = config.check_invariants() || absl::GetFlag(FLAGS_check_invariants);
  absl::StatusOr<std::unique_ptr<fleetpmu::sim::HostSimulator>> sim =
      fleetpmu::sim::HostSimulator::Create(config.sim(), options);
  if (!sim.ok()) return fleetpmu::cli::ConfigError(program, std::string(sim.status().message()));
  const absl::Time start = absl::Now();
  absl::Status status = (*sim)->RunUntil(static_cast<uint64_t>(absl::ToInt64Nanoseconds(run_for)));
  if (!status.ok()) {
    std::cerr << program << ": simulation failed: " << status.message() << "\n";
    return fleetpmu::cli::kExitFailure;
  }
  (*sim)->Finish();
  std::cout << fleetpmu::sim::RunSummaryJson(**sim, absl::ToDoubleSeconds(absl::Now() - start)) << "\n";
  return fleetpmu::cli::kExitOk;
}

std::string Format(const google::protobuf::Duration& d) {
  return absl::FormatDuration(absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos()));
}

std::string Features(const fleetpmu::v1::PcpuGroup& group) {
  std::vector<std::string> features = {absl::StrCat("N=", group.n_counters())};
  if (group.fgt()) features.push_back("FGT");
  if (group.hpmn0()) features.push_back("HPMN0");
  if (group.p5()) features.push_back("PMUv3p5");
  return absl::StrJoin(features, " ");
}

void DescribeSim(const fleetpmu::v1::SimHost& sim) {
  std::cout << "  host        " << sim.host_id() << " (simulated, seed " << sim.seed()
            << ", speed " << (sim.speed() == 0 ? "unbounded" : absl::StrCat(sim.speed(), "x"))
            << ", " << (sim.has_duration() ? Format(sim.duration()) : "until stopped") << ")\n";
  for (const fleetpmu::v1::PcpuGroup& group : sim.pcpu_groups()) {
    std::cout << "  pCPUs       " << group.count() << " x " << group.pmu_id() << " ("
              << Features(group) << ")\n";
  }
  std::set<std::string> tenants;
  for (const fleetpmu::v1::SimVm& vm : sim.vms()) tenants.insert(vm.tenant_id());
  std::cout << "  guests      " << sim.vms_size() << " VMs of " << tenants.size()
            << " tenants, " << sim.host_events_size() << " host events, "
            << fleetpmu::v1::ReservationMode_Name(sim.reservation_mode()) << ", time slice "
            << Format(sim.time_slice()) << "\n";
  for (const fleetpmu::v1::SimVm& vm : sim.vms()) {
    std::cout << "    " << vm.vm_id() << " (" << vm.tenant_id() << "): " << vm.vcpus()
              << " vCPUs, h=" << vm.h() << ", " << fleetpmu::v1::Policy_Name(vm.policy())
              << ", " << fleetpmu::v1::Workload::Kind_Name(vm.workload().kind()) << "\n";
  }
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

  absl::StatusOr<fleetpmu::v1::ShimConfig> config = fleetpmu::config::LoadShimConfig(path);
  if (!config.ok()) {
    return fleetpmu::cli::ConfigError(program, std::string(config.status().message()));
  }
#if !defined(__aarch64__)
  // The kvm backend drives /dev/kvm on arm64 only (DESIGN.md "The two shim backends").
  if (config->backend() == fleetpmu::v1::BACKEND_KVM) {
    return fleetpmu::cli::ConfigError(
        program, absl::StrCat(path, ": backend: BACKEND_KVM needs an arm64 build of the shim"));
  }
#endif

  if (absl::GetFlag(FLAGS_print_config)) {
    std::string text;
    google::protobuf::TextFormat::PrintToString(*config, &text);
    std::cout << text;
    return fleetpmu::cli::kExitOk;
  }

  if (absl::GetFlag(FLAGS_run_for) != absl::ZeroDuration()) {
    if (config->backend() != fleetpmu::v1::BACKEND_SIM) {
      return fleetpmu::cli::UsageError(program, "--run-for needs the sim backend");
    }
    return RunSimulation(program, *config);
  }

  std::cout << program << ": " << path << " is valid; this shim would run as:\n"
            << "  shim_id     " << config->shim_id() << ", backend "
            << fleetpmu::v1::Backend_Name(config->backend())
            << (config->check_invariants() ? ", invariant checker on" : "") << "\n"
            << "  telemetry   every " << Format(config->report_interval()) << " to unix:"
            << config->agent_socket() << " (rings of " << config->telemetry_ring_capacity()
            << " entries)\n";
  if (config->backend() == fleetpmu::v1::BACKEND_SIM) {
    DescribeSim(config->sim());
  } else {
    std::cout << "  kvm         " << config->kvm().kvm_device() << ", "
              << config->kvm().vms_size() << " canary VMs\n";
  }
  std::cout << program << ": streaming to the agent is not implemented yet; use --run-for to "
               "simulate and summarise.\n";
  return fleetpmu::cli::kExitOk;
}
