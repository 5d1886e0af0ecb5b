#include "hypervisor-shim/partition/host_reservation.h"

namespace fleetpmu::partition {
namespace {

using pmu::ExceptionLevel;
using pmu::PmuReg;
using pmu::PmuRegRef;
constexpr ExceptionLevel kEl2 = ExceptionLevel::kEl2;
constexpr int kCycle = pmu::kCycleCounterBit;

// Host events count everywhere: EL0, EL1 and (NSH) EL2, like a per-CPU perf event.
constexpr uint32_t kHostFilter = pmu::evtyper::kNsh;

uint32_t OccupiedCounters(const PcpuPmu& pcpu) {
  uint32_t used = 0;
  for (const HostEvent& e : pcpu.host_events) {
    if (e.counter >= 0) used |= 1u << e.counter;
  }
  return used;
}

int CounterWidth(const PcpuPmu& pcpu, int counter) {
  if (counter == kCycle) return 64;  // the host always runs PMCR.LC = 1
  return pcpu.hw.features().p5 ? 64 : 32;
}

// perf arms a sampling counter at -period so that it wraps after `period` events.
uint64_t ArmedValue(const PcpuPmu& pcpu, const HostEvent& e, int counter) {
  if (e.period == 0) return 0;
  const int width = CounterWidth(pcpu, counter);
  return width == 64 ? (0 - e.period) : ((1ull << 32) - (e.period & 0xFFFFFFFFull));
}

void Place(PcpuPmu& pcpu, HostEvent& e, int counter) {
  pmu::Pmuv3& hw = pcpu.hw;
  const uint32_t bit = 1u << counter;
  if (counter == kCycle) {
    hw.Write({PmuReg::kPmccfiltr}, kHostFilter, kEl2);
    hw.Write({PmuReg::kPmccntr}, ArmedValue(pcpu, e, counter), kEl2);
  } else {
    const uint8_t n = static_cast<uint8_t>(counter);
    hw.Write({PmuReg::kPmevtyper, n}, kHostFilter | e.event, kEl2);
    hw.Write({PmuReg::kPmevcntr, n}, ArmedValue(pcpu, e, counter), kEl2);
  }
  if (e.period != 0) hw.Write({PmuReg::kPmintenset}, bit, kEl2);
  hw.Write({PmuReg::kPmcntenset}, bit, kEl2);
  e.counter = counter;
  pcpu.counter_owner[counter] = OverflowOwner::Host(e.id);
}

void Unplace(PcpuPmu& pcpu, HostEvent& e, OverflowLedger& ledger) {
  pmu::Pmuv3& hw = pcpu.hw;
  const int counter = e.counter;
  const uint32_t bit = 1u << counter;
  hw.Write({PmuReg::kPmcntenclr}, bit, kEl2);
  hw.Write({PmuReg::kPmintenclr}, bit, kEl2);
  const PmuRegRef value_reg =
      counter == kCycle ? PmuRegRef{PmuReg::kPmccntr} : PmuRegRef{PmuReg::kPmevcntr, static_cast<uint8_t>(counter)};
  const uint64_t value = hw.Read(value_reg, kEl2).value;
  e.count += value - ArmedValue(pcpu, e, counter);
  // perf's stop path folds a pending overflow into the event before giving up the counter.
  HandleHostEventOverflows(pcpu, hw.state().ovs & bit, ledger);
  e.counter = -1;
  pcpu.counter_owner[counter] = OverflowOwner::None();
}

int FreeCounterFor(const PcpuPmu& pcpu, const HostEvent& e, uint32_t usable) {
  const uint32_t free = usable & ~OccupiedCounters(pcpu);
  if (e.event == pmu::kEventCpuCycles && (free & pmu::kCycleCounterMask)) return kCycle;
  const uint32_t event_counters = free & ~pmu::kCycleCounterMask;
  // Highest first: keeps the low counters, which guests claim, free for as long as possible.
  if (event_counters == 0) return -1;
  return 31 - __builtin_clz(event_counters);
}

}  // namespace

uint32_t HostUsableCounters(const PcpuPmu& pcpu) {
  const int n = pcpu.hw.num_counters();
  if (pcpu.reservation == HostReservation::kStatic) {
    return pmu::CounterRangeMask(pcpu.static_guest_counters, n);
  }
  const VcpuPmu* v = pcpu.loaded;
  if (v != nullptr && v->mode == PmuMode::kPartitioned) {
    return pmu::CounterRangeMask(0, n) & ~v->guest_mask();
  }
  return pmu::CounterRangeMask(0, n) | pmu::kCycleCounterMask;
}

void AccountHostEventTime(PcpuPmu& pcpu, uint64_t now_ns) {
  if (now_ns <= pcpu.now_ns) return;
  const uint64_t dt = now_ns - pcpu.now_ns;
  for (HostEvent& e : pcpu.host_events) {
    e.enabled_ns += dt;
    if (e.counter >= 0) e.running_ns += dt;
  }
  pcpu.now_ns = now_ns;
}

void ScheduleHostEvents(PcpuPmu& pcpu, OverflowLedger& ledger) {
  (void)ledger;
  const uint64_t accesses_before = pcpu.hw.access_counts().total;
  const uint32_t usable = HostUsableCounters(pcpu);
  for (HostEvent& e : pcpu.host_events) {
    if (e.counter >= 0) continue;
    const int counter = FreeCounterFor(pcpu, e, usable);
    if (counter < 0) continue;
    Place(pcpu, e, counter);
  }
  pcpu.host_reservation_accesses += pcpu.hw.access_counts().total - accesses_before;
}

int EvictHostEvents(PcpuPmu& pcpu, uint32_t claimed, OverflowLedger& ledger) {
  int evicted = 0;
  const uint64_t accesses_before = pcpu.hw.access_counts().total;
  const uint32_t usable = HostUsableCounters(pcpu) & ~claimed;
  for (HostEvent& e : pcpu.host_events) {
    if (e.counter < 0 || (claimed & (1u << e.counter)) == 0) continue;
    ++evicted;
    Unplace(pcpu, e, ledger);
    const int counter = FreeCounterFor(pcpu, e, usable);
    if (counter >= 0) {
      Place(pcpu, e, counter);
      ++e.times_moved;
      ++pcpu.events_moved_at_load;
    } else {
      ++e.times_squeezed;
      ++pcpu.events_squeezed_at_load;
    }
  }
  pcpu.host_reservation_accesses += pcpu.hw.access_counts().total - accesses_before;
  return evicted;
}

void RotateHostEvents(PcpuPmu& pcpu, OverflowLedger& ledger) {
  bool waiting = false;
  HostEvent* longest = nullptr;
  for (HostEvent& e : pcpu.host_events) {
    if (e.counter < 0) waiting = true;
    else if (longest == nullptr || e.running_ns > longest->running_ns) longest = &e;
  }
  if (!waiting || longest == nullptr) return;
  Unplace(pcpu, *longest, ledger);
  // Waiting events first: the yielding one goes to the back of the queue.
  HostEvent yielded = *longest;
  pcpu.host_events.erase(pcpu.host_events.begin() + (longest - pcpu.host_events.data()));
  pcpu.host_events.push_back(yielded);
  ScheduleHostEvents(pcpu, ledger);
}

uint32_t HandleHostEventOverflows(PcpuPmu& pcpu, uint32_t flags, OverflowLedger& ledger) {
  uint32_t handled = 0;
  pmu::Pmuv3& hw = pcpu.hw;
  for (HostEvent& e : pcpu.host_events) {
    if (e.counter < 0) continue;
    const uint32_t bit = 1u << e.counter;
    if ((flags & bit) == 0) continue;
    handled |= bit;
    ++e.overflows_handled;
    ledger.ClearSeenBy(FlagLocation::Hardware(pcpu.index), bit, OverflowOwner::Host(e.id));
    if (e.period != 0) {
      e.count += e.period;
      const PmuRegRef value_reg = e.counter == kCycle
                                      ? PmuRegRef{PmuReg::kPmccntr}
                                      : PmuRegRef{PmuReg::kPmevcntr, static_cast<uint8_t>(e.counter)};
      // Re-arm relative to what has counted past the wrap, as perf's period handling does.
      const uint64_t now_value = hw.Read(value_reg, kEl2).value;
      hw.Write(value_reg, ArmedValue(pcpu, e, e.counter) + now_value, kEl2);
    }
  }
  if (handled != 0) {
    hw.Write({PmuReg::kPmovsclr}, handled, kEl2);
  }
  return handled;
}

}  // namespace fleetpmu::partition
