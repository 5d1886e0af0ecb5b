#include "hypervisor-shim/partition/overflow_ledger.h"

#include <vector>

#include "gtest/gtest.h"

namespace fleetpmu::partition {
namespace {

class Records : public OverflowRecordSink {
 public:
  void OnOverflowRecord(const OverflowRecord& r) override { all.push_back(r); }
  std::vector<OverflowRecord> all;
};

const FlagLocation kHw0 = FlagLocation::Hardware(0);
const FlagLocation kMem1 = FlagLocation::Memory(1);
const OverflowOwner kV1 = OverflowOwner::Vcpu(1);
const OverflowOwner kV2 = OverflowOwner::Vcpu(2);

TEST(OverflowLedger, OwnerClearingItsFlagIsOneDeliveryPlusCoalescedWraps) {
  OverflowLedger ledger;
  Records records;
  ledger.set_sink(&records);
  ledger.set_now(100);
  ledger.RecordWrap(kHw0, 3, kV1, 1);
  ledger.set_now(150);
  ledger.RecordWrap(kHw0, 3, kV1, 2);
  ledger.Move(kHw0, kMem1, 1u << 3);
  ledger.set_now(400);
  ledger.ClearSeenBy(kMem1, 1u << 3, kV1);
  const OverflowCounts c = ledger.Report(kV1);
  EXPECT_EQ(c.delivered, 1u);
  EXPECT_EQ(c.coalesced, 2u);
  EXPECT_EQ(c.pending, 0u);
  EXPECT_EQ(c.lost(), 0u);
  ASSERT_EQ(records.all.size(), 2u);
  EXPECT_EQ(records.all[0].cls, OverflowClass::kDelivered);
  EXPECT_EQ(records.all[0].wrap_to_handler_ns, 300u);
}

TEST(OverflowLedger, FlagClearedByAnotherOwnerIsLostAndMisattributed) {
  OverflowLedger ledger;
  ledger.RecordWrap(kHw0, 0, kV1, 1);
  ledger.ClearSeenBy(kHw0, 1, kV2);
  EXPECT_EQ(ledger.Report(kV1).lost_by_reason[static_cast<int>(LostReason::kFlagLeftForOtherOwner)], 1u);
  EXPECT_EQ(ledger.Report(kV2).misattributed, 1u);
  EXPECT_EQ(ledger.total_lost(), 1u);
}

TEST(OverflowLedger, PendingUntilResolvedAndOrphansAreLost) {
  OverflowLedger ledger;
  ledger.RecordWrap(kHw0, 31, kV1, 1);
  EXPECT_EQ(ledger.Report(kV1).pending, 1u);
  ledger.ResolveOrphans(0, kV1, LostReason::kInterruptDisabledAtPut);
  EXPECT_EQ(ledger.Report(kV1).pending, 1u) << "its owner is loaded there";
  ledger.ResolveOrphans(0, OverflowOwner::None(), LostReason::kInterruptDisabledAtPut);
  EXPECT_EQ(ledger.Report(kV1).pending, 0u);
  EXPECT_EQ(ledger.Report(kV1).lost_by_reason[static_cast<int>(LostReason::kInterruptDisabledAtPut)], 1u);
}

TEST(OverflowLedger, GroundTruthShortfallIsCounterNotLoaded) {
  OverflowLedger ledger;
  ledger.set_ground_truth(true);
  ledger.RecordExpectedWraps(1, 5);
  ledger.RecordWrap(kMem1, 0, kV1, 2);
  const OverflowCounts c = ledger.Report(kV1);
  EXPECT_EQ(c.lost_by_reason[static_cast<int>(LostReason::kCounterNotLoaded)], 3u);
  EXPECT_EQ(c.pending, 2u);
}

TEST(OverflowLedger, ReasonNamesMatchPmuMd) {
  EXPECT_EQ(LostReasonName(LostReason::kFlagClearedUnseen), "flag_cleared_unseen");
  EXPECT_EQ(LostReasonName(LostReason::kFlagLeftForOtherOwner), "flag_left_for_other_owner");
  EXPECT_EQ(LostReasonName(LostReason::kInterruptDisabledAtPut), "interrupt_disabled_at_put");
  EXPECT_EQ(LostReasonName(LostReason::kCounterNotLoaded), "counter_not_loaded");
  EXPECT_EQ(LostReasonName(LostReason::kHostClobbered), "host_clobbered");
}

}  // namespace
}  // namespace fleetpmu::partition
