#include "hypervisor-shim/partition/pmu_trap_handler.h"

namespace fleetpmu::partition {
namespace {

using pmu::AccessOutcome;
using pmu::AccessResult;
using pmu::ExceptionLevel;
using pmu::PmuReg;
using pmu::PmuRegRef;
constexpr ExceptionLevel kEl2 = ExceptionLevel::kEl2;

// The access against the in-memory PMU, which answers exactly as the guest's own PMU would.
AccessResult OnSavedCopy(SwitchContext& ctx, PmuRegRef ref, uint64_t value, bool is_write,
                         ExceptionLevel el) {
  VcpuPmu& v = ctx.vcpu;
  if (is_write && ref.reg == PmuReg::kPmovsclr) {
    const uint32_t cleared = static_cast<uint32_t>(value) & v.saved.state().ovs & v.guest_mask();
    ctx.ledger.ClearSeenBy(FlagLocation::Memory(v.id), cleared, OverflowOwner::Vcpu(v.id));
  }
  // The trap is a context synchronisation event for the in-memory PMU too.
  v.saved.ContextSynchronize();
  return is_write ? v.saved.Write(ref, value, el) : v.saved.Read(ref, el);
}

AccessResult OverflowStatus(SwitchContext& ctx, PmuRegRef ref, uint64_t value, bool is_write) {
  VcpuPmu& v = ctx.vcpu;
  pmu::Pmuv3& hw = ctx.pcpu.hw;
  pmu::Pmuv3State& s = *v.saved.mutable_state();
  const uint32_t mask = v.guest_mask();
  if (!is_write) {
    const uint32_t live = static_cast<uint32_t>(hw.Read({PmuReg::kPmovsset}, kEl2).value);
    return {AccessOutcome::kOk, (s.ovs | live) & mask, nullptr};
  }
  const uint32_t bits = static_cast<uint32_t>(value) & mask;
  if (ref.reg == PmuReg::kPmovsset) {
    s.ovs |= bits;
    return {};
  }
  const uint32_t in_hw = hw.state().ovs & bits;
  ctx.ledger.ClearSeenBy(FlagLocation::Memory(v.id), s.ovs & bits, OverflowOwner::Vcpu(v.id));
  ctx.ledger.ClearSeenBy(FlagLocation::Hardware(ctx.pcpu.index), in_hw, OverflowOwner::Vcpu(v.id));
  s.ovs &= ~bits;
  if (in_hw != 0) hw.Write({PmuReg::kPmovsclr}, in_hw, kEl2);
  return {};
}

AccessResult EventType(SwitchContext& ctx, PmuRegRef ref, uint64_t value, bool is_write) {
  VcpuPmu& v = ctx.vcpu;
  pmu::Pmuv3State& s = *v.saved.mutable_state();
  // PMXEVTYPER resolves through the guest's PMSELR, live in hardware; the trap synchronised it.
  if (ref.reg == PmuReg::kPmxevtyper) {
    const int sel = ctx.pcpu.hw.state().pmselr & 0x1F;
    if (sel == pmu::kCycleCounterBit) ref = {PmuReg::kPmccfiltr};
    else ref = {PmuReg::kPmevtyper, static_cast<uint8_t>(sel)};
  }
  const bool cycle = ref.reg == PmuReg::kPmccfiltr;
  if (!cycle && ref.n >= v.config.h) {
    return {AccessOutcome::kUndefined, 0, "counter index >= guest PMCR_EL0.N"};
  }
  uint32_t& stored = cycle ? s.ccfiltr : s.evtyper[ref.n];
  if (!is_write) return {AccessOutcome::kOk, stored, nullptr};
  stored = static_cast<uint32_t>(value) &
           (cycle ? pmu::evtyper::kFilterMask : (pmu::evtyper::kFilterMask | pmu::evtyper::kEventMask));
  const uint16_t event = cycle ? pmu::kEventCpuCycles : static_cast<uint16_t>(stored & pmu::evtyper::kEventMask);
  ctx.pcpu.hw.Write(ref, HardwareEventType(stored, event, v.config.filter), kEl2);
  return {};
}

}  // namespace

TrapResult HandlePmuTrap(SwitchContext& ctx, const ContextSwitch& policy, PmuRegRef ref,
                         uint64_t value, bool is_write, ExceptionLevel el) {
  VcpuPmu& v = ctx.vcpu;
  ++v.stats.traps_by_register[static_cast<int>(ref.reg)];
  TrapResult out;
  if (v.mode == PmuMode::kTrapped || !policy.LoadsIntoHardware(ctx.pcpu)) {
    if (v.mode == PmuMode::kPartitioned && v.ownership == PmuOwnership::kFree) {
      policy.Promote(ctx);
    }
    out.access = OnSavedCopy(ctx, ref, value, is_write, el);
  } else if (v.ownership == PmuOwnership::kFree) {
    policy.Promote(ctx);
    out.retry = true;
    return out;
  } else {
    switch (ref.reg) {
      case PmuReg::kPmovsset:
      case PmuReg::kPmovsclr:
        out.access = OverflowStatus(ctx, ref, value, is_write);
        break;
      case PmuReg::kPmevtyper:
      case PmuReg::kPmxevtyper:
      case PmuReg::kPmccfiltr:
        out.access = EventType(ctx, ref, value, is_write);
        break;
      default:
        out.access = ctx.pcpu.hw.Emulate(ref, value, is_write, el);
        break;
    }
  }
  UpdateVirtualIrq(v, &ctx.pcpu);
  return out;
}

}  // namespace fleetpmu::partition
