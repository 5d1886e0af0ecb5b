#include "hypervisor-shim/kvm/canary_vm.h"

#include "gtest/gtest.h"

namespace fleetpmu::kvm {
namespace {

TEST(CanaryVmTest, ParamsAssignEventsRoundRobinWithTheirPeriods) {
  CanaryVmConfig config;
  config.events = {0x00, 0x11};
  config.periods = {64};  // the second event falls back to sample_period
  config.sample_period = 5000;
  config.wraps = 7;
  const canary_params p = MakeCanaryParams(config, 3);
  EXPECT_EQ(p.magic, CANARY_MAGIC);
  EXPECT_EQ(p.version, CANARY_VERSION);
  EXPECT_EQ(p.counters, 3u);
  EXPECT_EQ(p.wraps, 7u);
  EXPECT_EQ(p.event[0], 0x00u);
  EXPECT_EQ(p.event[1], 0x11u);
  EXPECT_EQ(p.event[2], 0x00u);
  EXPECT_EQ(p.period[0], 64u);
  EXPECT_EQ(p.period[1], 5000u);
  EXPECT_EQ(p.period[2], 64u);
  EXPECT_EQ(p.event[CANARY_CYCLE_COUNTER], CANARY_EVENT_CPU_CYCLES);
  EXPECT_EQ(p.period[CANARY_CYCLE_COUNTER], 5000u);  // cycle_period 0: sample_period
}

TEST(CanaryVmTest, ParamsCarryTheTimeBudgetsInMicroseconds) {
  CanaryVmConfig config;
  config.guest_timeout = absl::Seconds(2);
  config.grace = absl::Milliseconds(50);
  config.cycle_period = 123;
  config.use_cycle_counter = false;
  const canary_params p = MakeCanaryParams(config, 1);
  EXPECT_EQ(p.timeout_us, 2'000'000u);
  EXPECT_EQ(p.grace_us, 50'000u);
  EXPECT_EQ(p.use_cycle, 0u);
  EXPECT_EQ(p.period[CANARY_CYCLE_COUNTER], 123u);
}

}  // namespace
}  // namespace fleetpmu::kvm
