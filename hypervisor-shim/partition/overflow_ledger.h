// OverflowLedger: the exact fate of every counter wrap (PMU.md section 5).
//
// Every overflow flag, in hardware or in a vCPU's in-memory PMOVSSET, carries a tag naming the
// owner whose wrap set it. The context switch and the interrupt handlers tell the ledger when a
// flag moves (harvest at put, host interrupt) or is cleared, and by whom. Each wrap then ends in
// exactly one class:
//   delivered  the owner's handler cleared the flag it caused (one per flag),
//   coalesced  a further wrap of the same owner while its flag was still set,
//   lost       with a LostReason (the flag reached another owner, was cleared unseen, was left in
//              hardware with its interrupt disabled, or the wrap never happened because the
//              counter was not counting for its owner: counter_not_loaded, from ground truth),
//   pending    still set when the report is taken.
// Misattribution (an owner cleared a flag somebody else caused) is counted for the reader.
//
// Ground truth: RecordExpectedWraps() is fed by an ideal vPMU per vCPU; a vCPU whose real wraps
// fall short of its ideal wraps has lost the difference as counter_not_loaded.
//
// No clock: the driver sets the time with set_now(). Not thread-safe.
#ifndef FLEETPMU_HYPERVISOR_SHIM_PARTITION_OVERFLOW_LEDGER_H_
#define FLEETPMU_HYPERVISOR_SHIM_PARTITION_OVERFLOW_LEDGER_H_

#include <array>
#include <cstdint>
#include "absl/strings/string_view.h"
#include <vector>

namespace fleetpmu::partition {

struct OverflowOwner {
  enum class Kind : uint8_t { kNone, kHost, kVcpu };
  Kind kind = Kind::kNone;
  int32_t id = -1;  // host event id or vCPU id

  static OverflowOwner None() { return {}; }
  static OverflowOwner Vcpu(int id) { return {Kind::kVcpu, id}; }
  static OverflowOwner Host(int id) { return {Kind::kHost, id}; }
  friend bool operator==(const OverflowOwner&, const OverflowOwner&) = default;
};

enum class LostReason : uint8_t {
  kFlagClearedUnseen,
  kFlagLeftForOtherOwner,
  kInterruptDisabledAtPut,
  kCounterNotLoaded,
  kHostClobbered,
};
inline constexpr int kLostReasonCount = 5;
absl::string_view LostReasonName(LostReason reason);  // "flag_cleared_unseen", ...

enum class OverflowClass : uint8_t { kDelivered, kCoalesced, kLost, kPending };
absl::string_view OverflowClassName(OverflowClass c);

struct OverflowCounts {
  uint64_t delivered = 0;
  uint64_t coalesced = 0;
  uint64_t pending = 0;  // wraps behind flags still set (filled in by Report)
  std::array<uint64_t, kLostReasonCount> lost_by_reason{};
  uint64_t misattributed = 0;     // flags this owner cleared that another owner caused
  uint64_t wraps = 0;             // real wraps attributed to this owner
  uint64_t expected_wraps = 0;    // ideal-vPMU wraps (vCPUs with ground truth only)
  uint64_t unexpected_wraps = 0;  // real wraps beyond the ideal ones (counts leaked in)

  uint64_t lost() const;
};

// One classified wrap (or flag), for the telemetry stream.
struct OverflowRecord {
  uint64_t time_ns = 0;
  int pcpu = -1;     // where the flag was when its fate was decided; -1 for vCPU memory
  int counter = 0;   // 31 = cycle counter
  OverflowOwner owner;
  OverflowClass cls = OverflowClass::kDelivered;
  LostReason reason = LostReason::kFlagClearedUnseen;  // meaningful for kLost
  uint64_t wraps = 1;
  uint64_t wrap_to_handler_ns = 0;  // delivered only
};

class OverflowRecordSink {
 public:
  virtual ~OverflowRecordSink() = default;
  virtual void OnOverflowRecord(const OverflowRecord& record) = 0;
};

struct FlagLocation {
  enum class Kind : uint8_t { kHardware, kVcpuMemory };
  Kind kind;
  int index;  // pCPU for hardware, vCPU id for memory

  static FlagLocation Hardware(int pcpu) { return {Kind::kHardware, pcpu}; }
  static FlagLocation Memory(int vcpu) { return {Kind::kVcpuMemory, vcpu}; }
};

class OverflowLedger {
 public:
  void set_now(uint64_t now_ns) { now_ns_ = now_ns; }
  void set_sink(OverflowRecordSink* sink) { sink_ = sink; }
  // With ground truth on, vCPU reports compare real wraps with the ideal vPMU's.
  void set_ground_truth(bool on) { ground_truth_ = on; }

  // A counter wrapped `wraps` times at `where`; `owner` is whose state the counter held.
  void RecordWrap(FlagLocation where, int counter, OverflowOwner owner, uint64_t wraps);
  // The ideal vPMU of `vcpu` wrapped `wraps` times.
  void RecordExpectedWraps(int vcpu, uint64_t wraps);

  // Flags in `mask` move from one place to another (harvest at put, host interrupt).
  void Move(FlagLocation from, FlagLocation to, uint32_t mask);
  // `reader` cleared flags in `mask` after reading them (its overflow handler or a poll).
  void ClearSeenBy(FlagLocation where, uint32_t mask, OverflowOwner reader);
  // Flags in `mask` were cleared by code that does not deliver them to their owner.
  void ClearUnseen(FlagLocation where, uint32_t mask, LostReason reason);
  // Flags left in a pCPU's hardware whose owner is not loaded there: lost with `reason`.
  void ResolveOrphans(int pcpu, OverflowOwner loaded_owner, LostReason reason);

  // The tag at a place, for checkers: owner kNone when the flag carries no wrap.
  OverflowOwner FlagOwner(FlagLocation where, int counter) const;

  // Counts for one owner with pending and counter_not_loaded filled in as of now.
  OverflowCounts Report(OverflowOwner owner) const;
  // Sum over every owner of `kind`.
  OverflowCounts Total(OverflowOwner::Kind kind) const;
  uint64_t total_lost() const { return total_lost_; }
  uint64_t total_misattributed() const { return total_misattributed_; }

 private:
  struct FlagTag {
    OverflowOwner owner;
    uint64_t first_wrap_ns = 0;
    uint64_t wraps = 0;  // 0 = no tag
  };
  using TagBank = std::array<FlagTag, 32>;

  TagBank& Bank(FlagLocation where);
  const TagBank* FindBank(FlagLocation where) const;
  OverflowCounts& CountsFor(OverflowOwner owner);
  const OverflowCounts* FindCounts(OverflowOwner owner) const;
  void Lose(const FlagTag& tag, int pcpu, int counter, LostReason reason);
  void Emit(const OverflowRecord& record);

  uint64_t now_ns_ = 0;
  bool ground_truth_ = false;
  OverflowRecordSink* sink_ = nullptr;
  std::vector<TagBank> hardware_;
  std::vector<TagBank> memory_;
  std::vector<OverflowCounts> vcpu_counts_;
  std::vector<OverflowCounts> host_counts_;
  uint64_t total_lost_ = 0;
  uint64_t total_misattributed_ = 0;
};

}  // namespace fleetpmu::partition

#endif  // FLEETPMU_HYPERVISOR_SHIM_PARTITION_OVERFLOW_LEDGER_H_
