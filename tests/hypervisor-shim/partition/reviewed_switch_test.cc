// The reviewed context switch (PMU.md section 3) in targeted scenarios.
#include "gtest/gtest.h"
#include "tests/hypervisor-shim/partition/scenario.h"

namespace fleetpmu::partition::testing {
namespace {

using pmu::PmuReg;
constexpr SwitchPolicy kReviewed = SwitchPolicy::kReviewed;

TEST(ReviewedSwitch, PutHarvestsOverflowRaisedJustBeforeExit) {
  for (bool fgt : {true, false}) {
    Scenario s({.features = {.num_counters = 6, .fgt = fgt}});
    const int v = s.AddVcpu(3, kReviewed);
    s.Run(v, 0);
    s.GuestArmSampling(0, 1);
    s.GuestEvents(0, 1);  // wraps; the host has not taken the interrupt yet
    ASSERT_TRUE(s.host().HostInterruptPending(0));
    s.Stop(0);
    EXPECT_EQ(s.host().vcpu(v).saved.state().ovs & 1, 1u) << "harvested into memory";
    EXPECT_EQ(s.host().pcpu(0).hw.state().ovs & 1, 0u) << "and cleared in hardware";
    EXPECT_FALSE(s.host().HostInterruptPending(0));
    s.Run(v, 1);  // migrated
    EXPECT_TRUE(s.host().vcpu(v).virtual_irq_level);
    EXPECT_EQ(s.GuestHandler(1), 1u);
    const OverflowCounts c = s.Overflows(v);
    EXPECT_EQ(c.delivered, 1u);
    EXPECT_EQ(c.lost(), 0u);
    EXPECT_EQ(s.host().checker().total(), 0u) << s.host().checker().Summary();
  }
}

TEST(ReviewedSwitch, HostInterruptMovesGuestFlagsIntoTheRunningVcpu) {
  Scenario s({});
  const int v = s.AddVcpu(2, kReviewed);
  s.Run(v, 0);
  s.GuestArmSampling(0, 10);
  s.GuestEvents(0, 25);
  ASSERT_TRUE(s.host().HandleHostInterrupt(0).ok());
  EXPECT_EQ(s.host().vcpu(v).saved.state().ovs, 1u);
  EXPECT_TRUE(s.host().vcpu(v).virtual_irq_level);
  EXPECT_EQ(s.host().vcpu(v).stats.host_irqs_attributed, 1u);
  s.GuestHandler(0);
  EXPECT_FALSE(s.host().vcpu(v).virtual_irq_level);
  EXPECT_EQ(s.GuestRead(0, {PmuReg::kPmevcntr, 0}), 15u);
  EXPECT_EQ(s.Overflows(v).delivered, 1u);
  EXPECT_EQ(s.host().checker().total(), 0u) << s.host().checker().Summary();
}

TEST(ReviewedSwitch, FreeVcpuCostsNoRegisterAccessesAtLoadAndPut) {
  Scenario s({});
  const int v = s.AddVcpu(3, kReviewed);
  for (int i = 0; i < 10; ++i) {
    s.Run(v, i % 2);
    s.Stop(i % 2);
  }
  const VcpuSwitchStats& st = s.host().vcpu(v).stats;
  EXPECT_EQ(st.loads, 10u);
  EXPECT_EQ(st.swaps_skipped, 10u);
  EXPECT_EQ(st.swaps_done, 0u);
  EXPECT_EQ(st.load_register_accesses, 0u);
  EXPECT_EQ(st.put_register_accesses, 0u);
  EXPECT_EQ(s.host().checker().total(), 0u);
}

TEST(ReviewedSwitch, FirstAccessPromotesAFreeVcpu) {
  Scenario s({});
  const int v = s.AddVcpu(4, kReviewed);
  s.Run(v, 0);
  EXPECT_EQ(s.host().vcpu(v).ownership, PmuOwnership::kFree);
  const uint64_t pmcr = s.GuestRead(0, {PmuReg::kPmcr});
  EXPECT_EQ((pmcr & pmu::pmcr::kNMask) >> pmu::pmcr::kNShift, 4u) << "guest PMCR.N == h";
  EXPECT_EQ(s.host().vcpu(v).ownership, PmuOwnership::kGuestOwned);
  EXPECT_EQ(s.host().vcpu(v).stats.promotions, 1u);
  // With a counter enabled the next load takes ownership at once.
  s.GuestWrite(0, {PmuReg::kPmcntenset}, 1);
  s.Stop(0);
  s.Run(v, 1);
  EXPECT_EQ(s.host().vcpu(v).ownership, PmuOwnership::kGuestOwned);
  EXPECT_EQ(s.host().vcpu(v).stats.swaps_done, 2u);
  EXPECT_EQ(s.host().checker().total(), 0u);
}

TEST(ReviewedSwitch, CountersSurviveSwitchesAndGuestResetTouchesOnlyItsRange) {
  Scenario s({.features = {.num_counters = 6, .p5 = true, .fgt = true}});
  const int v = s.AddVcpu(2, kReviewed);
  s.Run(v, 0);
  s.GuestWrite(0, {PmuReg::kPmevcntr, 1}, 0x1234);
  s.GuestWrite(0, {PmuReg::kPmccntr}, 0x5678);
  s.GuestWrite(0, {PmuReg::kPmcntenset}, 0x80000002);
  s.Stop(0);
  s.Run(v, 1);
  EXPECT_EQ(s.GuestRead(1, {PmuReg::kPmevcntr, 1}), 0x1234u);
  EXPECT_EQ(s.GuestRead(1, {PmuReg::kPmccntr}), 0x5678u);
  ASSERT_TRUE(s.host().ExitGuest(1).ok());
  ASSERT_TRUE(s.host().HostAccess(1, {PmuReg::kPmevcntr, 4}, 99, true).ok());
  ASSERT_TRUE(s.host().EnterGuest(1).ok());
  s.GuestWrite(1, {PmuReg::kPmcr}, pmu::pmcr::kP | pmu::pmcr::kC | pmu::pmcr::kE);
  EXPECT_EQ(s.GuestRead(1, {PmuReg::kPmevcntr, 1}), 0u);
  EXPECT_EQ(s.host().pcpu(1).hw.state().evcntr[4], 99u) << "host counter untouched by guest PMCR.P";
  EXPECT_EQ(s.host().checker().total(), 0u) << s.host().checker().Summary();
}

TEST(ReviewedSwitch, HostPmuserenrAndPmselrSurviveALoadPutPair) {
  Scenario s({});
  const int v = s.AddVcpu(3, kReviewed);
  ASSERT_TRUE(s.host().HostAccess(0, {PmuReg::kPmuserenr}, 0x5, true).ok());
  ASSERT_TRUE(s.host().HostAccess(0, {PmuReg::kPmselr}, 0x3, true).ok());
  s.Run(v, 0);
  s.GuestWrite(0, {PmuReg::kPmuserenr}, 0xF);
  s.GuestWrite(0, {PmuReg::kPmselr}, 0x1);
  s.Stop(0);
  EXPECT_EQ(s.host().pcpu(0).hw.state().pmuserenr, 0x5);
  EXPECT_EQ(s.host().pcpu(0).hw.state().pmselr, 0x3);
  s.Run(v, 0);
  EXPECT_EQ(s.GuestRead(0, {PmuReg::kPmuserenr}), 0xFu);
  EXPECT_EQ(s.GuestRead(0, {PmuReg::kPmselr}), 0x1u);
  EXPECT_EQ(s.host().checker().count(12), 0u);
}

TEST(ReviewedSwitch, DynamicReservationMovesOrSqueezesHostEvents) {
  Scenario s({.reservation = HostReservation::kDynamic});
  ASSERT_TRUE(s.host().AddHostEvent(0, "cycles", pmu::kEventCpuCycles, 1000).ok());
  ASSERT_TRUE(s.host().AddHostEvent(0, "instructions", pmu::kEventInstRetired, 1000).ok());
  EXPECT_EQ(s.host().pcpu(0).host_events[0].counter, pmu::kCycleCounterBit);
  const int small = s.AddVcpu(4, kReviewed);
  const int big = s.AddVcpu(5, kReviewed);
  s.Run(small, 0);  // cycles leaves PMCCNTR for counter 4; instructions stays on 5
  EXPECT_EQ(s.host().pcpu(0).host_events[0].counter, 4);
  EXPECT_EQ(s.host().pcpu(0).events_moved_at_load, 1u);
  s.Stop(0);
  EXPECT_EQ(s.host().pcpu(0).host_events[0].counter, 4) << "no reason to move back";
  s.Run(big, 0);  // [0,5) and PMCCNTR: the cycles event has nowhere to go
  EXPECT_EQ(s.host().pcpu(0).host_events[0].counter, -1);
  EXPECT_EQ(s.host().pcpu(0).events_squeezed_at_load, 1u);
  s.Stop(0);
  EXPECT_GE(s.host().pcpu(0).host_events[0].counter, 0) << "rescheduled after put";
  EXPECT_EQ(s.host().checker().total(), 0u) << s.host().checker().Summary();
}

TEST(ReviewedSwitch, UnpartitionableVcpusRunTrappedWithAnEmulatedPmu) {
  Scenario s({.features = {.num_counters = 6, .hpmn0 = false, .fgt = true}});
  const int v = s.AddVcpu(0, kReviewed);  // h = 0 needs FEAT_HPMN0
  s.Run(v, 0);
  EXPECT_EQ(s.host().vcpu(v).mode, PmuMode::kTrapped);
  EXPECT_EQ(s.host().pcpu(0).hw.hpmn(), 6);
  s.GuestWrite(0, {PmuReg::kPmcntenset}, pmu::kCycleCounterMask);
  s.GuestWrite(0, {PmuReg::kPmcr}, pmu::pmcr::kE);
  s.GuestEvents(0, 100, pmu::kEventCpuCycles);
  EXPECT_EQ(s.GuestRead(0, {PmuReg::kPmccntr}), 100u);
  EXPECT_EQ(s.host().vcpu(v).stats.trapped_fallbacks, 1u);
  EXPECT_EQ(s.host().checker().total(), 0u) << s.host().checker().Summary();
}

TEST(ReviewedSwitch, DeniedEventNeverCountsButReadsBack) {
  EventFilter deny_branches;
  deny_branches.AddRange(pmu::kEventBrMisPred, 1, EventFilter::Action::kDeny);
  Scenario s({});
  const int v = s.AddVcpu(2, kReviewed, deny_branches);
  s.Run(v, 0);
  s.GuestWrite(0, {PmuReg::kPmevtyper, 0}, pmu::kEventBrMisPred);
  s.GuestWrite(0, {PmuReg::kPmcntenset}, 1);
  s.GuestWrite(0, {PmuReg::kPmcr}, pmu::pmcr::kE);
  s.GuestEvents(0, 50, pmu::kEventBrMisPred);
  EXPECT_EQ(s.GuestRead(0, {PmuReg::kPmevcntr, 0}), 0u);
  EXPECT_EQ(s.GuestRead(0, {PmuReg::kPmevtyper, 0}), pmu::kEventBrMisPred);
  EXPECT_EQ(s.host().pcpu(0).hw.state().evtyper[0] & (pmu::evtyper::kP | pmu::evtyper::kU),
            pmu::evtyper::kP | pmu::evtyper::kU);
  EXPECT_EQ(s.host().checker().total(), 0u) << s.host().checker().Summary();
}

TEST(ReviewedSwitch, ConfigurationRefusesHAboveN) {
  PartitionedHost host({});
  VcpuPmuConfig config;
  config.features.num_counters = 6;
  config.h = 7;
  absl::StatusOr<int> id = host.AddVcpu(config);
  ASSERT_FALSE(id.ok());
  EXPECT_NE(id.status().message().find("h=7"), std::string::npos) << id.status();
}

}  // namespace
}  // namespace fleetpmu::partition::testing
