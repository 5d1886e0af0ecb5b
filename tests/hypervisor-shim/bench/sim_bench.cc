// Simulated vCPU switches per second on one core: a 64-pCPU host (N = 6, FGT, PMUv3p5), 128
// vCPUs of four tenants (sampling, counting, and two idle VMs), 1 ms slices, 2% migration, two
// host perf events per pCPU, dynamic reservation. Invariant checking off (production setting);
// BM_SimulatedSwitchesChecked shows its cost.
#include <benchmark/benchmark.h>

#include "google/protobuf/util/time_util.h"
#include "hypervisor-shim/sim/host_simulator.h"

namespace fleetpmu::sim {
namespace {

using google::protobuf::util::TimeUtil;

v1::SimHost BenchHost() {
  v1::SimHost host;
  host.set_seed(1);
  host.set_host_id("bench");
  host.set_reservation_mode(v1::RESERVATION_MODE_DYNAMIC);
  *host.mutable_time_slice() = TimeUtil::MillisecondsToDuration(1);
  host.set_migration_probability(0.02);
  v1::PcpuGroup* g = host.add_pcpu_groups();
  g->set_count(64);
  g->set_n_counters(6);
  g->set_fgt(true);
  g->set_hpmn0(true);
  g->set_p5(true);
  const v1::Workload::Kind kinds[] = {v1::Workload::SAMPLING, v1::Workload::COUNTING, v1::Workload::IDLE,
                                      v1::Workload::IDLE};
  for (int i = 0; i < 4; ++i) {
    v1::SimVm* vm = host.add_vms();
    vm->set_vm_id("vm" + std::to_string(i));
    vm->set_tenant_id("tenant" + std::to_string(i));
    vm->set_vcpus(32);
    vm->set_h(3);
    vm->set_policy(v1::POLICY_REVIEWED);
    v1::Workload* w = vm->mutable_workload();
    w->set_kind(kinds[i]);
    w->add_events(0x11);
    w->add_events(0x08);
    w->set_sample_period(1000000);
    *w->mutable_handler_latency() = TimeUtil::MicrosecondsToDuration(5);
    w->set_event_rate_hz(1000000000);
    *w->mutable_halt_duration() = TimeUtil::MillisecondsToDuration(1);
  }
  v1::HostEvent* e = host.add_host_events();
  e->set_name("host-cycles");
  e->set_event_code(0x11);
  e->set_sample_period(20000000);
  return host;
}

void Run(benchmark::State& state, bool check) {
  absl::StatusOr<std::unique_ptr<HostSimulator>> sim = HostSimulator::Create(BenchHost(), {.check_invariants = check});
  if (!sim.ok()) {
    state.SkipWithError("create");
    return;
  }
  uint64_t until = 0;
  const uint64_t start = (*sim)->switches();
  for (auto _ : state) {
    until += 10000000;  // 10 ms of virtual time: 640 slices
    if (!(*sim)->RunUntil(until).ok()) state.SkipWithError("run");
  }
  state.SetItemsProcessed(static_cast<int64_t>((*sim)->switches() - start));
  state.counters["switches_per_s"] =
      benchmark::Counter(static_cast<double>((*sim)->switches() - start), benchmark::Counter::kIsRate);
}

void BM_SimulatedSwitches(benchmark::State& state) { Run(state, false); }
void BM_SimulatedSwitchesChecked(benchmark::State& state) { Run(state, true); }
BENCHMARK(BM_SimulatedSwitches)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SimulatedSwitchesChecked)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace fleetpmu::sim

BENCHMARK_MAIN();
