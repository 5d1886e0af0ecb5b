// The Ingest service over real gRPC on loopback (plaintext, as with allow_plaintext) with a real
// SQLite storage in a temporary directory.
#include "server/ingest/ingest_service.h"

#include <grpcpp/grpcpp.h>
#include <sqlite3.h>

#include <atomic>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "fleetpmu/v1/ingest.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/storage/sqlite_storage.h"
#include "tests/server/telemetry_fixtures.h"

namespace fleetpmu::server {
namespace {

using ::fleetpmu::server::testing::kBaseUnixNs;
using ::fleetpmu::server::testing::kSecondNs;
using ::fleetpmu::server::testing::MakeBatch;
using ::fleetpmu::server::testing::MakeHostInfo;
using ::fleetpmu::server::testing::TempDir;
using ::fleetpmu::v1::AgentMessage;
using ::fleetpmu::v1::Batch;
using ::fleetpmu::v1::IngestError;
using ::fleetpmu::v1::ServerMessage;
using ::testing::HasSubstr;

// A Storage that forwards to the real SqliteStorage and records how many commits were in
// flight (submitted, not yet done) at each submission. Instrumentation, not a fake: every
// operation really runs on SQLite. With PoisonSeq(s), the first commit of seq s gets a
// HostInfo with a duplicated pCPU, which SQLite really refuses (primary key), so the real
// failure path runs: the transaction's savepoint rolls back and the stream's chain breaks.
class CountingStorage final : public Storage {
 public:
  explicit CountingStorage(Storage* real) : real_(real) {}

  absl::Status SubmitRegistration(AgentRegistration registration,
                                  std::shared_ptr<CommitChain> chain,
                                  RegistrationDone done) override {
    return real_->SubmitRegistration(std::move(registration), std::move(chain), std::move(done));
  }
  absl::Status SubmitCommit(IngestCommit commit, std::shared_ptr<CommitChain> chain,
                            CommitDone done) override {
    absl::MutexLock lock(&mu_);
    if (commit.seq == poison_seq_ && commit.batch != nullptr) {
      poison_seq_ = 0;
      fleetpmu::v1::Batch poisoned = *commit.batch;
      fleetpmu::v1::HostInfo info = MakeHostInfo(commit.host_id);
      info.mutable_pcpus(1)->set_pcpu(0);
      *poisoned.mutable_reports(0)->mutable_host_info() = info;
      commit.batch = std::make_shared<const fleetpmu::v1::Batch>(std::move(poisoned));
    }
    absl::Status status = real_->SubmitCommit(
        std::move(commit), std::move(chain),
        [this, done = std::move(done)](absl::StatusOr<CommitResult> result) mutable {
          {
            absl::MutexLock lock(&mu_);
            --in_flight_;
          }
          done(std::move(result));
        });
    if (status.ok()) {
      ++in_flight_;
      ++submitted_;
      max_in_flight_ = std::max(max_in_flight_, in_flight_);
    }
    return status;
  }
  absl::Status SubmitRetention(int64_t now, RetentionDone done) override {
    return real_->SubmitRetention(now, std::move(done));
  }
  StorageStats Stats() const override { return real_->Stats(); }
  absl::StatusOr<bool> TenantExists(const std::string& t) override {
    return real_->TenantExists(t);
  }
  absl::StatusOr<bool> HostExists(const std::string& h) override { return real_->HostExists(h); }
  absl::StatusOr<bool> TenantRanOnHost(const std::string& t, const std::string& h) override {
    return real_->TenantRanOnHost(t, h);
  }
  absl::StatusOr<uint64_t> DurableSeq(const std::string& h, uint64_t e) override {
    return real_->DurableSeq(h, e);
  }
  absl::StatusOr<Page<fleetpmu::v1::HostSummary>> ListHosts(const std::string& t,
                                                            PageRequest p) override {
    return real_->ListHosts(t, p);
  }
  absl::StatusOr<std::vector<fleetpmu::v1::PcpuOwnership>> GetCounterOwnership(
      const OwnershipQuery& q) override {
    return real_->GetCounterOwnership(q);
  }
  absl::StatusOr<Page<fleetpmu::v1::HostOverflowEvent>> ListOverflowEvents(const OverflowQuery& q,
                                                                           PageRequest p) override {
    return real_->ListOverflowEvents(q, p);
  }
  absl::StatusOr<LostSummary> GetLostOverflowSummary(const LostSummaryQuery& q,
                                                     PageRequest p) override {
    return real_->GetLostOverflowSummary(q, p);
  }
  absl::StatusOr<Page<fleetpmu::v1::HostVcpuStats>> GetVcpuStats(const VcpuStatsQuery& q,
                                                                 PageRequest p) override {
    return real_->GetVcpuStats(q, p);
  }
  absl::StatusOr<int64_t> OldestDataUnixNs() override { return real_->OldestDataUnixNs(); }

  void WaitForSubmitted(int count) {
    absl::MutexLock lock(&mu_);
    target_ = count;
    mu_.Await(absl::Condition(this, &CountingStorage::ReachedTarget));
  }
  void PoisonSeq(uint64_t seq) {
    absl::MutexLock lock(&mu_);
    poison_seq_ = seq;
  }
  int max_in_flight() {
    absl::MutexLock lock(&mu_);
    return max_in_flight_;
  }

 private:
  bool ReachedTarget() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return submitted_ >= target_; }

  Storage* real_;
  mutable absl::Mutex mu_;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int submitted_ ABSL_GUARDED_BY(mu_) = 0;
  int max_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int target_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t poison_seq_ ABSL_GUARDED_BY(mu_) = 0;
};

// Holds the storage writer thread inside a `done` until released.
class WriterGate {
 public:
  void HoldWriter(Storage& storage) {
    IngestCommit commit;
    commit.host_id = "gate";
    commit.agent_epoch = 1;
    commit.seq = next_seq_++;
    commit.rejection_code = IngestError::INVALID_BATCH;
    commit.rejection_reason = "gate";
    ASSERT_TRUE(storage
                    .SubmitCommit(std::move(commit), nullptr,
                                  [this](absl::StatusOr<CommitResult>) {
                                    entered_.Notify();
                                    release_.WaitForNotification();
                                  })
                    .ok());
    entered_.WaitForNotification();
  }
  void Release() { release_.Notify(); }

 private:
  uint64_t next_seq_ = 1;
  absl::Notification entered_;
  absl::Notification release_;
};

// One agent connection, driven step by step by the test.
class AgentStream {
 public:
  explicit AgentStream(fleetpmu::v1::Ingest::Stub& stub) : stream_(stub.Stream(&context_)) {}

  ServerMessage Hello(const std::string& host, uint64_t epoch) {
    AgentMessage message;
    message.mutable_hello()->set_host_id(host);
    message.mutable_hello()->set_agent_epoch(epoch);
    *message.mutable_hello()->mutable_host_info() = MakeHostInfo(host);
    EXPECT_TRUE(stream_->Write(message));
    return Read();
  }
  bool Send(const Batch& batch) {
    AgentMessage message;
    *message.mutable_batch() = batch;
    return stream_->Write(message);
  }
  bool SendRaw(const AgentMessage& message) { return stream_->Write(message); }
  ServerMessage Read() {
    ServerMessage message;
    EXPECT_TRUE(stream_->Read(&message)) << "stream ended";
    return message;
  }
  grpc::Status Close() {
    stream_->WritesDone();
    ServerMessage ignored;
    while (stream_->Read(&ignored)) {
    }
    return stream_->Finish();
  }
  // Reads until the server ends the stream; returns the status.
  grpc::Status Finish() {
    ServerMessage ignored;
    while (stream_->Read(&ignored)) {
    }
    return stream_->Finish();
  }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<AgentMessage, ServerMessage>> stream_;
};

class IngestServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(IngestOptions{}, SqliteStorageOptions{}); }

  void Start(IngestOptions options, SqliteStorageOptions storage_options) {
    Stop();
    storage_options.path = dir_.File("fleetpmu.db");
    absl::StatusOr<std::unique_ptr<SqliteStorage>> storage = SqliteStorage::Open(storage_options);
    ASSERT_TRUE(storage.ok()) << storage.status();
    storage_ = std::move(*storage);
    counting_ = std::make_unique<CountingStorage>(storage_.get());
    options.clock = [this] { return now_.load(); };
    options.limits.max_batch_records =
        options.limits.max_batch_records == 1000 ? 8 : options.limits.max_batch_records;
    service_ = std::make_unique<IngestService>(counting_.get(), options, nullptr);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_->grpc_service());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                   grpc::InsecureChannelCredentials());
    stub_ = fleetpmu::v1::Ingest::NewStub(channel_);
  }

  void Stop() {
    if (server_ != nullptr) server_->Shutdown();
    server_.reset();
    service_.reset();
    counting_.reset();
    storage_.reset();
  }

  void TearDown() override { Stop(); }

  uint64_t StoredLoads() {
    VcpuStatsQuery query;
    query.tenant_id = "tenant-a";
    query.range = {0, kBaseUnixNs + 3600 * kSecondNs};
    auto stats = storage_->GetVcpuStats(query, {0, 100});
    EXPECT_TRUE(stats.ok()) << stats.status();
    uint64_t loads = 0;
    for (const auto& item : stats->items) loads += item.stats().loads();
    return loads;
  }

  static void ExpectAck(const ServerMessage& message, uint64_t durable) {
    ASSERT_EQ(message.body_case(), ServerMessage::kAck) << message.DebugString();
    EXPECT_EQ(message.ack().agent_epoch(), 7u);
    EXPECT_EQ(message.ack().durable_seq(), durable);
  }

  static Batch At(uint64_t seq) {
    return MakeBatch("arm-1", 7, seq, kBaseUnixNs + static_cast<int64_t>(seq) * 10 * kSecondNs);
  }

  TempDir dir_;
  std::atomic<int64_t> now_{kBaseUnixNs + 3600 * kSecondNs};
  std::unique_ptr<SqliteStorage> storage_;
  std::unique_ptr<CountingStorage> counting_;
  std::unique_ptr<IngestService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<fleetpmu::v1::Ingest::Stub> stub_;
};

TEST_F(IngestServiceTest, HelloIsAnsweredWithDurableSeqAndLimits) {
  AgentStream agent(*stub_);
  ServerMessage hello = agent.Hello("arm-1", 7);
  ASSERT_EQ(hello.body_case(), ServerMessage::kHelloAck) << hello.DebugString();
  EXPECT_EQ(hello.hello_ack().host_id(), "arm-1");
  EXPECT_EQ(hello.hello_ack().agent_epoch(), 7u);
  EXPECT_EQ(hello.hello_ack().durable_seq(), 0u);
  EXPECT_EQ(hello.hello_ack().max_batch_records(), 8u);
  EXPECT_EQ(hello.hello_ack().max_message_bytes(), 4u << 20);
  EXPECT_TRUE(agent.Close().ok());
  EXPECT_TRUE(*storage_->HostExists("arm-1"));
}

TEST_F(IngestServiceTest, AckFollowsTheCommit) {
  AgentStream agent(*stub_);
  agent.Hello("arm-1", 7);
  ASSERT_TRUE(agent.Send(At(1)));
  ExpectAck(agent.Read(), 1);
  // The ack came after the commit: the data is readable now, through another connection.
  EXPECT_EQ(*storage_->DurableSeq("arm-1", 7), 1u);
  EXPECT_EQ(StoredLoads(), 200u);
  EXPECT_TRUE(agent.Close().ok());
}

TEST_F(IngestServiceTest, ReplayedSeqIsAckedAndIgnoredAcrossReconnects) {
  {
    AgentStream agent(*stub_);
    agent.Hello("arm-1", 7);
    ASSERT_TRUE(agent.Send(At(1)));
    ExpectAck(agent.Read(), 1);
    ASSERT_TRUE(agent.Send(At(1)));
    ExpectAck(agent.Read(), 1);
    EXPECT_TRUE(agent.Close().ok());
  }
  // The agent restarts and replays its spool: the server's hello says what it has.
  AgentStream agent(*stub_);
  ServerMessage hello = agent.Hello("arm-1", 7);
  EXPECT_EQ(hello.hello_ack().durable_seq(), 1u);
  ASSERT_TRUE(agent.Send(At(1)));
  ExpectAck(agent.Read(), 1);
  ASSERT_TRUE(agent.Send(At(2)));
  ExpectAck(agent.Read(), 2);
  EXPECT_TRUE(agent.Close().ok());
  EXPECT_EQ(StoredLoads(), 400u);
}

TEST_F(IngestServiceTest, BadBatchIsRejectedWithReasonAndTheStreamGoesOn) {
  AgentStream agent(*stub_);
  agent.Hello("arm-1", 7);
  Batch bad = At(2);
  bad.mutable_reports(0)->mutable_vcpu_stats(0)->set_vm_id("vm-404");
  ASSERT_TRUE(agent.Send(At(1)));
  ASSERT_TRUE(agent.Send(bad));
  ASSERT_TRUE(agent.Send(At(3)));
  ExpectAck(agent.Read(), 1);
  ServerMessage error = agent.Read();
  ASSERT_EQ(error.body_case(), ServerMessage::kError) << error.DebugString();
  EXPECT_EQ(error.error().code(), IngestError::INVALID_BATCH);
  EXPECT_EQ(error.error().agent_epoch(), 7u);
  EXPECT_EQ(error.error().seq(), 2u);
  EXPECT_THAT(error.error().reason(),
              HasSubstr("report[0].vcpu_stats[0]: vm_id \"vm-404\" is not in this report's vms"));
  // The rejected seq is recorded: the ack covers it, and the batch around it is stored.
  ExpectAck(agent.Read(), 2);
  ExpectAck(agent.Read(), 3);
  EXPECT_TRUE(agent.Close().ok());
  EXPECT_EQ(StoredLoads(), 400u);
  EXPECT_EQ(service_->validator().Rejected()[static_cast<size_t>(RejectReason::kUnknownVm)], 1u);
}

TEST_F(IngestServiceTest, TooManyReportsIsTooLarge) {
  AgentStream agent(*stub_);
  agent.Hello("arm-1", 7);
  ASSERT_TRUE(agent.Send(MakeBatch("arm-1", 7, 1, kBaseUnixNs, 9)));
  ServerMessage error = agent.Read();
  ASSERT_EQ(error.body_case(), ServerMessage::kError);
  EXPECT_EQ(error.error().code(), IngestError::TOO_LARGE);
  EXPECT_THAT(error.error().reason(), HasSubstr("9 reports exceed 8"));
  ExpectAck(agent.Read(), 1);
  EXPECT_TRUE(agent.Close().ok());
}

TEST_F(IngestServiceTest, SeqZeroIsRefusedWithoutMovingTheCursor) {
  AgentStream agent(*stub_);
  agent.Hello("arm-1", 7);
  ASSERT_TRUE(agent.Send(At(0)));
  ServerMessage error = agent.Read();
  ASSERT_EQ(error.body_case(), ServerMessage::kError);
  EXPECT_EQ(error.error().code(), IngestError::INVALID_BATCH);
  ASSERT_TRUE(agent.Send(At(1)));
  ExpectAck(agent.Read(), 1);
  EXPECT_TRUE(agent.Close().ok());
}

TEST_F(IngestServiceTest, ProtocolErrorsCloseTheStream) {
  {
    AgentStream agent(*stub_);
    ASSERT_TRUE(agent.Send(At(1)));
    grpc::Status status = agent.Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(status.error_message(), HasSubstr("must be an AgentHello"));
  }
  {
    AgentStream agent(*stub_);
    AgentMessage hello;
    hello.mutable_hello()->set_host_id("arm 1");
    hello.mutable_hello()->set_agent_epoch(7);
    ASSERT_TRUE(agent.SendRaw(hello));
    grpc::Status status = agent.Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    AgentStream agent(*stub_);
    agent.Hello("arm-1", 7);
    Batch other_epoch = At(1);
    other_epoch.set_agent_epoch(8);
    ASSERT_TRUE(agent.Send(other_epoch));
    grpc::Status status = agent.Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(status.error_message(), HasSubstr("agent_epoch 8"));
  }
}

TEST_F(IngestServiceTest, ReportForAnotherHostWithoutMtlsIsAnInvalidBatch) {
  AgentStream agent(*stub_);
  agent.Hello("arm-1", 7);
  ASSERT_TRUE(agent.Send(MakeBatch("arm-2", 7, 1, kBaseUnixNs)));
  ServerMessage error = agent.Read();
  ASSERT_EQ(error.body_case(), ServerMessage::kError);
  EXPECT_EQ(error.error().code(), IngestError::INVALID_BATCH);
  EXPECT_THAT(error.error().reason(), HasSubstr("differs from the stream's host \"arm-1\""));
  ExpectAck(agent.Read(), 1);
  EXPECT_TRUE(agent.Close().ok());
}

TEST_F(IngestServiceTest, InFlightBatchesPerStreamAreBounded) {
  IngestOptions options;
  options.max_in_flight_per_stream = 2;
  Start(options, SqliteStorageOptions{});
  AgentStream agent(*stub_);
  agent.Hello("arm-1", 7);
  WriterGate gate;
  gate.HoldWriter(*storage_);
  for (uint64_t seq = 1; seq <= 6; ++seq) ASSERT_TRUE(agent.Send(At(seq)));
  // The server reads two batches, submits them, and then stops reading until one is acked.
  counting_->WaitForSubmitted(2);
  gate.Release();
  for (uint64_t seq = 1; seq <= 6; ++seq) ExpectAck(agent.Read(), seq);
  EXPECT_TRUE(agent.Close().ok());
  EXPECT_EQ(counting_->max_in_flight(), 2);
}

TEST_F(IngestServiceTest, FullStorageQueueRefusesUntilTheAgentResends) {
  SqliteStorageOptions storage_options;
  storage_options.max_queued_ops = 1;
  Start(IngestOptions{}, storage_options);
  AgentStream agent(*stub_);
  agent.Hello("arm-1", 7);
  WriterGate gate;
  gate.HoldWriter(*storage_);
  // Fill the one queue slot.
  IngestCommit filler;
  filler.host_id = "filler";
  filler.agent_epoch = 1;
  filler.seq = 1;
  filler.rejection_code = IngestError::INVALID_BATCH;
  absl::Notification filler_done;
  ASSERT_TRUE(storage_
                  ->SubmitCommit(std::move(filler), nullptr,
                                 [&](absl::StatusOr<CommitResult>) { filler_done.Notify(); })
                  .ok());

  ASSERT_TRUE(agent.Send(At(1)));
  ServerMessage busy = agent.Read();
  ASSERT_EQ(busy.body_case(), ServerMessage::kError) << busy.DebugString();
  EXPECT_EQ(busy.error().code(), IngestError::RESOURCE_EXHAUSTED);
  EXPECT_EQ(busy.error().seq(), 1u);
  EXPECT_THAT(busy.error().reason(), HasSubstr("storage write queue full"));
  // Later seqs are refused too: accepting seq 2 would move the cursor past seq 1.
  ASSERT_TRUE(agent.Send(At(2)));
  ServerMessage waiting = agent.Read();
  ASSERT_EQ(waiting.body_case(), ServerMessage::kError);
  EXPECT_EQ(waiting.error().code(), IngestError::RESOURCE_EXHAUSTED);
  EXPECT_THAT(waiting.error().reason(), HasSubstr("resend from it first"));
  EXPECT_EQ(storage_->Stats().queue_full_refusals, 1u);

  gate.Release();
  filler_done.WaitForNotification();
  // The agent backs off and resends from seq 1.
  ASSERT_TRUE(agent.Send(At(1)));
  ExpectAck(agent.Read(), 1);
  ASSERT_TRUE(agent.Send(At(2)));
  ExpectAck(agent.Read(), 2);
  EXPECT_TRUE(agent.Close().ok());
}

TEST_F(IngestServiceTest, FailedCommitIsUnavailableAndLaterSeqsWaitForTheResend) {
  AgentStream agent(*stub_);
  agent.Hello("arm-1", 7);
  ASSERT_TRUE(agent.Send(At(1)));
  ExpectAck(agent.Read(), 1);
  counting_->PoisonSeq(2);
  WriterGate gate;
  gate.HoldWriter(*storage_);
  ASSERT_TRUE(agent.Send(At(2)));
  ASSERT_TRUE(agent.Send(At(3)));
  // Both are submitted before the commit of seq 2 fails: seq 3 must not commit after it.
  counting_->WaitForSubmitted(3);
  gate.Release();
  for (uint64_t seq : {2, 3}) {
    ServerMessage error = agent.Read();
    ASSERT_EQ(error.body_case(), ServerMessage::kError) << error.DebugString();
    EXPECT_EQ(error.error().code(), IngestError::UNAVAILABLE);
    EXPECT_EQ(error.error().seq(), seq);
    EXPECT_THAT(error.error().reason(), HasSubstr("storage: "));
  }
  EXPECT_EQ(*storage_->DurableSeq("arm-1", 7), 1u);
  // The agent resends from seq 2 on the same stream.
  ASSERT_TRUE(agent.Send(At(2)));
  ExpectAck(agent.Read(), 2);
  ASSERT_TRUE(agent.Send(At(3)));
  ExpectAck(agent.Read(), 3);
  EXPECT_TRUE(agent.Close().ok());
  EXPECT_EQ(StoredLoads(), 600u);
}

TEST_F(IngestServiceTest, RateLimitRefusesUntilTokensRefill) {
  IngestOptions options;
  options.batches_per_second = 0.5;  // burst: one batch
  Start(options, SqliteStorageOptions{});
  AgentStream agent(*stub_);
  agent.Hello("arm-1", 7);
  ASSERT_TRUE(agent.Send(At(1)));
  ExpectAck(agent.Read(), 1);
  ASSERT_TRUE(agent.Send(At(2)));
  ServerMessage limited = agent.Read();
  ASSERT_EQ(limited.body_case(), ServerMessage::kError);
  EXPECT_EQ(limited.error().code(), IngestError::RESOURCE_EXHAUSTED);
  EXPECT_THAT(limited.error().reason(), HasSubstr("rate limit"));
  now_ += 2 * kSecondNs;  // one token
  ASSERT_TRUE(agent.Send(At(2)));
  ExpectAck(agent.Read(), 2);
  EXPECT_TRUE(agent.Close().ok());
}

TEST_F(IngestServiceTest, StreamsBeyondTheLimitAreRefused) {
  IngestOptions options;
  options.max_streams = 1;
  Start(options, SqliteStorageOptions{});
  AgentStream first(*stub_);
  first.Hello("arm-1", 7);
  AgentStream second(*stub_);
  grpc::Status refused = second.Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), HasSubstr("max_streams"));
  EXPECT_TRUE(first.Close().ok());
}

TEST_F(IngestServiceTest, CloseStreamsCancelsOpenStreamsAndRefusesNewOnes) {
  AgentStream agent(*stub_);
  agent.Hello("arm-1", 7);
  ASSERT_TRUE(agent.Send(At(1)));
  ExpectAck(agent.Read(), 1);
  service_->CloseStreams();
  EXPECT_EQ(agent.Finish().error_code(), grpc::StatusCode::CANCELLED);
  AgentStream late(*stub_);
  grpc::Status refused = late.Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(refused.error_message(), HasSubstr("shutting down"));
  EXPECT_EQ(*storage_->DurableSeq("arm-1", 7), 1u);
}

TEST_F(IngestServiceTest, ServerShutdownWithOpenStreamsLosesNothingAcked) {
  AgentStream agent(*stub_);
  agent.Hello("arm-1", 7);
  ASSERT_TRUE(agent.Send(At(1)));
  ExpectAck(agent.Read(), 1);
  server_->Shutdown(std::chrono::system_clock::now());
  grpc::Status status = agent.Finish();
  EXPECT_FALSE(status.ok());
  Stop();
  SqliteStorageOptions options;
  options.path = dir_.File("fleetpmu.db");
  auto reopened = SqliteStorage::Open(options);
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ(*(*reopened)->DurableSeq("arm-1", 7), 1u);
}

}  // namespace
}  // namespace fleetpmu::server
