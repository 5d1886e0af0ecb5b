// The fleetpmu-server binary as a process: start from a config file, ingest over gRPC, clean
// shutdown on SIGTERM and SIGINT, and nothing acked lost across the restart.
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <fstream>
#include <regex>
#include <string>

#include "absl/time/clock.h"
#include "fleetpmu/v1/ingest.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/subprocess.h"
#include "tests/server/telemetry_fixtures.h"

namespace fleetpmu::server {
namespace {

using ::fleetpmu::server::testing::kSecondNs;
using ::fleetpmu::server::testing::MakeBatch;
using ::fleetpmu::server::testing::MakeHostInfo;
using ::fleetpmu::server::testing::ProgramResult;
using ::fleetpmu::server::testing::RunningProgram;
using ::fleetpmu::server::testing::RunProgram;
using ::fleetpmu::server::testing::TempDir;
using ::fleetpmu::v1::AgentMessage;
using ::fleetpmu::v1::ServerMessage;
using ::testing::HasSubstr;

int PortOf(const std::string& line) {
  std::smatch match;
  const std::regex port(" port ([0-9]+)");
  return std::regex_search(line, match, port) ? std::stoi(match[1]) : 0;
}

class ServerMainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::ofstream config(dir_.File("server.textproto"));
    config << "ingest_listen: \"127.0.0.1:0\"\n"
           << "query_listen: \"127.0.0.2:0\"\n"
           << "metrics_listen: \"127.0.0.3:0\"\n"
           << "allow_plaintext: true\n"
           << "storage { sqlite_path: \"" << dir_.File("fleetpmu.db") << "\" }\n";
  }

  // Starts the server and waits until it says it is ready; fills the ingest port.
  std::unique_ptr<RunningProgram> StartServer() {
    auto server = std::make_unique<RunningProgram>(
        std::vector<std::string>{FLEETPMU_SERVER, "--config", dir_.File("server.textproto")});
    const std::string ingest = server->WaitForLine("ingest listening on");
    ingest_port_ = PortOf(ingest);
    EXPECT_GT(ingest_port_, 0) << server->log();
    EXPECT_THAT(server->WaitForLine("ready"), HasSubstr("ready")) << server->log();
    return server;
  }

  // Hello as arm-1 epoch 7; returns HelloAck.durable_seq, then sends `batches` batches from
  // durable_seq + 1 and waits for each ack.
  uint64_t Ingest(int batches) {
    auto stub = fleetpmu::v1::Ingest::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(ingest_port_), grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    auto stream = stub->Stream(&context);
    AgentMessage hello;
    hello.mutable_hello()->set_host_id("arm-1");
    hello.mutable_hello()->set_agent_epoch(7);
    *hello.mutable_hello()->mutable_host_info() = MakeHostInfo("arm-1");
    EXPECT_TRUE(stream->Write(hello));
    ServerMessage reply;
    EXPECT_TRUE(stream->Read(&reply));
    const uint64_t durable = reply.hello_ack().durable_seq();
    const int64_t start = absl::ToUnixNanos(absl::Now()) - 600 * kSecondNs;
    for (int i = 1; i <= batches; ++i) {
      AgentMessage batch;
      *batch.mutable_batch() = MakeBatch("arm-1", 7, durable + i, start + i * 10 * kSecondNs);
      EXPECT_TRUE(stream->Write(batch));
      EXPECT_TRUE(stream->Read(&reply));
      EXPECT_EQ(reply.ack().durable_seq(), durable + i) << reply.DebugString();
    }
    stream->WritesDone();
    EXPECT_TRUE(stream->Finish().ok());
    return durable;
  }

  TempDir dir_;
  int ingest_port_ = 0;
};

TEST_F(ServerMainTest, StopsCleanlyOnSigtermAndKeepsWhatItAcked) {
  {
    std::unique_ptr<RunningProgram> server = StartServer();
    EXPECT_EQ(Ingest(3), 0u);
    server->Signal(SIGTERM);
    EXPECT_EQ(server->Wait(), 0) << server->log();
    EXPECT_THAT(server->log(), HasSubstr("SIGTERM: shutting down"));
    EXPECT_THAT(server->log(), HasSubstr("fleetpmu-server: stopped"));
  }
  std::unique_ptr<RunningProgram> server = StartServer();
  EXPECT_EQ(Ingest(1), 3u);
  server->Signal(SIGINT);
  EXPECT_EQ(server->Wait(), 0) << server->log();
  EXPECT_THAT(server->log(), HasSubstr("SIGINT: shutting down"));
}

TEST_F(ServerMainTest, OpenAgentStreamsDoNotHoldUpTheShutdown) {
  // A grace far longer than the test's timeout: the stop must not wait for the agent.
  RunningProgram server(
      {FLEETPMU_SERVER, "--config", dir_.File("server.textproto"), "--shutdown_grace=1h"});
  ingest_port_ = PortOf(server.WaitForLine("ingest listening on"));
  ASSERT_THAT(server.WaitForLine("ready"), HasSubstr("ready"));
  auto stub = fleetpmu::v1::Ingest::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(ingest_port_), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  auto stream = stub->Stream(&context);
  AgentMessage hello;
  hello.mutable_hello()->set_host_id("arm-1");
  hello.mutable_hello()->set_agent_epoch(7);
  *hello.mutable_hello()->mutable_host_info() = MakeHostInfo("arm-1");
  ASSERT_TRUE(stream->Write(hello));
  ServerMessage reply;
  ASSERT_TRUE(stream->Read(&reply));
  server.Signal(SIGTERM);
  EXPECT_EQ(server.Wait(), 0) << server.log();
  EXPECT_FALSE(stream->Read(&reply));
  EXPECT_FALSE(stream->Finish().ok());
}

TEST_F(ServerMainTest, ConfigProblemsExitTwo) {
  ProgramResult missing = RunProgram({FLEETPMU_SERVER, "--config", dir_.File("nope.textproto")});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_THAT(missing.err, HasSubstr("nope.textproto"));
  ProgramResult no_config = RunProgram({FLEETPMU_SERVER});
  EXPECT_EQ(no_config.exit_code, 2);
  EXPECT_THAT(no_config.err, HasSubstr("missing --config FILE"));
  ProgramResult print =
      RunProgram({FLEETPMU_SERVER, "--config", dir_.File("server.textproto"), "--print-config"});
  EXPECT_EQ(print.exit_code, 0);
  EXPECT_THAT(print.out, HasSubstr("max_batch_records: 1000"));
}

TEST_F(ServerMainTest, BusyPortIsAStartupFailure) {
  std::unique_ptr<RunningProgram> first = StartServer();
  std::ofstream config(dir_.File("busy.textproto"));
  config << "ingest_listen: \"127.0.0.1:" << ingest_port_ << "\"\n"
         << "query_listen: \"127.0.0.2:0\"\n"
         << "metrics_listen: \"127.0.0.3:0\"\n"
         << "allow_plaintext: true\n"
         << "storage { sqlite_path: \"" << dir_.File("other.db") << "\" }\n";
  config.close();
  ProgramResult busy = RunProgram({FLEETPMU_SERVER, "--config", dir_.File("busy.textproto")});
  EXPECT_EQ(busy.exit_code, 1);
  EXPECT_THAT(busy.err, HasSubstr("ingest_listen \"127.0.0.1:"));
  first->Signal(SIGTERM);
  EXPECT_EQ(first->Wait(), 0);
}

}  // namespace
}  // namespace fleetpmu::server
