// fleetpmu_ingest_bench (issue 9): how many overflow events and vCPU-stat rows per second a
// real in-process fleetpmu-server (FleetpmuServer: SQLite in a temporary directory, plaintext
// ingest on loopback) stores for K concurrent agent streams, next to two ceilings measured in
// the same run:
//   storage    the same reports committed straight into SqliteStorage (no gRPC), many
//              operations queued so that the writer groups them into its largest transactions;
//   transport  the same batches streamed over gRPC to an Ingest stub that acks without storing.
// Each agent stream is a real Ingest.Stream client: AgentHello, then Batches (agent_epoch, seq)
// with at most --window unacked; a batch counts as stored when an Ack covers it (acks follow
// commits). The per-stream rate limit is lifted (it is a policy, not a capacity).
//
// The client runs in the same process, so process CPU includes it; client CPU is measured per
// thread and subtracted to estimate the server's share.
//
// Output: one JSON object on stdout and in --out (or --benchmark_out, as deploy/bench.sh
// passes to every benchmark), a readable summary on stderr. Other --benchmark_* flags are
// accepted and ignored.
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "proto/fleetpmu/config/config_defaults.h"
#include "proto/fleetpmu/config/config_validation.h"
#include "fleetpmu/v1/config.pb.h"
#include "fleetpmu/v1/ingest.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "server/fleetpmu_server.h"
#include "server/storage/sqlite_storage.h"
#include "tests/server/telemetry_fixtures.h"

namespace fleetpmu::server::bench {
namespace {

using ::fleetpmu::server::testing::GuestMask;
using ::fleetpmu::server::testing::MakeHostInfo;
using ::fleetpmu::server::testing::MakeVcpuStats;
using ::fleetpmu::server::testing::MakeVm;
using ::fleetpmu::server::testing::TempDir;
using ::fleetpmu::v1::AgentMessage;
using ::fleetpmu::v1::Batch;
using ::fleetpmu::v1::IngestError;
using ::fleetpmu::v1::ServerMessage;

constexpr int64_t kSecondNs = 1000000000;

struct Flags {
  std::vector<int> streams = {1, 16, 256};
  double seconds = 3;
  int reports_per_batch = 4;
  int events_per_report = 500;
  int window = 8;
  std::string out;
};

// The shape of one agent's telemetry: 64 pCPUs (N = 6), four VMs of 16 vCPUs (h = 3), each
// vCPU pinned to its pCPU, reports of 1 s each.
constexpr uint32_t kPcpus = 64;
constexpr uint32_t kVms = 4;
constexpr uint32_t kVcpusPerVm = kPcpus / kVms;
constexpr int64_t kReportNs = kSecondNs;

std::string VmId(uint32_t vm) { return absl::StrCat("vm-", vm); }
std::string TenantId(uint32_t vm) { return absl::StrCat("tenant-", vm); }

// Report `index` of a host covers [origin + index s, +1 s): 64 VcpuStats, one ownership sample
// per pCPU, `events` overflow events (one in ten lost).
fleetpmu::v1::TelemetryReport MakeBenchReport(const std::string& host_id, int64_t origin,
                                              uint64_t index, int events) {
  const int64_t start = origin + static_cast<int64_t>(index) * kReportNs;
  const int64_t end = start + kReportNs;
  fleetpmu::v1::TelemetryReport report;
  report.set_host_id(host_id);
  report.mutable_interval()->set_start_unix_ns(start);
  report.mutable_interval()->set_end_unix_ns(end);
  for (uint32_t vm = 0; vm < kVms; ++vm) {
    const fleetpmu::v1::VmInfo info = MakeVm(VmId(vm), TenantId(vm), kVcpusPerVm, 3);
    *report.add_vms() = info;
    for (uint32_t vcpu = 0; vcpu < kVcpusPerVm; ++vcpu) {
      *report.add_vcpu_stats() = MakeVcpuStats(info, vcpu, start, end);
    }
  }
  for (uint32_t pcpu = 0; pcpu < kPcpus; ++pcpu) {
    fleetpmu::v1::OwnershipSample* sample = report.add_ownership();
    sample->set_pcpu(pcpu);
    sample->mutable_interval()->set_start_unix_ns(start);
    sample->mutable_interval()->set_end_unix_ns(end);
    fleetpmu::v1::OwnerResidency* guest = sample->add_residencies();
    guest->set_owner_kind(fleetpmu::v1::OWNER_KIND_GUEST);
    guest->set_vm_id(VmId(pcpu / kVcpusPerVm));
    guest->set_vcpu(pcpu % kVcpusPerVm);
    guest->set_tenant_id(TenantId(pcpu / kVcpusPerVm));
    guest->set_counter_mask(GuestMask(3));
    guest->set_resident_ns(static_cast<uint64_t>(kReportNs / 2));
    fleetpmu::v1::OwnerResidency* host = sample->add_residencies();
    host->set_owner_kind(fleetpmu::v1::OWNER_KIND_HOST);
    host->set_counter_mask(0x38);  // [3,6)
    host->set_resident_ns(static_cast<uint64_t>(kReportNs));
  }
  for (int i = 0; i < events; ++i) {
    const uint32_t pcpu = static_cast<uint32_t>(i) % kPcpus;
    fleetpmu::v1::OverflowEvent* event = report.add_overflow_events();
    event->set_time_unix_ns(start + (i + 1) * (kReportNs / (events + 1)));
    event->set_pcpu(pcpu);
    event->set_counter(static_cast<uint32_t>(i) % 3);
    event->set_owner_kind(fleetpmu::v1::OWNER_KIND_GUEST);
    event->set_vm_id(VmId(pcpu / kVcpusPerVm));
    event->set_vcpu(pcpu % kVcpusPerVm);
    event->set_tenant_id(TenantId(pcpu / kVcpusPerVm));
    event->set_event_code(0x08);
    if (i % 10 == 0) {
      event->set_overflow_class(fleetpmu::v1::OVERFLOW_CLASS_LOST);
      event->set_lost_reason(fleetpmu::v1::LOST_REASON_FLAG_CLEARED_UNSEEN);
    } else {
      event->set_overflow_class(fleetpmu::v1::OVERFLOW_CLASS_DELIVERED);
      event->set_wrap_to_handler_ns(2000);
    }
  }
  return report;
}

Batch MakeBenchBatch(const Flags& flags, const std::string& host_id, int64_t origin,
                     uint64_t seq) {
  Batch batch;
  batch.set_agent_epoch(1);
  batch.set_seq(seq);
  batch.set_created_unix_ns(absl::ToUnixNanos(absl::Now()));
  const uint64_t first = (seq - 1) * static_cast<uint64_t>(flags.reports_per_batch);
  for (int i = 0; i < flags.reports_per_batch; ++i) {
    *batch.add_reports() = MakeBenchReport(host_id, origin, first + i, flags.events_per_report);
  }
  return batch;
}

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

double ProcessCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& tv) {
    return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) * 1e-6;
  };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// Peak RSS since the last ResetPeakRss(), in MiB (VmHWM; Linux resets it through clear_refs).
// Falls back to the lifetime peak when the reset is refused.
void ResetPeakRss() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
}

double PeakRssMiB() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      int64_t kib = 0;
      std::vector<std::string> parts = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (parts.size() >= 2 && absl::SimpleAtoi(parts[1], &kib)) return kib / 1024.0;
    }
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

double Percentile(std::vector<int64_t>& values, double q) {
  if (values.empty()) return 0;
  const size_t k = std::min(values.size() - 1, static_cast<size_t>(q * values.size()));
  std::nth_element(values.begin(), values.begin() + static_cast<ptrdiff_t>(k), values.end());
  return static_cast<double>(values[k]) / 1e6;
}

// What one run of K streams achieved.
struct StreamRun {
  int streams = 0;
  uint64_t batches_acked = 0;
  uint64_t events = 0;
  uint64_t vcpu_rows = 0;
  uint64_t bytes = 0;
  uint64_t refusals = 0;  // RESOURCE_EXHAUSTED / UNAVAILABLE answers, resent
  uint64_t rejected = 0;  // INVALID_BATCH / TOO_LARGE: a bug of this bench
  uint64_t failed_streams = 0;
  double seconds = 0;
  double process_cpu = 0;
  double client_cpu = 0;
  double peak_rss_mib = 0;
  std::vector<int64_t> latencies_ns;
  std::string first_error;
};

// One agent: hello, then batches with at most `window` unacked until `deadline`, then drains.
void RunAgent(const Flags& flags, const std::string& address, const std::string& host_id,
              int64_t origin, absl::Time deadline, absl::Mutex* mu, StreamRun* run) {
  const double cpu_start = ThreadCpuSeconds();
  grpc::ChannelArguments args;
  // One connection per agent, as in a fleet, instead of gRPC's shared subchannel.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  auto stub = fleetpmu::v1::Ingest::NewStub(channel);
  grpc::ClientContext context;
  auto stream = stub->Stream(&context);

  uint64_t events = 0, rows = 0, bytes = 0, acked = 0, refusals = 0, rejected = 0;
  std::vector<int64_t> latencies;
  std::string error;
  auto finish = [&] {
    const double cpu = ThreadCpuSeconds() - cpu_start;
    absl::MutexLock lock(mu);
    run->batches_acked += acked;
    run->events += events;
    run->vcpu_rows += rows;
    run->bytes += bytes;
    run->refusals += refusals;
    run->rejected += rejected;
    run->client_cpu += cpu;
    if (!error.empty()) {
      ++run->failed_streams;
      if (run->first_error.empty()) run->first_error = error;
    }
    run->latencies_ns.insert(run->latencies_ns.end(), latencies.begin(), latencies.end());
  };

  AgentMessage hello;
  hello.mutable_hello()->set_host_id(host_id);
  hello.mutable_hello()->set_agent_epoch(1);
  hello.mutable_hello()->set_agent_version("bench");
  *hello.mutable_hello()->mutable_host_info() = MakeHostInfo(host_id, kPcpus, 6);
  ServerMessage answer;
  if (!stream->Write(hello) || !stream->Read(&answer) || !answer.has_hello_ack()) {
    error = absl::StrCat(host_id, ": no HelloAck");
    context.TryCancel();
    (void)stream->Finish();
    finish();
    return;
  }

  struct Sent {
    absl::Time at;
    size_t bytes;
  };
  std::map<uint64_t, Sent> in_flight;
  uint64_t next_seq = answer.hello_ack().durable_seq() + 1;
  uint64_t resend_from = 0;  // lowest refused seq, resent once its window has drained
  const uint64_t per_batch_events =
      static_cast<uint64_t>(flags.reports_per_batch) * flags.events_per_report;
  const uint64_t per_batch_rows = static_cast<uint64_t>(flags.reports_per_batch) * kPcpus;
  while (true) {
    const bool sending = absl::Now() < deadline;
    if (sending && resend_from != 0 && in_flight.empty()) {
      next_seq = resend_from;
      resend_from = 0;
      absl::SleepFor(absl::Milliseconds(1));  // the queue was full: give it a moment
    }
    while (sending && resend_from == 0 &&
           in_flight.size() < static_cast<size_t>(flags.window)) {
      AgentMessage message;
      *message.mutable_batch() = MakeBenchBatch(flags, host_id, origin, next_seq);
      const size_t size = message.ByteSizeLong();
      in_flight[next_seq] = Sent{absl::Now(), size};
      if (!stream->Write(message)) {
        error = absl::StrCat(host_id, ": write failed");
        break;
      }
      ++next_seq;
    }
    if (!error.empty() || in_flight.empty()) break;
    if (!stream->Read(&answer)) {
      error = absl::StrCat(host_id, ": stream ended");
      break;
    }
    const absl::Time now = absl::Now();
    if (answer.has_ack()) {
      const uint64_t durable = answer.ack().durable_seq();
      while (!in_flight.empty() && in_flight.begin()->first <= durable) {
        latencies.push_back(absl::ToInt64Nanoseconds(now - in_flight.begin()->second.at));
        bytes += in_flight.begin()->second.bytes;
        events += per_batch_events;
        rows += per_batch_rows;
        ++acked;
        in_flight.erase(in_flight.begin());
      }
    } else if (answer.has_error()) {
      const IngestError& refused = answer.error();
      if (refused.code() == IngestError::RESOURCE_EXHAUSTED ||
          refused.code() == IngestError::UNAVAILABLE) {
        ++refusals;
        in_flight.erase(refused.seq());
        if (resend_from == 0 || refused.seq() < resend_from) resend_from = refused.seq();
      } else {
        // The seq is still acked (recorded as a rejection); not stored, so not counted.
        ++rejected;
        if (error.empty()) error = absl::StrCat(host_id, ": ", refused.reason());
        in_flight.erase(refused.seq());
      }
    }
    if (!sending && in_flight.empty()) break;
  }
  stream->WritesDone();
  context.TryCancel();
  (void)stream->Finish();
  finish();
}

StreamRun RunStreams(const Flags& flags, const std::string& address, const std::string& label,
                     int k, int64_t origin) {
  StreamRun run;
  run.streams = k;
  absl::Mutex mu;
  ResetPeakRss();
  const double cpu_start = ProcessCpuSeconds();
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + absl::Seconds(flags.seconds);
  std::vector<std::thread> agents;
  agents.reserve(static_cast<size_t>(k));
  for (int i = 0; i < k; ++i) {
    agents.emplace_back(RunAgent, std::cref(flags), address,
                        absl::StrCat("bench-", label, "-k", k, "-h", i), origin, deadline, &mu,
                        &run);
  }
  for (std::thread& agent : agents) agent.join();
  run.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  run.process_cpu = ProcessCpuSeconds() - cpu_start;
  run.peak_rss_mib = PeakRssMiB();
  return run;
}

// The transport ceiling's server: acks every batch at once, stores nothing.
class AckOnlyIngest final : public fleetpmu::v1::Ingest::Service {
 public:
  grpc::Status Stream(grpc::ServerContext* /*context*/,
                      grpc::ServerReaderWriter<ServerMessage, AgentMessage>* stream) override {
    AgentMessage message;
    ServerMessage answer;
    while (stream->Read(&message)) {
      answer.Clear();
      if (message.has_hello()) {
        answer.mutable_hello_ack()->set_host_id(message.hello().host_id());
        answer.mutable_hello_ack()->set_agent_epoch(message.hello().agent_epoch());
      } else {
        answer.mutable_ack()->set_agent_epoch(message.batch().agent_epoch());
        answer.mutable_ack()->set_durable_seq(message.batch().seq());
      }
      if (!stream->Write(answer)) break;
    }
    return grpc::Status::OK;
  }
};

struct StorageRun {
  uint64_t events = 0;
  uint64_t vcpu_rows = 0;
  double seconds = 0;
  double process_cpu = 0;
  std::string error;
};

// The storage ceiling: 16 hosts' batches submitted straight to SqliteStorage, up to 512
// operations queued so that every transaction takes the most the writer groups.
StorageRun RunStorageCeiling(const Flags& flags, const std::string& path, int64_t origin) {
  StorageRun run;
  SqliteStorageOptions options;
  options.path = path;
  auto opened = SqliteStorage::Open(options);
  if (!opened.ok()) {
    run.error = opened.status().ToString();
    return run;
  }
  std::unique_ptr<SqliteStorage> storage = std::move(*opened);
  constexpr int kHosts = 16;
  constexpr int kMaxQueued = 512;
  std::vector<std::string> hosts;
  std::vector<std::shared_ptr<CommitChain>> chains;
  for (int i = 0; i < kHosts; ++i) {
    hosts.push_back(absl::StrCat("bench-storage-h", i));
    AgentRegistration hello;
    hello.host_id = hosts.back();
    hello.agent_epoch = 1;
    hello.host_info = MakeHostInfo(hosts.back(), kPcpus, 6);
    hello.now_unix_ns = absl::ToUnixNanos(absl::Now());
    auto registered = storage->Register(std::move(hello));
    if (!registered.ok()) {
      run.error = registered.status().ToString();
      return run;
    }
    chains.push_back(std::make_shared<CommitChain>());
  }
  absl::Mutex mu;
  int queued = 0;
  uint64_t stored = 0;
  std::string error;
  const double cpu_start = ProcessCpuSeconds();
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + absl::Seconds(flags.seconds);
  std::vector<uint64_t> seqs(kHosts, 0);
  for (uint64_t n = 0; absl::Now() < deadline; ++n) {
    const int host = static_cast<int>(n % kHosts);
    IngestCommit commit;
    commit.host_id = hosts[static_cast<size_t>(host)];
    commit.agent_epoch = 1;
    commit.seq = ++seqs[static_cast<size_t>(host)];
    commit.batch = std::make_shared<const Batch>(
        MakeBenchBatch(flags, commit.host_id, origin, commit.seq));
    commit.now_unix_ns = absl::ToUnixNanos(absl::Now());
    {
      absl::MutexLock lock(&mu);
      mu.Await(absl::Condition(
          +[](int* q) { return *q < kMaxQueued; }, &queued));
      ++queued;
    }
    absl::Status submitted = storage->SubmitCommit(
        std::move(commit), chains[static_cast<size_t>(host)],
        [&](absl::StatusOr<CommitResult> result) {
          absl::MutexLock lock(&mu);
          --queued;
          if (result.ok()) {
            ++stored;
          } else if (error.empty()) {
            error = result.status().ToString();
          }
        });
    if (!submitted.ok()) {
      absl::MutexLock lock(&mu);
      --queued;
      error = submitted.ToString();
      break;
    }
  }
  {
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(+[](int* q) { return *q == 0; }, &queued));
  }
  run.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  run.process_cpu = ProcessCpuSeconds() - cpu_start;
  run.events = stored * static_cast<uint64_t>(flags.reports_per_batch) * flags.events_per_report;
  run.vcpu_rows = stored * static_cast<uint64_t>(flags.reports_per_batch) * kPcpus;
  run.error = error;
  storage->Shutdown();
  return run;
}

nlohmann::json RunJson(StreamRun& run) {
  nlohmann::json j;
  j["streams"] = run.streams;
  j["seconds"] = run.seconds;
  j["batches_acked"] = run.batches_acked;
  j["overflow_events_per_s"] = run.events / run.seconds;
  j["vcpu_stat_rows_per_s"] = run.vcpu_rows / run.seconds;
  j["mib_per_s"] = run.bytes / run.seconds / (1 << 20);
  j["ack_latency_p50_ms"] = Percentile(run.latencies_ns, 0.50);
  j["ack_latency_p99_ms"] = Percentile(run.latencies_ns, 0.99);
  j["process_cpu_cores"] = run.process_cpu / run.seconds;
  j["client_cpu_cores"] = run.client_cpu / run.seconds;
  j["server_cpu_cores_est"] = (run.process_cpu - run.client_cpu) / run.seconds;
  j["peak_rss_mib"] = run.peak_rss_mib;
  j["refusals_resent"] = run.refusals;
  j["rejected"] = run.rejected;
  j["failed_streams"] = run.failed_streams;
  if (!run.first_error.empty()) j["first_error"] = run.first_error;
  return j;
}

bool ParseFlags(int argc, char** argv, Flags* flags) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const std::string& name) -> const char* {
      const std::string prefix = "--" + name + "=";
      return arg.rfind(prefix, 0) == 0 ? argv[i] + prefix.size() : nullptr;
    };
    if (const char* v = value("out")) {
      flags->out = v;
    } else if (const char* v = value("benchmark_out")) {
      flags->out = v;
    } else if (const char* v = value("seconds")) {
      if (!absl::SimpleAtod(v, &flags->seconds) || flags->seconds <= 0) return false;
    } else if (const char* v = value("streams")) {
      flags->streams.clear();
      for (absl::string_view part : absl::StrSplit(v, ',')) {
        int k = 0;
        if (!absl::SimpleAtoi(part, &k) || k < 1) return false;
        flags->streams.push_back(k);
      }
    } else if (const char* v = value("reports_per_batch")) {
      if (!absl::SimpleAtoi(v, &flags->reports_per_batch) || flags->reports_per_batch < 1) {
        return false;
      }
    } else if (const char* v = value("events_per_report")) {
      if (!absl::SimpleAtoi(v, &flags->events_per_report) || flags->events_per_report < 0) {
        return false;
      }
    } else if (const char* v = value("window")) {
      if (!absl::SimpleAtoi(v, &flags->window) || flags->window < 1) return false;
    } else if (arg.rfind("--benchmark_", 0) != 0) {
      return false;
    }
  }
  return true;
}

int Main(int argc, char** argv) {
  Flags flags;
  if (!ParseFlags(argc, argv, &flags)) {
    std::cerr << "usage: fleetpmu_ingest_bench [--streams=1,16,256] [--seconds=3] "
                 "[--reports_per_batch=4] [--events_per_report=500] [--window=8] [--out=FILE]\n";
    return 2;
  }
  TempDir dir;
  if (dir.path().empty()) {
    std::cerr << "ingest bench: cannot create a temporary directory\n";
    return 1;
  }
  // Reports lie in the last day (inside retention, before now); each host's reports follow
  // one another from `origin`.
  const int64_t origin = absl::ToUnixNanos(absl::Now() - absl::Hours(20));

  fleetpmu::v1::ServerConfig config;
  config.set_ingest_listen("127.0.0.1:0");
  // One gRPC server for ingest and query; /metrics needs an address of its own, and port 0
  // on another loopback address is one no other process can hold.
  config.set_query_listen(config.ingest_listen());
  config.set_metrics_listen("127.0.0.2:0");
  config.set_allow_plaintext(true);
  config.mutable_storage()->set_sqlite_path(dir.File("fleetpmu.db"));
  config.mutable_limits()->set_per_stream_batches_per_second(100000);
  fleetpmu::config::ApplyServerDefaults(&config);
  if (absl::Status valid = fleetpmu::config::ValidateServerConfig(config); !valid.ok()) {
    std::cerr << "ingest bench: " << valid << "\n";
    return 1;
  }
  ServerRuntimeOptions runtime;
  runtime.ingest_window = static_cast<uint32_t>(flags.window);
  runtime.retention_period = absl::ZeroDuration();

  nlohmann::json out;
  out["benchmark"] = "fleetpmu_ingest_bench";
  out["workload"] = {{"vcpus_per_report", kPcpus},
                     {"pcpus", kPcpus},
                     {"overflow_events_per_report", flags.events_per_report},
                     {"reports_per_batch", flags.reports_per_batch},
                     {"window", flags.window},
                     {"seconds_per_run", flags.seconds}};

  // (a) Storage ceiling first, on its own database.
  StorageRun ceiling = RunStorageCeiling(flags, dir.File("ceiling.db"), origin);
  if (!ceiling.error.empty()) {
    std::cerr << "ingest bench: storage ceiling: " << ceiling.error << "\n";
    return 1;
  }
  const double storage_events = ceiling.events / ceiling.seconds;
  const double storage_rows = ceiling.vcpu_rows / ceiling.seconds;
  out["storage_ceiling"] = {{"overflow_events_per_s", storage_events},
                            {"vcpu_stat_rows_per_s", storage_rows},
                            {"process_cpu_cores", ceiling.process_cpu / ceiling.seconds}};
  std::fprintf(stderr, "storage ceiling: %.0f overflow events/s, %.0f vCPU-stat rows/s\n",
               storage_events, storage_rows);

  // (b) Transport ceiling server, kept up for every K.
  AckOnlyIngest stub;
  int stub_port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &stub_port);
  builder.SetMaxReceiveMessageSize(64 << 20);
  builder.RegisterService(&stub);
  std::unique_ptr<grpc::Server> stub_server = builder.BuildAndStart();
  if (stub_server == nullptr) {
    std::cerr << "ingest bench: cannot start the ack-only server\n";
    return 1;
  }

  auto server = FleetpmuServer::Start(config, runtime);
  if (!server.ok()) {
    std::cerr << "ingest bench: server: " << server.status() << "\n";
    return 1;
  }
  const std::string server_address = absl::StrCat("127.0.0.1:", (*server)->ingest_port());
  const std::string stub_address = absl::StrCat("127.0.0.1:", stub_port);

  bool ok = true;
  nlohmann::json runs = nlohmann::json::array();
  for (int k : flags.streams) {
    StreamRun stored = RunStreams(flags, server_address, "server", k, origin);
    StreamRun transport = RunStreams(flags, stub_address, "stub", k, origin);
    nlohmann::json j = RunJson(stored);
    nlohmann::json t = RunJson(transport);
    const double events = stored.events / stored.seconds;
    const double rows = stored.vcpu_rows / stored.seconds;
    const double transport_events = transport.events / transport.seconds;
    j["transport_ceiling"] = t;
    j["ratio_to_storage_ceiling"] = events / storage_events;
    j["ratio_to_transport_ceiling"] = transport_events > 0 ? events / transport_events : 0;
    runs.push_back(j);
    if (stored.rejected > 0 || stored.failed_streams > 0 || transport.failed_streams > 0) {
      ok = false;
    }
    std::fprintf(stderr,
                 "K=%3d stored: %9.0f events/s %8.0f rows/s  ack p50 %.1f ms p99 %.1f ms  "
                 "cpu %.2f cores (server ~%.2f)  rss %.0f MiB  refusals %llu | transport: "
                 "%9.0f events/s | stored/storage %.2f stored/transport %.2f\n",
                 k, events, rows, j["ack_latency_p50_ms"].get<double>(),
                 j["ack_latency_p99_ms"].get<double>(), j["process_cpu_cores"].get<double>(),
                 j["server_cpu_cores_est"].get<double>(), stored.peak_rss_mib,
                 static_cast<unsigned long long>(stored.refusals), transport_events,
                 j["ratio_to_storage_ceiling"].get<double>(),
                 j["ratio_to_transport_ceiling"].get<double>());
    if (!stored.first_error.empty()) std::fprintf(stderr, "  error: %s\n", stored.first_error.c_str());
  }
  out["runs"] = runs;
  (*server)->Shutdown(absl::Seconds(1));
  stub_server->Shutdown();

  const std::string text = out.dump(2);
  std::cout << text << std::endl;
  if (!flags.out.empty()) {
    std::ofstream file(flags.out);
    file << text << "\n";
    if (!file) {
      std::cerr << "ingest bench: cannot write " << flags.out << "\n";
      return 1;
    }
  }
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace fleetpmu::server::bench

int main(int argc, char** argv) { return fleetpmu::server::bench::Main(argc, argv); }
