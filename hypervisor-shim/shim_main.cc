// fleetpmu-shim: runs the guests of one host (backend sim or kvm) and records what happens to
// the partitioned PMU at every vCPU switch (DESIGN.md).
//
// Modes:
//   --run-for=D   sim backend: D of virtual time as fast as possible, no agent, a JSON summary.
//   (default)     sim backend in real time (SimHost.speed virtual seconds per wall second, 0 =
//                 as fast as possible): one TelemetryReport per report_interval to the agent
//                 over unix:<agent_socket> (ShimSender), until SimHost.duration has been
//                 simulated or SIGINT/SIGTERM; then the last partial interval is reported and
//                 the sender gets kFlushTimeout to have everything acked.
// Signals are blocked in every thread and taken by one sigwait thread: no work in a handler.
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <iostream>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "proto/fleetpmu/cli/program.h"
#include "proto/fleetpmu/config/daemon_config.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/time_util.h"
#include "hypervisor-shim/sim/host_simulator.h"
#include "hypervisor-shim/sim/run_summary.h"
#include "hypervisor-shim/telemetry/interval_reporter.h"
#include "hypervisor-shim/telemetry/shim_sender.h"
#if defined(__aarch64__)
#include "hypervisor-shim/kvm/kvm_backend.h"
#endif

ABSL_FLAG(std::string, config, "",
          "ShimConfig in protobuf text format (example: deploy/examples/shim-sim.textproto)");
ABSL_FLAG(bool, print_config, false,
          "print the effective config (every default filled in) as text format and exit");
ABSL_FLAG(absl::Duration, run_for, absl::ZeroDuration(),
          "sim backend: simulate this much virtual time as fast as possible, with no agent, then "
          "print a summary (e.g. --run-for=10s); kvm backend: run every VM's canary once, with no "
          "agent, stopping vCPUs still running after this, then print the verdict");
ABSL_FLAG(std::string, summary, "json", "format of the --run-for summary: json");
ABSL_FLAG(std::string, summary_file, "",
          "streaming runs: write the run's JSON summary (as --run-for prints it) to this file at exit");
ABSL_FLAG(bool, check_invariants, false,
          "run the PMU.md section 4 invariant checker after every operation (also settable in "
          "the config)");

namespace {

constexpr char kUsage[] = R"(Usage: fleetpmu-shim --config FILE

The fleetpmu hypervisor shim: runs the guests of one host, either in a deterministic simulation
(backend sim) or on arm64 KVM with a canary guest (backend kvm), and sends per-interval PMU
telemetry to fleetpmu-agent over a unix socket. Configuration: docs/config.md.

  fleetpmu-shim --config FILE
      runs the simulated host at sim.speed virtual seconds per wall second (0 = as fast as
      possible) and sends one TelemetryReport per report_interval to the agent at
      unix:<agent_socket>, reconnecting whenever the agent goes away, until sim.duration has
      been simulated or SIGINT/SIGTERM arrives; then it reports the last partial interval,
      gives the agent 5s to acknowledge everything and exits 0.

  fleetpmu-shim --config FILE --run-for=10s [--summary=json] [--check-invariants]
      runs the simulated host for 10 virtual seconds at full speed, with no agent, and prints
      one JSON object: per tenant and policy the switches, swaps and the fate of every overflow.

With backend: BACKEND_KVM (arm64 builds only) the shim runs each configured VM's built-in canary
guest on /dev/kvm. --run-for=D runs every canary once (vCPUs still running after D are stopped)
and prints the vPMU verdict as JSON, exiting 1 if any VM is refused or invalid; without it, the
canaries run once per report_interval and each round is sent to the agent until SIGINT/SIGTERM.)";

// Virtual time simulated between two looks at the wall clock and at the stop request.
constexpr uint64_t kStepNs = 10'000'000;
// How long the agent gets to acknowledge the last reports at shutdown.
constexpr std::chrono::seconds kFlushTimeout{5};
// Progress lines at most this often.
constexpr absl::Duration kProgressEvery = absl::Seconds(10);

// One line on stderr, "<program>: <line>", written in one piece so that threads do not interleave.
void LogLine(const std::string& program, const std::string& line) {
  std::cerr << (program + ": " + line + "\n") << std::flush;
}

uint64_t Nanos(const google::protobuf::Duration& d) {
  const int64_t ns = google::protobuf::util::TimeUtil::DurationToNanoseconds(d);
  return ns > 0 ? static_cast<uint64_t>(ns) : 0;
}

std::string Format(const google::protobuf::Duration& d) {
  return absl::FormatDuration(absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos()));
}

// SIGINT and SIGTERM, taken by one sigwait thread and turned into a stop request. Construct it
// before any other thread exists: it blocks both signals in the constructing thread, and every
// thread started afterwards (gRPC's, the sender's) inherits the mask, so only sigwait sees them.
class TerminationSignals {
 public:
  explicit TerminationSignals(std::string program) : program_(std::move(program)) {
    sigemptyset(&signals_);
    sigaddset(&signals_, SIGINT);
    sigaddset(&signals_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals_, nullptr);
    thread_ = std::thread([this] { Loop(); });
  }
  ~TerminationSignals() {
    {
      absl::MutexLock lock(&mu_);
      exiting_ = true;
    }
    // Wakes sigwait; the loop sees exiting_ and returns.
    pthread_kill(thread_.native_handle(), SIGTERM);
    thread_.join();
  }
  TerminationSignals(const TerminationSignals&) = delete;
  TerminationSignals& operator=(const TerminationSignals&) = delete;

  bool stop_requested() const { return stop_.load(std::memory_order_acquire); }

  // Waits until `deadline` or a stop request, whichever comes first. True if stop was requested.
  bool WaitUntil(absl::Time deadline) {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithDeadline(absl::Condition(&stopped_), deadline);
    return stopped_;
  }

 private:
  void Loop() {
    for (;;) {
      int signal = 0;
      if (sigwait(&signals_, &signal) != 0) continue;
      absl::MutexLock lock(&mu_);
      if (exiting_) return;
      LogLine(program_, stopped_ ? absl::StrCat("received ", strsignal(signal), " again; already stopping")
                                 : absl::StrCat("received ", strsignal(signal),
                                                ": reporting the last interval and flushing"));
      stopped_ = true;
      stop_.store(true, std::memory_order_release);
    }
  }

  const std::string program_;
  sigset_t signals_;
  std::atomic<bool> stop_{false};
  absl::Mutex mu_;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  bool exiting_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

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

std::string Features(const fleetpmu::v1::PcpuGroup& group) {
  std::vector<std::string> features = {absl::StrCat("N=", group.n_counters())};
  if (group.fgt()) features.push_back("FGT");
  if (group.hpmn0()) features.push_back("HPMN0");
  if (group.p5()) features.push_back("PMUv3p5");
  return absl::StrJoin(features, " ");
}

void DescribeSim(const std::string& program, const fleetpmu::v1::ShimConfig& config) {
  const fleetpmu::v1::SimHost& sim = config.sim();
  std::set<std::string> tenants;
  for (const fleetpmu::v1::SimVm& vm : sim.vms()) tenants.insert(vm.tenant_id());
  std::vector<std::string> groups;
  for (const fleetpmu::v1::PcpuGroup& group : sim.pcpu_groups()) {
    groups.push_back(absl::StrCat(group.count(), " x ", group.pmu_id(), " (", Features(group), ")"));
  }
  LogLine(program, absl::StrCat("simulating host ", sim.host_id(), " (seed ", sim.seed(), ", speed ",
                                sim.speed() == 0 ? "unbounded" : absl::StrCat(sim.speed(), "x"), ", ",
                                sim.has_duration() ? Format(sim.duration()) : "until stopped", "): ",
                                absl::StrJoin(groups, ", "), "; ", sim.vms_size(), " VMs of ", tenants.size(),
                                " tenants, ", sim.host_events_size(), " host events, ",
                                fleetpmu::v1::ReservationMode_Name(sim.reservation_mode())));
}

// The sim backend in real time, streaming to the agent (see the file comment).
int RunStreaming(const std::string& program, const fleetpmu::v1::ShimConfig& config) {
  // First, before gRPC or the sender start threads.
  TerminationSignals signals(program);
  auto log = [&program](const std::string& line) { LogLine(program, line); };

  fleetpmu::sim::SimulatorOptions options;
  options.check_invariants = config.check_invariants() || absl::GetFlag(FLAGS_check_invariants);
  absl::StatusOr<std::unique_ptr<fleetpmu::sim::HostSimulator>> created =
      fleetpmu::sim::HostSimulator::Create(config.sim(), options);
  if (!created.ok()) return fleetpmu::cli::ConfigError(program, std::string(created.status().message()));
  fleetpmu::sim::HostSimulator& sim = **created;

  fleetpmu::telemetry::IntervalReporterOptions reporter_options;
  reporter_options.start_unix_ns = absl::ToUnixNanos(absl::Now());
  reporter_options.overflow_ring_capacity = config.telemetry_ring_capacity();
  reporter_options.shim_version = std::string(fleetpmu::cli::ProjectVersion());
  fleetpmu::telemetry::IntervalReporter reporter(&sim, reporter_options);

  fleetpmu::telemetry::ShimSenderOptions sender_options;
  sender_options.agent_socket = config.agent_socket();
  sender_options.shim_id = config.shim_id();
  sender_options.shim_epoch = fleetpmu::telemetry::NewShimEpoch();
  sender_options.backend = config.backend();
  sender_options.host_info = reporter.host_info();
  sender_options.log = log;
  fleetpmu::telemetry::ShimSender sender(sender_options);

  const uint64_t interval_ns = Nanos(config.report_interval());
  const uint64_t duration_ns = config.sim().has_duration() ? Nanos(config.sim().duration()) : 0;  // 0: until stopped
  const double speed = config.sim().speed();
  DescribeSim(program, config);
  log(absl::StrCat("shim ", config.shim_id(), " epoch ", sender_options.shim_epoch, ": one report every ",
                   Format(config.report_interval()), " to unix:", config.agent_socket(),
                   options.check_invariants ? ", invariant checker on" : ""));
  sender.Start();

  const absl::Time wall_start = absl::Now();
  absl::Time last_progress = wall_start;
  uint64_t now_ns = 0;
  for (bool finished = false; !finished;) {
    uint64_t end_ns = reporter.reported_until_ns() + interval_ns;
    if (duration_ns != 0) end_ns = std::min(end_ns, duration_ns);
    while (now_ns < end_ns && !signals.stop_requested()) {
      const uint64_t step_ns = std::min(end_ns, now_ns + kStepNs);
      // Real time: virtual step_ns is due speed times slower on the wall clock.
      if (speed > 0 && signals.WaitUntil(wall_start + absl::Nanoseconds(static_cast<double>(step_ns) / speed))) {
        break;
      }
      if (absl::Status status = sim.RunUntil(step_ns); !status.ok()) {
        log(absl::StrCat("simulation failed at ", static_cast<double>(now_ns) / 1e9, "s: ", status.message()));
        sender.Stop();
        return fleetpmu::cli::kExitFailure;
      }
      now_ns = step_ns;
    }
    finished = signals.stop_requested() || (duration_ns != 0 && now_ns >= duration_ns);
    // Flags stranded in hardware at the end of the run are lost; the last report says so.
    if (finished) sim.Finish();
    if (now_ns > reporter.reported_until_ns()) {
      const fleetpmu::telemetry::ShimSender::Drops drops = sender.TakeDrops();
      reporter.AddDrops(fleetpmu::v1::DROP_STAGE_SHIM_SEND, drops.count, drops.bytes);
      sender.Submit(reporter.TakeReport(now_ns, finished));
    }
    const absl::Time wall_now = absl::Now();
    if (!finished && wall_now - last_progress >= kProgressEvery) {
      const fleetpmu::telemetry::ShimSenderStats stats = sender.stats();
      log(absl::StrFormat("%.1fs simulated in %.1fs: %d reports, agent acked up to seq %d%s, %d dropped, "
                          "%d switches",
                          static_cast<double>(now_ns) / 1e9, absl::ToDoubleSeconds(wall_now - wall_start),
                          reporter.reports_taken(), stats.acked_seq, stats.connected ? "" : " (not connected)",
                          stats.dropped, sim.switches()));
      last_progress = wall_now;
    }
  }

  const bool flushed = sender.Flush(kFlushTimeout);
  const fleetpmu::telemetry::ShimSenderStats stats = sender.stats();
  if (const std::string path = absl::GetFlag(FLAGS_summary_file); !path.empty()) {
    std::ofstream out(path);
    out << fleetpmu::sim::RunSummaryJson(sim, absl::ToDoubleSeconds(absl::Now() - wall_start)) << "\n";
    if (!out) log(absl::StrCat("cannot write the summary to ", path));
  }
  sender.Stop();
  const std::string what =
      absl::StrFormat("stopped after %.3fs simulated (%d switches): %d reports", static_cast<double>(now_ns) / 1e9,
                      sim.switches(), reporter.reports_taken());
  if (flushed) {
    log(absl::StrCat(what, ", all acknowledged by the agent (seq <= ", stats.acked_seq, "), ", stats.dropped,
                     " dropped"));
  } else {
    log(absl::StrCat(what, "; the agent acknowledged seq <= ", stats.acked_seq, " of ", stats.last_seq,
                     " within ", kFlushTimeout.count(), "s, ", stats.dropped, " dropped",
                     stats.last_error.empty() ? "" : absl::StrCat(" (last error: ", stats.last_error, ")")));
  }
  return fleetpmu::cli::kExitOk;
}


#if defined(__aarch64__)
// The kvm backend (hypervisor-shim/kvm/kvm_backend.h): canary rounds on the real host.
int RunKvm(const std::string& program, const fleetpmu::v1::ShimConfig& config) {
  const absl::Duration run_for = absl::GetFlag(FLAGS_run_for);
  const bool streaming = run_for == absl::ZeroDuration();
  if (!streaming && absl::GetFlag(FLAGS_summary) != "json") {
    return fleetpmu::cli::UsageError(program, "--summary supports only json");
  }
  if (run_for < absl::ZeroDuration()) return fleetpmu::cli::UsageError(program, "--run-for must be positive");
  // First, before gRPC or the sender start threads.
  std::optional<TerminationSignals> signals;
  if (streaming) signals.emplace(program);
  auto log = [&program](const std::string& line) { LogLine(program, line); };

  fleetpmu::v1::KvmHost kvm = config.kvm();
  if (!streaming) {
    // --run-for bounds the canaries' run: each guest's budget is cut to fit.
    for (fleetpmu::v1::KvmVm& vm : *kvm.mutable_vms()) {
      const absl::Duration timeout = std::min(
          absl::Seconds(vm.canary().timeout().seconds()) + absl::Nanoseconds(vm.canary().timeout().nanos()), run_for);
      vm.mutable_canary()->mutable_timeout()->set_seconds(absl::ToInt64Seconds(timeout));
      vm.mutable_canary()->mutable_timeout()->set_nanos(
          static_cast<int32_t>(absl::ToInt64Nanoseconds(timeout - absl::Seconds(absl::ToInt64Seconds(timeout)))));
    }
  }
  fleetpmu::kvm::KvmBackendOptions options;
  options.shim_version = std::string(fleetpmu::cli::ProjectVersion());
  options.overflow_event_limit = config.telemetry_ring_capacity();
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<fleetpmu::kvm::KvmBackend>> backend =
      fleetpmu::kvm::KvmBackend::Create(kvm, options);
  if (!backend.ok()) {
    std::cerr << program << ": kvm backend: " << backend.status().message() << "\n";
    return fleetpmu::cli::kExitFailure;
  }
  if (!streaming) {
    if (absl::Status s = (*backend)->RunRound(); !s.ok()) {
      std::cerr << program << ": kvm backend: " << s.message() << "\n";
      return fleetpmu::cli::kExitFailure;
    }
    for (const auto& [vm_id, why] : (*backend)->refused()) log(absl::StrCat("VM ", vm_id, " refused: ", why));
    std::cout << (*backend)->SummaryJson(absl::ToDoubleSeconds(absl::Now() - start)) << "\n";
    return (*backend)->valid() ? fleetpmu::cli::kExitOk : fleetpmu::cli::kExitFailure;
  }

  fleetpmu::telemetry::ShimSenderOptions sender_options;
  sender_options.agent_socket = config.agent_socket();
  sender_options.shim_id = config.shim_id();
  sender_options.shim_epoch = fleetpmu::telemetry::NewShimEpoch();
  sender_options.backend = config.backend();
  sender_options.host_info = (*backend)->host_info();
  sender_options.log = log;
  fleetpmu::telemetry::ShimSender sender(sender_options);
  const absl::Duration interval = absl::Seconds(config.report_interval().seconds()) +
                                  absl::Nanoseconds(config.report_interval().nanos());
  log(absl::StrCat("shim ", config.shim_id(), " epoch ", sender_options.shim_epoch, ": kvm backend, ",
                   kvm.vms_size(), " canary VMs every ", absl::FormatDuration(interval), " to unix:",
                   config.agent_socket()));
  sender.Start();
  uint64_t rounds = 0;
  std::map<std::string, std::string> refusals;  // logged once per VM and reason, not every round
  for (bool finished = false; !finished;) {
    const absl::Time round_start = absl::Now();
    if (absl::Status s = (*backend)->RunRound(); !s.ok()) {
      log(absl::StrCat("canary round failed: ", s.message()));
      sender.Stop();
      return fleetpmu::cli::kExitFailure;
    }
    ++rounds;
    for (const auto& [vm_id, why] : (*backend)->refused()) {
      if (std::exchange(refusals[vm_id], why) != why) log(absl::StrCat("VM ", vm_id, " refused: ", why));
    }
    finished = signals->WaitUntil(round_start + interval);
    sender.Submit((*backend)->TakeReport());
  }
  const bool flushed = sender.Flush(kFlushTimeout);
  const fleetpmu::telemetry::ShimSenderStats stats = sender.stats();
  if (const std::string path = absl::GetFlag(FLAGS_summary_file); !path.empty()) {
    std::ofstream out(path);
    out << (*backend)->SummaryJson(absl::ToDoubleSeconds(absl::Now() - start)) << "\n";
    if (!out) log(absl::StrCat("cannot write the summary to ", path));
  }
  sender.Stop();
  log(absl::StrCat("stopped after ", rounds, " canary rounds; the agent acknowledged seq <= ", stats.acked_seq,
                   flushed ? " (all)" : absl::StrCat(" of ", stats.last_seq)));
  return fleetpmu::cli::kExitOk;
}
#endif
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

#if defined(__aarch64__)
  if (config->backend() == fleetpmu::v1::BACKEND_KVM) return RunKvm(program, *config);
#endif
  if (absl::GetFlag(FLAGS_run_for) != absl::ZeroDuration()) return RunSimulation(program, *config);
  return RunStreaming(program, *config);
}
