#include "hypervisor-shim/kvm/host_counters.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleetpmu::kvm {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

TEST(HostCountersTest, ParsesTheKernelsCpuListSyntax) {
  EXPECT_THAT(ParseCpuList("0-3,8\n"), ElementsAre(0, 1, 2, 3, 8));
  EXPECT_THAT(ParseCpuList("5"), ElementsAre(5));
  EXPECT_THAT(ParseCpuList(""), IsEmpty());
  EXPECT_THAT(ParseCpuList("x,2"), ElementsAre(2));
}

TEST(HostCountersTest, NoEventsOpenNothing) {
  absl::StatusOr<HostCounters> counters = HostCounters::Open({});
  ASSERT_TRUE(counters.ok());
  EXPECT_EQ(counters->size(), 0u);
  EXPECT_THAT(*counters->Read(), IsEmpty());
}

}  // namespace
}  // namespace fleetpmu::kvm
