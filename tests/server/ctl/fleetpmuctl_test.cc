// The fleetpmuctl binary against a real Query server on loopback: tables, --json, exit codes.
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/query_server_fixture.h"
#include "tests/server/subprocess.h"

namespace fleetpmu::server {
namespace {

using ::fleetpmu::server::testing::ProgramResult;
using ::fleetpmu::server::testing::RunProgram;
using ::testing::HasSubstr;
using ::testing::Not;

class FleetpmuctlTest : public ::fleetpmu::server::testing::QueryServerFixture {
 protected:
  void SetUp() override {
    QueryServerFixture::SetUp();
    for (const auto& [file, token] :
         {std::pair{"admin.token", "root-token"}, std::pair{"a.token", "a-token"}}) {
      std::ofstream out(dir_.File(file));
      out << token << "\n";
    }
  }

  // fleetpmuctl --server=<fixture> --plaintext --token_file=<role>.token ARGS...
  ProgramResult Ctl(const std::string& role, std::vector<std::string> args) {
    std::vector<std::string> argv = {FLEETPMUCTL, "--server=" + address_, "--plaintext",
                                     "--token_file=" + dir_.File(role + ".token")};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunProgram(argv);
  }
};

TEST_F(FleetpmuctlTest, OwnershipTablePerHostAndPcpu) {
  ProgramResult result = Ctl("admin", {"ownership", "--tenant", "tenant-a", "--since", "3650d"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("HOST   PCPU  N  COUNTERS  SHARE"));
  EXPECT_THAT(result.out, HasSubstr("arm-1  0     6  0-2,C"));
  EXPECT_THAT(result.out, HasSubstr("vm-1  3  0-2,C"));
  EXPECT_THAT(result.out, Not(HasSubstr("arm-2")));
}

TEST_F(FleetpmuctlTest, OwnershipAtAnInstantAsJson) {
  // kBaseUnixNs + 5 s, as Unix seconds.
  ProgramResult result = Ctl("a", {"ownership", "--at", "@1704067205", "--json"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("\"host_id\": \"arm-1\""));
  EXPECT_THAT(result.out, HasSubstr("\"counter_mask\": 2147483655"));
  EXPECT_THAT(result.out, HasSubstr("\"resident_share\": 1"));
}

TEST_F(FleetpmuctlTest, HostsTable) {
  ProgramResult result = Ctl("admin", {"hosts"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("HOST   BACKEND  ARCH     PCPUS  N  EPOCH  DURABLE-SEQ"));
  EXPECT_THAT(result.out, HasSubstr("arm-1  sim      aarch64  4      6  7      1"));
  EXPECT_THAT(result.out, HasSubstr("arm-3"));
  // A tenant sees only its hosts.
  result = Ctl("a", {"hosts"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, Not(HasSubstr("arm-2")));
}

TEST_F(FleetpmuctlTest, OverflowsLostOnlyNewestFirst) {
  ProgramResult result = Ctl("admin", {"overflows", "--lost", "--since", "3650d"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("2024-01-01T00:00:11.000Z  arm-1  0     1        vm-1/vcpu0"));
  EXPECT_THAT(result.out, HasSubstr("flag_cleared_unseen"));
  EXPECT_THAT(result.out, Not(HasSubstr("delivered")));
  EXPECT_LT(result.out.find("00:00:11"), result.out.find("00:00:01"));

  result = Ctl("admin", {"overflows", "--limit", "1", "--json"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("\"overflow_class\": \"OVERFLOW_CLASS_DELIVERED\""));
}

TEST_F(FleetpmuctlTest, LostSummaryWithTotal) {
  ProgramResult result = Ctl("admin", {"lost", "--since", "3650d"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("(host)    arm-1  host_clobbered       4"));
  EXPECT_THAT(result.out, HasSubstr("tenant-a  arm-1  flag_cleared_unseen  2"));
  EXPECT_THAT(result.out, HasSubstr("total lost: 9"));
}

TEST_F(FleetpmuctlTest, StatsOfATenant) {
  ProgramResult result = Ctl("admin", {"stats", "--tenant", "tenant-b", "--since", "3650d"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("VM    VCPU  HOST   LOADS  PUTS  SWAPS"));
  EXPECT_THAT(result.out, HasSubstr("vm-9  0     arm-2  100    100   150"));
}

TEST_F(FleetpmuctlTest, UnknownTenantOrHostExitsTwoWithAClearMessage) {
  ProgramResult result = Ctl("admin", {"ownership", "--tenant", "nobody"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_THAT(result.err, HasSubstr("fleetpmuctl: unknown tenant \"nobody\""));
  EXPECT_TRUE(result.out.empty());

  result = Ctl("admin", {"overflows", "--host", "arm-404"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_THAT(result.err, HasSubstr("fleetpmuctl: unknown host \"arm-404\""));
}

TEST_F(FleetpmuctlTest, OtherTenantIsRefusedWithExitOne) {
  ProgramResult result = Ctl("a", {"stats", "--tenant", "tenant-b"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, HasSubstr("may not read tenant \"tenant-b\""));
}

TEST_F(FleetpmuctlTest, UsageErrorsExitTwo) {
  ProgramResult result = Ctl("admin", {"ownership", "--tenant", "tenant-a", "--lost"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_THAT(result.err, HasSubstr("--lost does not apply to \"ownership\""));
  result = Ctl("admin", {"ownership", "--tenant", "t", "--since", "5m", "--at", "now"});
  EXPECT_EQ(result.exit_code, 2);
  result = Ctl("admin", {"overflows", "--since", "yesterday"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_THAT(result.err, HasSubstr("--since \"yesterday\" is not a duration"));
  result = Ctl("admin", {"frobnicate"});
  EXPECT_EQ(result.exit_code, 2);
}

TEST_F(FleetpmuctlTest, UnreachableServerExitsOne) {
  ProgramResult result = RunProgram(
      {FLEETPMUCTL, "--server=127.0.0.1:1", "--plaintext", "--timeout_seconds=2", "hosts"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, HasSubstr("is fleetpmu-server running"));
}

TEST_F(FleetpmuctlTest, HashTokenPrintsATokensFileLine) {
  ProgramResult result =
      RunProgram({FLEETPMUCTL, "hash-token", "--role=tenant:tenant-a"}, "a-token\n");
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "sha256:" + Sha256Hex("a-token") + " tenant:tenant-a\n");
}

}  // namespace
}  // namespace fleetpmu::server
