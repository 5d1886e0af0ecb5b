#include "server/ingest/ingest_service.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "fleetpmu/v1/ingest.grpc.pb.h"
#include "server/security/peer_identity.h"

namespace fleetpmu::server {

using fleetpmu::v1::AgentHello;
using fleetpmu::v1::AgentMessage;
using fleetpmu::v1::Batch;
using fleetpmu::v1::IngestError;
using fleetpmu::v1::ServerMessage;

namespace {

// Token bucket of one stream (ServerLimits.per_stream_batches_per_second, burst 2 s worth).
class TokenBucket {
 public:
  TokenBucket(double rate, int64_t now_unix_ns)
      : rate_(rate), burst_(std::max(1.0, 2 * rate)), tokens_(burst_), last_(now_unix_ns) {}

  bool Take(int64_t now_unix_ns) {
    if (now_unix_ns > last_) {
      tokens_ = std::min(burst_, tokens_ + rate_ * static_cast<double>(now_unix_ns - last_) / 1e9);
      last_ = now_unix_ns;
    }
    if (tokens_ < 1) return false;
    tokens_ -= 1;
    return true;
  }

 private:
  const double rate_;
  const double burst_;
  double tokens_;
  int64_t last_;
};

ServerMessage MakeAck(uint64_t epoch, uint64_t durable_seq) {
  ServerMessage message;
  message.mutable_ack()->set_agent_epoch(epoch);
  message.mutable_ack()->set_durable_seq(durable_seq);
  return message;
}

ServerMessage MakeError(IngestError::Code code, uint64_t epoch, uint64_t seq, std::string reason) {
  ServerMessage message;
  IngestError* error = message.mutable_error();
  error->set_code(code);
  error->set_agent_epoch(epoch);
  error->set_seq(seq);
  error->set_reason(std::move(reason));
  return message;
}

class NullObserver final : public IngestObserver {};

}  // namespace

class IngestService::Impl final : public fleetpmu::v1::Ingest::CallbackService {
 public:
  Impl(Storage* storage, IngestOptions options, IngestObserver* observer)
      : storage_(storage),
        options_(std::move(options)),
        validator_(options_.limits),
        observer_(observer != nullptr ? observer : &null_observer_) {
    if (!options_.clock) options_.clock = [] { return absl::ToUnixNanos(absl::Now()); };
    options_.max_in_flight_per_stream = std::max<uint32_t>(1, options_.max_in_flight_per_stream);
  }

  grpc::ServerBidiReactor<AgentMessage, ServerMessage>* Stream(
      grpc::CallbackServerContext* context) override;

  Storage* storage_;
  IngestOptions options_;
  BatchValidator validator_;
  NullObserver null_observer_;
  IngestObserver* observer_;
  std::atomic<int> active_streams_{0};

  bool NoLiveStreamsLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(streams_mu_) {
    return live_.empty();
  }

  // Open streams, so that CloseStreams() can cancel them.
  mutable absl::Mutex streams_mu_;
  absl::flat_hash_set<grpc::CallbackServerContext*> live_ ABSL_GUARDED_BY(streams_mu_);
  bool closing_ ABSL_GUARDED_BY(streams_mu_) = false;
};

namespace {

// One agent stream. Reads, storage completions and writes run on different threads; every
// decision is taken under mu_, and the gRPC calls it leads to (StartRead, StartWrite, Finish)
// are made after releasing it, Finish last: after Finish, OnDone may delete the stream at
// any moment.
class IngestStream final : public grpc::ServerBidiReactor<AgentMessage, ServerMessage> {
 public:
  IngestStream(IngestService::Impl* service, grpc::CallbackServerContext* context)
      : service_(service), context_(context) {}

  void Start() {
    service_->observer_->StreamOpened();
    if (service_->active_streams_.fetch_add(1) >=
        static_cast<int>(service_->options_.max_streams)) {
      service_->observer_->StreamRefused();
      Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          absl::StrCat("too many ingest streams (limits.max_streams = ",
                                       service_->options_.max_streams, "); retry later")));
      return;
    }
    bool closing = false;
    {
      absl::MutexLock lock(&service_->streams_mu_);
      closing = service_->closing_;
      if (!closing) service_->live_.insert(context_);
    }
    if (closing) {
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is shutting down"));
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      reading_ = true;
    }
    StartRead(&incoming_);
  }

  void OnReadDone(bool ok) override {
    Actions actions;
    if (!ok) {
      absl::MutexLock lock(&mu_);
      reading_ = false;
      read_closed_ = true;
      Decide(actions);
    } else if (first_message_) {
      first_message_ = false;
      HandleHello(actions);
    } else {
      HandleMessage(actions);
    }
    Run(actions);
  }

  void OnWriteDone(bool ok) override {
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) write_failed_ = true;
      Decide(actions);
    }
    Run(actions);
  }

  void OnCancel() override {}

  void OnDone() override {
    {
      absl::MutexLock lock(&service_->streams_mu_);
      service_->live_.erase(context_);
    }
    service_->active_streams_.fetch_sub(1);
    service_->observer_->StreamClosed();
    delete this;
  }

 private:
  // gRPC calls decided under mu_, made after it is released.
  struct Actions {
    bool start_read = false;
    const ServerMessage* start_write = nullptr;
    std::optional<grpc::Status> finish;
  };

  void Run(const Actions& actions) {
    if (actions.start_read) StartRead(&incoming_);
    if (actions.start_write != nullptr) StartWrite(actions.start_write);
    // Last: `this` may be gone right after.
    if (actions.finish.has_value()) Finish(*actions.finish);
  }

  // Picks the next write, resumes reading, or finishes, from the current state.
  void Decide(Actions& actions) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    if (write_failed_) outbox_.clear();
    if (!writing_ && !outbox_.empty()) {
      current_write_ = std::move(outbox_.front());
      outbox_.pop_front();
      writing_ = true;
      actions.start_write = &current_write_;
    }
    // Reading stops while the window is full, and while answers pile up unsent (an agent that
    // does not read its acks): both bound what one stream holds.
    if (hello_done_ && !reading_ && !read_closed_ && !fatal_.has_value() &&
        in_flight_ < service_->options_.max_in_flight_per_stream &&
        outbox_.size() < 2 * static_cast<size_t>(service_->options_.max_in_flight_per_stream) + 2) {
      reading_ = true;
      actions.start_read = true;
    }
    const bool input_over = read_closed_ || fatal_.has_value();
    if (input_over && !reading_ && !writing_ && in_flight_ == 0 && outbox_.empty()) {
      finished_ = true;
      actions.finish = fatal_.value_or(grpc::Status::OK);
    }
  }

  // A stream-level error: say why (when `error` is set), stop reading, close once drained.
  void FailLocked(grpc::StatusCode code, const std::string& message,
                  std::optional<ServerMessage> error, Actions& actions)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (error.has_value()) outbox_.push_back(std::move(*error));
    if (!fatal_.has_value()) fatal_ = grpc::Status(code, message);
    Decide(actions);
  }

  void HandleHello(Actions& actions) {
    AgentMessage message = std::move(incoming_);
    absl::MutexLock lock(&mu_);
    reading_ = false;
    if (message.body_case() != AgentMessage::kHello) {
      FailLocked(grpc::StatusCode::FAILED_PRECONDITION,
                 "the first message of an Ingest stream must be an AgentHello", std::nullopt,
                 actions);
      return;
    }
    AgentHello& hello = *message.mutable_hello();
    if (!IsValidIdentity(hello.host_id())) {
      FailLocked(grpc::StatusCode::INVALID_ARGUMENT,
                 absl::StrCat("hello.host_id \"", absl::CHexEscape(hello.host_id()),
                              "\" is not 1..128 bytes of [A-Za-z0-9._-]"),
                 std::nullopt, actions);
      return;
    }
    // A verified client certificate names the host, whether or not mTLS is required.
    std::optional<std::string> certified;
    if (auto auth = context_->auth_context(); auth != nullptr) {
      certified = CertificateHostId(*auth);
    }
    if (!certified.has_value() && service_->options_.identity_from_certificate) {
      FailLocked(grpc::StatusCode::UNAUTHENTICATED,
                 "mTLS is on and the peer presented no verified client certificate", std::nullopt,
                 actions);
      return;
    }
    if (certified.has_value() && *certified != hello.host_id()) {
      const std::string reason = absl::StrCat("hello.host_id \"", hello.host_id(),
                                              "\" differs from the client certificate's \"",
                                              absl::CHexEscape(*certified), "\"");
      FailLocked(grpc::StatusCode::PERMISSION_DENIED, reason,
                 MakeError(IngestError::PERMISSION_DENIED_HOST, hello.agent_epoch(), 0, reason),
                 actions);
      return;
    }
    certified_ = certified.has_value();
    if (hello.agent_epoch() == 0) {
      FailLocked(grpc::StatusCode::INVALID_ARGUMENT, "hello.agent_epoch: 0 (required, > 0)",
                 std::nullopt, actions);
      return;
    }
    if (!hello.has_host_info()) {
      FailLocked(grpc::StatusCode::INVALID_ARGUMENT, "hello.host_info: missing (required)",
                 std::nullopt, actions);
      return;
    }
    RejectReason reason;
    absl::Status info = service_->validator_.ValidateHostInfo(hello.host_info(), hello.host_id(),
                                                              "hello.host_info", &reason);
    if (!info.ok()) {
      const bool denied = reason == RejectReason::kHostMismatch && certified_;
      FailLocked(denied ? grpc::StatusCode::PERMISSION_DENIED : grpc::StatusCode::INVALID_ARGUMENT,
                 std::string(info.message()),
                 denied ? std::optional<ServerMessage>(
                              MakeError(IngestError::PERMISSION_DENIED_HOST, hello.agent_epoch(), 0,
                                        std::string(info.message())))
                        : std::nullopt,
                 actions);
      return;
    }

    host_id_ = hello.host_id();
    epoch_ = hello.agent_epoch();
    host_context_.host_id = host_id_;
    host_context_.ApplyHostInfo(hello.host_info());
    bucket_.emplace(service_->options_.batches_per_second, service_->options_.clock());

    AgentRegistration registration;
    registration.host_id = host_id_;
    registration.agent_epoch = epoch_;
    registration.host_info = std::move(*hello.mutable_host_info());
    registration.now_unix_ns = service_->options_.clock();
    const fleetpmu::v1::HostInfo info_copy = registration.host_info;
    ++in_flight_;
    absl::Status submitted = service_->storage_->SubmitRegistration(
        std::move(registration), chain_,
        [this, info_copy](absl::StatusOr<RegistrationResult> result) {
          OnRegistered(std::move(result), info_copy);
        });
    if (!submitted.ok()) {
      --in_flight_;
      FailLocked(grpc::StatusCode::UNAVAILABLE,
                 absl::StrCat("cannot register the agent: ", submitted.message()),
                 MakeError(IngestError::UNAVAILABLE, epoch_, 0, std::string(submitted.message())),
                 actions);
    }
  }

  void OnRegistered(absl::StatusOr<RegistrationResult> result, const fleetpmu::v1::HostInfo& info) {
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      --in_flight_;
      if (!result.ok()) {
        FailLocked(grpc::StatusCode::UNAVAILABLE,
                   absl::StrCat("storage: ", result.status().message()),
                   MakeError(IngestError::UNAVAILABLE, epoch_, 0,
                             absl::StrCat("storage: ", result.status().message())),
                   actions);
      } else {
        for (fleetpmu::v1::VmInfo& vm : result->vms) {
          std::string vm_id = vm.vm_id();
          host_context_.vms.emplace(std::move(vm_id), std::move(vm));
        }
        known_durable_ = result->durable_seq;
        ServerMessage ack;
        fleetpmu::v1::HelloAck* hello_ack = ack.mutable_hello_ack();
        hello_ack->set_host_id(host_id_);
        hello_ack->set_agent_epoch(epoch_);
        hello_ack->set_durable_seq(result->durable_seq);
        hello_ack->set_max_message_bytes(service_->options_.limits.max_message_bytes);
        hello_ack->set_max_batch_records(service_->options_.limits.max_batch_records);
        outbox_.push_back(std::move(ack));
        hello_done_ = true;
        service_->observer_->HelloAccepted(host_id_, info);
        Decide(actions);
      }
    }
    Run(actions);
  }

  // Refuses `seq` for now; later seqs are refused too until it comes again.
  void RefuseLocked(RefusalReason why, IngestError::Code code, uint64_t seq, std::string reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    service_->observer_->BatchRefused(host_id_, why);
    if (!resend_from_.has_value() || seq < *resend_from_) resend_from_ = seq;
    outbox_.push_back(MakeError(code, epoch_, seq, std::move(reason)));
  }

  void HandleMessage(Actions& actions) {
    AgentMessage message = std::move(incoming_);
    incoming_.Clear();
    if (message.body_case() != AgentMessage::kBatch) {
      absl::MutexLock lock(&mu_);
      reading_ = false;
      FailLocked(grpc::StatusCode::FAILED_PRECONDITION,
                 message.body_case() == AgentMessage::kHello ? "a second AgentHello on the stream"
                                                             : "an AgentMessage without a body",
                 std::nullopt, actions);
      return;
    }
    const size_t bytes = message.ByteSizeLong();
    auto batch = std::make_shared<Batch>(std::move(*message.mutable_batch()));
    const uint64_t seq = batch->seq();
    const int64_t now = service_->options_.clock();

    // Checks that need no validation, then validation outside the lock (the read path is the
    // only user of host_context_, one read at a time).
    {
      absl::MutexLock lock(&mu_);
      if (batch->agent_epoch() != epoch_) {
        reading_ = false;
        FailLocked(grpc::StatusCode::FAILED_PRECONDITION,
                   absl::StrCat("batch seq ", seq, " has agent_epoch ", batch->agent_epoch(),
                                " but the stream's hello said ", epoch_),
                   std::nullopt, actions);
        return;
      }
      if (seq != 0 && seq <= known_durable_) {
        // A replay of what is already durable: acknowledged, not stored again.
        service_->observer_->BatchDuplicate(host_id_);
        outbox_.push_back(MakeAck(epoch_, known_durable_));
        reading_ = false;
        Decide(actions);
        return;
      }
    }

    RejectReason reason = RejectReason::kOutOfRange;
    const absl::Status valid =
        service_->validator_.Validate(*batch, bytes, now, host_context_, &reason);

    absl::MutexLock lock(&mu_);
    reading_ = false;
    if (!valid.ok()) {
      if (reason == RejectReason::kHostMismatch && certified_) {
        service_->observer_->BatchRejected(host_id_, reason);
        const std::string why = absl::StrCat("batch seq ", seq, ": ", valid.message());
        FailLocked(grpc::StatusCode::PERMISSION_DENIED, why,
                   MakeError(IngestError::PERMISSION_DENIED_HOST, epoch_, seq, why), actions);
        return;
      }
      if (reason == RejectReason::kBadSeq) {
        // seq 0 cannot be recorded (the cursor starts at 0): refuse it without a commit.
        service_->observer_->BatchRejected(host_id_, reason);
        outbox_.push_back(
            MakeError(IngestError::INVALID_BATCH, epoch_, seq, std::string(valid.message())));
        Decide(actions);
        return;
      }
    }
    if (resend_from_.has_value()) {
      if (seq > *resend_from_) {
        RefuseLocked(
            RefusalReason::kAwaitingResend, IngestError::RESOURCE_EXHAUSTED, seq,
            absl::StrCat("seq ", *resend_from_, " was refused earlier; resend from it first"));
        Decide(actions);
        return;
      }
      resend_from_.reset();
    }
    if (!bucket_->Take(now)) {
      RefuseLocked(
          RefusalReason::kRateLimited, IngestError::RESOURCE_EXHAUSTED, seq,
          absl::StrCat("rate limit: more than ", service_->options_.batches_per_second,
                       " batches/s on this stream; resend from seq ", seq, " after backoff"));
      Decide(actions);
      return;
    }

    IngestCommit commit;
    commit.host_id = host_id_;
    commit.agent_epoch = epoch_;
    commit.seq = seq;
    commit.now_unix_ns = now;
    commit.bytes = bytes;
    IngestError::Code rejection = IngestError::CODE_UNSPECIFIED;
    if (valid.ok()) {
      commit.batch = batch;
    } else {
      rejection = TooLarge(reason) ? IngestError::TOO_LARGE : IngestError::INVALID_BATCH;
      commit.rejection_code = rejection;
      commit.rejection_reason = std::string(valid.message());
      commit.bytes = commit.rejection_reason.size();
    }
    const std::string rejection_reason = commit.rejection_reason;
    ++in_flight_;
    // Submitted under mu_ so that a storage failure (which replaces chain_ and sets
    // resend_from_) is ordered with this submission: see OnCommitted.
    absl::Status submitted = service_->storage_->SubmitCommit(
        std::move(commit), chain_,
        [this, batch, seq, rejection, reason,
         rejection_reason](absl::StatusOr<CommitResult> result) {
          OnCommitted(std::move(result), *batch, seq, rejection, reason, rejection_reason);
        });
    if (!submitted.ok()) {
      --in_flight_;
      const bool busy = submitted.code() == absl::StatusCode::kResourceExhausted;
      RefuseLocked(busy ? RefusalReason::kStorageBusy : RefusalReason::kStorageFailed,
                   busy ? IngestError::RESOURCE_EXHAUSTED : IngestError::UNAVAILABLE, seq,
                   std::string(submitted.message()));
    }
    Decide(actions);
  }

  void OnCommitted(absl::StatusOr<CommitResult> result, const Batch& batch, uint64_t seq,
                   IngestError::Code rejection, RejectReason reason,
                   const std::string& rejection_reason) {
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      --in_flight_;
      if (!result.ok()) {
        // The storage chain of this stream is broken: every op submitted after this one fails
        // too. Start a new chain and refuse later seqs until the agent resends this one.
        chain_ = std::make_shared<CommitChain>();
        RefuseLocked(RefusalReason::kStorageFailed, IngestError::UNAVAILABLE, seq,
                     absl::StrCat("storage: ", result.status().message()));
      } else {
        known_durable_ = std::max(known_durable_, result->durable_seq);
        switch (result->outcome) {
          case CommitResult::Outcome::kStored:
            service_->observer_->BatchStored(host_id_, batch, service_->options_.clock());
            break;
          case CommitResult::Outcome::kRejectionRecorded:
            service_->observer_->BatchRejected(host_id_, reason);
            outbox_.push_back(MakeError(rejection, epoch_, seq, rejection_reason));
            break;
          case CommitResult::Outcome::kDuplicate:
            service_->observer_->BatchDuplicate(host_id_);
            break;
        }
        outbox_.push_back(MakeAck(epoch_, result->durable_seq));
      }
      Decide(actions);
    }
    Run(actions);
  }

  IngestService::Impl* const service_;
  grpc::CallbackServerContext* const context_;

  // The read path only (one OnReadDone at a time; Start/OnRegistered hand over through mu_).
  AgentMessage incoming_;
  bool first_message_ = true;
  // The host comes from a verified client certificate: a report for another host is
  // PERMISSION_DENIED, not an invalid batch.
  bool certified_ = false;
  HostContext host_context_;
  std::optional<TokenBucket> bucket_;

  absl::Mutex mu_;
  bool hello_done_ ABSL_GUARDED_BY(mu_) = false;
  std::string host_id_;  // set once, before hello_done_
  uint64_t epoch_ = 0;   // set once, before hello_done_
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  bool read_closed_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool write_failed_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  uint32_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t known_durable_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<uint64_t> resend_from_ ABSL_GUARDED_BY(mu_);
  std::optional<grpc::Status> fatal_ ABSL_GUARDED_BY(mu_);
  std::deque<ServerMessage> outbox_ ABSL_GUARDED_BY(mu_);
  ServerMessage current_write_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<CommitChain> chain_ ABSL_GUARDED_BY(mu_) = std::make_shared<CommitChain>();
};

}  // namespace

grpc::ServerBidiReactor<AgentMessage, ServerMessage>* IngestService::Impl::Stream(
    grpc::CallbackServerContext* context) {
  auto* stream = new IngestStream(this, context);
  stream->Start();
  return stream;
}

IngestService::IngestService(Storage* storage, IngestOptions options, IngestObserver* observer)
    : impl_(std::make_unique<Impl>(storage, std::move(options), observer)) {}

IngestService::~IngestService() = default;

grpc::Service* IngestService::grpc_service() { return impl_.get(); }

const BatchValidator& IngestService::validator() const { return impl_->validator_; }

int IngestService::active_streams() const { return impl_->active_streams_.load(); }

bool IngestService::WaitForStreamsClosed(absl::Time deadline) {
  absl::MutexLock lock(&impl_->streams_mu_);
  return impl_->streams_mu_.AwaitWithDeadline(
      absl::Condition(impl_.get(), &IngestService::Impl::NoLiveStreamsLocked), deadline);
}

void IngestService::CloseStreams() {
  absl::MutexLock lock(&impl_->streams_mu_);
  impl_->closing_ = true;
  // Under the lock: a stream cannot reach its OnDone (and be deleted) meanwhile.
  for (grpc::CallbackServerContext* context : impl_->live_) context->TryCancel();
}

}  // namespace fleetpmu::server
