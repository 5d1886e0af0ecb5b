#include "hypervisor-shim/partition/overflow_ledger.h"

namespace fleetpmu::partition {

absl::string_view LostReasonName(LostReason reason) {
  switch (reason) {
    case LostReason::kFlagClearedUnseen: return "flag_cleared_unseen";
    case LostReason::kFlagLeftForOtherOwner: return "flag_left_for_other_owner";
    case LostReason::kInterruptDisabledAtPut: return "interrupt_disabled_at_put";
    case LostReason::kCounterNotLoaded: return "counter_not_loaded";
    case LostReason::kHostClobbered: return "host_clobbered";
  }
  return "unknown";
}

absl::string_view OverflowClassName(OverflowClass c) {
  switch (c) {
    case OverflowClass::kDelivered: return "delivered";
    case OverflowClass::kCoalesced: return "coalesced";
    case OverflowClass::kLost: return "lost";
    case OverflowClass::kPending: return "pending";
  }
  return "unknown";
}

uint64_t OverflowCounts::lost() const {
  uint64_t sum = 0;
  for (uint64_t n : lost_by_reason) sum += n;
  return sum;
}

OverflowLedger::TagBank& OverflowLedger::Bank(FlagLocation where) {
  auto& banks = where.kind == FlagLocation::Kind::kHardware ? hardware_ : memory_;
  if (static_cast<size_t>(where.index) >= banks.size()) banks.resize(where.index + 1);
  return banks[where.index];
}

const OverflowLedger::TagBank* OverflowLedger::FindBank(FlagLocation where) const {
  const auto& banks = where.kind == FlagLocation::Kind::kHardware ? hardware_ : memory_;
  if (where.index < 0 || static_cast<size_t>(where.index) >= banks.size()) return nullptr;
  return &banks[where.index];
}

OverflowCounts& OverflowLedger::CountsFor(OverflowOwner owner) {
  auto& all = owner.kind == OverflowOwner::Kind::kHost ? host_counts_ : vcpu_counts_;
  if (static_cast<size_t>(owner.id) >= all.size()) all.resize(owner.id + 1);
  return all[owner.id];
}

const OverflowCounts* OverflowLedger::FindCounts(OverflowOwner owner) const {
  const auto& all = owner.kind == OverflowOwner::Kind::kHost ? host_counts_ : vcpu_counts_;
  if (owner.id < 0 || static_cast<size_t>(owner.id) >= all.size()) return nullptr;
  return &all[owner.id];
}

void OverflowLedger::Emit(const OverflowRecord& record) {
  if (sink_ != nullptr) sink_->OnOverflowRecord(record);
}

void OverflowLedger::Lose(const FlagTag& tag, int pcpu, int counter, LostReason reason) {
  CountsFor(tag.owner).lost_by_reason[static_cast<int>(reason)] += tag.wraps;
  total_lost_ += tag.wraps;
  Emit({now_ns_, pcpu, counter, tag.owner, OverflowClass::kLost, reason, tag.wraps, 0});
}

void OverflowLedger::RecordWrap(FlagLocation where, int counter, OverflowOwner owner,
                                uint64_t wraps) {
  if (owner.kind == OverflowOwner::Kind::kNone || wraps == 0) return;
  CountsFor(owner).wraps += wraps;
  FlagTag& tag = Bank(where)[counter];
  const int pcpu = where.kind == FlagLocation::Kind::kHardware ? where.index : -1;
  if (tag.wraps == 0) {
    tag = {owner, now_ns_, wraps};
  } else if (tag.owner == owner) {
    tag.wraps += wraps;
  } else {
    // The flag is already set for somebody else: this owner's wrap will be handled by them.
    Lose({owner, now_ns_, wraps}, pcpu, counter, LostReason::kFlagLeftForOtherOwner);
  }
}

void OverflowLedger::RecordExpectedWraps(int vcpu, uint64_t wraps) {
  CountsFor(OverflowOwner::Vcpu(vcpu)).expected_wraps += wraps;
}

void OverflowLedger::Move(FlagLocation from, FlagLocation to, uint32_t mask) {
  TagBank& src = Bank(from);
  TagBank& dst = Bank(to);
  const int pcpu = from.kind == FlagLocation::Kind::kHardware ? from.index : -1;
  while (mask != 0) {
    const int n = __builtin_ctz(mask);
    mask &= mask - 1;
    FlagTag& s = src[n];
    if (s.wraps == 0) continue;
    FlagTag& d = dst[n];
    if (d.wraps == 0) {
      d = s;
    } else if (d.owner == s.owner) {
      d.wraps += s.wraps;  // both flags describe the same owner's overflows: one delivery
    } else {
      Lose(s, pcpu, n, LostReason::kFlagLeftForOtherOwner);
    }
    s = FlagTag{};
  }
}

void OverflowLedger::ClearSeenBy(FlagLocation where, uint32_t mask, OverflowOwner reader) {
  TagBank& bank = Bank(where);
  const int pcpu = where.kind == FlagLocation::Kind::kHardware ? where.index : -1;
  while (mask != 0) {
    const int n = __builtin_ctz(mask);
    mask &= mask - 1;
    FlagTag& tag = bank[n];
    if (tag.wraps == 0) continue;
    if (tag.owner == reader) {
      OverflowCounts& c = CountsFor(reader);
      c.delivered += 1;
      c.coalesced += tag.wraps - 1;
      Emit({now_ns_, pcpu, n, reader, OverflowClass::kDelivered, LostReason::kFlagClearedUnseen, 1,
            now_ns_ - tag.first_wrap_ns});
      if (tag.wraps > 1) {
        Emit({now_ns_, pcpu, n, reader, OverflowClass::kCoalesced, LostReason::kFlagClearedUnseen,
              tag.wraps - 1, 0});
      }
    } else {
      if (reader.kind != OverflowOwner::Kind::kNone) {
        CountsFor(reader).misattributed += 1;
        ++total_misattributed_;
      }
      Lose(tag, pcpu, n, LostReason::kFlagLeftForOtherOwner);
    }
    tag = FlagTag{};
  }
}

void OverflowLedger::ClearUnseen(FlagLocation where, uint32_t mask, LostReason reason) {
  TagBank& bank = Bank(where);
  const int pcpu = where.kind == FlagLocation::Kind::kHardware ? where.index : -1;
  while (mask != 0) {
    const int n = __builtin_ctz(mask);
    mask &= mask - 1;
    if (bank[n].wraps == 0) continue;
    Lose(bank[n], pcpu, n, reason);
    bank[n] = FlagTag{};
  }
}

void OverflowLedger::ResolveOrphans(int pcpu, OverflowOwner loaded_owner, LostReason reason) {
  TagBank& bank = Bank(FlagLocation::Hardware(pcpu));
  for (int n = 0; n < 32; ++n) {
    FlagTag& tag = bank[n];
    if (tag.wraps == 0 || tag.owner.kind != OverflowOwner::Kind::kVcpu || tag.owner == loaded_owner) {
      continue;
    }
    Lose(tag, pcpu, n, reason);
    tag = FlagTag{};
  }
}

OverflowOwner OverflowLedger::FlagOwner(FlagLocation where, int counter) const {
  const TagBank* bank = FindBank(where);
  if (bank == nullptr || (*bank)[counter].wraps == 0) return OverflowOwner::None();
  return (*bank)[counter].owner;
}

OverflowCounts OverflowLedger::Report(OverflowOwner owner) const {
  OverflowCounts out;
  if (const OverflowCounts* c = FindCounts(owner)) out = *c;
  for (const auto* banks : {&hardware_, &memory_}) {
    for (const TagBank& bank : *banks) {
      for (const FlagTag& tag : bank) {
        if (tag.wraps != 0 && tag.owner == owner) out.pending += tag.wraps;
      }
    }
  }
  if (ground_truth_ && owner.kind == OverflowOwner::Kind::kVcpu) {
    // Ground truth: wraps the ideal vPMU saw that never happened for real were not counted.
    if (out.expected_wraps > out.wraps) {
      out.lost_by_reason[static_cast<int>(LostReason::kCounterNotLoaded)] +=
          out.expected_wraps - out.wraps;
    } else if (out.expected_wraps != 0 || out.wraps != 0) {
      out.unexpected_wraps = out.wraps - out.expected_wraps;
    }
  }
  return out;
}

OverflowCounts OverflowLedger::Total(OverflowOwner::Kind kind) const {
  OverflowCounts total;
  const auto& all = kind == OverflowOwner::Kind::kHost ? host_counts_ : vcpu_counts_;
  for (size_t i = 0; i < all.size(); ++i) {
    const OverflowCounts c = Report({kind, static_cast<int32_t>(i)});
    total.delivered += c.delivered;
    total.coalesced += c.coalesced;
    total.pending += c.pending;
    for (int r = 0; r < kLostReasonCount; ++r) total.lost_by_reason[r] += c.lost_by_reason[r];
    total.misattributed += c.misattributed;
    total.wraps += c.wraps;
    total.expected_wraps += c.expected_wraps;
    total.unexpected_wraps += c.unexpected_wraps;
  }
  return total;
}

}  // namespace fleetpmu::partition
