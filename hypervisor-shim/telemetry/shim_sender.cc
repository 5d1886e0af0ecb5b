#include "hypervisor-shim/telemetry/shim_sender.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <deque>
#include <random>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "fleetpmu/v1/shim_telemetry.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "hypervisor-shim/telemetry/spsc_ring.h"

namespace fleetpmu::telemetry {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// How long the sender thread sleeps when nothing wakes it. Every event that matters (a submitted
// report, an ack, the end of a stream, Stop) wakes it at once; this only bounds the cost of a
// wake-up that a broken eventfd failed to deliver.
constexpr milliseconds kIdleWait{1000};

// A wake-up any thread may post without blocking (an eventfd counter): Submit on the simulation
// thread, the ack reader, Stop. The sender thread waits on it with a timeout.
class Wakeup {
 public:
  Wakeup() : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~Wakeup() {
    if (fd_ >= 0) ::close(fd_);
  }
  Wakeup(const Wakeup&) = delete;
  Wakeup& operator=(const Wakeup&) = delete;

  void Post() {
    const uint64_t one = 1;
    // EAGAIN means the counter is saturated: a wake-up is pending anyway.
    const ssize_t written = ::write(fd_, &one, sizeof one);
    (void)written;
  }

  // Returns when posted to (consuming every post so far) or after `timeout`.
  void Wait(milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    const auto ms = std::clamp<milliseconds::rep>(timeout.count(), 0, INT_MAX);
    if (::poll(&p, 1, static_cast<int>(ms)) > 0) {
      uint64_t posts = 0;
      const ssize_t got = ::read(fd_, &posts, sizeof posts);
      (void)got;
    }
  }

 private:
  const int fd_;
};

std::string Millis(milliseconds d) { return absl::StrCat(d.count(), "ms"); }

}  // namespace

class ShimSender::Impl {
 public:
  explicit Impl(ShimSenderOptions options)
      : options_(std::move(options)),
        target_(absl::StrCat("unix:", options_.agent_socket)),
        resend_capacity_(std::max<size_t>(options_.resend_capacity, 1)),
        queue_(options_.queue_capacity) {}
  ~Impl() { Stop(); }

  void Start() {
    if (thread_.joinable() || stop_.load()) return;
    thread_ = std::thread([this] { Run(); });
  }

  bool Submit(v1::TelemetryReport report) {
    if (!queue_.TryPush(std::move(report))) {
      // TryPush left `report` alone: its size is what was lost.
      CountDrop(report.ByteSizeLong());
      return false;
    }
    submitted_.fetch_add(1, std::memory_order_acq_rel);
    wake_.Post();
    return true;
  }

  Drops TakeDrops() {
    Drops drops;
    drops.count = pending_drop_count_.exchange(0, std::memory_order_acq_rel);
    drops.bytes = pending_drop_bytes_.exchange(0, std::memory_order_acq_rel);
    return drops;
  }

  bool Flush(milliseconds timeout) {
    const uint64_t target = submitted_.load(std::memory_order_acquire);
    wake_.Post();
    const absl::Time deadline = absl::Now() + absl::FromChrono(timeout);
    absl::MutexLock lock(&mu_);
    while (completed_ < target) {
      if (progress_.WaitWithDeadline(&mu_, deadline)) break;  // true: timed out
    }
    return completed_ >= target;
  }

  void Stop() {
    stop_.store(true);
    {
      absl::MutexLock lock(&mu_);
      if (current_context_ != nullptr) current_context_->TryCancel();
    }
    wake_.Post();
    if (thread_.joinable()) thread_.join();
  }

  ShimSenderStats stats() const {
    ShimSenderStats out;
    {
      absl::MutexLock lock(&mu_);
      out = stats_;
      out.acked_seq = acked_seq_;
    }
    out.submitted = submitted_.load(std::memory_order_acquire);
    out.dropped = total_dropped_.load(std::memory_order_acquire);
    return out;
  }

 private:
  // A report waiting for its ack, already wrapped in the message that carries it.
  struct Entry {
    uint64_t seq = 0;
    v1::ShimMessage message;
    uint64_t bytes = 0;
  };
  using Stream = grpc::ClientReaderWriter<v1::ShimMessage, v1::ShimAck>;

  void Log(const std::string& line) const {
    if (options_.log) options_.log(line);
  }

  void CountDrop(uint64_t bytes) {
    pending_drop_count_.fetch_add(1, std::memory_order_acq_rel);
    pending_drop_bytes_.fetch_add(bytes, std::memory_order_acq_rel);
    total_dropped_.fetch_add(1, std::memory_order_acq_rel);
  }

  // Sender thread: connect, stream until the stream fails, back off, again.
  void Run() {
    milliseconds backoff = options_.backoff_min;
    while (!stop_.load()) {
      const bool handshook = RunStream();
      if (stop_.load()) break;
      if (handshook) backoff = options_.backoff_min;
      // Keep taking reports while waiting, so that Submit finds room in the ring and the resend
      // buffer, not the ring, decides what goes when the agent stays away.
      const Clock::time_point until = Clock::now() + backoff;
      for (Clock::time_point now = Clock::now(); !stop_.load() && now < until; now = Clock::now()) {
        wake_.Wait(std::chrono::duration_cast<milliseconds>(until - now) + milliseconds(1));
        DrainQueue();
      }
      backoff = std::min(backoff * 2, options_.backoff_max);
    }
  }

  // One Publish stream. True when it got past the handshake.
  bool RunStream() {
    DrainQueue();
    grpc::ChannelArguments args;
    // A channel of our own per attempt, with gRPC's own reconnect backoff no longer than ours:
    // a shared subchannel could otherwise still be backing off when the agent is back.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, static_cast<int>(options_.backoff_min.count()));
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, static_cast<int>(options_.backoff_min.count()));
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, static_cast<int>(options_.backoff_max.count()));
    std::shared_ptr<grpc::Channel> channel =
        grpc::CreateCustomChannel(target_, grpc::InsecureChannelCredentials(), args);
    std::unique_ptr<v1::ShimTelemetry::Stub> stub = v1::ShimTelemetry::NewStub(channel);
    grpc::ClientContext context;
    {
      absl::MutexLock lock(&mu_);
      if (stop_.load()) return false;
      current_context_ = &context;
      got_ack_ = false;
      stream_done_ = false;
    }
    std::unique_ptr<Stream> stream = stub->Publish(&context);
    std::thread reader([this, s = stream.get()] { ReadAcks(s); });

    std::string failure;
    bool handshook = false;
    v1::ShimMessage hello;
    v1::ShimHello* h = hello.mutable_hello();
    h->set_shim_id(options_.shim_id);
    h->set_backend(options_.backend);
    *h->mutable_host_info() = options_.host_info;
    h->set_shim_epoch(options_.shim_epoch);
    hello.set_seq(0);
    if (!stream->Write(hello)) {
      failure = "the stream closed before the hello was sent";
    } else {
      failure = AwaitFirstAck();
    }
    if (failure.empty() && !stop_.load()) {
      handshook = true;
      uint64_t acked = 0;
      {
        absl::MutexLock lock(&mu_);
        ++stats_.handshakes;
        stats_.connected = true;
        acked = std::min(acked_seq_, highest_written_);
      }
      PruneAcked();
      const auto unacked = std::count_if(buffer_.begin(), buffer_.end(),
                                         [acked](const Entry& e) { return e.seq > acked; });
      Log(absl::StrCat("connected to the agent at ", target_, " (epoch ", options_.shim_epoch, "): agent has seq <= ",
                       acked, ", ", unacked, " reports to send"));
      reported_outage_ = false;
      failure = Pump(stream.get(), acked);
    }

    // Finish() may only be called once reading is over: cancel a stream that is still open.
    bool done;
    {
      absl::MutexLock lock(&mu_);
      done = stream_done_;
    }
    if (!done) context.TryCancel();
    reader.join();
    const grpc::Status status = stream->Finish();
    const bool stopping = stop_.load();
    if (!stopping && failure.empty()) failure = "the stream ended";
    if (!stopping && !status.ok()) {
      absl::StrAppend(&failure, " (", status.error_message().empty() ? "no details" : status.error_message(),
                      ", code ", static_cast<int>(status.error_code()), ")");
    }
    {
      absl::MutexLock lock(&mu_);
      current_context_ = nullptr;
      stats_.connected = false;
      if (!stopping) {
        ++stats_.stream_failures;
        stats_.last_error = failure;
      }
    }
    if (!stopping && (handshook || !reported_outage_)) {
      Log(absl::StrCat(handshook ? "lost the agent at " : "cannot reach the agent at ", target_, ": ", failure,
                       "; retrying with backoff up to ", Millis(options_.backoff_max)));
      reported_outage_ = true;
    }
    return handshook;
  }

  // After the hello: the agent's first ShimAck says what it already has. "" when it came.
  std::string AwaitFirstAck() {
    const Clock::time_point deadline = Clock::now() + options_.handshake_timeout;
    for (;;) {
      {
        absl::MutexLock lock(&mu_);
        if (got_ack_) return "";
        if (stream_done_) return "the stream closed before the agent acked the hello";
      }
      if (stop_.load()) return "stopped";
      const Clock::time_point now = Clock::now();
      if (now >= deadline) {
        return absl::StrCat("no ShimAck within ", Millis(options_.handshake_timeout), " of the hello");
      }
      wake_.Wait(std::chrono::duration_cast<milliseconds>(deadline - now) + milliseconds(1));
    }
  }

  // Sends what the agent lacks, then each new report, until the stream fails or Stop. Returns
  // why it ended ("" for Stop).
  std::string Pump(Stream* stream, uint64_t written_upto) {
    for (;;) {
      DrainQueue();
      PruneAcked();
      for (const Entry& e : buffer_) {
        if (e.seq <= written_upto) continue;
        if (stop_.load()) return "";
        if (!stream->Write(e.message)) return "the stream broke while sending";
        written_upto = e.seq;
        absl::MutexLock lock(&mu_);
        if (e.seq <= highest_written_) {
          ++stats_.resent;
        } else {
          ++stats_.sent;
          highest_written_ = e.seq;
        }
      }
      {
        absl::MutexLock lock(&mu_);
        if (stream_done_) return "the agent closed the stream";
      }
      if (stop_.load()) return "";
      wake_.Wait(kIdleWait);
    }
  }

  // Ack reader, one per stream.
  void ReadAcks(Stream* stream) {
    v1::ShimAck ack;
    while (stream->Read(&ack)) {
      if (ack.shim_epoch() != options_.shim_epoch) continue;  // not about this process life
      {
        absl::MutexLock lock(&mu_);
        got_ack_ = true;
        acked_seq_ = std::max(acked_seq_, ack.spooled_seq());
      }
      wake_.Post();
    }
    {
      absl::MutexLock lock(&mu_);
      stream_done_ = true;
    }
    wake_.Post();
  }

  // Sender thread: reports from the ring into the resend buffer, numbered.
  void DrainQueue() {
    while (std::optional<v1::TelemetryReport> report = queue_.TryPop()) {
      Entry entry;
      entry.seq = next_seq_++;
      entry.message.set_seq(entry.seq);
      entry.message.mutable_report()->Swap(&*report);
      entry.bytes = entry.message.ByteSizeLong();
      if (buffer_.size() >= resend_capacity_) PruneAcked();
      if (buffer_.size() >= resend_capacity_) {
        // Full of unacked reports: the oldest goes, so that the freshest data survives.
        CountDrop(buffer_.front().bytes);
        buffer_.pop_front();
        absl::MutexLock lock(&mu_);
        ++completed_;
        progress_.SignalAll();
      }
      buffer_.push_back(std::move(entry));
      absl::MutexLock lock(&mu_);
      stats_.last_seq = next_seq_ - 1;
    }
  }

  // Sender thread: forgets the reports the agent has acked. A seq never written cannot be in the
  // agent's spool, whatever an ack says.
  void PruneAcked() {
    uint64_t acked = 0;
    {
      absl::MutexLock lock(&mu_);
      acked = std::min(acked_seq_, highest_written_);
    }
    uint64_t pruned = 0;
    while (!buffer_.empty() && buffer_.front().seq <= acked) {
      buffer_.pop_front();
      ++pruned;
    }
    if (pruned != 0) {
      absl::MutexLock lock(&mu_);
      completed_ += pruned;
      progress_.SignalAll();
    }
  }

  const ShimSenderOptions options_;
  const std::string target_;
  const size_t resend_capacity_;
  SpscRing<v1::TelemetryReport> queue_;
  Wakeup wake_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> submitted_{0};
  std::atomic<uint64_t> pending_drop_count_{0};
  std::atomic<uint64_t> pending_drop_bytes_{0};
  std::atomic<uint64_t> total_dropped_{0};

  // Sender thread only.
  std::deque<Entry> buffer_;  // unacked reports, by seq
  uint64_t next_seq_ = 1;
  bool reported_outage_ = false;

  mutable absl::Mutex mu_;
  absl::CondVar progress_;  // completed_ grew
  uint64_t acked_seq_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t highest_written_ ABSL_GUARDED_BY(mu_) = 0;  // highest seq ever written to a stream
  bool got_ack_ ABSL_GUARDED_BY(mu_) = false;
  bool stream_done_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t completed_ ABSL_GUARDED_BY(mu_) = 0;  // reports acked or dropped from the buffer
  grpc::ClientContext* current_context_ ABSL_GUARDED_BY(mu_) = nullptr;
  ShimSenderStats stats_ ABSL_GUARDED_BY(mu_);
};

ShimSender::ShimSender(ShimSenderOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
ShimSender::~ShimSender() = default;
void ShimSender::Start() { impl_->Start(); }
bool ShimSender::Submit(v1::TelemetryReport report) { return impl_->Submit(std::move(report)); }
ShimSender::Drops ShimSender::TakeDrops() { return impl_->TakeDrops(); }
bool ShimSender::Flush(std::chrono::milliseconds timeout) { return impl_->Flush(timeout); }
void ShimSender::Stop() { impl_->Stop(); }
ShimSenderStats ShimSender::stats() const { return impl_->stats(); }

uint64_t NewShimEpoch() {
  std::random_device device;
  uint64_t epoch = 0;
  while (epoch == 0) epoch = (static_cast<uint64_t>(device()) << 32) ^ device();
  return epoch;
}

}  // namespace fleetpmu::telemetry
