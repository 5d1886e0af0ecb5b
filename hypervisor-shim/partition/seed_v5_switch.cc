// The partitioned context switch as the seed patch (v5 17/24) posted it: policy `seed-v5`.
//
// Kept selectable so that every detector can be shown to fire on it. Its five defects, each
// marked below with [defect N]:
//  1. load and put return early when FGT is not in use: guest events do not count;
//  2. guest PMUSERENR is installed at load and saved at put: the host's value is lost;
//  3. PMSELR is written at load rather than at entry (and the host's is never restored);
//  4. PMINTEN/PMCNTEN are written at load without clearing stale hardware overflow bits;
//  5. put does not harvest PMOVS: a flag raised near the put is left for the next owner.
#include "hypervisor-shim/partition/context_switch.h"

namespace fleetpmu::partition {
namespace {

using pmu::ExceptionLevel;
using pmu::PmuReg;

class SeedV5Switch final : public ContextSwitch {
 public:
  void Load(SwitchContext& ctx) const override {
    if (SettleTrappedFallback(ctx)) return;
    if (!ctx.pcpu.hw.features().fgt) return;  // [defect 1]
    if (!ClaimGuestRange(ctx)) return;
    FullLoad(ctx);
  }

  void EnterGuest(SwitchContext& ctx) const override {
    VcpuPmu& v = ctx.vcpu;
    if (v.mode == PmuMode::kTrapped) {
      InstallTrapEverything(ctx, /*partitioned=*/false);
    } else if (v.ownership == PmuOwnership::kFree || !ctx.pcpu.hw.features().fgt) {
      InstallTrapEverything(ctx, /*partitioned=*/true);
    } else {
      InstallGuestControl(ctx);
    }
    v.in_guest = true;
    ctx.pcpu.hw.ContextSynchronize();
    UpdateVirtualIrq(v, &ctx.pcpu);
  }

  void ExitGuest(SwitchContext& ctx) const override {
    VcpuPmu& v = ctx.vcpu;
    if (v.mode == PmuMode::kPartitioned && v.in_hardware) {
      SaveGuestExitState(ctx, /*user_state=*/false);
    }
    RestoreHostState(ctx);
    v.in_guest = false;
    ctx.pcpu.hw.ContextSynchronize();
  }

  void Put(SwitchContext& ctx) const override {
    VcpuPmu& v = ctx.vcpu;
    ++v.stats.puts;
    if (v.mode == PmuMode::kPartitioned && !ctx.pcpu.hw.features().fgt) return;  // [defect 1]
    if (v.mode == PmuMode::kPartitioned && v.in_hardware) {
      ReadGuestCounters(ctx);
      // [defect 5] no harvest of PMOVS before the range is disabled.
      DisableGuestRange(ctx);
      // [defect 2, 3] the guest's values are taken from hardware; the host's never come back.
      pmu::Pmuv3State& s = *v.saved.mutable_state();
      s.pmuserenr = static_cast<uint8_t>(ctx.pcpu.hw.Read({PmuReg::kPmuserenr}, ExceptionLevel::kEl2).value);
      s.pmselr = static_cast<uint8_t>(ctx.pcpu.hw.Read({PmuReg::kPmselr}, ExceptionLevel::kEl2).value);
    }
    v.ownership = PmuOwnership::kFree;
  }

  void Promote(SwitchContext& ctx) const override {
    ++ctx.vcpu.stats.promotions;
    if (!ctx.pcpu.hw.features().fgt) {  // [defect 1] nothing is loaded
      ctx.vcpu.ownership = PmuOwnership::kGuestOwned;
      return;
    }
    FullLoad(ctx);
    InstallGuestControl(ctx);
    ctx.pcpu.hw.ContextSynchronize();
  }

  bool LoadsIntoHardware(const PcpuPmu& pcpu) const override { return pcpu.hw.features().fgt; }

 private:
  static void FullLoad(SwitchContext& ctx) {
    // [defect 4] no ClearGuestOverflowFlags: stale flags meet the guest's PMINTEN.
    WriteGuestCounters(ctx);
    WriteGuestEventTypes(ctx);
    WriteGuestEnables(ctx);
    // [defect 2, 3] installed at load, the host's values not saved.
    const pmu::Pmuv3State& s = ctx.vcpu.saved.state();
    ctx.pcpu.hw.Write({PmuReg::kPmuserenr}, s.pmuserenr, ExceptionLevel::kEl2);
    ctx.pcpu.hw.Write({PmuReg::kPmselr}, s.pmselr, ExceptionLevel::kEl2);
    ctx.vcpu.ownership = PmuOwnership::kGuestOwned;
    ++ctx.vcpu.stats.swaps_done;
  }
};

}  // namespace

const ContextSwitch& SeedV5ContextSwitch() {
  static const SeedV5Switch kInstance;
  return kInstance;
}

}  // namespace fleetpmu::partition
