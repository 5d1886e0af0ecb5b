#include "hypervisor-shim/kvm/canary_verdict.h"

#include "absl/strings/str_cat.h"

namespace fleetpmu::kvm {

const char* CanaryStatusName(uint64_t status) {
  switch (status) {
    case CANARY_STATUS_NONE: return "no report";
    case CANARY_STATUS_OK: return "ok";
    case CANARY_STATUS_BAD_PARAMS: return "bad params";
    case CANARY_STATUS_NO_PMU: return "no PMUv3 in ID_AA64DFR0_EL1";
    case CANARY_STATUS_TIMEOUT: return "timed out before all wraps";
    case CANARY_STATUS_EXCEPTION: return "unexpected exception";
  }
  return "unknown status";
}

VcpuVerdict JudgeVcpu(const CanaryVmResult& vm, const CanaryVcpuResult& vcpu) {
  VcpuVerdict verdict;
  const canary_report& report = vcpu.report;
  verdict.vcpu = vcpu.vcpu;
  verdict.status = vcpu.done ? vcpu.done_status : uint64_t{CANARY_STATUS_NONE};
  verdict.pmcr_n = static_cast<uint32_t>(report.pmcr_n);
  verdict.pmuver = static_cast<uint32_t>((report.dfr0 >> 8) & 0xf);
  verdict.psci_version = report.psci_version;
  if (!vcpu.error.empty()) verdict.problems.push_back(vcpu.error);
  if (verdict.status != CANARY_STATUS_OK) {
    verdict.problems.push_back(absl::StrCat("the canary did not finish: ", CanaryStatusName(verdict.status),
                                            verdict.status == CANARY_STATUS_EXCEPTION
                                                ? absl::StrCat(" (ESR 0x", absl::Hex(report.esr), " at 0x", absl::Hex(report.elr), ")")
                                                : ""));
  }
  if (report.magic != CANARY_MAGIC) return verdict;  // nothing else was reported
  if (verdict.pmcr_n != vm.h) {
    verdict.problems.push_back(absl::StrCat("the guest sees PMCR_EL0.N = ", verdict.pmcr_n, ", not h = ", vm.h));
  }
  for (uint32_t n = 0; n < CANARY_MAX_COUNTERS; ++n) {
    const canary_counter_report& c = report.counter[n];
    if (!c.programmed) continue;
    CounterVerdict v;
    v.counter = n;
    v.event = static_cast<uint32_t>(c.event);
    v.period = c.period;
    v.count = c.count;
    v.wraps_planned = c.wraps_planned;
    v.interrupts = c.interrupts;
    v.coalesced = c.coalesced;
    v.flag_at_end = c.flag_at_end != 0;
    v.wraps = c.period != 0 ? c.count / c.period : 0;
    const uint64_t seen = v.interrupts + v.coalesced;
    v.irq_missing = v.wraps > seen ? v.wraps - seen : 0;
    v.exact = n != CANARY_CYCLE_COUNTER && c.event == CANARY_EVENT_SW_INCR;
    if (v.exact) v.expected_count = c.period != 0 ? c.wraps_planned * c.period : vm.config.wraps;
    const std::string what = absl::StrCat("counter ", n == CANARY_CYCLE_COUNTER ? std::string("C") : absl::StrCat(n),
                                          " (event 0x", absl::Hex(v.event), ")");
    if (verdict.status == CANARY_STATUS_OK || verdict.status == CANARY_STATUS_TIMEOUT) {
      if (v.count == 0) {
        verdict.problems.push_back(absl::StrCat(what, " never advanced: the vPMU does not count"));
      } else if (v.exact && v.count != v.expected_count) {
        verdict.problems.push_back(absl::StrCat(what, " counted ", v.count, " SW_INCR, the canary wrote ", v.expected_count));
      }
      if (v.irq_missing > 0) {
        verdict.problems.push_back(absl::StrCat(what, ": ", v.irq_missing, " of ", v.wraps,
                                                " wraps raised no overflow interrupt (irq_missing)"));
      }
      if (v.interrupts + v.coalesced > v.wraps) {
        verdict.problems.push_back(absl::StrCat(what, ": ", v.interrupts + v.coalesced, " interrupts for ", v.wraps,
                                                " wraps (spurious overflow interrupts)"));
      }
    }
    verdict.counters.push_back(v);
  }
  return verdict;
}

}  // namespace fleetpmu::kvm
