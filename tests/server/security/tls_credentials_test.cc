// MakeListenerCredentials and the ingest identity check, end to end: mTLS between agent and
// server and bearer tokens on the Query API, with a CA and certificates made by the openssl CLI
// for this test, against a real FleetpmuServer.
#include <grpcpp/grpcpp.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "fleetpmu/v1/ingest.grpc.pb.h"
#include "fleetpmu/v1/query.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/fleetpmu_server.h"
#include "server/security/tokens.h"
#include "tests/server/subprocess.h"
#include "tests/server/telemetry_fixtures.h"

namespace fleetpmu::server {
namespace {

using ::fleetpmu::server::testing::kBaseUnixNs;
using ::fleetpmu::server::testing::kSecondNs;
using ::fleetpmu::server::testing::MakeBatch;
using ::fleetpmu::server::testing::MakeHostInfo;
using ::fleetpmu::server::testing::ProgramResult;
using ::fleetpmu::server::testing::RunProgram;
using ::fleetpmu::server::testing::TempDir;
using ::fleetpmu::v1::AgentMessage;
using ::fleetpmu::v1::IngestError;
using ::fleetpmu::v1::ServerMessage;
using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream file(path);
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

// A CA, a server certificate for "localhost", and client certificates, all made with the
// openssl CLI (EC P-256 keys: quick to generate).
class Pki {
 public:
  explicit Pki(const TempDir& dir) : dir_(dir) {}

  void Openssl(std::vector<std::string> args) {
    args.insert(args.begin(), OPENSSL);
    ProgramResult result = RunProgram(args);
    ASSERT_EQ(result.exit_code, 0) << result.err;
  }

  void MakeCa(const std::string& name) {
    Openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", File(name + ".key"), "-out", File(name + ".pem"), "-days", "2", "-subj",
             "/CN=" + name});
  }

  // A certificate with subject CN=`cn` (and DNS:`cn` as subjectAltName), signed by `ca`.
  void MakeCert(const std::string& name, const std::string& cn, const std::string& ca,
                const std::string& usage) {
    {
      std::ofstream ext(File(name + ".ext"));
      ext << "subjectAltName=DNS:" << cn << "\nextendedKeyUsage=" << usage << "\n";
    }
    Openssl({"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
             File(name + ".key"), "-out", File(name + ".csr"), "-subj", "/CN=" + cn});
    Openssl({"x509", "-req", "-in", File(name + ".csr"), "-CA", File(ca + ".pem"), "-CAkey",
             File(ca + ".key"), "-CAcreateserial", "-out", File(name + ".pem"), "-days", "2",
             "-extfile", File(name + ".ext")});
  }

  std::string File(const std::string& name) const { return dir_.File(name); }
  std::string Pem(const std::string& name) const { return ReadFile(File(name)); }

 private:
  const TempDir& dir_;
};

class MtlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Pki pki(dir_);
    pki.MakeCa("ca");
    pki.MakeCa("rogue-ca");
    pki.MakeCert("server", "localhost", "ca", "serverAuth");
    pki.MakeCert("arm-1", "arm-1", "ca", "clientAuth");
    pki.MakeCert("rogue-arm-1", "arm-1", "rogue-ca", "clientAuth");
    if (HasFatalFailure()) return;
    {
      std::ofstream tokens(dir_.File("tokens"));
      tokens << "# test tokens\n"
             << "sha256:" << Sha256Hex("root-token") << " admin\n"
             << "sha256:" << Sha256Hex("b-token") << " tenant:tenant-b\n";
      std::ofstream admin(dir_.File("admin.token"));
      admin << "root-token\n";
    }

    fleetpmu::v1::ServerConfig config;
    config.set_ingest_listen("127.0.0.1:0");
    config.set_query_listen("127.0.0.2:0");
    config.set_metrics_listen("127.0.0.3:0");
    config.mutable_storage()->set_sqlite_path(dir_.File("fleetpmu.db"));
    config.mutable_storage()->mutable_raw_retention()->set_seconds(48 * 3600);
    config.mutable_storage()->mutable_rollup_interval()->set_seconds(60);
    config.mutable_storage()->mutable_rollup_retention()->set_seconds(90 * 24 * 3600);
    config.mutable_tls()->set_ca_file(pki.File("ca.pem"));
    config.mutable_tls()->set_cert_file(pki.File("server.pem"));
    config.mutable_tls()->set_key_file(pki.File("server.key"));
    config.mutable_tls()->set_require_client_cert(true);
    config.set_tokens_file(dir_.File("tokens"));
    config.mutable_limits()->set_max_streams(16);
    config.mutable_limits()->set_max_message_bytes(4 << 20);
    config.mutable_limits()->set_max_batch_records(100);
    config.mutable_limits()->set_per_stream_batches_per_second(1000);
    config_ = config;

    ServerRuntimeOptions options;
    options.retention_period = absl::ZeroDuration();
    options.clock = [] { return kBaseUnixNs + 3600 * kSecondNs; };
    auto server = FleetpmuServer::Start(config, options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }

  // An ingest stub presenting `client` ("" = no client certificate) over TLS.
  std::unique_ptr<fleetpmu::v1::Ingest::Stub> IngestStub(const std::string& client) {
    Pki pki(dir_);
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = pki.Pem("ca.pem");
    if (!client.empty()) {
      ssl.pem_private_key = pki.Pem(client + ".key");
      ssl.pem_cert_chain = pki.Pem(client + ".pem");
    }
    grpc::ChannelArguments args;
    args.SetSslTargetNameOverride("localhost");
    return fleetpmu::v1::Ingest::NewStub(grpc::CreateCustomChannel(
        "127.0.0.1:" + std::to_string(server_->ingest_port()), grpc::SslCredentials(ssl), args));
  }

  static AgentMessage Hello(const std::string& host) {
    AgentMessage message;
    message.mutable_hello()->set_host_id(host);
    message.mutable_hello()->set_agent_epoch(7);
    *message.mutable_hello()->mutable_host_info() = MakeHostInfo(host);
    return message;
  }

  ProgramResult Ctl(std::vector<std::string> args) {
    std::vector<std::string> argv = {FLEETPMUCTL,
                                     "--server=127.0.0.2:" + std::to_string(server_->query_port()),
                                     "--ca_file=" + dir_.File("ca.pem"), "--server_name=localhost"};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunProgram(argv);
  }

  TempDir dir_;
  fleetpmu::v1::ServerConfig config_;
  std::unique_ptr<FleetpmuServer> server_;
};

TEST_F(MtlsTest, AgentWithItsHostCertificateIsAcceptedAndAcked) {
  auto stub = IngestStub("arm-1");
  grpc::ClientContext context;
  auto stream = stub->Stream(&context);
  ASSERT_TRUE(stream->Write(Hello("arm-1")));
  ServerMessage reply;
  ASSERT_TRUE(stream->Read(&reply));
  ASSERT_EQ(reply.body_case(), ServerMessage::kHelloAck) << reply.DebugString();
  EXPECT_EQ(reply.hello_ack().host_id(), "arm-1");
  AgentMessage batch;
  *batch.mutable_batch() = MakeBatch("arm-1", 7, 1, kBaseUnixNs + 3000 * kSecondNs);
  ASSERT_TRUE(stream->Write(batch));
  ASSERT_TRUE(stream->Read(&reply));
  ASSERT_EQ(reply.body_case(), ServerMessage::kAck) << reply.DebugString();
  EXPECT_EQ(reply.ack().durable_seq(), 1u);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(MtlsTest, HelloForAnotherHostIsPermissionDenied) {
  auto stub = IngestStub("arm-1");
  grpc::ClientContext context;
  auto stream = stub->Stream(&context);
  ASSERT_TRUE(stream->Write(Hello("arm-2")));
  ServerMessage reply;
  ASSERT_TRUE(stream->Read(&reply));
  ASSERT_EQ(reply.body_case(), ServerMessage::kError) << reply.DebugString();
  EXPECT_EQ(reply.error().code(), IngestError::PERMISSION_DENIED_HOST);
  EXPECT_THAT(reply.error().reason(), HasSubstr("differs from the client certificate's \"arm-1\""));
  EXPECT_FALSE(stream->Read(&reply));
  grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(MtlsTest, BatchForAnotherHostIsPermissionDenied) {
  auto stub = IngestStub("arm-1");
  grpc::ClientContext context;
  auto stream = stub->Stream(&context);
  ASSERT_TRUE(stream->Write(Hello("arm-1")));
  ServerMessage reply;
  ASSERT_TRUE(stream->Read(&reply));
  ASSERT_EQ(reply.body_case(), ServerMessage::kHelloAck);
  AgentMessage batch;
  *batch.mutable_batch() = MakeBatch("arm-2", 7, 1, kBaseUnixNs + 3000 * kSecondNs);
  ASSERT_TRUE(stream->Write(batch));
  ASSERT_TRUE(stream->Read(&reply));
  ASSERT_EQ(reply.body_case(), ServerMessage::kError) << reply.DebugString();
  EXPECT_EQ(reply.error().code(), IngestError::PERMISSION_DENIED_HOST);
  EXPECT_EQ(reply.error().seq(), 1u);
  EXPECT_FALSE(stream->Read(&reply));
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(MtlsTest, AgentWithoutOrWithAForeignCertificateCannotConnect) {
  for (const std::string client : {"", "rogue-arm-1"}) {
    auto stub = IngestStub(client);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    auto stream = stub->Stream(&context);
    stream->Write(Hello("arm-1"));
    ServerMessage reply;
    EXPECT_FALSE(stream->Read(&reply)) << client;
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAVAILABLE) << client;
  }
}

TEST_F(MtlsTest, PlaintextClientCannotTalkToTheTlsServer) {
  auto stub = fleetpmu::v1::Ingest::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(server_->ingest_port()), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto stream = stub->Stream(&context);
  stream->Write(Hello("arm-1"));
  ServerMessage reply;
  EXPECT_FALSE(stream->Read(&reply));
  EXPECT_FALSE(stream->Finish().ok());
}

TEST_F(MtlsTest, QueryOverTlsNeedsAKnownBearerToken) {
  ProgramResult admin = Ctl({"--token_file=" + dir_.File("admin.token"), "hosts"});
  EXPECT_EQ(admin.exit_code, 0) << admin.err;
  EXPECT_THAT(admin.out, HasSubstr("HOST"));

  ProgramResult anonymous = Ctl({"hosts"});
  EXPECT_EQ(anonymous.exit_code, 1);
  EXPECT_THAT(anonymous.err, HasSubstr("missing \"authorization: Bearer <token>\""));

  ProgramResult plaintext =
      RunProgram({FLEETPMUCTL, "--server=127.0.0.2:" + std::to_string(server_->query_port()),
                  "--plaintext", "--timeout_seconds=5", "hosts"});
  EXPECT_EQ(plaintext.exit_code, 1);
}

TEST(MtlsStartTest, UnreadableCertificateIsNamedAtStart) {
  TempDir dir;
  fleetpmu::v1::ServerConfig config;
  config.set_ingest_listen("127.0.0.1:0");
  config.set_query_listen("127.0.0.2:0");
  config.set_metrics_listen("127.0.0.3:0");
  config.mutable_storage()->set_sqlite_path(dir.File("fleetpmu.db"));
  config.mutable_tls()->set_cert_file(dir.File("missing.pem"));
  config.mutable_tls()->set_key_file(dir.File("missing.key"));
  config.set_allow_plaintext(true);
  auto server = FleetpmuServer::Start(config, ServerRuntimeOptions{});
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(server.status().message(), HasSubstr("tls.cert_file " + dir.File("missing.pem")));
}

}  // namespace
}  // namespace fleetpmu::server
