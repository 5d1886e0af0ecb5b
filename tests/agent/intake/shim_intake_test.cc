// The agent's ShimTelemetry server with real gRPC clients on a real unix socket and a real
// SQLite spool.
#include "agent/intake/shim_intake.h"

#include <grpcpp/grpcpp.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "fleetpmu/v1/shim_telemetry.grpc.pb.h"
#include "gtest/gtest.h"

namespace fleetpmu::agent {
namespace {

namespace fs = std::filesystem;

class ShimIntakeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("fleetpmu-intake-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    OpenAgent();
  }
  void TearDown() override {
    intake_.reset();
    spool_.reset();
    fs::remove_all(dir_);
  }
  void OpenAgent(int max_message_bytes = 1 << 20) {
    intake_.reset();
    spool_.reset();
    auto spool = Spool::Open({.path = (dir_ / "spool.db").string(), .new_epoch = 9});
    ASSERT_TRUE(spool.ok()) << spool.status();
    spool_ = std::move(*spool);
    ShimIntakeOptions o;
    o.socket_path = socket();
    o.host_id = "arm-17";
    o.max_message_bytes = max_message_bytes;
    o.host_facts.set_kernel("6.1-test");
    (*o.host_facts.mutable_kvm_capabilities())["KVM_CAP_ARM_PMU_V3"] = "1";
    auto intake = ShimIntake::Start(o, spool_.get());
    ASSERT_TRUE(intake.ok()) << intake.status();
    intake_ = std::move(*intake);
  }
  std::string socket() const { return (dir_ / "shim.sock").string(); }
  std::unique_ptr<v1::ShimTelemetry::Stub> Stub() {
    return v1::ShimTelemetry::NewStub(grpc::CreateChannel("unix:" + socket(), grpc::InsecureChannelCredentials()));
  }
  static v1::ShimMessage Hello(const std::string& id, uint64_t epoch) {
    v1::ShimMessage m;
    m.mutable_hello()->set_shim_id(id);
    m.mutable_hello()->set_shim_epoch(epoch);
    m.mutable_hello()->set_backend(v1::BACKEND_SIM);
    return m;
  }
  static v1::ShimMessage Report(uint64_t seq, size_t padding = 0) {
    v1::ShimMessage m;
    m.set_seq(seq);
    v1::TelemetryReport* r = m.mutable_report();
    r->set_host_id("whatever-the-shim-thinks");
    r->mutable_interval()->set_start_unix_ns(static_cast<int64_t>(seq) * 10);
    r->mutable_interval()->set_end_unix_ns(static_cast<int64_t>(seq) * 10 + 10);
    if (padding) r->add_vms()->set_vm_id(std::string(padding, 'p'));
    return m;
  }

  fs::path dir_;
  std::unique_ptr<Spool> spool_;
  std::unique_ptr<ShimIntake> intake_;
};

TEST_F(ShimIntakeTest, SpoolsEachReportBeforeAcknowledgingIt) {
  auto stub = Stub();
  grpc::ClientContext ctx;
  auto stream = stub->Publish(&ctx);
  // The kvm shim probes the per-vCPU PMU attributes (it alone opens /dev/kvm read-write); the
  // agent adds its own facts without losing them.
  v1::ShimMessage hello = Hello("shim-a", 100);
  (*hello.mutable_hello()->mutable_host_info()->mutable_kvm_capabilities())["KVM_ARM_VCPU_PMU_V3_SET_NR_COUNTERS"] = "1";
  ASSERT_TRUE(stream->Write(hello));
  v1::ShimAck ack;
  ASSERT_TRUE(stream->Read(&ack));
  EXPECT_EQ(ack.spooled_seq(), 0u);
  for (uint64_t seq = 1; seq <= 3; ++seq) {
    ASSERT_TRUE(stream->Write(Report(seq)));
    ASSERT_TRUE(stream->Read(&ack));
    EXPECT_EQ(ack.spooled_seq(), seq);
    EXPECT_EQ(ack.shim_epoch(), 100u);
    // Acknowledged means durable: the spool already has it.
    EXPECT_EQ(spool_->stats().batches, seq);
  }
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  auto batches = spool_->ReadAfter(0, 10);
  ASSERT_TRUE(batches.ok());
  v1::Batch first;
  ASSERT_TRUE(first.ParseFromString((*batches)[0].serialized));
  EXPECT_EQ(first.reports(0).host_id(), "arm-17") << "the agent's identity wins";
  EXPECT_EQ(first.reports(0).host_info().kernel(), "6.1-test");
  const auto& kvm = first.reports(0).host_info().kvm_capabilities();
  EXPECT_EQ(kvm.count("KVM_CAP_ARM_PMU_V3"), 1u) << "the agent's probe";
  EXPECT_EQ(kvm.count("KVM_ARM_VCPU_PMU_V3_SET_NR_COUNTERS"), 1u) << "the shim's vCPU probe";
  EXPECT_EQ(intake_->counters().reports_spooled.load(), 3u);
}

TEST_F(ShimIntakeTest, ReconnectingShimLearnsWhereToResumeEvenAfterAnAgentRestart) {
  {
    auto stub = Stub();
    grpc::ClientContext ctx;
    auto stream = stub->Publish(&ctx);
    ASSERT_TRUE(stream->Write(Hello("shim-a", 100)));
    v1::ShimAck ack;
    ASSERT_TRUE(stream->Read(&ack));
    for (uint64_t seq = 1; seq <= 4; ++seq) {
      ASSERT_TRUE(stream->Write(Report(seq)));
      ASSERT_TRUE(stream->Read(&ack));
    }
    ctx.TryCancel();
    (void)stream->Finish();
  }
  OpenAgent();  // the agent restarts on the same spool
  auto stub = Stub();
  grpc::ClientContext ctx;
  auto stream = stub->Publish(&ctx);
  ASSERT_TRUE(stream->Write(Hello("shim-a", 100)));
  v1::ShimAck ack;
  ASSERT_TRUE(stream->Read(&ack));
  EXPECT_EQ(ack.spooled_seq(), 4u);
  // A resent report is acknowledged and not stored twice.
  ASSERT_TRUE(stream->Write(Report(4)));
  ASSERT_TRUE(stream->Read(&ack));
  EXPECT_EQ(ack.spooled_seq(), 4u);
  ASSERT_TRUE(stream->Write(Report(5)));
  ASSERT_TRUE(stream->Read(&ack));
  EXPECT_EQ(ack.spooled_seq(), 5u);
  EXPECT_EQ(spool_->stats().batches, 5u);
  EXPECT_EQ(intake_->counters().reports_replayed.load(), 1u);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(ShimIntakeTest, MisbehavingShimIsCutOffWhileAnotherGoesOn) {
  auto stub = Stub();
  grpc::ClientContext good_ctx;
  auto good = stub->Publish(&good_ctx);
  ASSERT_TRUE(good->Write(Hello("good", 1)));
  v1::ShimAck ack;
  ASSERT_TRUE(good->Read(&ack));

  {  // no hello first
    grpc::ClientContext ctx;
    auto bad = stub->Publish(&ctx);
    ASSERT_TRUE(bad->Write(Report(1)));
    bad->WritesDone();
    grpc::Status s = bad->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(s.error_message().find("ShimHello"), std::string::npos) << s.error_message();
  }
  {  // an interval that ends before it starts
    grpc::ClientContext ctx;
    auto bad = stub->Publish(&ctx);
    ASSERT_TRUE(bad->Write(Hello("bad", 2)));
    ASSERT_TRUE(bad->Read(&ack));
    v1::ShimMessage m = Report(1);
    m.mutable_report()->mutable_interval()->set_end_unix_ns(0);
    ASSERT_TRUE(bad->Write(m));
    bad->WritesDone();
    EXPECT_EQ(bad->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {  // too large
    grpc::ClientContext ctx;
    auto bad = stub->Publish(&ctx);
    ASSERT_TRUE(bad->Write(Hello("huge", 3)));
    ASSERT_TRUE(bad->Read(&ack));
    (void)bad->Write(Report(1, 2 << 20));
    bad->WritesDone();
    EXPECT_EQ(bad->Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  ASSERT_TRUE(good->Write(Report(1)));
  ASSERT_TRUE(good->Read(&ack));
  EXPECT_EQ(ack.spooled_seq(), 1u) << "the well-behaved shim was not disturbed";
  good->WritesDone();
  EXPECT_TRUE(good->Finish().ok());
  EXPECT_EQ(intake_->counters().streams_cut_off.load(), 2u);
  EXPECT_EQ(spool_->stats().batches, 1u);
}

TEST_F(ShimIntakeTest, SocketHasTheConfiguredMode) {
  struct stat st;
  ASSERT_EQ(::stat(socket().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
}

TEST_F(ShimIntakeTest, RefusesToReplaceSomethingThatIsNotASocket) {
  intake_.reset();
  std::ofstream(dir_ / "file") << "x";
  ShimIntakeOptions o;
  o.socket_path = (dir_ / "file").string();
  auto intake = ShimIntake::Start(o, spool_.get());
  ASSERT_FALSE(intake.ok());
  EXPECT_NE(intake.status().message().find("not a socket"), absl::string_view::npos);
}

}  // namespace
}  // namespace fleetpmu::agent
