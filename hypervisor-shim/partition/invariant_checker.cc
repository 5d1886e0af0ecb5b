#include "hypervisor-shim/partition/invariant_checker.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "hypervisor-shim/partition/host_reservation.h"
#include "hypervisor-shim/partition/partitioned_host.h"
#include "hypervisor-shim/partition/switch_steps.h"

namespace fleetpmu::partition {
namespace {

using pmu::ExceptionLevel;
using pmu::PmuReg;

constexpr int kCycle = pmu::kCycleCounterBit;

// Counters whose owner changed: host events moved by the reservation, not by the vCPU switch.
uint32_t ReassignedCounters(const PcpuSnapshot& before, const PcpuPmu& pcpu) {
  uint32_t moved = 0;
  for (int n = 0; n < 32; ++n) {
    if (!(before.counter_owner[n] == pcpu.counter_owner[n]) &&
        (before.counter_owner[n].kind == OverflowOwner::Kind::kHost ||
         pcpu.counter_owner[n].kind == OverflowOwner::Kind::kHost)) {
      moved |= 1u << n;
    }
  }
  return moved;
}

bool VcpuLive(const VcpuPmu& v) { return v.mode == PmuMode::kPartitioned && v.in_hardware; }

}  // namespace

void InvariantChecker::Record(int invariant, std::string message) {
  ++counts_[invariant];
  if (first_.size() < kKeptMessages) first_.push_back({invariant, std::move(message)});
}

uint64_t InvariantChecker::total() const {
  uint64_t sum = 0;
  for (int i = 1; i <= kCount; ++i) sum += counts_[i];
  return sum;
}

std::string InvariantChecker::Summary() const {
  std::string out;
  for (int i = 1; i <= kCount; ++i) absl::StrAppend(&out, i == 1 ? "" : " ", i, ":", counts_[i]);
  return out;
}

PcpuSnapshot InvariantChecker::Snapshot(const PcpuPmu& pcpu) {
  return {pcpu.hw.state(), pcpu.hw.access_counts(), pcpu.counter_owner, pcpu.host_reservation_accesses};
}

void InvariantChecker::CheckState(const PartitionedHost& host) {
  for (int i = 0; i < host.num_pcpus(); ++i) CheckPcpuState(host.pcpu(i));
}

void InvariantChecker::CheckPcpuState(const PcpuPmu& p) {
  const int i = p.index;
  const pmu::Pmuv3State& hw = p.hw.state();
  const int n_counters = p.hw.num_counters();
  const int hpmn = p.hw.hpmn();
  const VcpuPmu* v = p.loaded;

  // 14: unimplemented bits RAZ/WI, storage width.
  const uint32_t impl = p.hw.ImplementedMask();
  if ((hw.cnten | hw.inten | hw.ovs) & ~impl) {
    Record(14, absl::StrFormat("pCPU %d: bitmap bits set outside implemented mask 0x%08x", i, impl));
  }
  for (int n = 0; n < pmu::kMaxEventCounters; ++n) {
    if (n >= n_counters && (hw.evcntr[n] != 0 || hw.evtyper[n] != 0)) {
      Record(14, absl::StrFormat("pCPU %d: unimplemented counter %d holds state", i, n));
    }
    if (!p.hw.features().p5 && (hw.evcntr[n] >> 32) != 0) {
      Record(14, absl::StrFormat("pCPU %d: counter %d exceeds 32 bits without PMUv3p5", i, n));
    }
  }

  // 2: MDCR_EL2 matches the context.
  const bool guest_ctx = v != nullptr && v->in_guest;
  if (!guest_ctx || v->mode == PmuMode::kTrapped) {
    if (hpmn != n_counters) {
      Record(2, absl::StrFormat("pCPU %d: HPMN=%d outside partitioned guest context, expected N=%d", i, hpmn, n_counters));
    }
  } else {
    const uint64_t need = pmu::mdcr::kHpme | pmu::mdcr::kHpmd | pmu::mdcr::kHccd;
    if (hpmn != v->config.h || (hw.mdcr & need) != need) {
      Record(2, absl::StrFormat("pCPU %d vCPU %d: guest MDCR_EL2=0x%x, expected HPMN=%d with HPME, HPMD, HCCD",
                                i, v->id, hw.mdcr, v->config.h));
    }
    // 11: the guest sees PMCR.N == h (PMCR.N reads HPMN below EL2).
    if (hpmn != v->config.h) Record(11, absl::StrFormat("vCPU %d: guest PMCR.N=%d, h=%d", v->id, hpmn, v->config.h));
  }
  if (v == nullptr) return;

  // 3: only what can be partitioned runs partitioned.
  if (v->mode == PmuMode::kPartitioned) {
    if (v->config.h > n_counters || (v->config.h == 0 && !p.hw.features().hpmn0) ||
        v->config.features.num_counters != n_counters || v->config.features.p5 != p.hw.features().p5) {
      Record(3, absl::StrFormat("vCPU %d (h=%d) runs partitioned on pCPU %d (N=%d, HPMN0=%d) it does not fit",
                                v->id, v->config.h, i, n_counters, p.hw.features().hpmn0));
    }
  }

  // 4: dynamic reservation keeps host events off a loaded partitioned vCPU's counters.
  if (p.reservation == HostReservation::kDynamic && v->mode == PmuMode::kPartitioned) {
    for (const HostEvent& e : p.host_events) {
      if (e.counter >= 0 && (v->guest_mask() & (1u << e.counter))) {
        Record(4, absl::StrFormat("pCPU %d: host event %s on counter %d while vCPU %d (h=%d) is loaded",
                                  i, e.name, e.counter, v->id, v->config.h));
      }
    }
  }

  // 5: guest types in hardware never include EL2; denied events never count.
  if (VcpuLive(*v)) {
    const pmu::Pmuv3State& s = v->saved.state();
    for (int n = 0; n <= v->config.h; ++n) {
      const bool cycle = n == v->config.h;
      const uint32_t type = cycle ? hw.ccfiltr : hw.evtyper[n];
      const uint16_t event = cycle ? pmu::kEventCpuCycles : static_cast<uint16_t>(s.evtyper[n] & pmu::evtyper::kEventMask);
      if (type & pmu::evtyper::kNsh) {
        Record(5, absl::StrFormat("pCPU %d: guest %s has NSH set in hardware", i, cycle ? "PMCCFILTR" : absl::StrCat("PMEVTYPER", n)));
      }
      if (FilterApplies(event) && !v->config.filter.Allows(event) &&
          (pmu::FilterAllows(type, ExceptionLevel::kEl0) || pmu::FilterAllows(type, ExceptionLevel::kEl1))) {
        Record(5, absl::StrFormat("pCPU %d: denied event 0x%x can count on counter %d", i, event, cycle ? kCycle : n));
      }
    }
  }

  // 9: the virtual line follows vPMOVSSET & vPMINTENSET & PMCR.E. With FGT a guest in guest
  // context writes PMINTEN/PMCR directly, which the hypervisor sees at its next exit only.
  if (!(v->in_guest && p.hw.features().fgt && VcpuLive(*v))) {
    bool expected;
    if (VcpuLive(*v)) {
      const uint64_t pmcr = v->in_guest ? hw.pmcr : v->saved.state().pmcr;
      expected = (pmcr & pmu::pmcr::kE) && (v->saved.state().ovs & hw.inten & v->guest_mask());
    } else {
      expected = v->saved.InterruptLine();
    }
    if (expected != v->virtual_irq_level) {
      Record(9, absl::StrFormat("vCPU %d: virtual PMU line %d, overflow condition %d", v->id,
                                v->virtual_irq_level, expected));
    }
    // 16: the interrupt timeline matches the ideal vPMU's once the host has taken the physical
    // interrupt (a pending one is still on its way). Between exit and put the guest observes
    // nothing, and the host's own PMCR may mask its flags until put harvests them.
    const bool between_exit_and_put = !v->in_guest && VcpuLive(*v);
    if (v->ideal && !between_exit_and_put && !p.hw.InterruptLine() &&
        v->ideal->InterruptLine() != v->virtual_irq_level) {
      Record(16, absl::StrFormat("vCPU %d: virtual PMU line %d, ideal vPMU line %d", v->id,
                                 v->virtual_irq_level, v->ideal->InterruptLine()));
    }
  }
}

void InvariantChecker::CheckLoad(const PcpuSnapshot& before, const PcpuPmu& pcpu, const VcpuPmu& v) {
  const pmu::Pmuv3State& hw = pcpu.hw.state();
  const uint32_t guest = v.mode == PmuMode::kPartitioned ? v.guest_mask() : 0;
  const uint32_t host = pcpu.hw.ImplementedMask() & ~guest & ~ReassignedCounters(before, pcpu);

  // 1: host-range bits and host counters untouched.
  if (((before.hw.cnten ^ hw.cnten) | (before.hw.inten ^ hw.inten) | (before.hw.ovs ^ hw.ovs)) & host) {
    Record(1, absl::StrFormat("load of vCPU %d changed host-range enable/overflow bits on pCPU %d", v.id, pcpu.index));
  }
  for (int n = 0; n < pcpu.hw.num_counters(); ++n) {
    if ((host & (1u << n)) && (before.hw.evcntr[n] != hw.evcntr[n] || before.hw.evtyper[n] != hw.evtyper[n])) {
      Record(1, absl::StrFormat("load of vCPU %d changed host counter %d on pCPU %d", v.id, n, pcpu.index));
    }
  }
  // 13: never PMXEV*, never an UNPREDICTABLE access.
  const auto& c0 = before.counts;
  const auto& c1 = pcpu.hw.access_counts();
  if (c1.by_register[static_cast<int>(PmuReg::kPmxevcntr)] != c0.by_register[static_cast<int>(PmuReg::kPmxevcntr)] ||
      c1.by_register[static_cast<int>(PmuReg::kPmxevtyper)] != c0.by_register[static_cast<int>(PmuReg::kPmxevtyper)] ||
      c1.unpredictable != c0.unpredictable) {
    Record(13, absl::StrFormat("load of vCPU %d used PMXEV* or an UNPREDICTABLE access", v.id));
  }
  const uint64_t own_accesses = (c1.total - c0.total) - (pcpu.host_reservation_accesses - before.host_accesses);
  // 15: a FREE vCPU costs nothing.
  if (v.mode == PmuMode::kPartitioned && v.ownership == PmuOwnership::kFree && own_accesses != 0) {
    Record(15, absl::StrFormat("load of FREE vCPU %d made %d register accesses", v.id, own_accesses));
  }
  if (!VcpuLive(v)) return;
  // 8: no overflow flag that was there before the load survives it into the guest's context.
  if (before.hw.ovs & hw.ovs & guest) {
    Record(8, absl::StrFormat("load of vCPU %d enabled counters over stale overflow flags 0x%08x",
                              v.id, before.hw.ovs & hw.ovs & guest));
  }
  // 10: counters hold exactly the saved values (no P or C replayed).
  const pmu::Pmuv3State& s = v.saved.state();
  for (int n = 0; n < v.config.h; ++n) {
    if (hw.evcntr[n] != s.evcntr[n]) Record(10, absl::StrFormat("load of vCPU %d: counter %d is 0x%x, saved 0x%x", v.id, n, hw.evcntr[n], s.evcntr[n]));
  }
  if (hw.ccntr != s.ccntr) Record(10, absl::StrFormat("load of vCPU %d: PMCCNTR differs from saved", v.id));
}

void InvariantChecker::CheckPromotion(const PcpuSnapshot& before, const PcpuPmu& pcpu, const VcpuPmu& v) {
  // 8, for the full load a FREE vCPU's first access triggers.
  if (VcpuLive(v) && (before.hw.ovs & pcpu.hw.state().ovs & v.guest_mask())) {
    Record(8, absl::StrFormat("promotion of vCPU %d enabled counters over stale overflow flags 0x%08x", v.id,
                              before.hw.ovs & pcpu.hw.state().ovs & v.guest_mask()));
  }
}

void InvariantChecker::CheckEntry(const PcpuSnapshot& before, const PcpuPmu& pcpu, const VcpuPmu& v) {
  if (!VcpuLive(v)) return;
  // 10: installing the guest PMCR must not act as P or C.
  for (int n = 0; n < v.config.h; ++n) {
    if (pcpu.hw.state().evcntr[n] != before.hw.evcntr[n]) {
      Record(10, absl::StrFormat("entry of vCPU %d changed counter %d", v.id, n));
    }
  }
  if (pcpu.hw.state().ccntr != before.hw.ccntr) Record(10, absl::StrFormat("entry of vCPU %d changed PMCCNTR", v.id));
}

void InvariantChecker::CheckPut(const PcpuSnapshot& before, const PcpuPmu& pcpu, const VcpuPmu& v,
                                bool was_guest_owned) {
  const pmu::Pmuv3State& hw = pcpu.hw.state();
  const uint32_t guest = v.mode == PmuMode::kPartitioned ? v.guest_mask() : 0;
  const uint32_t host = pcpu.hw.ImplementedMask() & ~guest & ~ReassignedCounters(before, pcpu);
  if (((before.hw.cnten ^ hw.cnten) | (before.hw.inten ^ hw.inten) | (before.hw.ovs ^ hw.ovs)) & host) {
    Record(1, absl::StrFormat("put of vCPU %d changed host-range enable/overflow bits on pCPU %d", v.id, pcpu.index));
  }
  for (int n = 0; n < pcpu.hw.num_counters(); ++n) {
    if ((host & (1u << n)) && (before.hw.evcntr[n] != hw.evcntr[n] || before.hw.evtyper[n] != hw.evtyper[n])) {
      Record(1, absl::StrFormat("put of vCPU %d changed host counter %d on pCPU %d", v.id, n, pcpu.index));
    }
  }
  const auto& c0 = before.counts;
  const auto& c1 = pcpu.hw.access_counts();
  if (c1.by_register[static_cast<int>(PmuReg::kPmxevcntr)] != c0.by_register[static_cast<int>(PmuReg::kPmxevcntr)] ||
      c1.by_register[static_cast<int>(PmuReg::kPmxevtyper)] != c0.by_register[static_cast<int>(PmuReg::kPmxevtyper)] ||
      c1.unpredictable != c0.unpredictable) {
    Record(13, absl::StrFormat("put of vCPU %d used PMXEV* or an UNPREDICTABLE access", v.id));
  }
  if (!was_guest_owned && v.mode == PmuMode::kPartitioned && c1.total != c0.total) {
    Record(15, absl::StrFormat("put of FREE vCPU %d made %d register accesses", v.id, c1.total - c0.total));
  }
  // 7: a descheduled guest leaves no flag, enable or interrupt enable in its range.
  if (was_guest_owned) {
    const uint32_t left = (hw.ovs | hw.cnten | hw.inten) & guest;
    if (left != 0) {
      Record(7, absl::StrFormat("put of vCPU %d left guest-range bits 0x%08x (PMOVS 0x%08x) in hardware",
                                v.id, left, hw.ovs & guest));
    }
  }
}

void InvariantChecker::CheckHostUserState(const PcpuPmu& pcpu, uint64_t host_pmuserenr,
                                          uint64_t host_pmselr, int vcpu_id) {
  const pmu::Pmuv3State& hw = pcpu.hw.state();
  if (hw.pmuserenr != host_pmuserenr || hw.pmselr != host_pmselr) {
    Record(12, absl::StrFormat("after vCPU %d's load/put pair on pCPU %d the host sees PMUSERENR=0x%x PMSELR=0x%x, "
                               "it had 0x%x and 0x%x", vcpu_id, pcpu.index, hw.pmuserenr, hw.pmselr,
                               host_pmuserenr, host_pmselr));
  }
}

void InvariantChecker::CheckGuestAccess(const VcpuPmu& v, pmu::PmuRegRef ref, bool is_write,
                                        const pmu::AccessResult& actual, const pmu::AccessResult& ideal) {
  using pmu::AccessOutcome;
  if (actual.outcome == AccessOutcome::kUnpredictable || ideal.outcome == AccessOutcome::kUnpredictable) return;
  if (actual.outcome != ideal.outcome) {
    Record(17, absl::StrFormat("vCPU %d: %s %s was %s, ideal vPMU says %s", v.id, is_write ? "write" : "read",
                               pmu::RegisterName(ref), actual.why ? actual.why : "OK", ideal.why ? ideal.why : "OK"));
    return;
  }
  if (is_write || !actual.ok()) return;
  if (ref.reg == PmuReg::kPmcr && ((actual.value & pmu::pmcr::kNMask) >> pmu::pmcr::kNShift) != static_cast<uint64_t>(v.config.h)) {
    Record(11, absl::StrFormat("vCPU %d read PMCR.N=%d, h=%d", v.id, (actual.value & pmu::pmcr::kNMask) >> pmu::pmcr::kNShift, v.config.h));
  }
  if (actual.value != ideal.value) {
    Record(17, absl::StrFormat("vCPU %d read %s = 0x%x, ideal vPMU holds 0x%x", v.id, pmu::RegisterName(ref),
                               actual.value, ideal.value));
  }
}

void InvariantChecker::CheckGuestWrite(const PcpuSnapshot& before, const PcpuPmu& pcpu, const VcpuPmu& v,
                                       pmu::PmuRegRef ref, uint64_t value) {
  if (ref.reg != PmuReg::kPmcr || (value & (pmu::pmcr::kP | pmu::pmcr::kC)) == 0) return;
  // 10: a guest PMCR.P zeroes only [0,h); PMCR.C only PMCCNTR.
  for (int n = v.config.h; n < pcpu.hw.num_counters(); ++n) {
    if (pcpu.hw.state().evcntr[n] != before.hw.evcntr[n]) {
      Record(10, absl::StrFormat("guest PMCR write by vCPU %d reset host counter %d", v.id, n));
    }
  }
}

void InvariantChecker::CheckLost(uint64_t total_lost, uint64_t total_misattributed) {
  // 6: every wrap is delivered or visible to its owner.
  if (total_lost > lost_seen_) {
    Record(6, absl::StrFormat("%d overflow(s) lost", total_lost - lost_seen_));
    lost_seen_ = total_lost;
  }
  if (total_misattributed > misattributed_seen_) {
    Record(6, absl::StrFormat("%d overflow flag(s) seen by an owner that did not cause them",
                              total_misattributed - misattributed_seen_));
    misattributed_seen_ = total_misattributed;
  }
}

}  // namespace fleetpmu::partition
