#include "hypervisor-shim/partition/switch_steps.h"

#include "hypervisor-shim/partition/host_reservation.h"

namespace fleetpmu::partition {
namespace {

using pmu::ExceptionLevel;
using pmu::PmuReg;
constexpr ExceptionLevel kEl2 = ExceptionLevel::kEl2;
constexpr int kCycle = pmu::kCycleCounterBit;

// Registers the guest keeps trapped even with FGT: overflow tracking and event filtering.
constexpr pmu::FineGrainedTraps kPartitionedTraps{
    pmu::FineGrainedTraps::Bit(PmuReg::kPmovsset) | pmu::FineGrainedTraps::Bit(PmuReg::kPmovsclr) |
        pmu::FineGrainedTraps::Bit(PmuReg::kPmevtyper) | pmu::FineGrainedTraps::Bit(PmuReg::kPmccfiltr),
    pmu::FineGrainedTraps::Bit(PmuReg::kPmovsset) | pmu::FineGrainedTraps::Bit(PmuReg::kPmovsclr) |
        pmu::FineGrainedTraps::Bit(PmuReg::kPmevtyper) | pmu::FineGrainedTraps::Bit(PmuReg::kPmccfiltr),
};

pmu::Pmuv3State& Saved(SwitchContext& ctx) { return *ctx.vcpu.saved.mutable_state(); }

}  // namespace

bool NeedsTrappedFallback(const PcpuPmu& pcpu, const VcpuPmu& vcpu) {
  const VcpuPmuConfig& c = vcpu.config;
  const pmu::PmuFeatures& hw = pcpu.hw.features();
  if (!c.partitioned) return true;
  if (c.features.num_counters != hw.num_counters || c.features.p5 != hw.p5) return true;
  if (c.h > hw.num_counters) return true;
  if (c.h == 0 && !hw.hpmn0) return true;
  if (pcpu.reservation == HostReservation::kStatic && c.h > pcpu.static_guest_counters) return true;
  return false;
}

bool WantsOwnershipAtLoad(const VcpuPmu& vcpu) {
  return (vcpu.saved.state().cnten & vcpu.guest_mask()) != 0 || vcpu.saved.InterruptLine();
}

bool FilterApplies(uint16_t event) {
  // KVM backs neither SW_INCR nor CHAIN with a perf event and never filters them: both only
  // count what the guest itself did (its PMSWINC writes, its own counters' overflows).
  return event != pmu::kEventSwIncr && event != pmu::kEventChain;
}

uint32_t HardwareEventType(uint32_t guest_type, uint16_t event, const EventFilter& filter) {
  uint32_t type = guest_type & ~pmu::evtyper::kNsh;
  if (FilterApplies(event) && !filter.Allows(event)) {
    // Excluded at EL0 and EL1: U != NSU and P != NSK.
    type |= pmu::evtyper::kP | pmu::evtyper::kU;
    type &= ~(pmu::evtyper::kNsk | pmu::evtyper::kNsu);
  }
  return type;
}

uint64_t GuestMdcr(const PcpuPmu& pcpu, const VcpuPmu& vcpu) {
  uint64_t mdcr = static_cast<uint64_t>(vcpu.config.h) | pmu::mdcr::kHpme | pmu::mdcr::kHpmd |
                  pmu::mdcr::kHccd | (pcpu.host_mdcr & pmu::mdcr::kHlp);
  if (!pcpu.hw.features().fgt) mdcr |= pmu::mdcr::kTpm | pmu::mdcr::kTpmcr;
  return mdcr;
}

bool SettleTrappedFallback(SwitchContext& ctx) {
  VcpuPmu& v = ctx.vcpu;
  ++v.stats.loads;
  if (NeedsTrappedFallback(ctx.pcpu, v)) {
    v.mode = PmuMode::kTrapped;
    ++v.stats.trapped_fallbacks;
    return true;
  }
  v.mode = PmuMode::kPartitioned;
  return false;
}

bool ClaimGuestRange(SwitchContext& ctx) {
  VcpuPmu& v = ctx.vcpu;
  if (ctx.pcpu.reservation == HostReservation::kDynamic) {
    EvictHostEvents(ctx.pcpu, v.guest_mask(), ctx.ledger);
  }
  if (!WantsOwnershipAtLoad(v)) {
    v.ownership = PmuOwnership::kFree;
    ++v.stats.swaps_skipped;
    return false;
  }
  return true;
}

void ClearGuestOverflowFlags(SwitchContext& ctx) {
  const uint32_t mask = ctx.vcpu.guest_mask();
  const uint32_t stale = ctx.pcpu.hw.state().ovs & mask;
  ctx.pcpu.hw.Write({PmuReg::kPmovsclr}, mask, kEl2);
  if (stale != 0) {
    ctx.ledger.ClearUnseen(FlagLocation::Hardware(ctx.pcpu.index), stale,
                           LostReason::kFlagClearedUnseen);
  }
}

void WriteGuestCounters(SwitchContext& ctx) {
  const pmu::Pmuv3State& s = Saved(ctx);
  for (int n = 0; n < ctx.vcpu.config.h; ++n) {
    ctx.pcpu.hw.Write({PmuReg::kPmevcntr, static_cast<uint8_t>(n)}, s.evcntr[n], kEl2);
  }
  ctx.pcpu.hw.Write({PmuReg::kPmccntr}, s.ccntr, kEl2);
}

void WriteGuestEventTypes(SwitchContext& ctx) {
  const pmu::Pmuv3State& s = Saved(ctx);
  const EventFilter& filter = ctx.vcpu.config.filter;
  for (int n = 0; n < ctx.vcpu.config.h; ++n) {
    const uint16_t event = static_cast<uint16_t>(s.evtyper[n] & pmu::evtyper::kEventMask);
    ctx.pcpu.hw.Write({PmuReg::kPmevtyper, static_cast<uint8_t>(n)},
                      HardwareEventType(s.evtyper[n], event, filter), kEl2);
  }
  ctx.pcpu.hw.Write({PmuReg::kPmccfiltr},
                    HardwareEventType(s.ccfiltr, pmu::kEventCpuCycles, filter), kEl2);
}

void WriteGuestEnables(SwitchContext& ctx) {
  const pmu::Pmuv3State& s = Saved(ctx);
  const uint32_t mask = ctx.vcpu.guest_mask();
  pmu::Pmuv3& hw = ctx.pcpu.hw;
  // Write-1 registers: SET the guest's ones and CLR its zeros, never touching host bits.
  hw.Write({PmuReg::kPmcntenset}, s.cnten & mask, kEl2);
  hw.Write({PmuReg::kPmcntenclr}, ~s.cnten & mask, kEl2);
  hw.Write({PmuReg::kPmintenset}, s.inten & mask, kEl2);
  hw.Write({PmuReg::kPmintenclr}, ~s.inten & mask, kEl2);
  for (int n = 0; n < ctx.vcpu.config.h; ++n) ctx.pcpu.counter_owner[n] = OverflowOwner::Vcpu(ctx.vcpu.id);
  ctx.pcpu.counter_owner[kCycle] = OverflowOwner::Vcpu(ctx.vcpu.id);
  ctx.vcpu.in_hardware = true;
}

void InstallGuestUserState(SwitchContext& ctx) {
  pmu::Pmuv3& hw = ctx.pcpu.hw;
  SavedHostState& host = ctx.pcpu.saved_host;
  if (!host.pmuserenr_saved) {
    host.pmuserenr = hw.Read({PmuReg::kPmuserenr}, kEl2).value;
    host.pmuserenr_saved = true;
  }
  if (!host.pmselr_saved) {
    host.pmselr = hw.Read({PmuReg::kPmselr}, kEl2).value;
    host.pmselr_saved = true;
  }
  hw.Write({PmuReg::kPmuserenr}, Saved(ctx).pmuserenr, kEl2);
  hw.Write({PmuReg::kPmselr}, Saved(ctx).pmselr, kEl2);
}

void InstallGuestControl(SwitchContext& ctx) {
  pmu::Pmuv3& hw = ctx.pcpu.hw;
  SavedHostState& host = ctx.pcpu.saved_host;
  if (!host.control_saved) {
    host.pmcr = hw.Read({PmuReg::kPmcr}, kEl2).value & pmu::pmcr::kStatefulMask;
    host.control_saved = true;
  }
  // Only the stateful bits: replaying P or C would reset counters the load just wrote.
  hw.Write({PmuReg::kPmcr}, Saved(ctx).pmcr & pmu::pmcr::kStatefulMask, kEl2);
  hw.Write({PmuReg::kMdcrEl2}, GuestMdcr(ctx.pcpu, ctx.vcpu), kEl2);
  if (hw.features().fgt) hw.WriteFineGrainedTraps(kPartitionedTraps);
}

void InstallTrapEverything(SwitchContext& ctx, bool partitioned) {
  pmu::Pmuv3& hw = ctx.pcpu.hw;
  SavedHostState& host = ctx.pcpu.saved_host;
  if (!host.pmuserenr_saved) {
    host.pmuserenr = hw.Read({PmuReg::kPmuserenr}, kEl2).value;
    host.pmuserenr_saved = true;
  }
  hw.Write({PmuReg::kPmuserenr}, pmu::userenr::kMask, kEl2);
  const int hpmn = partitioned ? ctx.vcpu.config.h : hw.num_counters();
  uint64_t mdcr = static_cast<uint64_t>(hpmn) | pmu::mdcr::kTpm | pmu::mdcr::kTpmcr |
                  pmu::mdcr::kHpme | (ctx.pcpu.host_mdcr & pmu::mdcr::kHlp);
  if (partitioned) mdcr |= pmu::mdcr::kHpmd | pmu::mdcr::kHccd;
  hw.Write({PmuReg::kMdcrEl2}, mdcr, kEl2);
}

void SaveGuestExitState(SwitchContext& ctx, bool user_state) {
  pmu::Pmuv3& hw = ctx.pcpu.hw;
  pmu::Pmuv3State& s = Saved(ctx);
  if (user_state) {
    s.pmselr = static_cast<uint8_t>(hw.Read({PmuReg::kPmselr}, kEl2).value);
    s.pmuserenr = static_cast<uint8_t>(hw.Read({PmuReg::kPmuserenr}, kEl2).value);
  }
  s.pmcr = hw.Read({PmuReg::kPmcr}, kEl2).value & pmu::pmcr::kStatefulMask;
}

void RestoreHostState(SwitchContext& ctx) {
  pmu::Pmuv3& hw = ctx.pcpu.hw;
  SavedHostState& host = ctx.pcpu.saved_host;
  if (host.pmuserenr_saved) hw.Write({PmuReg::kPmuserenr}, host.pmuserenr, kEl2);
  if (host.pmselr_saved) hw.Write({PmuReg::kPmselr}, host.pmselr, kEl2);
  if (host.control_saved) hw.Write({PmuReg::kPmcr}, host.pmcr, kEl2);
  hw.Write({PmuReg::kMdcrEl2}, ctx.pcpu.host_mdcr, kEl2);
  if (hw.features().fgt && hw.state().fgt != pmu::FineGrainedTraps{}) {
    hw.WriteFineGrainedTraps({});
  }
  host = SavedHostState{};
}

void ReadGuestCounters(SwitchContext& ctx) {
  pmu::Pmuv3& hw = ctx.pcpu.hw;
  pmu::Pmuv3State& s = Saved(ctx);
  const uint32_t mask = ctx.vcpu.guest_mask();
  for (int n = 0; n < ctx.vcpu.config.h; ++n) {
    s.evcntr[n] = hw.Read({PmuReg::kPmevcntr, static_cast<uint8_t>(n)}, kEl2).value;
  }
  s.ccntr = hw.Read({PmuReg::kPmccntr}, kEl2).value;
  s.cnten = static_cast<uint32_t>(hw.Read({PmuReg::kPmcntenset}, kEl2).value) & mask;
  s.inten = static_cast<uint32_t>(hw.Read({PmuReg::kPmintenset}, kEl2).value) & mask;
}

void HarvestOverflows(SwitchContext& ctx) {
  pmu::Pmuv3& hw = ctx.pcpu.hw;
  // Interrupts are off here: nothing can set or clear a flag between the read and the clear.
  const uint32_t flags = static_cast<uint32_t>(hw.Read({PmuReg::kPmovsset}, kEl2).value) &
                         ctx.vcpu.guest_mask();
  if (flags == 0) return;
  Saved(ctx).ovs |= flags;
  ctx.ledger.Move(FlagLocation::Hardware(ctx.pcpu.index), FlagLocation::Memory(ctx.vcpu.id), flags);
  hw.Write({PmuReg::kPmovsclr}, flags, kEl2);
}

void DisableGuestRange(SwitchContext& ctx) {
  const uint32_t mask = ctx.vcpu.guest_mask();
  ctx.pcpu.hw.Write({PmuReg::kPmcntenclr}, mask, kEl2);
  ctx.pcpu.hw.Write({PmuReg::kPmintenclr}, mask, kEl2);
  for (int n = 0; n < ctx.vcpu.config.h; ++n) ctx.pcpu.counter_owner[n] = OverflowOwner::None();
  ctx.pcpu.counter_owner[kCycle] = OverflowOwner::None();
  ctx.vcpu.in_hardware = false;
}

void UpdateVirtualIrq(VcpuPmu& vcpu, const PcpuPmu* pcpu) {
  bool level;
  if (vcpu.in_hardware && pcpu != nullptr) {
    const pmu::Pmuv3State& hw = pcpu->hw.state();
    const uint64_t pmcr = vcpu.in_guest ? hw.pmcr : vcpu.saved.state().pmcr;
    level = (pmcr & pmu::pmcr::kE) != 0 &&
            (vcpu.saved.state().ovs & hw.inten & vcpu.guest_mask()) != 0;
  } else {
    level = vcpu.saved.InterruptLine();
  }
  if (level && !vcpu.virtual_irq_level) {
    ++vcpu.stats.virtual_irq_assertions;
    if (vcpu.halted) {
      vcpu.halted = false;
      ++vcpu.stats.halted_wakes;
    }
  }
  vcpu.virtual_irq_level = level;
}

}  // namespace fleetpmu::partition
