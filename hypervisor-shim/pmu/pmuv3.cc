#include "hypervisor-shim/pmu/pmuv3.h"

namespace fleetpmu::pmu {
namespace {

constexpr uint64_t kLow32 = 0xFFFFFFFFull;

bool IsEl2(ExceptionLevel el) { return el == ExceptionLevel::kEl2; }

bool IsCounterIndexed(PmuReg reg) {
  return reg == PmuReg::kPmevcntr || reg == PmuReg::kPmevtyper;
}

}  // namespace

bool FilterAllows(uint32_t type, ExceptionLevel el) {
  switch (el) {
    case ExceptionLevel::kEl0:
      // Non-secure EL0 is counted iff U == NSU.
      return ((type & evtyper::kU) != 0) == ((type & evtyper::kNsu) != 0);
    case ExceptionLevel::kEl1:
      return ((type & evtyper::kP) != 0) == ((type & evtyper::kNsk) != 0);
    case ExceptionLevel::kEl2:
      return (type & evtyper::kNsh) != 0;
  }
  return false;
}

Pmuv3::Pmuv3(const PmuFeatures& features)
    : features_(features),
      implemented_mask_(CounterRangeMask(0, features.num_counters) | kCycleCounterMask) {
  state_.mdcr = static_cast<uint64_t>(features_.num_counters) & mdcr::kHpmnMask;
}

uint32_t Pmuv3::AccessibleMask(ExceptionLevel el) const {
  if (IsEl2(el)) return implemented_mask_;
  return CounterRangeMask(0, hpmn()) | kCycleCounterMask;
}

bool Pmuv3::RangeEnabled(int n) const {
  if (n == kCycleCounterBit || n < hpmn()) return (state_.pmcr & pmcr::kE) != 0;
  return (state_.mdcr & mdcr::kHpme) != 0;
}

int Pmuv3::OverflowWidth(int n) const {
  if (n == kCycleCounterBit) return (state_.pmcr & pmcr::kLc) ? 64 : 32;
  if (!features_.p5) return 32;
  if (n < hpmn()) return (state_.pmcr & pmcr::kLp) ? 64 : 32;
  return (state_.mdcr & mdcr::kHlp) ? 64 : 32;
}

uint32_t Pmuv3::EvtyperWriteMask() const { return evtyper::kFilterMask | evtyper::kEventMask; }

bool Pmuv3::CounterCounts(int n, ExceptionLevel el) const {
  const uint32_t bit = 1u << n;
  if ((implemented_mask_ & bit) == 0 || (state_.cnten & bit) == 0 || !RangeEnabled(n)) {
    return false;
  }
  const bool guest_range = n == kCycleCounterBit || n < hpmn();
  const bool hpmd = (state_.mdcr & mdcr::kHpmd) != 0;
  if (n == kCycleCounterBit) {
    if (IsEl2(el)) {
      if (state_.mdcr & mdcr::kHccd) return false;
      // PMCR.DP stops the cycle counter where event counting is prohibited (HPMD at EL2).
      if ((state_.pmcr & pmcr::kDp) && hpmd) return false;
    }
    return FilterAllows(state_.ccfiltr, el);
  }
  if (IsEl2(el) && guest_range && hpmd) return false;
  return FilterAllows(state_.evtyper[n], el);
}

bool Pmuv3::InterruptLine() const {
  uint32_t pending = state_.ovs & state_.inten & implemented_mask_;
  while (pending != 0) {
    const int n = __builtin_ctz(pending);
    if (RangeEnabled(n)) return true;
    pending &= pending - 1;
  }
  return false;
}

// ---- access checks ----------------------------------------------------------------------------

AccessResult Pmuv3::CheckAccess(PmuRegRef ref, bool is_write, ExceptionLevel el,
                                bool apply_el2_traps) const {
  const PmuReg reg = ref.reg;
  if (reg == PmuReg::kPmswinc && !is_write) return {AccessOutcome::kUndefined, 0, "PMSWINC_EL0 is write-only"};
  if (reg == PmuReg::kMdcrEl2 && !IsEl2(el)) return {AccessOutcome::kUndefined, 0, "MDCR_EL2 is not accessible below EL2"};
  if (IsCounterIndexed(reg) && ref.n >= features_.num_counters) {
    return {AccessOutcome::kUndefined, 0, "counter index >= PMCR_EL0.N"};
  }
  if (IsEl2(el)) return {};

  if (el == ExceptionLevel::kEl0) {
    if (reg == PmuReg::kPmintenset || reg == PmuReg::kPmintenclr) {
      return {AccessOutcome::kUndefined, 0, "PMINTEN*_EL1 is not accessible at EL0"};
    }
    if (reg == PmuReg::kPmuserenr && is_write) {
      return {AccessOutcome::kUndefined, 0, "PMUSERENR_EL0 is read-only at EL0"};
    }
    const uint64_t en = state_.pmuserenr;
    bool allowed = (en & userenr::kEn) != 0 || reg == PmuReg::kPmuserenr;
    if (!allowed) {
      switch (reg) {
        case PmuReg::kPmswinc: allowed = (en & userenr::kSw) != 0; break;
        case PmuReg::kPmccntr: allowed = !is_write && (en & userenr::kCr) != 0; break;
        case PmuReg::kPmevcntr:
        case PmuReg::kPmxevcntr: allowed = !is_write && (en & userenr::kEr) != 0; break;
        case PmuReg::kPmselr: allowed = (en & userenr::kEr) != 0; break;
        default: break;
      }
    }
    if (!allowed) return {AccessOutcome::kUndefined, 0, "EL0 access disabled by PMUSERENR_EL0"};
  }

  if (!apply_el2_traps) {
    if (IsCounterIndexed(reg) && ref.n >= hpmn()) {
      return {AccessOutcome::kUndefined, 0, "counter index >= MDCR_EL2.HPMN"};
    }
    return {};
  }
  // EL2 traps: TPM covers every PMU register, TPMCR only PMCR_EL0.
  if (state_.mdcr & mdcr::kTpm) return {AccessOutcome::kTrapToEl2, 0, "MDCR_EL2.TPM"};
  if (reg == PmuReg::kPmcr && (state_.mdcr & mdcr::kTpmcr)) {
    return {AccessOutcome::kTrapToEl2, 0, "MDCR_EL2.TPMCR"};
  }
  if (features_.fgt) {
    PmuReg fgt_reg = reg;
    if (reg == PmuReg::kPmxevcntr) fgt_reg = PmuReg::kPmevcntr;
    if (reg == PmuReg::kPmxevtyper) {
      fgt_reg = (state_.pmselr & 0x1F) == kCycleCounterBit ? PmuReg::kPmccfiltr : PmuReg::kPmevtyper;
    }
    const uint32_t traps = is_write ? state_.fgt.write : state_.fgt.read;
    if (traps & FineGrainedTraps::Bit(fgt_reg)) return {AccessOutcome::kTrapToEl2, 0, "fine-grained trap"};
  }
  if (IsCounterIndexed(reg) && ref.n >= hpmn()) {
    if (features_.fgt) return {AccessOutcome::kTrapToEl2, 0, "counter index >= MDCR_EL2.HPMN (FGT)"};
    return {AccessOutcome::kUnpredictable, 0, "counter index >= MDCR_EL2.HPMN below EL2 without FGT"};
  }
  return {};
}

AccessResult Pmuv3::ResolveSelected(PmuReg reg, ExceptionLevel el, PmuRegRef* target) const {
  if (state_.pmselr_unsynchronised) {
    return {AccessOutcome::kUnpredictable, 0, "PMXEV* access without context synchronisation after a PMSELR write"};
  }
  const int sel = state_.pmselr & 0x1F;
  if (sel == kCycleCounterBit) {
    if (reg == PmuReg::kPmxevcntr) return {AccessOutcome::kUnpredictable, 0, "PMXEVCNTR_EL0 with PMSELR.SEL = 31"};
    *target = {PmuReg::kPmccfiltr, 0};
    return {};
  }
  const int limit = IsEl2(el) ? features_.num_counters : hpmn();
  if (sel >= limit) return {AccessOutcome::kUnpredictable, 0, "PMSELR.SEL selects no accessible counter"};
  *target = {reg == PmuReg::kPmxevcntr ? PmuReg::kPmevcntr : PmuReg::kPmevtyper, static_cast<uint8_t>(sel)};
  return {};
}

AccessResult Pmuv3::Read(PmuRegRef ref, ExceptionLevel el) {
  ++counts_.total;
  ++counts_.by_register[static_cast<int>(ref.reg)];
  AccessResult check = CheckAccess(ref, /*is_write=*/false, el, /*apply_el2_traps=*/true);
  if (check.ok()) check = DoRead(ref, el);
  if (check.outcome == AccessOutcome::kUnpredictable) ++counts_.unpredictable;
  return check;
}

AccessResult Pmuv3::Write(PmuRegRef ref, uint64_t value, ExceptionLevel el) {
  ++counts_.total;
  ++counts_.by_register[static_cast<int>(ref.reg)];
  AccessResult check = CheckAccess(ref, /*is_write=*/true, el, /*apply_el2_traps=*/true);
  if (check.ok()) check = DoWrite(ref, value, el);
  if (check.outcome == AccessOutcome::kUnpredictable) ++counts_.unpredictable;
  return check;
}

AccessResult Pmuv3::Emulate(PmuRegRef ref, uint64_t value, bool is_write, ExceptionLevel el) {
  ++counts_.total;
  ++counts_.by_register[static_cast<int>(ref.reg)];
  AccessResult check = CheckAccess(ref, is_write, el, /*apply_el2_traps=*/false);
  if (check.ok()) check = is_write ? DoWrite(ref, value, el) : DoRead(ref, el);
  if (check.outcome == AccessOutcome::kUnpredictable) ++counts_.unpredictable;
  return check;
}

// ---- reads and writes -------------------------------------------------------------------------

uint64_t Pmuv3::ReadPmcr(ExceptionLevel el) const {
  const uint64_t n = IsEl2(el) ? static_cast<uint64_t>(features_.num_counters)
                               : static_cast<uint64_t>(hpmn());
  // IMP and IDCODE read as zero in the model.
  return state_.pmcr | (n << pmcr::kNShift);
}

void Pmuv3::WritePmcr(uint64_t value, ExceptionLevel el) {
  uint64_t stateful = value & pmcr::kStatefulMask;
  if (!features_.p5) stateful &= ~pmcr::kLp;
  state_.pmcr = stateful;
  if (value & pmcr::kP) {
    // Below EL2 only [0,HPMN) exist; EL2 resets every event counter.
    const int limit = IsEl2(el) ? features_.num_counters : hpmn();
    for (int n = 0; n < limit; ++n) state_.evcntr[n] = 0;
  }
  if (value & pmcr::kC) {
    state_.ccntr = 0;
    state_.cycle_prescale = 0;
  }
}

AccessResult Pmuv3::WriteMdcr(uint64_t value) {
  const int new_hpmn = static_cast<int>(value & mdcr::kHpmnMask);
  if (new_hpmn > features_.num_counters) {
    return {AccessOutcome::kUnpredictable, 0, "MDCR_EL2.HPMN > PMCR_EL0.N"};
  }
  if (new_hpmn == 0 && features_.num_counters > 0 && !features_.hpmn0) {
    return {AccessOutcome::kUnpredictable, 0, "MDCR_EL2.HPMN = 0 without FEAT_HPMN0"};
  }
  uint64_t stored = value & mdcr::kStoredMask;
  if (!features_.p5) stored &= ~mdcr::kHlp;
  state_.mdcr = stored;
  return {};
}

AccessResult Pmuv3::DoRead(PmuRegRef ref, ExceptionLevel el) {
  const uint32_t visible = AccessibleMask(el);
  switch (ref.reg) {
    case PmuReg::kPmcr: return {AccessOutcome::kOk, ReadPmcr(el), nullptr};
    case PmuReg::kPmcntenset:
    case PmuReg::kPmcntenclr: return {AccessOutcome::kOk, state_.cnten & visible, nullptr};
    case PmuReg::kPmintenset:
    case PmuReg::kPmintenclr: return {AccessOutcome::kOk, state_.inten & visible, nullptr};
    case PmuReg::kPmovsset:
    case PmuReg::kPmovsclr: return {AccessOutcome::kOk, state_.ovs & visible, nullptr};
    case PmuReg::kPmselr: return {AccessOutcome::kOk, state_.pmselr, nullptr};
    case PmuReg::kPmswinc: break;  // rejected by CheckAccess
    case PmuReg::kPmxevcntr:
    case PmuReg::kPmxevtyper: {
      PmuRegRef target{};
      AccessResult r = ResolveSelected(ref.reg, el, &target);
      if (!r.ok()) return r;
      return DoRead(target, el);
    }
    case PmuReg::kPmccntr: return {AccessOutcome::kOk, state_.ccntr, nullptr};
    case PmuReg::kPmccfiltr: return {AccessOutcome::kOk, state_.ccfiltr, nullptr};
    case PmuReg::kPmuserenr: return {AccessOutcome::kOk, state_.pmuserenr, nullptr};
    case PmuReg::kPmevcntr: return {AccessOutcome::kOk, state_.evcntr[ref.n], nullptr};
    case PmuReg::kPmevtyper: return {AccessOutcome::kOk, state_.evtyper[ref.n], nullptr};
    case PmuReg::kMdcrEl2: return {AccessOutcome::kOk, state_.mdcr, nullptr};
  }
  return {AccessOutcome::kUndefined, 0, "unknown register"};
}

AccessResult Pmuv3::DoWrite(PmuRegRef ref, uint64_t value, ExceptionLevel el) {
  const uint32_t bits = static_cast<uint32_t>(value) & AccessibleMask(el);
  switch (ref.reg) {
    case PmuReg::kPmcr: WritePmcr(value, el); return {};
    case PmuReg::kPmcntenset: state_.cnten |= bits; return {};
    case PmuReg::kPmcntenclr: state_.cnten &= ~bits; return {};
    case PmuReg::kPmintenset: state_.inten |= bits; return {};
    case PmuReg::kPmintenclr: state_.inten &= ~bits; return {};
    case PmuReg::kPmovsset: state_.ovs |= bits; return {};
    case PmuReg::kPmovsclr: state_.ovs &= ~bits; return {};
    case PmuReg::kPmselr:
      state_.pmselr = static_cast<uint8_t>(value & 0x1F);
      state_.pmselr_unsynchronised = true;
      return {};
    case PmuReg::kPmswinc: SoftwareIncrement(bits & ~kCycleCounterMask, el); return {};
    case PmuReg::kPmxevcntr:
    case PmuReg::kPmxevtyper: {
      PmuRegRef target{};
      AccessResult r = ResolveSelected(ref.reg, el, &target);
      if (!r.ok()) return r;
      return DoWrite(target, value, el);
    }
    case PmuReg::kPmccntr:
      state_.ccntr = value;
      return {};
    case PmuReg::kPmccfiltr: state_.ccfiltr = static_cast<uint32_t>(value) & evtyper::kFilterMask; return {};
    case PmuReg::kPmuserenr: state_.pmuserenr = static_cast<uint8_t>(value & userenr::kMask); return {};
    case PmuReg::kPmevcntr:
      state_.evcntr[ref.n] = features_.p5 ? value : (value & kLow32);
      return {};
    case PmuReg::kPmevtyper: state_.evtyper[ref.n] = static_cast<uint32_t>(value) & EvtyperWriteMask(); return {};
    case PmuReg::kMdcrEl2: return WriteMdcr(value);
  }
  return {AccessOutcome::kUndefined, 0, "unknown register"};
}

// ---- counting ---------------------------------------------------------------------------------

void Pmuv3::SoftwareIncrement(uint32_t bits, ExceptionLevel el) {
  while (bits != 0) {
    const int n = __builtin_ctz(bits);
    bits &= bits - 1;
    if ((state_.evtyper[n] & evtyper::kEventMask) == kEventSwIncr && CounterCounts(n, el)) {
      Increment(n, 1, el);
    }
  }
}

void Pmuv3::CountEvent(uint16_t event, uint64_t count, ExceptionLevel el) {
  if (count == 0 || event == kEventSwIncr || event == kEventChain) return;
  const int n_counters = features_.num_counters;
  for (int n = 0; n < n_counters; ++n) {
    if ((state_.evtyper[n] & evtyper::kEventMask) == event && CounterCounts(n, el)) {
      Increment(n, count, el);
    }
  }
  if (event == kEventCpuCycles && CounterCounts(kCycleCounterBit, el)) {
    uint64_t ticks = count;
    if (state_.pmcr & pmcr::kD) {
      const uint64_t total = state_.cycle_prescale + count;
      ticks = total / 64;
      state_.cycle_prescale = static_cast<uint8_t>(total % 64);
    }
    if (ticks != 0) Increment(kCycleCounterBit, ticks, el);
  }
}

void Pmuv3::Increment(int n, uint64_t count, ExceptionLevel el) {
  const bool is_cycle = n == kCycleCounterBit;
  uint64_t& counter = is_cycle ? state_.ccntr : state_.evcntr[n];
  const uint64_t old = counter;
  uint64_t wraps;
  if (OverflowWidth(n) == 64) {
    counter = old + count;
    wraps = counter < old ? 1 : 0;
  } else {
    // Carries out of the low word; with 64-bit storage the upper word keeps counting.
    wraps = (count >> 32) + (((old & kLow32) + (count & kLow32)) >> 32);
    counter = (is_cycle || features_.p5) ? old + count : ((old + count) & kLow32);
  }
  if (wraps == 0) return;
  const uint32_t bit = 1u << n;
  const bool was_set = (state_.ovs & bit) != 0;
  state_.ovs |= bit;
  if (observer_ != nullptr) observer_->OnCounterWrap(n, wraps, was_set);

  // CHAIN: the odd neighbour counts overflows of an even counter in 32-bit overflow mode, when
  // both sit in the same range (a chain across HPMN would join two owners' counters).
  if (!is_cycle && (n % 2) == 0 && OverflowWidth(n) == 32 && n + 1 < features_.num_counters) {
    const int odd = n + 1;
    const bool same_range = (n < hpmn()) == (odd < hpmn());
    if (same_range && (state_.evtyper[odd] & evtyper::kEventMask) == kEventChain &&
        CounterCounts(odd, el)) {
      Increment(odd, wraps, el);
    }
  }
}

}  // namespace fleetpmu::pmu
