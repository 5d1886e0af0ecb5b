#include "hypervisor-shim/kvm/vpmu.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleetpmu::kvm {
namespace {

using ::testing::HasSubstr;

VpmuSupport Support(bool set_nr_counters, bool pmcr_n_writable) {
  VpmuSupport s;
  s.irq = true;
  s.host_n = 6;
  s.set_nr_counters = set_nr_counters;
  s.pmcr_n_writable = pmcr_n_writable;
  return s;
}

TEST(VpmuTest, HAboveTheHostsNIsRefusedWithBothNumbers) {
  absl::StatusOr<CounterLimit> limit = ChooseCounterLimit(Support(true, true), 7, "vm-a");
  ASSERT_FALSE(limit.ok());
  EXPECT_EQ(limit.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(limit.status().message(), HasSubstr("VM vm-a: h=7 exceeds the N=6 event counters"));
}

TEST(VpmuTest, HEqualToNNeedsNoLimit) {
  EXPECT_EQ(*ChooseCounterLimit(Support(false, false), 6, "vm-a"), CounterLimit::kAlreadyEqual);
}

TEST(VpmuTest, SetNrCountersIsPreferredOverThePmcrWrite) {
  EXPECT_EQ(*ChooseCounterLimit(Support(true, true), 3, "vm-a"), CounterLimit::kSetNrCounters);
}

TEST(VpmuTest, PmcrWriteOnlyWhereKvmValidatesIt) {
  EXPECT_EQ(*ChooseCounterLimit(Support(false, true), 3, "vm-a"), CounterLimit::kPmcrWrite);
}

TEST(VpmuTest, NoWayToLimitNIsAClearError) {
  absl::StatusOr<CounterLimit> limit = ChooseCounterLimit(Support(false, false), 1, "vm-a");
  ASSERT_FALSE(limit.ok());
  EXPECT_EQ(limit.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(limit.status().message(),
              HasSubstr("cannot limit the guest's PMCR_EL0.N: it has neither KVM_ARM_VCPU_PMU_V3_SET_NR_COUNTERS "
                        "nor KVM_CAP_ARM_SUPPORTED_REG_MASK_RANGES"));
}

TEST(VpmuTest, HZeroIsBelowN) {
  EXPECT_EQ(*ChooseCounterLimit(Support(true, false), 0, "vm-a"), CounterLimit::kSetNrCounters);
}

}  // namespace
}  // namespace fleetpmu::kvm
