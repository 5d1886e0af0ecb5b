#include "hypervisor-shim/kvm/canary_verdict.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/hypervisor-shim/kvm/canary_fixture.h"

namespace fleetpmu::kvm {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::HealthyRun;

TEST(CanaryVerdictTest, ExactCountsAndEveryInterruptIsValid) {
  const CanaryVmResult vm = HealthyRun();
  const VcpuVerdict v = JudgeVcpu(vm, vm.vcpus[0]);
  EXPECT_TRUE(v.valid()) << ::testing::PrintToString(v.problems);
  ASSERT_EQ(v.counters.size(), 2u);
  EXPECT_TRUE(v.counters[0].exact);
  EXPECT_EQ(v.counters[0].expected_count, 256u);
  EXPECT_EQ(v.counters[0].wraps, 4u);
  EXPECT_EQ(v.counters[1].wraps, 4u);  // 4100 / 1000
  EXPECT_FALSE(v.counters[1].exact);
}

TEST(CanaryVerdictTest, DeadVpmuIsAFailureNotAQuietRun) {
  CanaryVmResult vm = HealthyRun();
  for (auto& c : vm.vcpus[0].report.counter) {
    c.count = 0;
    c.interrupts = 0;
  }
  const VcpuVerdict v = JudgeVcpu(vm, vm.vcpus[0]);
  EXPECT_FALSE(v.valid());
  EXPECT_THAT(v.problems, ElementsAre(HasSubstr("counter 0 (event 0x0) never advanced"),
                                      HasSubstr("counter 1 (event 0x11) never advanced")));
}

TEST(CanaryVerdictTest, GuestSeeingAnotherNThanHIsInvalid) {
  CanaryVmResult vm = HealthyRun();
  vm.vcpus[0].report.pmcr_n = 6;
  EXPECT_THAT(JudgeVcpu(vm, vm.vcpus[0]).problems, ElementsAre(HasSubstr("PMCR_EL0.N = 6, not h = 2")));
}

TEST(CanaryVerdictTest, WrapsWithoutInterruptAreIrqMissing) {
  CanaryVmResult vm = HealthyRun();
  vm.vcpus[0].report.counter[1].interrupts = 1;
  const VcpuVerdict v = JudgeVcpu(vm, vm.vcpus[0]);
  EXPECT_EQ(v.counters[1].irq_missing, 3u);
  EXPECT_THAT(v.problems, ElementsAre(HasSubstr("3 of 4 wraps raised no overflow interrupt (irq_missing)")));
}

TEST(CanaryVerdictTest, LateInterruptIsCoalescedNotMissing) {
  CanaryVmResult vm = HealthyRun();
  vm.vcpus[0].report.counter[1].interrupts = 3;
  vm.vcpus[0].report.counter[1].coalesced = 1;
  const VcpuVerdict v = JudgeVcpu(vm, vm.vcpus[0]);
  EXPECT_TRUE(v.valid());
  EXPECT_EQ(v.counters[1].irq_missing, 0u);
}

TEST(CanaryVerdictTest, InexactSwIncrIsInvalid) {
  CanaryVmResult vm = HealthyRun();
  vm.vcpus[0].report.counter[0].count = 255;  // 3 whole wraps of 64, but 4 interrupts taken
  EXPECT_THAT(JudgeVcpu(vm, vm.vcpus[0]).problems,
              ElementsAre(HasSubstr("counted 255 SW_INCR, the canary wrote 256"),
                          HasSubstr("4 interrupts for 3 wraps (spurious overflow interrupts)")));
}

TEST(CanaryVerdictTest, VcpuThatNeverReportedIsInvalid) {
  CanaryVmResult vm = HealthyRun();
  vm.vcpus[0] = CanaryVcpuResult{};
  vm.vcpus[0].error = "VM vm-a vCPU 0: no report within 1m; stopped by the VMM";
  const VcpuVerdict v = JudgeVcpu(vm, vm.vcpus[0]);
  EXPECT_FALSE(v.valid());
  EXPECT_THAT(v.problems, ElementsAre(HasSubstr("no report within"), HasSubstr("did not finish: no report")));
}

}  // namespace
}  // namespace fleetpmu::kvm
