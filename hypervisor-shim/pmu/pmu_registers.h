// PMUv3 register names, field layouts and the exception levels that access them.
//
// This header is the vocabulary of the register model (pmuv3.h) and of everything that drives it:
// the partitioned context switch, the trace tool and the tests. It holds no state.
// Bit positions follow the Arm ARM (PMUv3 chapter, MDCR_EL2) as summarised in PMU.md section 1.
#ifndef FLEETPMU_HYPERVISOR_SHIM_PMU_PMU_REGISTERS_H_
#define FLEETPMU_HYPERVISOR_SHIM_PMU_PMU_REGISTERS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace fleetpmu::pmu {

// Architectural limits.
inline constexpr int kMaxEventCounters = 31;  // PMCR_EL0.N is 5 bits; index 31 is the cycle counter
inline constexpr int kCycleCounterBit = 31;   // bit 31 of every bitmap register
inline constexpr uint32_t kCycleCounterMask = 1u << kCycleCounterBit;

// Common event numbers (PMU.md section 1).
inline constexpr uint16_t kEventSwIncr = 0x00;
inline constexpr uint16_t kEventL1dCacheRefill = 0x03;
inline constexpr uint16_t kEventInstRetired = 0x08;
inline constexpr uint16_t kEventBrMisPred = 0x10;
inline constexpr uint16_t kEventCpuCycles = 0x11;
inline constexpr uint16_t kEventL2dCache = 0x16;
inline constexpr uint16_t kEventChain = 0x1E;
inline constexpr uint16_t kEventStallFrontend = 0x23;
inline constexpr uint16_t kEventStallBackend = 0x24;
inline constexpr uint16_t kEventLlCacheMiss = 0x33;

enum class ExceptionLevel : uint8_t { kEl0 = 0, kEl1 = 1, kEl2 = 2 };

// The PMU registers the model implements. PMEVCNTR<n>/PMEVTYPER<n> carry n in PmuRegRef.
enum class PmuReg : uint8_t {
  kPmcr,
  kPmcntenset,
  kPmcntenclr,
  kPmintenset,
  kPmintenclr,
  kPmovsset,
  kPmovsclr,
  kPmselr,
  kPmswinc,
  kPmxevcntr,
  kPmxevtyper,
  kPmccntr,
  kPmccfiltr,
  kPmuserenr,
  kPmevcntr,
  kPmevtyper,
  kMdcrEl2,
};
inline constexpr int kPmuRegCount = static_cast<int>(PmuReg::kMdcrEl2) + 1;

struct PmuRegRef {
  PmuReg reg;
  uint8_t n = 0;  // counter index for kPmevcntr / kPmevtyper, ignored otherwise

  friend bool operator==(const PmuRegRef&, const PmuRegRef&) = default;
};

// "PMEVCNTR3_EL0", "MDCR_EL2", ... as the Arm ARM spells them.
std::string RegisterName(PmuRegRef ref);
// Inverse of RegisterName; nullopt for anything else (including n > 30).
std::optional<PmuRegRef> ParseRegisterName(std::string_view name);

// PMCR_EL0 fields.
namespace pmcr {
inline constexpr uint64_t kE = 1u << 0;   // enable [0,HPMN) and the cycle counter
inline constexpr uint64_t kP = 1u << 1;   // action: reset event counters (never stored)
inline constexpr uint64_t kC = 1u << 2;   // action: reset cycle counter (never stored)
inline constexpr uint64_t kD = 1u << 3;   // cycle counter counts every 64th cycle
inline constexpr uint64_t kX = 1u << 4;   // export enable (no effect in the model)
inline constexpr uint64_t kDp = 1u << 5;  // disable cycle counter where event counting is prohibited
inline constexpr uint64_t kLc = 1u << 6;  // cycle counter overflows at 64 bits
inline constexpr uint64_t kLp = 1u << 7;  // [0,HPMN) overflow at 64 bits (PMUv3p5)
inline constexpr int kNShift = 11;        // N, bits 15:11, read-only
inline constexpr uint64_t kNMask = 0x1Fu << kNShift;
// The bits software can store; LP only exists with PMUv3p5.
inline constexpr uint64_t kStatefulMask = kE | kD | kX | kDp | kLc | kLp;
}  // namespace pmcr

// PMEVTYPER<n>_EL0 / PMCCFILTR_EL0 fields.
namespace evtyper {
inline constexpr uint32_t kP = 1u << 31;    // exclude EL1 (with NSK: excluded iff P != NSK)
inline constexpr uint32_t kU = 1u << 30;    // exclude EL0 (with NSU: excluded iff U != NSU)
inline constexpr uint32_t kNsk = 1u << 29;
inline constexpr uint32_t kNsu = 1u << 28;
inline constexpr uint32_t kNsh = 1u << 27;  // *include* EL2
inline constexpr uint32_t kM = 1u << 26;    // EL3 filtering; stored, no effect (no EL3 code runs)
inline constexpr uint32_t kFilterMask = kP | kU | kNsk | kNsu | kNsh | kM;
inline constexpr uint32_t kEventMask = 0xFFFF;  // evtCount, 16 bits (PMUv3p1 and later)
}  // namespace evtyper

// PMUSERENR_EL0 fields.
namespace userenr {
inline constexpr uint64_t kEn = 1u << 0;  // EL0 access to everything
inline constexpr uint64_t kSw = 1u << 1;  // EL0 writes to PMSWINC
inline constexpr uint64_t kCr = 1u << 2;  // EL0 reads of PMCCNTR
inline constexpr uint64_t kEr = 1u << 3;  // EL0 reads of event counters, PMSELR access
inline constexpr uint64_t kMask = kEn | kSw | kCr | kEr;
}  // namespace userenr

// MDCR_EL2 fields (the PMU-related ones; others are RES0 in the model).
namespace mdcr {
inline constexpr uint64_t kHpmnMask = 0x1F;
inline constexpr uint64_t kTpmcr = 1u << 5;
inline constexpr uint64_t kTpm = 1u << 6;
inline constexpr uint64_t kHpme = 1u << 7;
inline constexpr uint64_t kHpmd = 1u << 17;
inline constexpr uint64_t kHccd = 1u << 23;
inline constexpr uint64_t kHlp = 1u << 26;
inline constexpr uint64_t kHpmfzo = 1u << 29;
inline constexpr uint64_t kStoredMask =
    kHpmnMask | kTpmcr | kTpm | kHpme | kHpmd | kHccd | kHlp | kHpmfzo;
}  // namespace mdcr

// The bitmap bits of counters [0,h) plus the cycle counter. h = 0 gives only bit 31: written
// without GENMASK(h-1,0), which would be GENMASK(-1,0) for h = 0.
constexpr uint32_t GuestCounterMask(int h) {
  return (h <= 0 ? 0u : (h >= 32 ? 0x7FFFFFFFu : ((1u << h) - 1u))) | kCycleCounterMask;
}
// Event-counter bits [lo,hi), never the cycle counter.
constexpr uint32_t CounterRangeMask(int lo, int hi) {
  uint32_t m = 0;
  for (int n = lo; n < hi && n < kMaxEventCounters; ++n) m |= 1u << n;
  return m;
}

}  // namespace fleetpmu::pmu

#endif  // FLEETPMU_HYPERVISOR_SHIM_PMU_PMU_REGISTERS_H_
