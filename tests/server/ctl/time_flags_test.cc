#include "server/ctl/time_flags.h"

#include "gtest/gtest.h"

namespace fleetpmu::ctl {
namespace {

TEST(TimeFlagsTest, SinceAndAt) {
  EXPECT_EQ(*ParseSince("15m"), absl::Minutes(15));
  EXPECT_EQ(*ParseSince("1h30m"), absl::Minutes(90));
  EXPECT_EQ(*ParseSince("2d"), absl::Hours(48));
  EXPECT_FALSE(ParseSince("0s").ok());
  EXPECT_FALSE(ParseSince("soon").ok());
  const absl::Time now = absl::FromUnixSeconds(1714564800);
  EXPECT_EQ(*ParseAt("now", now), int64_t{1714564800} * 1000000000);
  EXPECT_EQ(*ParseAt("@1714564800.5", now), int64_t{1714564800500} * 1000000);
  EXPECT_EQ(*ParseAt("2024-05-01T14:00:00+02:00", now), int64_t{1714564800} * 1000000000);
  EXPECT_FALSE(ParseAt("yesterday", now).ok());
}

}  // namespace
}  // namespace fleetpmu::ctl
