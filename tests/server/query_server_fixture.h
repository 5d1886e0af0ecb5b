// A Query API server for tests: real SqliteStorage in a temporary directory filled with two
// hosts and two tenants, the QueryService with three bearer tokens, a real gRPC server on
// loopback (plaintext). The clock is fixed at kNow so that default windows are exact.
//
//   arm-1: tenant-a (vm-1, two reports), arm-2: tenant-b (vm-9, one report), arm-3: no VMs.
//   tokens: "root-token" admin, "a-token" tenant:tenant-a, "b-token" tenant:tenant-b.
#ifndef FLEETPMU_TESTS_SERVER_QUERY_SERVER_FIXTURE_H_
#define FLEETPMU_TESTS_SERVER_QUERY_SERVER_FIXTURE_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "server/query/query_service.h"
#include "server/storage/sqlite_storage.h"
#include "tests/server/telemetry_fixtures.h"

namespace fleetpmu::server::testing {

inline constexpr int64_t kNow = kBaseUnixNs + 60 * kSecondNs;

class QueryServerFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    SqliteStorageOptions options;
    options.path = dir_.File("fleetpmu.db");
    auto storage = SqliteStorage::Open(options);
    ASSERT_TRUE(storage.ok()) << storage.status();
    storage_ = std::move(*storage);
    Populate();

    auto tokens = TokenStore::Parse("sha256:" + Sha256Hex("root-token") + " admin\n" +
                                        "sha256:" + Sha256Hex("a-token") + " tenant:tenant-a\n" +
                                        "sha256:" + Sha256Hex("b-token") + " tenant:tenant-b\n",
                                    "tokens");
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    QueryOptions query_options;
    query_options.tokens = std::make_shared<const TokenStore>(std::move(*tokens));
    query_options.clock = [] { return kNow; };
    service_ = std::make_unique<QueryService>(storage_.get(), std::move(query_options));

    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(service_->grpc_service());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    address_ = "127.0.0.1:" + std::to_string(port_);
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown();
    server_.reset();
    service_.reset();
    storage_.reset();
  }

  void Populate() {
    for (const std::string host : {"arm-1", "arm-2", "arm-3"}) {
      AgentRegistration hello;
      hello.host_id = host;
      hello.agent_epoch = 7;
      hello.host_info = MakeHostInfo(host);
      hello.now_unix_ns = kBaseUnixNs;
      ASSERT_TRUE(storage_->Register(hello).ok());
    }
    Commit("arm-1", 1,
           {MakeReport("arm-1", kBaseUnixNs), MakeReport("arm-1", kBaseUnixNs + 10 * kSecondNs)});
    Commit("arm-2", 1, {MakeReport("arm-2", kBaseUnixNs, "vm-9", "tenant-b")});
  }

  void Commit(const std::string& host, uint64_t seq,
              std::initializer_list<fleetpmu::v1::TelemetryReport> reports) {
    fleetpmu::v1::Batch batch;
    batch.set_agent_epoch(7);
    batch.set_seq(seq);
    for (const auto& report : reports) *batch.add_reports() = report;
    IngestCommit commit;
    commit.host_id = host;
    commit.agent_epoch = 7;
    commit.seq = seq;
    commit.batch = std::make_shared<const fleetpmu::v1::Batch>(std::move(batch));
    commit.now_unix_ns = kNow;
    auto result = storage_->Commit(std::move(commit));
    ASSERT_TRUE(result.ok()) << result.status();
  }

  TempDir dir_;
  std::unique_ptr<SqliteStorage> storage_;
  std::unique_ptr<QueryService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string address_;
};

}  // namespace fleetpmu::server::testing

#endif  // FLEETPMU_TESTS_SERVER_QUERY_SERVER_FIXTURE_H_
