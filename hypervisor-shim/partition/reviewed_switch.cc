// The partitioned context switch as the review settled it (PMU.md section 3, policy `reviewed`).
#include "hypervisor-shim/partition/context_switch.h"

namespace fleetpmu::partition {
namespace {

class ReviewedSwitch final : public ContextSwitch {
 public:
  void Load(SwitchContext& ctx) const override {
    // Step 1: anything that cannot be partitioned stays trapped with HPMN = N. A missing FGT is
    // not such a reason: without it the same state is loaded and accesses trap to it.
    if (SettleTrappedFallback(ctx)) return;
    // Step 2: the host leaves [0,h) and PMCCNTR first, then a FREE vCPU costs nothing more.
    if (!ClaimGuestRange(ctx)) return;
    FullLoad(ctx);
  }

  void EnterGuest(SwitchContext& ctx) const override {
    VcpuPmu& v = ctx.vcpu;
    if (v.mode == PmuMode::kTrapped) {
      InstallTrapEverything(ctx, /*partitioned=*/false);
    } else if (v.ownership == PmuOwnership::kFree) {
      InstallTrapEverything(ctx, /*partitioned=*/true);
    } else {
      // Step 7: late, so that host code between load and entry keeps its PMUSERENR and PMSELR.
      InstallGuestUserState(ctx);
      InstallGuestControl(ctx);
    }
    v.in_guest = true;
    ctx.pcpu.hw.ContextSynchronize();
    UpdateVirtualIrq(v, &ctx.pcpu);
  }

  void ExitGuest(SwitchContext& ctx) const override {
    VcpuPmu& v = ctx.vcpu;
    if (v.mode == PmuMode::kPartitioned && v.ownership == PmuOwnership::kGuestOwned) {
      SaveGuestExitState(ctx, /*user_state=*/true);
    }
    RestoreHostState(ctx);
    v.in_guest = false;
    ctx.pcpu.hw.ContextSynchronize();
  }

  void Put(SwitchContext& ctx) const override {
    VcpuPmu& v = ctx.vcpu;
    ++v.stats.puts;
    if (v.mode == PmuMode::kPartitioned && v.ownership == PmuOwnership::kGuestOwned) {
      ReadGuestCounters(ctx);   // step 2
      HarvestOverflows(ctx);    // step 3
      DisableGuestRange(ctx);   // step 4
    }
    v.ownership = PmuOwnership::kFree;  // step 5
  }

  void Promote(SwitchContext& ctx) const override {
    ++ctx.vcpu.stats.promotions;
    FullLoad(ctx);
    InstallGuestUserState(ctx);
    InstallGuestControl(ctx);
    ctx.pcpu.hw.ContextSynchronize();
  }

  bool LoadsIntoHardware(const PcpuPmu&) const override { return true; }

 private:
  static void FullLoad(SwitchContext& ctx) {
    ClearGuestOverflowFlags(ctx);  // step 3: before anything can raise the line
    WriteGuestCounters(ctx);       // step 4
    WriteGuestEventTypes(ctx);     // step 5
    WriteGuestEnables(ctx);        // step 6
    ctx.vcpu.ownership = PmuOwnership::kGuestOwned;
    ++ctx.vcpu.stats.swaps_done;
  }
};

}  // namespace

const ContextSwitch& ReviewedContextSwitch() {
  static const ReviewedSwitch kInstance;
  return kInstance;
}

}  // namespace fleetpmu::partition
