#include "server/ctl/ctl_output.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleetpmu::ctl {
namespace {

using ::testing::HasSubstr;

TEST(CounterMaskTest, RangesAndTheCycleCounter) {
  EXPECT_EQ(FormatCounterMask(0x80000007), "0-2,C");
  EXPECT_EQ(FormatCounterMask(0x38), "3-5");
  EXPECT_EQ(FormatCounterMask(0x5), "0,2");
  EXPECT_EQ(FormatCounterMask(0x80000000), "C");
  EXPECT_EQ(FormatCounterMask(0x7fffffff), "0-30");
  EXPECT_EQ(FormatCounterMask(0), "-");
}

TEST(TextTableTest, AlignsColumnsWithoutTrailingBlanks) {
  TextTable table({"A", "LONGER", "C"});
  table.AddRow({"xyz", "1", ""});
  EXPECT_EQ(table.Render(), "A    LONGER  C\nxyz  1\n");
}

TEST(FormatTest, TimeShareAndEmptyTables) {
  EXPECT_EQ(FormatTime(int64_t{1704067200} * 1000000000 + 5000000), "2024-01-01T00:00:00.005Z");
  EXPECT_EQ(FormatTime(0), "-");
  EXPECT_EQ(FormatShare(0.875), "87.5%");
  EXPECT_THAT(FormatHosts(fleetpmu::v1::ListHostsResponse()), HasSubstr("(none)"));
  fleetpmu::v1::GetLostOverflowSummaryResponse lost;
  lost.set_total_lost(0);
  EXPECT_THAT(FormatLost(lost), HasSubstr("total lost: 0"));
}

TEST(FormatTest, JsonKeepsProtoFieldNames) {
  fleetpmu::v1::ListHostsResponse response;
  response.add_hosts()->mutable_host_info()->set_host_id("arm-1");
  const std::string json = FormatJson(response);
  EXPECT_THAT(json, HasSubstr("\"host_id\": \"arm-1\""));
  EXPECT_THAT(json, HasSubstr("\"durable_seq\": \"0\""));
}

}  // namespace
}  // namespace fleetpmu::ctl
