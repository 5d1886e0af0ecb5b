// Scenario tests of the simulated host on the shipped example configs.
#include "hypervisor-shim/sim/host_simulator.h"

#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
#include "hypervisor-shim/sim/run_summary.h"
#include "proto/fleetpmu/config/daemon_config.h"

namespace fleetpmu::sim {
namespace {

using partition::LostReason;
using partition::OverflowCounts;
using partition::OverflowOwner;

std::string Example(const std::string& name) {
  return absl::StrCat(FLEETPMU_SOURCE_DIR, "/deploy/examples/", name);
}

v1::SimHost LoadSim(const std::string& name) {
  absl::StatusOr<v1::ShimConfig> config = config::LoadShimConfig(Example(name));
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? config->sim() : v1::SimHost();
}

// Records every classified overflow, as the telemetry stream would.
class RecordDigest final : public partition::OverflowRecordSink {
 public:
  void OnOverflowRecord(const partition::OverflowRecord& r) override {
    absl::StrAppend(&text_, r.time_ns, ",", r.pcpu, ",", r.counter, ",", r.owner.id, ",", static_cast<int>(r.cls), ",",
                    static_cast<int>(r.reason), ",", r.wraps, ",", r.wrap_to_handler_ns, ";");
    ++count_;
  }
  const std::string& text() const { return text_; }
  size_t count() const { return count_; }

 private:
  std::string text_;
  size_t count_ = 0;
};

TEST(HostSimulator, ReviewedThreeTenantHostLosesNothingOverAMillionSwitches) {
  v1::SimHost sim_config = LoadSim("sim-host.textproto");
  // Short slices: a million switches in little virtual time, every one checked.
  *sim_config.mutable_time_slice() = google::protobuf::util::TimeUtil::MicrosecondsToDuration(100);
  absl::StatusOr<std::unique_ptr<HostSimulator>> sim = HostSimulator::Create(sim_config, {.check_invariants = true});
  ASSERT_TRUE(sim.ok()) << sim.status();
  uint64_t until = 0;
  while ((*sim)->switches() < 1000000) {
    until += 1000000000;  // one virtual second at a time
    ASSERT_TRUE((*sim)->RunUntil(until).ok());
  }
  (*sim)->Finish();
  const partition::PartitionedHost& host = (*sim)->host();
  EXPECT_EQ(host.checker().total(), 0u) << host.checker().Summary()
                                       << (host.checker().first().empty() ? "" : "\n" + host.checker().first()[0].message);
  uint64_t delivered = 0;
  for (int v = 0; v < host.num_vcpus(); ++v) {
    const OverflowCounts c = host.ledger().Report(OverflowOwner::Vcpu(v));
    EXPECT_EQ(c.lost(), 0u) << "vCPU " << v << " of " << (*sim)->vcpus()[v].vm_id;
    EXPECT_EQ(c.misattributed, 0u);
    delivered += c.delivered;
  }
  EXPECT_GT(delivered, 100000u);
  EXPECT_EQ(host.ledger().Total(OverflowOwner::Kind::kHost).lost(), 0u);
  std::cout << "switches=" << (*sim)->switches() << " virtual_s=" << (*sim)->now_ns() / 1e9
            << " guest overflows delivered=" << delivered << "\n";
}

TEST(HostSimulator, SeedV5TenantLosesOverflowsOnlyOnItsOwnVcpusAndPcpus) {
  absl::StatusOr<std::unique_ptr<HostSimulator>> sim =
      HostSimulator::Create(LoadSim("sim-host-seed-v5.textproto"), {.check_invariants = true});
  ASSERT_TRUE(sim.ok()) << sim.status();
  ASSERT_TRUE((*sim)->RunUntil(2000000000).ok());
  (*sim)->Finish();
  const partition::PartitionedHost& host = (*sim)->host();
  uint64_t seed_lost = 0, seed_not_counted = 0, seed_flag_losses = 0;
  for (int v = 0; v < host.num_vcpus(); ++v) {
    const SimVcpuInfo& info = (*sim)->vcpus()[v];
    const OverflowCounts c = host.ledger().Report(OverflowOwner::Vcpu(v));
    if (info.policy != v1::POLICY_SEED_V5) {
      EXPECT_EQ(c.lost(), 0u) << info.vm_id << " is on the reviewed policy";
      EXPECT_EQ(c.misattributed, 0u) << info.vm_id;
      continue;
    }
    EXPECT_EQ(info.tenant_id, "initech");
    seed_lost += c.lost();
    seed_not_counted += c.lost_by_reason[static_cast<int>(LostReason::kCounterNotLoaded)];
    seed_flag_losses += c.lost() - c.lost_by_reason[static_cast<int>(LostReason::kCounterNotLoaded)];
    for (int p = 0; p < host.num_pcpus(); ++p) {
      if ((*sim)->lost_on(v)[p]) {
        EXPECT_TRUE((*sim)->ran_on(v)[p]) << "a loss on pCPU " << p << " it never ran on";
      }
    }
  }
  EXPECT_GT(seed_lost, 1000u);
  EXPECT_GT(seed_not_counted, 0u) << "without FGT the seed does not count guest events";
  EXPECT_GT(seed_flag_losses, 0u) << "with FGT the seed loses flags at put/load";
}

TEST(HostSimulator, SameConfigAndSeedGiveIdenticalRuns) {
  std::string summaries[2];
  std::string records[2];
  for (int run = 0; run < 2; ++run) {
    absl::StatusOr<std::unique_ptr<HostSimulator>> sim = HostSimulator::Create(LoadSim("sim-host-seed-v5.textproto"), {});
    ASSERT_TRUE(sim.ok());
    RecordDigest digest;
    (*sim)->set_overflow_sink(&digest);
    ASSERT_TRUE((*sim)->RunUntil(500000000).ok());
    (*sim)->Finish();
    summaries[run] = RunSummaryJson(**sim, /*wall_seconds=*/0);
    records[run] = digest.text();
    EXPECT_GT(digest.count(), 1000u);
  }
  EXPECT_EQ(summaries[0], summaries[1]);
  EXPECT_EQ(records[0], records[1]);
  // A different seed is a different run.
  v1::SimHost other = LoadSim("sim-host-seed-v5.textproto");
  other.set_seed(other.seed() + 1);
  absl::StatusOr<std::unique_ptr<HostSimulator>> sim = HostSimulator::Create(other, {});
  ASSERT_TRUE(sim.ok());
  ASSERT_TRUE((*sim)->RunUntil(500000000).ok());
  (*sim)->Finish();
  EXPECT_NE(RunSummaryJson(**sim, 0), summaries[0]);
}

TEST(HostSimulator, IdleGuestsStayFreeAndCostNothing) {
  v1::SimHost config = LoadSim("sim-host.textproto");
  absl::StatusOr<std::unique_ptr<HostSimulator>> sim = HostSimulator::Create(config, {.check_invariants = true});
  ASSERT_TRUE(sim.ok());
  ASSERT_TRUE((*sim)->RunUntil(300000000).ok());
  const partition::PartitionedHost& host = (*sim)->host();
  int idle = 0;
  for (int v = 0; v < host.num_vcpus(); ++v) {
    if ((*sim)->vcpus()[v].vm_id != "initech-idle") continue;
    ++idle;
    const partition::VcpuSwitchStats& s = host.vcpu(v).stats;
    EXPECT_GT(s.loads, 0u);
    EXPECT_EQ(s.swaps_skipped, s.loads);
    EXPECT_EQ(s.load_register_accesses + s.put_register_accesses, 0u);
  }
  EXPECT_EQ(idle, 4);
}

// A guest's perf probe reads PMCR_EL0.N through the PMU model: under MDCR_EL2.HPMN = h it sees h,
// on FGT and non-FGT pCPUs alike. Idle guests never probe.
TEST(HostSimulator, GuestsSeeTheirHCountersInPmcrN) {
  v1::SimHost config = LoadSim("sim-host.textproto");
  absl::StatusOr<std::unique_ptr<HostSimulator>> sim = HostSimulator::Create(config, {.check_invariants = true});
  ASSERT_TRUE(sim.ok());
  ASSERT_TRUE((*sim)->RunUntil(300000000).ok());
  int probed = 0;
  for (const SimVcpuInfo& v : (*sim)->vcpus()) {
    if (v.vm_id == "initech-idle") {
      EXPECT_EQ(v.observed_n, -1) << v.vm_id << " vCPU " << v.vcpu_index;
      continue;
    }
    EXPECT_EQ(v.observed_n, v.h) << v.vm_id << " vCPU " << v.vcpu_index;
    ++probed;
  }
  EXPECT_GT(probed, 0);
}

}  // namespace
}  // namespace fleetpmu::sim

namespace fleetpmu::sim {
namespace {

TEST(HostSimulator, SqueezedHostEventsAreMultiplexed) {
  v1::SimHost config;
  config.set_seed(3);
  config.set_reservation_mode(v1::RESERVATION_MODE_STATIC);
  *config.mutable_time_slice() = google::protobuf::util::TimeUtil::MillisecondsToDuration(1);
  v1::PcpuGroup* g = config.add_pcpu_groups();
  g->set_count(1);
  g->set_n_counters(6);
  g->set_fgt(true);
  v1::SimVm* vm = config.add_vms();
  vm->set_vm_id("v");
  vm->set_tenant_id("t");
  vm->set_vcpus(1);
  vm->set_h(5);  // the boot parameter leaves the host one counter for three events
  vm->mutable_workload()->set_kind(v1::Workload::IDLE);
  for (const char* name : {"a", "b", "c"}) {
    v1::HostEvent* e = config.add_host_events();
    e->set_name(name);
    e->set_event_code(0x08);
  }
  absl::StatusOr<std::unique_ptr<HostSimulator>> sim = HostSimulator::Create(config, {.check_invariants = true});
  ASSERT_TRUE(sim.ok()) << sim.status();
  ASSERT_TRUE((*sim)->RunUntil(300000000).ok());
  (*sim)->Finish();
  for (const partition::HostEvent& e : (*sim)->host().pcpu(0).host_events) {
    ASSERT_GT(e.enabled_ns, 0u);
    const double ratio = static_cast<double>(e.running_ns) / static_cast<double>(e.enabled_ns);
    EXPECT_GT(ratio, 0.2) << e.name << " got its turn";
    EXPECT_LT(ratio, 0.5) << e.name << " shared one counter with two others";
  }
  EXPECT_EQ((*sim)->host().checker().total(), 0u) << (*sim)->host().checker().Summary();
}

}  // namespace
}  // namespace fleetpmu::sim
