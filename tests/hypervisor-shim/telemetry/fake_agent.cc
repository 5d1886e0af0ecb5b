#include "tests/hypervisor-shim/telemetry/fake_agent.h"

#include <unistd.h>

#include <chrono>
#include <utility>

#include "fleetpmu/v1/shim_telemetry.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace fleetpmu::telemetry::testing {

class FakeAgent::Service final : public v1::ShimTelemetry::Service {
 public:
  explicit Service(FakeAgent* agent) : agent_(agent) {}

  grpc::Status Publish(grpc::ServerContext* /*context*/,
                       grpc::ServerReaderWriter<v1::ShimAck, v1::ShimMessage>* stream) override {
    v1::ShimMessage message;
    if (!stream->Read(&message)) return grpc::Status::OK;
    if (!message.has_hello()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the first ShimMessage must be a hello");
    }
    const uint64_t epoch = message.hello().shim_epoch();
    v1::ShimAck ack;
    ack.set_shim_epoch(epoch);
    bool acking = false;
    {
      absl::MutexLock lock(&agent_->mu_);
      agent_->hellos_.push_back(message.hello());
      ack.set_spooled_seq(agent_->spooled_seq_[epoch]);
      acking = agent_->acks_ != Acks::kNone;
      agent_->changed_.SignalAll();
    }
    if (acking && !stream->Write(ack)) return grpc::Status::OK;
    while (stream->Read(&message)) {
      if (!message.has_report()) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "a ShimMessage after the hello must be a report");
      }
      {
        absl::MutexLock lock(&agent_->mu_);
        agent_->changed_.SignalAll();
        if (!agent_->spooling_) {
          ++agent_->discarded_;
          continue;
        }
        uint64_t& spooled = agent_->spooled_seq_[epoch];
        if (message.seq() <= spooled) {
          ++agent_->duplicates_;
        } else {
          if (message.seq() != spooled + 1) ++agent_->gaps_;
          spooled = message.seq();
          agent_->spooled_.push_back({epoch, message.seq(), std::move(*message.mutable_report())});
        }
        ack.set_spooled_seq(spooled);
        acking = agent_->acks_ == Acks::kAll;
      }
      if (acking && !stream->Write(ack)) break;
    }
    return grpc::Status::OK;
  }

 private:
  FakeAgent* const agent_;
};

FakeAgent::FakeAgent(std::string socket_path)
    : socket_path_(std::move(socket_path)), service_(std::make_unique<Service>(this)) {}

FakeAgent::~FakeAgent() { Stop(); }

absl::Status FakeAgent::Start() {
  if (server_ != nullptr) return absl::FailedPreconditionError("fake agent already started");
  ::unlink(socket_path_.c_str());  // a socket file left by the previous instance
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + socket_path_, grpc::InsecureServerCredentials());
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  if (server_ == nullptr) return absl::UnavailableError("fake agent cannot listen on unix:" + socket_path_);
  return absl::OkStatus();
}

void FakeAgent::Stop() {
  if (server_ == nullptr) return;
  // A deadline of now cancels open streams at once, as when an agent process dies.
  server_->Shutdown(std::chrono::system_clock::now());
  server_->Wait();
  server_.reset();
}

void FakeAgent::set_spooling(bool on) {
  absl::MutexLock lock(&mu_);
  spooling_ = on;
}

void FakeAgent::set_acks(Acks acks) {
  absl::MutexLock lock(&mu_);
  acks_ = acks;
}

std::vector<FakeAgent::Spooled> FakeAgent::spooled() const {
  absl::MutexLock lock(&mu_);
  return spooled_;
}

std::vector<v1::ShimHello> FakeAgent::hellos() const {
  absl::MutexLock lock(&mu_);
  return hellos_;
}

uint64_t FakeAgent::duplicates() const {
  absl::MutexLock lock(&mu_);
  return duplicates_;
}

uint64_t FakeAgent::gaps() const {
  absl::MutexLock lock(&mu_);
  return gaps_;
}

uint64_t FakeAgent::discarded() const {
  absl::MutexLock lock(&mu_);
  return discarded_;
}

bool FakeAgent::WaitForSpooled(size_t count, absl::Duration timeout) const {
  const absl::Time deadline = absl::Now() + timeout;
  absl::MutexLock lock(&mu_);
  while (spooled_.size() < count && !changed_.WaitWithDeadline(&mu_, deadline)) {
  }
  return spooled_.size() >= count;
}

bool FakeAgent::WaitForHellos(size_t count, absl::Duration timeout) const {
  const absl::Time deadline = absl::Now() + timeout;
  absl::MutexLock lock(&mu_);
  while (hellos_.size() < count && !changed_.WaitWithDeadline(&mu_, deadline)) {
  }
  return hellos_.size() >= count;
}

bool FakeAgent::WaitForDiscarded(uint64_t count, absl::Duration timeout) const {
  const absl::Time deadline = absl::Now() + timeout;
  absl::MutexLock lock(&mu_);
  while (discarded_ < count && !changed_.WaitWithDeadline(&mu_, deadline)) {
  }
  return discarded_ >= count;
}

}  // namespace fleetpmu::telemetry::testing
