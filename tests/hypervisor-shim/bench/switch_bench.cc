// Cost of the partitioned context switch: one load, guest entry, guest exit and put per
// iteration, for h in {0,1,3,6,10,30}, FREE vs GUEST_OWNED, both policies, on a pCPU with N = 31,
// FGT and HPMN0 (so that every h is partitioned and the seed takes its FGT path).
// Reported per swap: wall time (ns), register accesses of load+put and of entry+exit.
#include <benchmark/benchmark.h>

#include "hypervisor-shim/partition/partitioned_host.h"

namespace fleetpmu::partition {
namespace {

void BM_LoadPut(benchmark::State& state) {
  const int h = static_cast<int>(state.range(0));
  const bool owned = state.range(1) != 0;
  const SwitchPolicy policy = state.range(2) == 0 ? SwitchPolicy::kReviewed : SwitchPolicy::kSeedV5;
  PartitionedHost host({});
  const pmu::PmuFeatures features{.num_counters = 31, .p5 = true, .hpmn0 = true, .fgt = true};
  if (!host.AddPcpu(features, HostReservation::kStatic, 31).ok()) state.SkipWithError("pcpu");
  VcpuPmuConfig config;
  config.h = h;
  config.policy = policy;
  config.features = features;
  const int v = host.AddVcpu(config).value_or(-1);
  if (owned) {
    // An enabled counter makes every load take ownership at once.
    (void)host.Load(v, 0);
    (void)host.EnterGuest(0);
    (void)host.GuestAccess(0, {pmu::PmuReg::kPmcntenset}, pmu::kCycleCounterMask, true, pmu::ExceptionLevel::kEl1);
    (void)host.ExitGuest(0);
    (void)host.Put(0);
  }
  const VcpuSwitchStats before = host.vcpu(v).stats;
  for (auto _ : state) {
    (void)host.Load(v, 0);
    (void)host.EnterGuest(0);
    (void)host.ExitGuest(0);
    (void)host.Put(0);
  }
  const VcpuSwitchStats& after = host.vcpu(v).stats;
  const double n = static_cast<double>(state.iterations());
  state.counters["load_put_accesses"] =
      ((after.load_register_accesses - before.load_register_accesses) +
       (after.put_register_accesses - before.put_register_accesses)) / n;
  state.counters["entry_exit_accesses"] =
      (after.entry_exit_register_accesses - before.entry_exit_register_accesses) / n;
  state.SetLabel(std::string(SwitchPolicyName(policy)) + (owned ? " GUEST_OWNED" : " FREE"));
}

BENCHMARK(BM_LoadPut)
    ->ArgNames({"h", "owned", "seed"})
    ->ArgsProduct({{0, 1, 3, 6, 10, 30}, {0, 1}, {0, 1}});

}  // namespace
}  // namespace fleetpmu::partition

BENCHMARK_MAIN();
