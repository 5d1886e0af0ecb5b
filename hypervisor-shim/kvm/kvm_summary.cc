#include "hypervisor-shim/kvm/kvm_summary.h"

#include <sys/utsname.h>

#include "absl/strings/str_cat.h"
#include "hypervisor-shim/kvm/canary_verdict.h"
#include "nlohmann/json.hpp"

namespace fleetpmu::kvm {
namespace {

uint64_t Stat(const std::map<std::string, uint64_t>& stats, const char* name) {
  const auto it = stats.find(name);
  return it == stats.end() ? 0 : it->second;
}

nlohmann::json CounterJson(const CounterVerdict& c) {
  nlohmann::json j = {
      {"counter", c.counter},       {"event", c.event},         {"period", c.period},
      {"count", c.count},           {"wraps_planned", c.wraps_planned}, {"wraps", c.wraps},
      {"interrupts", c.interrupts}, {"coalesced", c.coalesced}, {"irq_missing", c.irq_missing},
      {"flag_at_end", c.flag_at_end}};
  if (c.exact) j["expected_count"] = c.expected_count;
  return j;
}

}  // namespace

std::string KernelRelease() {
  struct utsname name = {};
  return uname(&name) == 0 ? name.release : "";
}

bool SummaryValid(const KvmRunSummary& summary) {
  if (!summary.refused.empty() || summary.vms.empty()) return false;
  for (const CanaryVmResult& vm : summary.vms) {
    for (const CanaryVcpuResult& vcpu : vm.vcpus) {
      if (!JudgeVcpu(vm, vcpu).valid()) return false;
    }
  }
  return true;
}

std::string KvmSummaryJson(const KvmRunSummary& summary) {
  nlohmann::json vms = nlohmann::json::array();
  for (const CanaryVmResult& vm : summary.vms) {
    nlohmann::json vcpus = nlohmann::json::array();
    for (const CanaryVcpuResult& vcpu : vm.vcpus) {
      const VcpuVerdict verdict = JudgeVcpu(vm, vcpu);
      nlohmann::json counters = nlohmann::json::array();
      for (const CounterVerdict& c : verdict.counters) counters.push_back(CounterJson(c));
      const double guest_ms = vcpu.report.cntfrq != 0
                                  ? 1e3 * static_cast<double>(vcpu.report.elapsed_ticks) / static_cast<double>(vcpu.report.cntfrq)
                                  : 0;
      nlohmann::json resident = nlohmann::json::object();
      for (const auto& [cpu, ns] : vcpu.resident_ns_by_cpu) resident[absl::StrCat(cpu)] = static_cast<double>(ns) / 1e6;
      vcpus.push_back({{"vcpu", verdict.vcpu},
                       {"valid", verdict.valid()},
                       {"problems", verdict.problems},
                       {"status", CanaryStatusName(verdict.status)},
                       {"pmcr_n", verdict.pmcr_n},
                       {"pmuver", verdict.pmuver},
                       {"cycle_counter_bits", vcpu.report.cycle_width},
                       {"psci_version", absl::StrCat(verdict.psci_version >> 16, ".", verdict.psci_version & 0xffff)},
                       {"counters", counters},
                       {"spurious_irqs", vcpu.report.spurious_irqs},
                       {"other_irqs", vcpu.report.other_irqs},
                       {"guest_ms", guest_ms},
                       {"wall_ms", static_cast<double>(vcpu.wall_ns) / 1e6},
                       {"kvm_run_calls", vcpu.run_stats.run_calls},
                       {"mmio_exits", vcpu.run_stats.mmio_exits},
                       {"kvm_exits", Stat(vcpu.kvm_stats, "exits")},
                       {"context_switches", vcpu.voluntary_switches + vcpu.involuntary_switches},
                       {"resident_ms_by_pcpu", resident},
                       {"residency_method", ResidencyMethodName(vcpu.residency_method)},
                       {"console", vcpu.console}});
    }
    vms.push_back({{"vm_id", vm.config.vm_id},
                   {"tenant_id", vm.config.tenant_id},
                   {"h", vm.h},
                   {"host_n", vm.support.host_n},
                   {"counter_limit", CounterLimitName(vm.limit)},
                   {"partition_enabled", vm.partition_enabled},
                   {"attributes",
                    {{"irq", vm.support.irq},
                     {"filter", vm.support.filter},
                     {"set_pmu", vm.support.set_pmu},
                     {"set_nr_counters", vm.support.set_nr_counters},
                     {"pmcr_n_writable", vm.support.pmcr_n_writable},
                     {"partition", vm.support.partition}}},
                   {"vcpus", vcpus}});
  }
  nlohmann::json refused = nlohmann::json::array();
  for (const auto& [vm_id, why] : summary.refused) refused.push_back({{"vm_id", vm_id}, {"error", why}});
  nlohmann::json host = nlohmann::json::array();
  for (const HostCpuCounters& cpu : summary.host_counters) {
    host.push_back({{"cpu", cpu.cpu},
                    {"events", cpu.events},
                    {"value", cpu.value},
                    {"enabled_ns", cpu.enabled_ns},
                    {"running_ns", cpu.running_ns},
                    {"multiplexing_ratio", cpu.enabled_ns != 0 ? static_cast<double>(cpu.running_ns) /
                                                                     static_cast<double>(cpu.enabled_ns)
                                                               : 0.0}});
  }
  nlohmann::json j = {{"backend", "kvm"},
                      {"kernel", summary.kernel},
                      {"kvm_mode", KvmModeName(summary.facts.mode)},
                      {"kvm",
                       {{"api_version", summary.facts.api_version},
                        {"reg_mask_ranges", summary.facts.reg_mask_ranges},
                        {"binary_stats", summary.facts.binary_stats}}},
                      {"vms", vms},
                      {"refused", refused},
                      {"host_counters", host},
                      {"valid", SummaryValid(summary)},
                      {"wall_seconds", summary.wall_seconds}};
  return j.dump();
}

}  // namespace fleetpmu::kvm
