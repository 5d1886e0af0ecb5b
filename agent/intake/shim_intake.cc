#include "agent/intake/shim_intake.h"

#include <grpcpp/grpcpp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <iostream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "fleetpmu/v1/shim_telemetry.grpc.pb.h"

namespace fleetpmu::agent {
namespace {

int64_t NowUnixNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Why a stream is cut off, for the log and the shim.
grpc::Status CutOff(ShimIntakeCounters& counters, const std::string& who, const std::string& reason) {
  ++counters.streams_cut_off;
  std::cerr << "fleetpmu-agent: shim stream " << who << " cut off: " << reason << "\n";
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, reason);
}

class ShimTelemetryService final : public v1::ShimTelemetry::Service {
 public:
  ShimTelemetryService(const ShimIntakeOptions& options, Spool* spool, ShimIntakeCounters* counters)
      : options_(options), spool_(spool), counters_(*counters), drops_logged_(spool->stats().dropped_batches) {}

  grpc::Status Publish(grpc::ServerContext* context,
                       grpc::ServerReaderWriter<v1::ShimAck, v1::ShimMessage>* stream) override {
    ++counters_.shims_connected;
    ++counters_.streams_total;
    grpc::Status status = Serve(context, stream);
    --counters_.shims_connected;
    return status;
  }

 private:
  grpc::Status Serve(grpc::ServerContext* context, grpc::ServerReaderWriter<v1::ShimAck, v1::ShimMessage>* stream) {
    const std::string peer = context->peer();
    v1::ShimMessage message;
    if (!stream->Read(&message)) return grpc::Status::OK;
    if (!message.has_hello()) return CutOff(counters_, peer, "the first message must be a ShimHello");
    const v1::ShimHello hello = message.hello();
    if (hello.shim_id().empty() || hello.shim_epoch() == 0) {
      return CutOff(counters_, peer, "ShimHello needs shim_id and a non-zero shim_epoch");
    }
    const std::string who = absl::StrCat(hello.shim_id(), " (epoch ", hello.shim_epoch(), ")");
    absl::StatusOr<uint64_t> cursor = spool_->SpooledShimSeq(hello.shim_id(), hello.shim_epoch());
    if (!cursor.ok()) return grpc::Status(grpc::StatusCode::UNAVAILABLE, std::string(cursor.status().message()));
    v1::ShimAck ack;
    ack.set_shim_epoch(hello.shim_epoch());
    ack.set_spooled_seq(*cursor);
    if (!stream->Write(ack)) return grpc::Status::OK;

    v1::HostInfo host_info = hello.host_info();
    host_info.MergeFrom(options_.host_facts);
    host_info.set_host_id(options_.host_id);
    if (absl::Status saved = spool_->SaveHostInfo(host_info); !saved.ok()) {
      std::cerr << "fleetpmu-agent: " << saved.message() << "\n";
    }
    bool host_info_sent = false;
    auto window_start = std::chrono::steady_clock::now();
    uint32_t in_window = 0;

    while (stream->Read(&message)) {
      if (message.has_hello()) return CutOff(counters_, who, "a second ShimHello on one stream");
      if (!message.has_report()) return CutOff(counters_, who, absl::StrCat("message seq ", message.seq(), " has no report"));
      const auto now = std::chrono::steady_clock::now();
      if (now - window_start >= std::chrono::seconds(1)) {
        window_start = now;
        in_window = 0;
      }
      if (++in_window > options_.max_reports_per_second) {
        return CutOff(counters_, who, absl::StrCat("more than ", options_.max_reports_per_second, " reports per second"));
      }
      const v1::TelemetryReport& report = message.report();
      if (report.interval().end_unix_ns() <= report.interval().start_unix_ns()) {
        return CutOff(counters_, who, absl::StrCat("report seq ", message.seq(), " has an interval that ends before it starts"));
      }
      if (message.seq() <= *cursor) {
        ++counters_.reports_replayed;  // already spooled: acknowledge again, store nothing
      } else {
        v1::Batch batch;
        v1::TelemetryReport* r = batch.add_reports();
        *r = report;
        r->set_host_id(options_.host_id);
        if (!host_info_sent) *r->mutable_host_info() = host_info;
        const ShimCursor next{hello.shim_id(), hello.shim_epoch(), message.seq()};
        absl::StatusOr<uint64_t> seq = spool_->Append(std::move(batch), NowUnixNs(), &next);
        if (!seq.ok()) {
          ++counters_.reports_refused;
          std::cerr << "fleetpmu-agent: report " << message.seq() << " of shim " << who
                    << " not spooled: " << seq.status().message() << "\n";
          continue;  // unacknowledged: the shim keeps it and its buffer bounds the loss
        }
        host_info_sent = true;
        *cursor = message.seq();
        ++counters_.reports_spooled;
        LogSpoolDrops();
      }
      ack.set_spooled_seq(*cursor);
      if (!stream->Write(ack)) break;
    }
    return grpc::Status::OK;
  }

  // DROP_OLDEST makes room silently inside Append(): say so in the log, at most every 10 s so a
  // long outage does not flood it (the exact count is on /metrics and goes to the server).
  void LogSpoolDrops() {
    const SpoolStats stats = spool_->stats();
    const uint64_t logged = drops_logged_.load();
    if (stats.dropped_batches <= logged) return;
    const int64_t now = NowUnixNs();
    int64_t next = next_drop_log_ns_.load();
    if (now < next || !next_drop_log_ns_.compare_exchange_strong(next, now + kDropLogEveryNs)) return;
    drops_logged_.store(stats.dropped_batches);
    std::cerr << "fleetpmu-agent: spool full (" << stats.bytes << " of " << spool_->max_bytes()
              << " bytes): dropped the " << stats.dropped_batches - logged << " oldest batches ("
              << stats.dropped_batches << " since the spool was created); the server is told with the next batch\n";
  }

  static constexpr int64_t kDropLogEveryNs = 10'000'000'000;
  const ShimIntakeOptions& options_;
  Spool* spool_;
  ShimIntakeCounters& counters_;
  std::atomic<uint64_t> drops_logged_;  // drops before this start were logged by an earlier one
  std::atomic<int64_t> next_drop_log_ns_{0};
};

}  // namespace

struct ShimIntake::Impl {
  ShimIntakeOptions options;
  ShimIntakeCounters counters;
  std::unique_ptr<ShimTelemetryService> service;
  std::unique_ptr<grpc::Server> server;
  bool stopped = false;
};

ShimIntake::ShimIntake(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ShimIntake::~ShimIntake() { Shutdown(); }

absl::StatusOr<std::unique_ptr<ShimIntake>> ShimIntake::Start(ShimIntakeOptions options, Spool* spool) {
  if (options.socket_path.empty()) return absl::InvalidArgumentError("shim intake: empty socket path");
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  const std::string& path = impl->options.socket_path;
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat("shim intake: ", path, " exists and is not a socket"));
    }
    ::unlink(path.c_str());  // a stale socket from a previous agent
  }
  impl->service = std::make_unique<ShimTelemetryService>(impl->options, spool, &impl->counters);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat("unix:", path), grpc::InsecureServerCredentials());
  builder.SetMaxReceiveMessageSize(impl->options.max_message_bytes);
  builder.RegisterService(impl->service.get());
  impl->server = builder.BuildAndStart();
  if (impl->server == nullptr) {
    return absl::UnavailableError(absl::StrCat("shim intake: cannot listen on unix:", path));
  }
  if (::chmod(path.c_str(), impl->options.socket_mode) != 0) {
    impl->server->Shutdown();
    return absl::PermissionDeniedError(absl::StrCat("shim intake: cannot set mode of ", path));
  }
  return std::unique_ptr<ShimIntake>(new ShimIntake(std::move(impl)));
}

void ShimIntake::Shutdown() {
  if (impl_ == nullptr || impl_->stopped) return;
  impl_->stopped = true;
  impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  impl_->server->Wait();
  ::unlink(impl_->options.socket_path.c_str());
}

const ShimIntakeCounters& ShimIntake::counters() const { return impl_->counters; }

}  // namespace fleetpmu::agent
