#include "hypervisor-shim/sim/run_summary.h"

#include <map>
#include <utility>

#include <nlohmann/json.hpp>

namespace fleetpmu::sim {

std::string RunSummaryJson(const HostSimulator& sim, double wall_seconds) {
  using nlohmann::ordered_json;
  struct Tally {
    partition::VcpuSwitchStats stats;
    partition::OverflowCounts overflows;
    int vcpus = 0;
    std::vector<bool> ran_on, lost_on;
  };
  std::map<std::pair<std::string, std::string>, Tally> tenants;
  const partition::PartitionedHost& host = sim.host();
  for (int id = 0; id < host.num_vcpus(); ++id) {
    const SimVcpuInfo& info = sim.vcpus()[id];
    Tally& t = tenants[{info.tenant_id, info.policy == v1::POLICY_SEED_V5 ? "seed-v5" : "reviewed"}];
    const partition::VcpuSwitchStats& s = host.vcpu(id).stats;
    ++t.vcpus;
    t.stats.loads += s.loads;
    t.stats.swaps_done += s.swaps_done;
    t.stats.swaps_skipped += s.swaps_skipped;
    t.stats.promotions += s.promotions;
    t.stats.trapped_fallbacks += s.trapped_fallbacks;
    t.stats.invariant_violations += s.invariant_violations;
    const partition::OverflowCounts c = host.ledger().Report(partition::OverflowOwner::Vcpu(id));
    t.overflows.delivered += c.delivered;
    t.overflows.coalesced += c.coalesced;
    t.overflows.pending += c.pending;
    t.overflows.misattributed += c.misattributed;
    for (int r = 0; r < partition::kLostReasonCount; ++r) t.overflows.lost_by_reason[r] += c.lost_by_reason[r];
    t.ran_on.resize(host.num_pcpus(), false);
    t.lost_on.resize(host.num_pcpus(), false);
    for (int p = 0; p < host.num_pcpus(); ++p) {
      if (sim.ran_on(id)[p]) t.ran_on[p] = true;
      if (sim.lost_on(id)[p]) t.lost_on[p] = true;
    }
  }
  ordered_json out;
  out["virtual_seconds"] = static_cast<double>(sim.now_ns()) / 1e9;
  out["wall_seconds"] = wall_seconds;
  out["switches"] = sim.switches();
  out["switches_per_wall_second"] = wall_seconds > 0 ? static_cast<double>(sim.switches()) / wall_seconds : 0.0;
  out["pcpus"] = host.num_pcpus();
  out["vcpus"] = host.num_vcpus();
  ordered_json list = ordered_json::array();
  for (const auto& [key, t] : tenants) {
    ordered_json e;
    e["tenant"] = key.first;
    e["policy"] = key.second;
    e["vcpus"] = t.vcpus;
    e["switches"] = t.stats.loads;
    e["swaps"] = t.stats.swaps_done;
    e["swaps_skipped"] = t.stats.swaps_skipped;
    e["promotions"] = t.stats.promotions;
    e["trapped_fallbacks"] = t.stats.trapped_fallbacks;
    e["overflows"] = {{"delivered", t.overflows.delivered},
                      {"coalesced", t.overflows.coalesced},
                      {"lost", t.overflows.lost()},
                      {"pending", t.overflows.pending}};
    ordered_json reasons = ordered_json::object();
    for (int r = 0; r < partition::kLostReasonCount; ++r) {
      reasons[std::string(partition::LostReasonName(static_cast<partition::LostReason>(r)))] = t.overflows.lost_by_reason[r];
    }
    e["lost_by_reason"] = reasons;
    e["misattributed"] = t.overflows.misattributed;
    e["invariant_violations"] = t.stats.invariant_violations;
    ordered_json run = ordered_json::array(), lost = ordered_json::array();
    for (size_t p = 0; p < t.ran_on.size(); ++p) {
      if (t.ran_on[p]) run.push_back(p);
      if (t.lost_on[p]) lost.push_back(p);
    }
    e["pcpus_run"] = run;
    e["pcpus_with_lost"] = lost;
    list.push_back(std::move(e));
  }
  out["tenants"] = list;
  return out.dump();
}

}  // namespace fleetpmu::sim
