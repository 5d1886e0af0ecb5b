// The seed patch as posted (policy seed-v5): each defect the review found, shown in the scenario
// where it bites, next to the reviewed policy in the same scenario.
#include "gtest/gtest.h"
#include "tests/hypervisor-shim/partition/scenario.h"

namespace fleetpmu::partition::testing {
namespace {

using pmu::PmuReg;

TEST(SeedV5Switch, WithoutFgtGuestEventsDoNotCount) {
  for (SwitchPolicy policy : {SwitchPolicy::kReviewed, SwitchPolicy::kSeedV5}) {
    Scenario s({.features = {.num_counters = 6, .fgt = false}});
    const int v = s.AddVcpu(3, policy);
    s.Run(v, 0);
    s.GuestArmSampling(0, 100);
    s.GuestEvents(0, 250);
    const uint64_t seen = s.GuestRead(0, {PmuReg::kPmevcntr, 0});
    s.host().FinishAccounting();
    const OverflowCounts c = s.Overflows(v);
    if (policy == SwitchPolicy::kReviewed) {
      EXPECT_EQ(seen, 150u);
      EXPECT_EQ(c.lost(), 0u);
      EXPECT_EQ(s.host().checker().total(), 0u) << s.host().checker().Summary();
    } else {
      EXPECT_EQ(seen, 0x100000000ull - 100) << "nothing counted";
      EXPECT_EQ(c.lost_by_reason[static_cast<int>(LostReason::kCounterNotLoaded)], 1u);
      EXPECT_GT(s.host().checker().count(17), 0u);
    }
  }
}

TEST(SeedV5Switch, HostPmuserenrIsLost) {
  for (SwitchPolicy policy : {SwitchPolicy::kReviewed, SwitchPolicy::kSeedV5}) {
    Scenario s({});
    const int v = s.AddVcpu(3, policy);
    ASSERT_TRUE(s.host().HostAccess(0, {PmuReg::kPmuserenr}, 0x0, true).ok());
    s.Run(v, 0);
    s.GuestWrite(0, {PmuReg::kPmcntenset}, 1);  // owned from the next load on
    s.Stop(0);
    s.Run(v, 0);
    s.GuestWrite(0, {PmuReg::kPmuserenr}, 0xF);  // direct with FGT
    s.Stop(0);
    const uint8_t host_sees = s.host().pcpu(0).hw.state().pmuserenr;
    if (policy == SwitchPolicy::kReviewed) {
      EXPECT_EQ(host_sees, 0x0);
      EXPECT_EQ(s.host().checker().count(12), 0u);
    } else {
      EXPECT_EQ(host_sees, 0xF) << "the guest's value stayed: host EL0 may now read every counter";
      EXPECT_GT(s.host().checker().count(12), 0u);
    }
  }
}

TEST(SeedV5Switch, StaleOverflowFlagIsAttributedToTheNextOwner) {
  for (SwitchPolicy policy : {SwitchPolicy::kReviewed, SwitchPolicy::kSeedV5}) {
    Scenario s({});
    const int a = s.AddVcpu(3, policy);
    const int b = s.AddVcpu(3, policy);
    s.Run(a, 0);
    s.GuestArmSampling(0, 1);
    s.GuestEvents(0, 1);  // A's counter wraps just before its slice ends
    s.Stop(0);
    s.Run(b, 0);  // B samples with counter 0 too
    s.GuestArmSampling(0, 1000);
    ASSERT_TRUE(s.host().ExitGuest(0).ok());
    ASSERT_TRUE(s.host().Put(0).ok());
    ASSERT_TRUE(s.host().Load(b, 0).ok());
    ASSERT_TRUE(s.host().EnterGuest(0).ok());
    if (s.host().HostInterruptPending(0)) {
      ASSERT_TRUE(s.host().HandleHostInterrupt(0).ok());
    }
    const uint64_t b_saw = s.GuestHandler(0);
    s.Stop(0);
    s.Run(a, 1);
    const uint64_t a_saw = s.GuestHandler(1);
    s.Stop(1);
    s.host().FinishAccounting();
    if (policy == SwitchPolicy::kReviewed) {
      EXPECT_EQ(b_saw, 0u);
      EXPECT_EQ(a_saw, 1u);
      EXPECT_EQ(s.Overflows(a).delivered, 1u);
      EXPECT_EQ(s.host().checker().total(), 0u) << s.host().checker().Summary();
    } else {
      EXPECT_EQ(b_saw, 1u) << "B's handler sees A's overflow";
      EXPECT_EQ(a_saw, 0u) << "A never does";
      EXPECT_EQ(s.Overflows(b).misattributed, 1u);
      EXPECT_EQ(s.Overflows(a).lost_by_reason[static_cast<int>(LostReason::kFlagLeftForOtherOwner)], 1u);
      EXPECT_GT(s.host().checker().count(7), 0u) << "put left the flag in hardware";
      EXPECT_GT(s.host().checker().count(8), 0u) << "load enabled B over it";
    }
  }
}

TEST(SeedV5Switch, FlagLeftInHardwareWithItsInterruptDisabledIsLostAtTheEnd) {
  Scenario s({});
  const int a = s.AddVcpu(2, SwitchPolicy::kSeedV5);
  s.Run(a, 0);
  s.GuestArmSampling(0, 1);
  s.GuestEvents(0, 1);
  s.Stop(0);
  s.Run(a, 1);  // migrated: the flag stays behind on pCPU 0
  EXPECT_EQ(s.GuestHandler(1), 0u);
  s.Stop(1);
  s.host().FinishAccounting();
  EXPECT_EQ(s.Overflows(a).lost_by_reason[static_cast<int>(LostReason::kInterruptDisabledAtPut)], 1u);
}

}  // namespace
}  // namespace fleetpmu::partition::testing
