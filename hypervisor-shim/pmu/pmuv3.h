// Pmuv3: the architectural state and behaviour of one PE's PMUv3, as PMU.md section 1 states it.
//
// The model is the "hardware" that everything else in the shim drives. It answers every register
// access the way the Arm ARM defines it for the exception level of the access, including the
// cases where the architecture says no: an access can be UNDEFINED, trapped to EL2 (MDCR_EL2.TPM,
// TPMCR or a fine-grained trap), or CONSTRAINED UNPREDICTABLE. The model never guesses what a
// CONSTRAINED UNPREDICTABLE access would do: it reports it and changes nothing.
//
// It also counts: CountEvent() delivers occurrences of an event at an exception level to every
// counter that the enables and filters allow, wraps counters at their overflow width, sets the
// overflow flags, feeds CHAIN, and tells an OverflowObserver about every wrap.
//
// Not modelled: Secure state and EL3 code (the PE runs Non-secure; NSK/NSU/NSH apply), AArch32,
// PMCEIDn/PMMIR, freeze-on-overflow (HPMFZO/FZO are stored but have no effect), event export.
//
// Thread-safety: none; one PE is driven by one thread. No I/O, no clock, no allocation after
// construction.
#ifndef FLEETPMU_HYPERVISOR_SHIM_PMU_PMUV3_H_
#define FLEETPMU_HYPERVISOR_SHIM_PMU_PMUV3_H_

#include <array>
#include <cstdint>

#include "hypervisor-shim/pmu/pmu_registers.h"

namespace fleetpmu::pmu {

// What one PE implements. num_counters is PMCR_EL0.N as seen at EL2.
struct PmuFeatures {
  int num_counters = 6;
  bool p5 = false;     // FEAT_PMUv3p5: 64-bit event counter storage, PMCR.LP, MDCR_EL2.HLP
  bool hpmn0 = false;  // FEAT_HPMN0: MDCR_EL2.HPMN = 0 is legal
  bool fgt = false;    // FEAT_FGT: fine-grained traps for individual PMU registers

  friend bool operator==(const PmuFeatures&, const PmuFeatures&) = default;
};

enum class AccessOutcome : uint8_t {
  kOk,
  kUndefined,      // the access takes an UNDEFINED exception (at EL0 possibly via EL1)
  kTrapToEl2,      // MDCR_EL2.TPM/TPMCR or a fine-grained trap sends it to the hypervisor
  kUnpredictable,  // CONSTRAINED UNPREDICTABLE: reported, state unchanged
};

struct AccessResult {
  AccessOutcome outcome = AccessOutcome::kOk;
  uint64_t value = 0;          // the value read; 0 for writes and for failed accesses
  const char* why = nullptr;   // static text for anything but kOk

  bool ok() const { return outcome == AccessOutcome::kOk; }
};

// The PMU subset of HDFGRTR_EL2 / HDFGWTR_EL2, one bit per PmuReg (bit positions of the real
// registers are not modelled; PMEVCNTR<n> and PMXEVCNTR share the PMEVCNTR bit, PMEVTYPER<n>,
// PMXEVTYPER and PMCCFILTR are separate as in the architecture). Only effective with FEAT_FGT.
struct FineGrainedTraps {
  uint32_t read = 0;
  uint32_t write = 0;

  static constexpr uint32_t Bit(PmuReg r) { return 1u << static_cast<int>(r); }
  friend bool operator==(const FineGrainedTraps&, const FineGrainedTraps&) = default;
};

// Architectural state. Exposed read-only for checkers and for the hypervisor's raw save area.
struct Pmuv3State {
  std::array<uint64_t, kMaxEventCounters> evcntr{};
  std::array<uint32_t, kMaxEventCounters> evtyper{};
  uint64_t ccntr = 0;
  uint32_t ccfiltr = 0;
  uint64_t pmcr = 0;  // stateful bits only: P and C are actions, N is derived
  uint32_t cnten = 0;
  uint32_t inten = 0;
  uint32_t ovs = 0;
  uint8_t pmselr = 0;
  uint8_t pmuserenr = 0;
  uint64_t mdcr = 0;
  FineGrainedTraps fgt;
  uint8_t cycle_prescale = 0;          // cycles seen towards the next PMCR.D tick
  bool pmselr_unsynchronised = false;  // PMSELR written with no context synchronisation since
};

class OverflowObserver {
 public:
  virtual ~OverflowObserver() = default;
  // Counter `counter` (31 = cycle counter) carried out of its overflow width `wraps` times.
  // Called after PMOVSSET is updated; `flag_was_set` tells whether the flag was already 1.
  virtual void OnCounterWrap(int counter, uint64_t wraps, bool flag_was_set) = 0;
};

// Every register access performed on the model, by register, for swap-cost statistics.
struct AccessCounts {
  std::array<uint64_t, kPmuRegCount> by_register{};
  uint64_t total = 0;
  uint64_t unpredictable = 0;
};

class Pmuv3 {
 public:
  // Every register 0, MDCR_EL2.HPMN = N. num_counters must be in [0,31].
  explicit Pmuv3(const PmuFeatures& features);

  const PmuFeatures& features() const { return features_; }
  const Pmuv3State& state() const { return state_; }
  int num_counters() const { return features_.num_counters; }
  int hpmn() const { return static_cast<int>(state_.mdcr & mdcr::kHpmnMask); }

  AccessResult Read(PmuRegRef ref, ExceptionLevel el);
  AccessResult Write(PmuRegRef ref, uint64_t value, ExceptionLevel el);

  // A trapped guest access re-executed by the hypervisor against the hardware while the guest's
  // MDCR_EL2 is installed: the architecture's answer at `el` with EL2 traps left out (PMUSERENR
  // gating still applies; an index >= HPMN is UNDEFINED, as KVM injects it). Counted like any
  // other access.
  AccessResult Emulate(PmuRegRef ref, uint64_t value, bool is_write, ExceptionLevel el);

  // The hypervisor's save area view: direct memory access to the state, no architectural side
  // effects and not counted. Only for a Pmuv3 that stands for an in-memory register copy.
  Pmuv3State* mutable_state() { return &state_; }

  // EL2 writes of HDFGRTR_EL2 and HDFGWTR_EL2 (two accesses). Ignored without FEAT_FGT.
  void WriteFineGrainedTraps(const FineGrainedTraps& traps) {
    counts_.total += 2;
    if (features_.fgt) state_.fgt = traps;
  }

  // An ISB or exception entry/return: makes a PMSELR write visible to PMXEV* accesses.
  void ContextSynchronize() { state_.pmselr_unsynchronised = false; }

  // `count` occurrences of `event` at `el`. event 0x11 also drives PMCCNTR. SW_INCR (0x00) only
  // counts through PMSWINC and CHAIN only from the even neighbour, so both are ignored here.
  void CountEvent(uint16_t event, uint64_t count, ExceptionLevel el);

  // The PMU interrupt request: some n has PMOVSSET[n] & PMINTENSET[n] and n's range enabled.
  bool InterruptLine() const;

  // Bitmap bits that exist at `el`: [0,N) and 31 at EL2, [0,HPMN) and 31 below.
  uint32_t AccessibleMask(ExceptionLevel el) const;
  uint32_t ImplementedMask() const { return implemented_mask_; }

  // Whether counter n (31 = cycle) would count an event of its type at `el` right now.
  bool CounterCounts(int n, ExceptionLevel el) const;

  const AccessCounts& access_counts() const { return counts_; }
  void set_overflow_observer(OverflowObserver* observer) { observer_ = observer; }

 private:
  AccessResult CheckAccess(PmuRegRef ref, bool is_write, ExceptionLevel el, bool apply_el2_traps) const;
  AccessResult DoRead(PmuRegRef ref, ExceptionLevel el);
  AccessResult DoWrite(PmuRegRef ref, uint64_t value, ExceptionLevel el);
  // Resolves PMXEV* to the counter/type it selects, or an UNPREDICTABLE/UNDEFINED result.
  AccessResult ResolveSelected(PmuReg reg, ExceptionLevel el, PmuRegRef* target) const;
  uint64_t ReadPmcr(ExceptionLevel el) const;
  void WritePmcr(uint64_t value, ExceptionLevel el);
  AccessResult WriteMdcr(uint64_t value);
  void SoftwareIncrement(uint32_t bits, ExceptionLevel el);
  void Increment(int n, uint64_t count, ExceptionLevel el);
  bool RangeEnabled(int n) const;
  int OverflowWidth(int n) const;
  uint32_t EvtyperWriteMask() const;

  PmuFeatures features_;
  uint32_t implemented_mask_;
  Pmuv3State state_;
  AccessCounts counts_;
  OverflowObserver* observer_ = nullptr;
};

// Whether the PMEVTYPER/PMCCFILTR filter bits in `type` allow counting at `el` (Non-secure).
bool FilterAllows(uint32_t type, ExceptionLevel el);

}  // namespace fleetpmu::pmu

#endif  // FLEETPMU_HYPERVISOR_SHIM_PMU_PMUV3_H_
