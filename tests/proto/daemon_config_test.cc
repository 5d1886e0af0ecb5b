#include "proto/fleetpmu/config/daemon_config.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleetpmu::config {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

const std::filesystem::path kExamples =
    std::filesystem::path(FLEETPMU_SOURCE_DIR) / "deploy" / "examples";

std::string Message(const absl::Status& status) { return std::string(status.message()); }

std::string WriteFile(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + name;
  std::ofstream(path) << text;
  return path;
}

// Every file in deploy/examples is a config of the daemon its name starts with (sim-* are shim
// configs of simulated hosts), and loads and validates as shipped. A new example needs no edit
// here, only the right name prefix.
TEST(DaemonConfigTest, EveryExampleConfigLoadsAndValidates) {
  std::set<std::string> checked;
  for (const auto& entry : std::filesystem::directory_iterator(kExamples)) {
    if (entry.path().extension() != ".textproto") continue;
    const std::string name = entry.path().filename().string();
    const std::string path = entry.path().string();
    SCOPED_TRACE(path);
    absl::Status status;
    if (name.rfind("shim", 0) == 0 || name.rfind("sim-", 0) == 0) {
      status = LoadShimConfig(path).status();
    } else if (name.rfind("agent", 0) == 0) {
      status = LoadAgentConfig(path).status();
    } else if (name.rfind("server", 0) == 0) {
      status = LoadServerConfig(path).status();
    } else {
      ADD_FAILURE() << name << ": an example's name must start with shim, sim-, agent or server";
      continue;
    }
    EXPECT_TRUE(status.ok()) << status;
    checked.insert(name);
  }
  for (const char* required : {"server.textproto", "agent.textproto", "shim-sim.textproto",
                               "sim-host.textproto", "sim-host-seed-v5.textproto"}) {
    EXPECT_TRUE(checked.count(required)) << "missing deploy/examples/" << required;
  }
}

TEST(DaemonConfigTest, TheSimExampleIsASmallMultiTenantHost) {
  absl::StatusOr<fleetpmu::v1::ShimConfig> config =
      LoadShimConfig((kExamples / "shim-sim.textproto").string());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->backend(), fleetpmu::v1::BACKEND_SIM);
  EXPECT_GE(config->sim().vms_size(), 2);
  std::set<std::string> tenants;
  bool has_seed_v5 = false;
  for (const auto& vm : config->sim().vms()) {
    tenants.insert(vm.tenant_id());
    has_seed_v5 |= vm.policy() == fleetpmu::v1::POLICY_SEED_V5;
  }
  EXPECT_GE(tenants.size(), 2u);
  EXPECT_TRUE(has_seed_v5) << "the demo shows lost overflows of the seed policy";
}

TEST(DaemonConfigTest, ReturnsTheConfigWithDefaultsApplied) {
  const std::string path = WriteFile("defaults.textproto",
                                     "server_address: \"s:7443\"\nallow_plaintext: true\n");
  absl::StatusOr<fleetpmu::v1::AgentConfig> config = LoadAgentConfig(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->metrics_listen(), "127.0.0.1:9465");
  EXPECT_EQ(config->batch_max_records(), 64u);
}

TEST(DaemonConfigTest, SemanticErrorsArePrefixedWithTheFile) {
  const std::string path = WriteFile("bad_vm.textproto",
                                     "sim {\n  vms { vm_id: \"a\" h: 7 }\n}\n");
  absl::StatusOr<fleetpmu::v1::ShimConfig> config = LoadShimConfig(path);
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(config.status()), StartsWith(path + ": "));
  EXPECT_THAT(Message(config.status()),
              HasSubstr("sim.vms[0].h: 7 exceeds the smallest N=6 of the pCPUs"));
  EXPECT_THAT(Message(config.status()), HasSubstr("\n" + path + ": sim.vms[0].h: 7"))
      << "one problem per line, each naming the file";
}

TEST(DaemonConfigTest, ParseErrorsNameFileLineAndField) {
  const std::string path = WriteFile("typo.textproto", "ingest_listen: \"0.0.0.0:7443\"\n"
                                                       "allow_plaintex: true\n");
  absl::StatusOr<fleetpmu::v1::ServerConfig> config = LoadServerConfig(path);
  EXPECT_THAT(Message(config.status()), StartsWith(path + ":2:"));
  EXPECT_THAT(Message(config.status()), HasSubstr("\"allow_plaintex\""));
}

}  // namespace
}  // namespace fleetpmu::config
