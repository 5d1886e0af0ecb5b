// IntervalReporter: determinism, deltas that add up to the simulator's totals, the shape of
// every report, and the overflow ring's bound.
#include "hypervisor-shim/telemetry/interval_reporter.h"

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "hypervisor-shim/pmu/pmu_registers.h"
#include "hypervisor-shim/sim/host_simulator.h"
#include "tests/hypervisor-shim/telemetry/test_host.h"

namespace fleetpmu::telemetry {
namespace {

using partition::OverflowCounts;
using partition::OverflowOwner;

constexpr int64_t kStartUnixNs = 1'700'000'000'000'000'000;
constexpr uint64_t kIntervalNs = 100'000'000;
constexpr uint64_t kSliceNs = 1'000'000;  // test_host.h's time_slice

struct SimRun {
  std::unique_ptr<sim::HostSimulator> sim;
  std::unique_ptr<IntervalReporter> reporter;
  std::vector<v1::TelemetryReport> reports;
};

// Runs the test host for `intervals` report intervals (the last one cut short by `tail_ns` if
// non-zero, as a SIGTERM would) and takes one report per interval, the last one final.
SimRun RunReports(uint64_t seed, int intervals, size_t ring_capacity = 4096, bool check_invariants = false,
               uint64_t tail_ns = 0) {
  SimRun run;
  absl::StatusOr<v1::ShimConfig> config = testing::TestHostConfig("/nonexistent.sock", seed);
  EXPECT_TRUE(config.ok()) << config.status();
  if (!config.ok()) return run;
  absl::StatusOr<std::unique_ptr<sim::HostSimulator>> sim =
      sim::HostSimulator::Create(config->sim(), {.check_invariants = check_invariants});
  EXPECT_TRUE(sim.ok()) << sim.status();
  if (!sim.ok()) return run;
  run.sim = std::move(*sim);
  run.reporter = std::make_unique<IntervalReporter>(
      run.sim.get(), IntervalReporterOptions{.start_unix_ns = kStartUnixNs,
                                             .overflow_ring_capacity = ring_capacity,
                                             .shim_version = "0.0.0-test"});
  uint64_t t = 0;
  for (int i = 0; i < intervals; ++i) {
    const bool last = i + 1 == intervals;
    t += (last && tail_ns != 0) ? tail_ns : kIntervalNs;
    EXPECT_TRUE(run.sim->RunUntil(t).ok());
    if (last) run.sim->Finish();
    run.reports.push_back(run.reporter->TakeReport(t, last));
  }
  return run;
}

std::string Concatenated(const std::vector<v1::TelemetryReport>& reports) {
  std::string all;
  for (const v1::TelemetryReport& r : reports) all += SerializeDeterministically(r);
  return all;
}

TEST(IntervalReporter, SameConfigAndSeedGiveByteIdenticalReports) {
  const SimRun a = RunReports(/*seed=*/7, /*intervals=*/6);
  const SimRun b = RunReports(/*seed=*/7, /*intervals=*/6);
  ASSERT_EQ(a.reports.size(), 6u);
  const std::string bytes_a = Concatenated(a.reports);
  const std::string bytes_b = Concatenated(b.reports);
  const size_t digest_a = std::hash<std::string>{}(bytes_a);
  const size_t digest_b = std::hash<std::string>{}(bytes_b);
  EXPECT_EQ(digest_a, digest_b);
  EXPECT_EQ(bytes_a, bytes_b);
  EXPECT_GT(bytes_a.size(), 1000u);
  // The digest covers the content: another seed gives other reports.
  const SimRun c = RunReports(/*seed=*/8, /*intervals=*/6);
  EXPECT_NE(std::hash<std::string>{}(Concatenated(c.reports)), digest_a);
}

// The name the reporter gives traps of `reg` (telemetry.proto: <n> for indexed registers).
std::string TrapKey(pmu::PmuReg reg) {
  if (reg == pmu::PmuReg::kPmevcntr) return "PMEVCNTR<n>_EL0";
  if (reg == pmu::PmuReg::kPmevtyper) return "PMEVTYPER<n>_EL0";
  return pmu::RegisterName({reg, 0});
}

TEST(IntervalReporter, DeltasSumToTheCumulativeTotals) {
  const SimRun run = RunReports(/*seed=*/11, /*intervals=*/8, /*ring_capacity=*/4096, /*check_invariants=*/true,
                             /*tail_ns=*/37'000'000);
  ASSERT_EQ(run.reports.size(), 8u);
  const partition::PartitionedHost& host = run.sim->host();
  const auto& vcpus = run.sim->vcpus();
  std::map<std::pair<std::string, uint32_t>, int> vcpu_id;
  for (int id = 0; id < host.num_vcpus(); ++id) vcpu_id[{vcpus[id].vm_id, vcpus[id].vcpu_index}] = id;

  std::vector<v1::VcpuStats> sums(host.num_vcpus());
  std::vector<std::map<std::string, uint64_t>> traps(host.num_vcpus());
  std::vector<std::map<v1::LostReason, uint64_t>> lost(host.num_vcpus());
  std::vector<uint64_t> load_samples(host.num_vcpus()), load_ns(host.num_vcpus()), put_ns(host.num_vcpus());
  for (const v1::TelemetryReport& report : run.reports) {
    ASSERT_EQ(report.vcpu_stats_size(), host.num_vcpus());
    for (const v1::VcpuStats& s : report.vcpu_stats()) {
      const int id = vcpu_id.at({s.vm_id(), s.vcpu()});
      v1::VcpuStats& sum = sums[id];
      sum.set_loads(sum.loads() + s.loads());
      sum.set_puts(sum.puts() + s.puts());
      sum.set_swaps_done(sum.swaps_done() + s.swaps_done());
      sum.set_swaps_skipped(sum.swaps_skipped() + s.swaps_skipped());
      sum.set_promotions(sum.promotions() + s.promotions());
      sum.set_trapped_fallbacks(sum.trapped_fallbacks() + s.trapped_fallbacks());
      sum.set_register_accesses(sum.register_accesses() + s.register_accesses());
      sum.set_host_irqs_attributed(sum.host_irqs_attributed() + s.host_irqs_attributed());
      sum.set_virtual_irq_assertions(sum.virtual_irq_assertions() + s.virtual_irq_assertions());
      sum.set_halted_wakes(sum.halted_wakes() + s.halted_wakes());
      sum.set_misattributed(sum.misattributed() + s.misattributed());
      sum.set_run_time_ns(sum.run_time_ns() + s.run_time_ns());
      sum.set_invariant_violations(sum.invariant_violations() + s.invariant_violations());
      sum.mutable_overflows()->set_delivered(sum.overflows().delivered() + s.overflows().delivered());
      sum.mutable_overflows()->set_coalesced(sum.overflows().coalesced() + s.overflows().coalesced());
      sum.mutable_overflows()->set_lost(sum.overflows().lost() + s.overflows().lost());
      for (const auto& [key, n] : s.traps_by_register()) traps[id][key] += n;
      for (const v1::LostReasonCount& l : s.lost_by_reason()) lost[id][l.reason()] += l.count();
      load_samples[id] += s.load_latency().count();
      load_ns[id] += s.load_latency().sum_ns();
      put_ns[id] += s.put_latency().sum_ns();
    }
  }
  uint64_t total_loads = 0, total_delivered = 0, total_lost = 0, total_violations = 0;
  for (int id = 0; id < host.num_vcpus(); ++id) {
    SCOPED_TRACE(vcpus[id].vm_id + "/" + std::to_string(vcpus[id].vcpu_index));
    const partition::VcpuSwitchStats& st = host.vcpu(id).stats;
    const v1::VcpuStats& sum = sums[id];
    EXPECT_EQ(sum.loads(), st.loads);
    EXPECT_EQ(sum.puts(), st.puts);
    EXPECT_EQ(sum.swaps_done(), st.swaps_done);
    EXPECT_EQ(sum.swaps_skipped(), st.swaps_skipped);
    EXPECT_EQ(sum.promotions(), st.promotions);
    EXPECT_EQ(sum.trapped_fallbacks(), st.trapped_fallbacks);
    EXPECT_EQ(sum.register_accesses(), st.load_register_accesses + st.put_register_accesses);
    EXPECT_EQ(sum.host_irqs_attributed(), st.host_irqs_attributed);
    EXPECT_EQ(sum.virtual_irq_assertions(), st.virtual_irq_assertions);
    EXPECT_EQ(sum.halted_wakes(), st.halted_wakes);
    EXPECT_EQ(sum.invariant_violations(), st.invariant_violations);
    EXPECT_EQ(load_samples[id], st.swaps_done);
    EXPECT_EQ(load_ns[id], st.load_register_accesses * kNsPerRegisterAccess);
    EXPECT_EQ(put_ns[id], st.put_register_accesses * kNsPerRegisterAccess);
    std::map<std::string, uint64_t> expected_traps;
    for (int r = 0; r < pmu::kPmuRegCount; ++r) {
      if (st.traps_by_register[r] != 0) expected_traps[TrapKey(static_cast<pmu::PmuReg>(r))] += st.traps_by_register[r];
    }
    EXPECT_EQ(traps[id], expected_traps);

    const OverflowCounts c = host.ledger().Report(OverflowOwner::Vcpu(id));
    EXPECT_EQ(sum.overflows().delivered(), c.delivered);
    EXPECT_EQ(sum.overflows().coalesced(), c.coalesced);
    EXPECT_EQ(sum.overflows().lost(), c.lost());
    EXPECT_EQ(sum.misattributed(), c.misattributed);
    for (int r = 0; r < partition::kLostReasonCount; ++r) {
      const auto reason = static_cast<v1::LostReason>(r + 1);  // same order, UNSPECIFIED first
      EXPECT_EQ(lost[id][reason], c.lost_by_reason[r]) << v1::LostReason_Name(reason);
    }
    // pending is a level: the last report's is the final one.
    const v1::VcpuStats& last = run.reports.back().vcpu_stats(static_cast<int>(
        std::find_if(run.reports.back().vcpu_stats().begin(), run.reports.back().vcpu_stats().end(),
                     [&](const v1::VcpuStats& s) { return vcpu_id.at({s.vm_id(), s.vcpu()}) == id; }) -
        run.reports.back().vcpu_stats().begin()));
    EXPECT_EQ(last.overflows().pending(), c.pending);
    // Run time is capped per interval and the excess carried: what is still owed is less than
    // one time slice.
    EXPECT_LE(sum.run_time_ns(), run.sim->vcpu_run_ns(id));
    EXPECT_LT(run.sim->vcpu_run_ns(id) - sum.run_time_ns(), kSliceNs);
    total_loads += st.loads;
    total_delivered += c.delivered;
    total_lost += c.lost();
    total_violations += st.invariant_violations;
  }
  // The scenario is not vacuous.
  EXPECT_GT(total_loads, 1000u);
  EXPECT_GT(total_delivered, 1000u);
  EXPECT_GT(total_lost, 0u);  // legacy-1 runs seed-v5
  EXPECT_GT(total_violations, 0u);

  for (int p = 0; p < host.num_pcpus(); ++p) {
    SCOPED_TRACE("pCPU " + std::to_string(p));
    const partition::PcpuPmu& pcpu = host.pcpu(p);
    uint64_t moved = 0, squeezed = 0, enabled = 0, running = 0, delivered = 0, lost_host = 0;
    for (const v1::TelemetryReport& report : run.reports) {
      ASSERT_EQ(report.host_counters_size(), host.num_pcpus());
      const v1::HostCounterStats& h = report.host_counters(p);
      EXPECT_EQ(h.pcpu(), static_cast<uint32_t>(p));
      EXPECT_EQ(h.host_events(), pcpu.host_events.size());
      moved += h.events_moved_at_load();
      squeezed += h.events_squeezed_at_load();
      enabled += h.enabled_ns();
      running += h.running_ns();
      delivered += h.overflows().delivered();
      lost_host += h.overflows().lost();
    }
    uint64_t want_enabled = 0, want_running = 0, want_delivered = 0, want_lost = 0;
    for (const partition::HostEvent& e : pcpu.host_events) {
      want_enabled += e.enabled_ns;
      want_running += e.running_ns;
      const OverflowCounts c = host.ledger().Report(OverflowOwner::Host(e.id));
      want_delivered += c.delivered;
      want_lost += c.lost();
    }
    EXPECT_EQ(moved, pcpu.events_moved_at_load);
    EXPECT_EQ(squeezed, pcpu.events_squeezed_at_load);
    EXPECT_EQ(enabled, want_enabled);
    EXPECT_EQ(running, want_running);
    EXPECT_EQ(delivered, want_delivered);
    EXPECT_EQ(lost_host, want_lost);
  }
}

TEST(IntervalReporter, EveryReportIsWellFormed) {
  const SimRun run = RunReports(/*seed=*/3, /*intervals=*/5, /*ring_capacity=*/4096, /*check_invariants=*/false,
                             /*tail_ns=*/55'000'000);
  const partition::PartitionedHost& host = run.sim->host();
  int64_t expected_start = kStartUnixNs;
  uint64_t lost_events_legacy = 0;
  for (size_t i = 0; i < run.reports.size(); ++i) {
    SCOPED_TRACE("report " + std::to_string(i));
    const v1::TelemetryReport& r = run.reports[i];
    EXPECT_EQ(r.host_id(), "test-host");
    EXPECT_EQ(r.interval().start_unix_ns(), expected_start);
    const int64_t length = i + 1 == run.reports.size() ? 55'000'000 : static_cast<int64_t>(kIntervalNs);
    EXPECT_EQ(r.interval().end_unix_ns(), expected_start + length);
    for (const v1::VmInfo& vm : r.vms()) {
      // What the guests read of PMCR_EL0.N travels with the configured h; idle guests never read.
      if (vm.vm_id() == "idle-1") {
        EXPECT_FALSE(vm.has_guest_visible_counters());
      } else if (i > 0) {
        ASSERT_TRUE(vm.has_guest_visible_counters()) << vm.vm_id();
        EXPECT_EQ(vm.guest_visible_counters(), vm.guest_counters()) << vm.vm_id();
      }
    }
    expected_start = r.interval().end_unix_ns();
    EXPECT_EQ(r.has_host_info(), i == 0);
    EXPECT_EQ(r.vms_size(), 4);
    ASSERT_EQ(r.vcpu_stats_size(), host.num_vcpus());
    for (const v1::VcpuStats& s : r.vcpu_stats()) {
      EXPECT_EQ(s.interval().SerializeAsString(), r.interval().SerializeAsString());
      EXPECT_FALSE(s.vm_id().empty());
      EXPECT_FALSE(s.tenant_id().empty());
      EXPECT_LE(s.run_time_ns(), static_cast<uint64_t>(length));
      uint64_t lost = 0;
      for (const v1::LostReasonCount& l : s.lost_by_reason()) {
        EXPECT_NE(l.reason(), v1::LOST_REASON_UNSPECIFIED);
        EXPECT_GT(l.count(), 0u);
        lost += l.count();
      }
      EXPECT_EQ(s.overflows().lost(), lost);
      for (const v1::LatencyHistogram* h : {&s.load_latency(), &s.put_latency()}) {
        ASSERT_EQ(h->bucket_counts_size(), h->bucket_upper_bounds_ns_size() + 1);
        uint64_t count = 0;
        for (uint64_t c : h->bucket_counts()) count += c;
        EXPECT_EQ(count, h->count());
        EXPECT_EQ(h->count(), s.swaps_done());
      }
      EXPECT_NE(s.ownership_at_end(), v1::OWNERSHIP_STATE_UNSPECIFIED);
      if (s.vm_id() == "idle-1") {
        EXPECT_EQ(s.swaps_done(), 0u);  // FREE: nothing to swap
        EXPECT_EQ(s.register_accesses(), 0u);
      }
    }
    ASSERT_EQ(r.ownership_size(), host.num_pcpus());
    for (const v1::OwnershipSample& o : r.ownership()) {
      std::set<std::tuple<int, std::string, uint32_t, uint32_t>> owners;
      for (const v1::OwnerResidency& res : o.residencies()) {
        EXPECT_NE(res.owner_kind(), v1::OWNER_KIND_UNSPECIFIED);
        EXPECT_GT(res.resident_ns(), 0u);
        EXPECT_LE(res.resident_ns(), static_cast<uint64_t>(length));
        EXPECT_TRUE(owners.insert({res.owner_kind(), res.vm_id(), res.vcpu(), res.counter_mask()}).second)
            << "residencies with the same owner and mask are merged";
        if (res.owner_kind() == v1::OWNER_KIND_GUEST) {
          EXPECT_NE(res.counter_mask() & pmu::kCycleCounterMask, 0u);
          EXPECT_FALSE(res.vm_id().empty());
        }
      }
      EXPECT_FALSE(o.residencies().empty());
    }
    for (const v1::OverflowEvent& e : r.overflow_events()) {
      EXPECT_GE(e.time_unix_ns(), r.interval().start_unix_ns());
      EXPECT_LT(e.time_unix_ns(), r.interval().end_unix_ns());
      EXPECT_LT(e.pcpu(), static_cast<uint32_t>(host.num_pcpus()));
      EXPECT_NE(e.overflow_class(), v1::OVERFLOW_CLASS_UNSPECIFIED);
      EXPECT_EQ(e.lost_reason() != v1::LOST_REASON_UNSPECIFIED, e.overflow_class() == v1::OVERFLOW_CLASS_LOST);
      if (e.owner_kind() == v1::OWNER_KIND_GUEST) {
        EXPECT_FALSE(e.vm_id().empty());
        EXPECT_TRUE(e.host_event().empty());
        if (e.vm_id() == "legacy-1" && e.overflow_class() == v1::OVERFLOW_CLASS_LOST) ++lost_events_legacy;
        if (e.vm_id() == "legacy-1") {
          EXPECT_EQ(e.event_code(), 0x08u);
        }
      } else {
        EXPECT_EQ(e.owner_kind(), v1::OWNER_KIND_HOST);
        EXPECT_FALSE(e.host_event().empty());
      }
    }
  }
  EXPECT_GT(lost_events_legacy, 0u);
  const v1::HostInfo& info = run.reports[0].host_info();
  EXPECT_EQ(info.host_id(), "test-host");
  EXPECT_EQ(info.backend(), v1::BACKEND_SIM);
  EXPECT_EQ(info.reservation_mode(), v1::RESERVATION_MODE_DYNAMIC);
  EXPECT_EQ(info.shim_version(), "0.0.0-test");
  ASSERT_EQ(info.pcpus_size(), 3);
  EXPECT_TRUE(info.pcpus(0).has_fgt());
  EXPECT_FALSE(info.pcpus(2).has_fgt());
  EXPECT_EQ(info.pcpus(2).cpu_model(), "sim-b");
  EXPECT_EQ(info.pcpus(1).num_counters(), 6u);
}

// Totals of OverflowEvents and ring drops over a run.
struct EventTally {
  uint64_t events = 0;
  uint64_t lost_events = 0;
  uint64_t ring_drops = 0;
  uint64_t max_events_per_report = 0;
};
EventTally Tally(const std::vector<v1::TelemetryReport>& reports) {
  EventTally t;
  for (const v1::TelemetryReport& r : reports) {
    t.events += r.overflow_events_size();
    t.max_events_per_report = std::max<uint64_t>(t.max_events_per_report, r.overflow_events_size());
    for (const v1::OverflowEvent& e : r.overflow_events()) {
      if (e.overflow_class() == v1::OVERFLOW_CLASS_LOST) ++t.lost_events;
    }
    for (const v1::TelemetryDrops& d : r.drops()) {
      EXPECT_EQ(d.stage(), v1::DROP_STAGE_SHIM_RING);
      EXPECT_EQ(d.interval().SerializeAsString(), r.interval().SerializeAsString());
      t.ring_drops += d.count();
    }
  }
  return t;
}

TEST(IntervalReporter, FullOverflowRingDropsCountsAndKeepsRoomForLostWraps) {
  const EventTally all = Tally(RunReports(/*seed=*/5, /*intervals=*/4, /*ring_capacity=*/1 << 20).reports);
  ASSERT_GT(all.events, 2000u);
  EXPECT_EQ(all.ring_drops, 0u);
  constexpr size_t kSmallRing = 256;
  const EventTally small = Tally(RunReports(/*seed=*/5, /*intervals=*/4, kSmallRing).reports);
  EXPECT_GT(small.ring_drops, 0u);
  // Each record is either reported or counted as dropped.
  EXPECT_EQ(small.events + small.ring_drops, all.events);
  EXPECT_LE(small.max_events_per_report, 2 * kSmallRing);  // the ring, plus events held over
  // Delivered records stop at half the ring; lost ones still fit.
  ASSERT_GT(all.lost_events, 0u);
  EXPECT_EQ(small.lost_events, all.lost_events);
}

TEST(IntervalReporter, DropsFromElsewhereGoIntoTheNextReportOnly) {
  absl::StatusOr<v1::ShimConfig> config = testing::TestHostConfig("/nonexistent.sock");
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<std::unique_ptr<sim::HostSimulator>> sim = sim::HostSimulator::Create(config->sim(), {});
  ASSERT_TRUE(sim.ok());
  IntervalReporter reporter(sim->get(),
                            {.start_unix_ns = kStartUnixNs, .overflow_ring_capacity = 1 << 20, .shim_version = ""});
  ASSERT_TRUE((*sim)->RunUntil(kIntervalNs).ok());
  reporter.AddDrops(v1::DROP_STAGE_SHIM_SEND, 3, 3000);
  reporter.AddDrops(v1::DROP_STAGE_SHIM_SEND, 1, 1000);
  const v1::TelemetryReport first = reporter.TakeReport(kIntervalNs);
  ASSERT_EQ(first.drops_size(), 1);
  EXPECT_EQ(first.drops(0).stage(), v1::DROP_STAGE_SHIM_SEND);
  EXPECT_EQ(first.drops(0).count(), 4u);
  EXPECT_EQ(first.drops(0).bytes(), 4000u);
  EXPECT_EQ(first.drops(0).interval().end_unix_ns(), kStartUnixNs + static_cast<int64_t>(kIntervalNs));
  ASSERT_TRUE((*sim)->RunUntil(2 * kIntervalNs).ok());
  EXPECT_EQ(reporter.TakeReport(2 * kIntervalNs).drops_size(), 0);
  EXPECT_EQ(reporter.reports_taken(), 2u);
  EXPECT_EQ(reporter.reported_until_ns(), 2 * kIntervalNs);
}

TEST(IntervalReporter, DetachesFromTheSimulatorWhenDestroyed) {
  absl::StatusOr<v1::ShimConfig> config = testing::TestHostConfig("/nonexistent.sock");
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<std::unique_ptr<sim::HostSimulator>> sim = sim::HostSimulator::Create(config->sim(), {});
  ASSERT_TRUE(sim.ok());
  {
    IntervalReporter reporter(sim->get(),
                              {.start_unix_ns = kStartUnixNs, .overflow_ring_capacity = 16, .shim_version = ""});
  }
  // Overflows keep being classified with no reporter to receive them.
  ASSERT_TRUE((*sim)->RunUntil(kIntervalNs).ok());
  EXPECT_GT((*sim)->host().ledger().Total(OverflowOwner::Kind::kVcpu).delivered, 0u);
}

}  // namespace
}  // namespace fleetpmu::telemetry
