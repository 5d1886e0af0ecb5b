#include "proto/fleetpmu/config/text_config.h"

#include <fstream>
#include <string>

#include "fleetpmu/v1/config.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleetpmu::config {
namespace {

using fleetpmu::v1::AgentConfig;
using fleetpmu::v1::ShimConfig;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// Debian's abseil has its own string_view type, which gmock's string matchers do not take.
std::string Message(const absl::Status& status) { return std::string(status.message()); }

std::string WriteFile(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + name;
  std::ofstream(path) << text;
  return path;
}

TEST(TextConfigTest, ParsesAValidConfig) {
  ShimConfig config;
  ASSERT_TRUE(ParseTextConfig("shim_id: \"s1\"\nbackend: BACKEND_SIM\n"
                              "sim { pcpu_groups { count: 2 n_counters: 6 } }\n",
                              "shim.textproto", &config)
                  .ok());
  EXPECT_EQ(config.shim_id(), "s1");
  EXPECT_EQ(config.sim().pcpu_groups(0).n_counters(), 6u);
}

TEST(TextConfigTest, UnknownFieldNamesFileLineColumnAndField) {
  ShimConfig config;
  absl::Status status = ParseTextConfig("shim_id: \"s1\"\n"
                                        "# a comment: with { punctuation\n"
                                        "    bakend: BACKEND_SIM\n",
                                        "deploy/examples/x.textproto", &config);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status),
              AllOf(StartsWith("deploy/examples/x.textproto:3:5: "),
                    HasSubstr("Message type \"fleetpmu.v1.ShimConfig\" has no field named "
                              "\"bakend\"")));
}

TEST(TextConfigTest, UnknownEnumValueNamesLineAndField) {
  ShimConfig config;
  absl::Status status =
      ParseTextConfig("shim_id: \"s1\"\nbackend: BACKEND_QEMU\n", "shim.textproto", &config);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  // The parser reports this at the next token, on line 3; we point at the value itself.
  EXPECT_EQ(Message(status), "shim.textproto:2:10: Unknown enumeration value of "
                             "\"BACKEND_QEMU\" for field \"backend\".");
}

TEST(TextConfigTest, TypeErrorNamesLineColumnAndNestedFieldPath) {
  ShimConfig config;
  absl::Status status = ParseTextConfig("backend: BACKEND_SIM\n"
                                        "sim {\n"
                                        "  vms { vm_id: \"a{b\" tenant_id: \"t\" }\n"
                                        "  pcpu_groups {\n"
                                        "    count: 2\n"
                                        "    n_counters: \"six\"\n"
                                        "  }\n"
                                        "}\n",
                                        "shim.textproto", &config);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  // Column 17 is where "six" starts (1-based).
  EXPECT_THAT(Message(status), AllOf(StartsWith("shim.textproto:6:17: "),
                                      HasSubstr("\"six\""),
                                      HasSubstr("(field sim.pcpu_groups.n_counters)")));
}

TEST(TextConfigTest, ScalarWhereAMessageBelongsNamesTheField) {
  ShimConfig config;
  absl::Status status = ParseTextConfig("report_interval: 10\n", "shim.textproto", &config);
  EXPECT_THAT(Message(status),
              AllOf(StartsWith("shim.textproto:1:"), HasSubstr("(field report_interval)")));
}

TEST(TextConfigTest, NegativeValueForUnsignedFieldNamesTheField) {
  AgentConfig config;
  absl::Status status = ParseTextConfig("server_address: \"a:1\"\nbatch_max_records: -5\n",
                                        "agent.textproto", &config);
  EXPECT_THAT(Message(status), AllOf(StartsWith("agent.textproto:2:"),
                                      HasSubstr("(field batch_max_records)")));
}

TEST(TextConfigTest, FieldPathFollowsMapsAndSiblingMessages) {
  AgentConfig config;
  absl::Status status = ParseTextConfig("labels { key: \"zone\" value: \"a\" }\n"
                                        "backoff_min { seconds: 1 }\n"
                                        "backoff_max { seconds: \"x\" }\n",
                                        "agent.textproto", &config);
  EXPECT_THAT(Message(status), AllOf(StartsWith("agent.textproto:3:"),
                                      HasSubstr("(field backoff_max.seconds)")));
}

TEST(TextConfigTest, FieldNumbersAreNotAcceptedInPlaceOfNames) {
  ShimConfig config;
  EXPECT_FALSE(ParseTextConfig("1: \"s1\"\n", "shim.textproto", &config).ok());
}

TEST(TextConfigTest, LoadsAFile) {
  const std::string path = WriteFile("load_ok.textproto", "shim_id: \"from-file\"\n");
  absl::StatusOr<ShimConfig> config = LoadTextConfig<ShimConfig>(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->shim_id(), "from-file");
}

TEST(TextConfigTest, ErrorsInAFileNameThePath) {
  const std::string path = WriteFile("load_bad.textproto", "\n\nbakend: BACKEND_SIM\n");
  absl::StatusOr<ShimConfig> config = LoadTextConfig<ShimConfig>(path);
  EXPECT_THAT(Message(config.status()), StartsWith(path + ":3:1: "));
}

TEST(TextConfigTest, MissingFileIsNotFoundAndNamesThePath) {
  absl::StatusOr<ShimConfig> config = LoadTextConfig<ShimConfig>("/nonexistent/shim.textproto");
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(config.status()), HasSubstr("/nonexistent/shim.textproto"));
}

TEST(TextConfigTest, DirectoryIsRefused) {
  absl::StatusOr<ShimConfig> config = LoadTextConfig<ShimConfig>(::testing::TempDir());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(config.status()), HasSubstr("not a regular file"));
}

TEST(TextConfigTest, OversizedFileIsRefused) {
  const std::string path =
      WriteFile("huge.textproto", std::string(kMaxConfigBytes + 1, '#') + "\n");
  absl::StatusOr<ShimConfig> config = LoadTextConfig<ShimConfig>(path);
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(config.status()), HasSubstr("limit"));
}

TEST(TextConfigTest, ParseClearsTheMessageFirst) {
  ShimConfig config;
  config.set_check_invariants(true);
  ASSERT_TRUE(ParseTextConfig("shim_id: \"s\"\n", "shim.textproto", &config).ok());
  EXPECT_FALSE(config.check_invariants());
}

}  // namespace
}  // namespace fleetpmu::config
