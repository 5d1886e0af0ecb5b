#include "hypervisor-shim/pmu/pmuv3.h"

#include "gtest/gtest.h"

namespace fleetpmu::pmu {
namespace {

constexpr ExceptionLevel kEl0 = ExceptionLevel::kEl0;
constexpr ExceptionLevel kEl1 = ExceptionLevel::kEl1;
constexpr ExceptionLevel kEl2 = ExceptionLevel::kEl2;

Pmuv3 Make(int n, bool p5 = false, bool fgt = false, bool hpmn0 = false) {
  return Pmuv3(PmuFeatures{.num_counters = n, .p5 = p5, .hpmn0 = hpmn0, .fgt = fgt});
}

uint64_t R(Pmuv3& pmu, PmuRegRef ref, ExceptionLevel el) {
  AccessResult r = pmu.Read(ref, el);
  EXPECT_TRUE(r.ok()) << RegisterName(ref) << ": " << (r.why ? r.why : "");
  return r.value;
}

void W(Pmuv3& pmu, PmuRegRef ref, uint64_t v, ExceptionLevel el) {
  AccessResult r = pmu.Write(ref, v, el);
  EXPECT_TRUE(r.ok()) << RegisterName(ref) << ": " << (r.why ? r.why : "");
}

class CountingObserver : public OverflowObserver {
 public:
  void OnCounterWrap(int counter, uint64_t wraps, bool) override { wraps_[counter] += wraps; }
  uint64_t wraps_[32] = {};
};

TEST(Pmuv3, OutOfResetEveryRegisterIsZeroAndHpmnIsN) {
  Pmuv3 pmu = Make(6);
  EXPECT_EQ(pmu.hpmn(), 6);
  EXPECT_EQ(R(pmu, {PmuReg::kPmcr}, kEl2), 6u << pmcr::kNShift);
  EXPECT_EQ(R(pmu, {PmuReg::kPmcntenset}, kEl2), 0u);
  EXPECT_EQ(R(pmu, {PmuReg::kMdcrEl2}, kEl2), 6u);
}

TEST(Pmuv3, SetAndClearPairsReadTheSameStateAndIgnoreZeros) {
  Pmuv3 pmu = Make(6);
  W(pmu, {PmuReg::kPmcntenset}, 0x80000005, kEl2);
  W(pmu, {PmuReg::kPmcntenset}, 0, kEl2);
  EXPECT_EQ(R(pmu, {PmuReg::kPmcntenclr}, kEl2), 0x80000005u);
  W(pmu, {PmuReg::kPmcntenclr}, 0x4, kEl2);
  EXPECT_EQ(R(pmu, {PmuReg::kPmcntenset}, kEl2), 0x80000001u);
}

TEST(Pmuv3, UnimplementedCounterBitsAreRazWi) {
  Pmuv3 pmu = Make(3);
  W(pmu, {PmuReg::kPmintenset}, 0xFFFFFFFF, kEl2);
  EXPECT_EQ(R(pmu, {PmuReg::kPmintenset}, kEl2), 0x80000007u);
  EXPECT_EQ(pmu.Read({PmuReg::kPmevcntr, 3}, kEl2).outcome, AccessOutcome::kUndefined);
}

TEST(Pmuv3, BelowEl2OnlyCountersUnderHpmnExist) {
  Pmuv3 pmu = Make(6);
  W(pmu, {PmuReg::kMdcrEl2}, 2 | mdcr::kHpme, kEl2);
  W(pmu, {PmuReg::kPmcntenset}, 0x8000003F, kEl2);
  EXPECT_EQ(R(pmu, {PmuReg::kPmcntenset}, kEl1), 0x80000003u);
  EXPECT_EQ(R(pmu, {PmuReg::kPmcr}, kEl1) & pmcr::kNMask, 2u << pmcr::kNShift);
  W(pmu, {PmuReg::kPmcntenclr}, 0xFFFFFFFF, kEl1);  // only the guest's bits go
  EXPECT_EQ(R(pmu, {PmuReg::kPmcntenset}, kEl2), 0x3Cu);
  EXPECT_EQ(pmu.Read({PmuReg::kPmevcntr, 4}, kEl1).outcome, AccessOutcome::kUnpredictable);
}

TEST(Pmuv3, WithFgtAnIndexAboveHpmnTrapsToEl2) {
  Pmuv3 pmu = Make(6, false, /*fgt=*/true);
  W(pmu, {PmuReg::kMdcrEl2}, 2, kEl2);
  EXPECT_EQ(pmu.Read({PmuReg::kPmevtyper, 2}, kEl1).outcome, AccessOutcome::kTrapToEl2);
}

TEST(Pmuv3, PmcrPResetsOnlyTheGuestRangeBelowEl2AndEverythingAtEl2) {
  Pmuv3 pmu = Make(4);
  W(pmu, {PmuReg::kMdcrEl2}, 2, kEl2);
  for (uint8_t n = 0; n < 4; ++n) W(pmu, {PmuReg::kPmevcntr, n}, 100 + n, kEl2);
  W(pmu, {PmuReg::kPmccntr}, 77, kEl2);
  W(pmu, {PmuReg::kPmcr}, pmcr::kP | pmcr::kE, kEl1);
  EXPECT_EQ(R(pmu, {PmuReg::kPmevcntr, 1}, kEl2), 0u);
  EXPECT_EQ(R(pmu, {PmuReg::kPmevcntr, 2}, kEl2), 102u);
  EXPECT_EQ(R(pmu, {PmuReg::kPmccntr}, kEl2), 77u);
  EXPECT_EQ(R(pmu, {PmuReg::kPmcr}, kEl2) & (pmcr::kP | pmcr::kC), 0u) << "P and C are never stored";
  W(pmu, {PmuReg::kPmcr}, pmcr::kP | pmcr::kC, kEl2);
  EXPECT_EQ(R(pmu, {PmuReg::kPmevcntr, 3}, kEl2), 0u);
  EXPECT_EQ(R(pmu, {PmuReg::kPmccntr}, kEl2), 0u);
}

TEST(Pmuv3, CountingNeedsRangeEnableCntenAndFilter) {
  Pmuv3 pmu = Make(4);
  W(pmu, {PmuReg::kMdcrEl2}, 2, kEl2);
  W(pmu, {PmuReg::kPmevtyper, 0}, kEventInstRetired, kEl2);
  W(pmu, {PmuReg::kPmevtyper, 3}, kEventInstRetired, kEl2);
  W(pmu, {PmuReg::kPmcntenset}, 0x9, kEl2);
  pmu.CountEvent(kEventInstRetired, 5, kEl1);
  EXPECT_EQ(R(pmu, {PmuReg::kPmevcntr, 0}, kEl2), 0u) << "PMCR.E off";
  W(pmu, {PmuReg::kPmcr}, pmcr::kE, kEl2);
  pmu.CountEvent(kEventInstRetired, 5, kEl1);
  EXPECT_EQ(R(pmu, {PmuReg::kPmevcntr, 0}, kEl2), 5u);
  EXPECT_EQ(R(pmu, {PmuReg::kPmevcntr, 3}, kEl2), 0u) << "HPME off";
  W(pmu, {PmuReg::kMdcrEl2}, 2 | mdcr::kHpme, kEl2);
  pmu.CountEvent(kEventInstRetired, 5, kEl2);
  EXPECT_EQ(R(pmu, {PmuReg::kPmevcntr, 3}, kEl2), 0u) << "EL2 needs NSH";
  W(pmu, {PmuReg::kPmevtyper, 3}, kEventInstRetired | evtyper::kNsh, kEl2);
  pmu.CountEvent(kEventInstRetired, 5, kEl2);
  EXPECT_EQ(R(pmu, {PmuReg::kPmevcntr, 3}, kEl2), 5u);
}

TEST(Pmuv3, NonSecureFiltersCompareWithTheirNsBits) {
  EXPECT_TRUE(FilterAllows(0, kEl1));
  EXPECT_FALSE(FilterAllows(evtyper::kP, kEl1));
  EXPECT_TRUE(FilterAllows(evtyper::kP | evtyper::kNsk, kEl1));
  EXPECT_FALSE(FilterAllows(evtyper::kNsu, kEl0));
  EXPECT_FALSE(FilterAllows(0, kEl2));
  EXPECT_TRUE(FilterAllows(evtyper::kNsh, kEl2));
}

TEST(Pmuv3, HpmdStopsGuestRangeAtEl2AndHccdTheCycleCounter) {
  Pmuv3 pmu = Make(4);
  W(pmu, {PmuReg::kMdcrEl2}, 2 | mdcr::kHpme | mdcr::kHpmd | mdcr::kHccd, kEl2);
  W(pmu, {PmuReg::kPmcr}, pmcr::kE, kEl2);
  W(pmu, {PmuReg::kPmevtyper, 0}, kEventCpuCycles | evtyper::kNsh, kEl2);
  W(pmu, {PmuReg::kPmevtyper, 2}, kEventCpuCycles | evtyper::kNsh, kEl2);
  W(pmu, {PmuReg::kPmccfiltr}, evtyper::kNsh, kEl2);
  W(pmu, {PmuReg::kPmcntenset}, 0x80000005, kEl2);
  pmu.CountEvent(kEventCpuCycles, 10, kEl2);
  EXPECT_EQ(R(pmu, {PmuReg::kPmevcntr, 0}, kEl2), 0u);
  EXPECT_EQ(R(pmu, {PmuReg::kPmevcntr, 2}, kEl2), 10u);
  EXPECT_EQ(R(pmu, {PmuReg::kPmccntr}, kEl2), 0u);
}

TEST(Pmuv3, ThirtyTwoBitOverflowSetsFlagAndWith64BitStorageKeepsCounting) {
  CountingObserver obs;
  Pmuv3 pmu = Make(2, /*p5=*/true);
  pmu.set_overflow_observer(&obs);
  W(pmu, {PmuReg::kPmcr}, pmcr::kE, kEl2);
  W(pmu, {PmuReg::kPmevtyper, 0}, kEventInstRetired, kEl2);
  W(pmu, {PmuReg::kPmcntenset}, 1, kEl2);
  W(pmu, {PmuReg::kPmevcntr, 0}, 0xFFFFFFFE, kEl2);
  pmu.CountEvent(kEventInstRetired, 3, kEl1);
  EXPECT_EQ(R(pmu, {PmuReg::kPmevcntr, 0}, kEl2), 0x100000001u);
  EXPECT_EQ(R(pmu, {PmuReg::kPmovsset}, kEl2), 1u);
  EXPECT_EQ(obs.wraps_[0], 1u);
  // LP: the same counter now overflows at 64 bits only.
  W(pmu, {PmuReg::kPmovsclr}, 1, kEl2);
  W(pmu, {PmuReg::kPmcr}, pmcr::kE | pmcr::kLp, kEl2);
  W(pmu, {PmuReg::kPmevcntr, 0}, 0xFFFFFFFE, kEl2);
  pmu.CountEvent(kEventInstRetired, 3, kEl1);
  EXPECT_EQ(R(pmu, {PmuReg::kPmovsset}, kEl2), 0u);
}

TEST(Pmuv3, WithoutP5CountersAre32BitAndLpIsNotStored) {
  Pmuv3 pmu = Make(2);
  W(pmu, {PmuReg::kPmevcntr, 0}, 0x123456789, kEl2);
  EXPECT_EQ(R(pmu, {PmuReg::kPmevcntr, 0}, kEl2), 0x23456789u);
  W(pmu, {PmuReg::kPmcr}, pmcr::kLp | pmcr::kE, kEl2);
  EXPECT_EQ(R(pmu, {PmuReg::kPmcr}, kEl2) & pmcr::kLp, 0u);
}

TEST(Pmuv3, LargeIncrementsCountEveryWrap) {
  CountingObserver obs;
  Pmuv3 pmu = Make(1);
  pmu.set_overflow_observer(&obs);
  W(pmu, {PmuReg::kPmcr}, pmcr::kE, kEl2);
  W(pmu, {PmuReg::kPmevtyper, 0}, kEventInstRetired, kEl2);
  W(pmu, {PmuReg::kPmcntenset}, 1, kEl2);
  pmu.CountEvent(kEventInstRetired, (3ull << 32) + 5, kEl1);
  EXPECT_EQ(obs.wraps_[0], 3u);
  EXPECT_EQ(R(pmu, {PmuReg::kPmevcntr, 0}, kEl2), 5u);
}

TEST(Pmuv3, ChainCountsOverflowsOfTheEvenCounter) {
  Pmuv3 pmu = Make(2);
  W(pmu, {PmuReg::kPmcr}, pmcr::kE, kEl2);
  W(pmu, {PmuReg::kPmevtyper, 0}, kEventInstRetired, kEl2);
  W(pmu, {PmuReg::kPmevtyper, 1}, kEventChain, kEl2);
  W(pmu, {PmuReg::kPmcntenset}, 3, kEl2);
  W(pmu, {PmuReg::kPmevcntr, 0}, 0xFFFFFFFF, kEl2);
  pmu.CountEvent(kEventInstRetired, 1 + (1ull << 32), kEl1);
  EXPECT_EQ(R(pmu, {PmuReg::kPmevcntr, 1}, kEl2), 2u);
}

TEST(Pmuv3, PmcrDCountsEverySixtyFourthCycle) {
  Pmuv3 pmu = Make(0);
  W(pmu, {PmuReg::kPmcr}, pmcr::kE | pmcr::kD, kEl2);
  W(pmu, {PmuReg::kPmcntenset}, kCycleCounterMask, kEl2);
  pmu.CountEvent(kEventCpuCycles, 130, kEl1);
  EXPECT_EQ(R(pmu, {PmuReg::kPmccntr}, kEl2), 2u);
  pmu.CountEvent(kEventCpuCycles, 62, kEl1);
  EXPECT_EQ(R(pmu, {PmuReg::kPmccntr}, kEl2), 3u);
}

TEST(Pmuv3, InterruptLineFollowsFlagEnableAndRangeButNotCnten) {
  Pmuv3 pmu = Make(4);
  W(pmu, {PmuReg::kMdcrEl2}, 2, kEl2);
  W(pmu, {PmuReg::kPmovsset}, 0x8, kEl2);
  W(pmu, {PmuReg::kPmintenset}, 0x8, kEl2);
  EXPECT_FALSE(pmu.InterruptLine()) << "counter 3 is in [HPMN,N): HPME gates it";
  W(pmu, {PmuReg::kMdcrEl2}, 2 | mdcr::kHpme, kEl2);
  EXPECT_TRUE(pmu.InterruptLine());
  W(pmu, {PmuReg::kPmovsclr}, 0x8, kEl2);
  EXPECT_FALSE(pmu.InterruptLine());
}

TEST(Pmuv3, SoftwareIncrementOnlyForSwIncrCounters) {
  Pmuv3 pmu = Make(3);
  W(pmu, {PmuReg::kPmcr}, pmcr::kE, kEl2);
  W(pmu, {PmuReg::kPmevtyper, 1}, kEventInstRetired, kEl2);
  W(pmu, {PmuReg::kPmcntenset}, 0x7, kEl2);
  W(pmu, {PmuReg::kPmswinc}, 0x7, kEl1);
  EXPECT_EQ(R(pmu, {PmuReg::kPmevcntr, 0}, kEl2), 1u);
  EXPECT_EQ(R(pmu, {PmuReg::kPmevcntr, 1}, kEl2), 0u);
  EXPECT_EQ(pmu.Read({PmuReg::kPmswinc}, kEl1).outcome, AccessOutcome::kUndefined);
}

TEST(Pmuv3, UserEnableGatesEl0) {
  Pmuv3 pmu = Make(2);
  EXPECT_EQ(pmu.Read({PmuReg::kPmccntr}, kEl0).outcome, AccessOutcome::kUndefined);
  W(pmu, {PmuReg::kPmuserenr}, userenr::kCr, kEl1);
  EXPECT_TRUE(pmu.Read({PmuReg::kPmccntr}, kEl0).ok());
  EXPECT_EQ(pmu.Write({PmuReg::kPmccntr}, 1, kEl0).outcome, AccessOutcome::kUndefined);
  EXPECT_EQ(pmu.Read({PmuReg::kPmintenset}, kEl0).outcome, AccessOutcome::kUndefined);
  EXPECT_TRUE(pmu.Read({PmuReg::kPmuserenr}, kEl0).ok());
  EXPECT_EQ(pmu.Write({PmuReg::kPmuserenr}, 0, kEl0).outcome, AccessOutcome::kUndefined);
}

TEST(Pmuv3, SelectedAccessesReportUnpredictableUses) {
  Pmuv3 pmu = Make(4);
  W(pmu, {PmuReg::kPmselr}, 2, kEl1);
  EXPECT_EQ(pmu.Read({PmuReg::kPmxevcntr}, kEl1).outcome, AccessOutcome::kUnpredictable) << "no ISB";
  pmu.ContextSynchronize();
  W(pmu, {PmuReg::kPmevcntr, 2}, 42, kEl2);
  EXPECT_EQ(R(pmu, {PmuReg::kPmxevcntr}, kEl1), 42u);
  W(pmu, {PmuReg::kPmselr}, 31, kEl1);
  pmu.ContextSynchronize();
  EXPECT_EQ(pmu.Read({PmuReg::kPmxevcntr}, kEl1).outcome, AccessOutcome::kUnpredictable);
  W(pmu, {PmuReg::kPmxevtyper}, evtyper::kU, kEl1);
  EXPECT_EQ(R(pmu, {PmuReg::kPmccfiltr}, kEl1), evtyper::kU);
  EXPECT_EQ(pmu.access_counts().unpredictable, 2u);
}

TEST(Pmuv3, TpmTrapsEveryRegisterAndTpmcrOnlyPmcr) {
  Pmuv3 pmu = Make(4);
  W(pmu, {PmuReg::kMdcrEl2}, 4 | mdcr::kTpmcr, kEl2);
  EXPECT_EQ(pmu.Read({PmuReg::kPmcr}, kEl1).outcome, AccessOutcome::kTrapToEl2);
  EXPECT_TRUE(pmu.Read({PmuReg::kPmcntenset}, kEl1).ok());
  W(pmu, {PmuReg::kMdcrEl2}, 4 | mdcr::kTpm, kEl2);
  EXPECT_EQ(pmu.Read({PmuReg::kPmcntenset}, kEl1).outcome, AccessOutcome::kTrapToEl2);
  EXPECT_EQ(pmu.Read({PmuReg::kPmccntr}, kEl0).outcome, AccessOutcome::kUndefined) << "EL0 gating comes first";
}

TEST(Pmuv3, HpmnAboveNOrZeroWithoutHpmn0IsRefused) {
  Pmuv3 pmu = Make(4);
  EXPECT_EQ(pmu.Write({PmuReg::kMdcrEl2}, 5, kEl2).outcome, AccessOutcome::kUnpredictable);
  EXPECT_EQ(pmu.Write({PmuReg::kMdcrEl2}, 0, kEl2).outcome, AccessOutcome::kUnpredictable);
  EXPECT_EQ(pmu.hpmn(), 4);
  Pmuv3 with_hpmn0 = Make(4, false, false, /*hpmn0=*/true);
  EXPECT_TRUE(with_hpmn0.Write({PmuReg::kMdcrEl2}, 0, kEl2).ok());
  EXPECT_EQ(R(with_hpmn0, {PmuReg::kPmcntenset}, kEl1), 0u);
}

TEST(Pmuv3, EveryAccessIsCounted) {
  Pmuv3 pmu = Make(2);
  (void)pmu.Read({PmuReg::kPmcr}, kEl2);
  (void)pmu.Write({PmuReg::kPmcntenset}, 1, kEl2);
  (void)pmu.Read({PmuReg::kMdcrEl2}, kEl1);  // UNDEFINED still counts
  EXPECT_EQ(pmu.access_counts().total, 3u);
  EXPECT_EQ(pmu.access_counts().by_register[static_cast<int>(PmuReg::kPmcr)], 1u);
}

TEST(PmuRegisters, NamesRoundTrip) {
  for (int r = 0; r < kPmuRegCount; ++r) {
    PmuRegRef ref{static_cast<PmuReg>(r), 7};
    if (ref.reg != PmuReg::kPmevcntr && ref.reg != PmuReg::kPmevtyper) ref.n = 0;
    auto parsed = ParseRegisterName(RegisterName(ref));
    ASSERT_TRUE(parsed.has_value()) << RegisterName(ref);
    EXPECT_EQ(*parsed, ref);
  }
  EXPECT_FALSE(ParseRegisterName("PMEVCNTR31_EL0").has_value());
  EXPECT_FALSE(ParseRegisterName("PMEVCNTR01_EL0").has_value());
  EXPECT_EQ(GuestCounterMask(0), kCycleCounterMask);
  EXPECT_EQ(GuestCounterMask(3), 0x80000007u);
}

}  // namespace
}  // namespace fleetpmu::pmu
