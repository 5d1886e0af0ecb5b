#include "hypervisor-shim/kvm/kvm_report.h"

#include <algorithm>
#include <map>
#include <vector>

#include "hypervisor-shim/kvm/canary_verdict.h"
#include "hypervisor-shim/pmu/pmu_registers.h"

namespace fleetpmu::kvm {
v1::HostInfo BuildKvmHostInfo(const KvmHostInfoInput& input) {
  v1::HostInfo info;
  info.set_host_id(input.host_id);
  info.set_backend(v1::BACKEND_KVM);
  info.set_shim_version(input.shim_version);
  info.set_reservation_mode(input.config->reservation_mode());
  info.set_vhe(input.facts.mode == KvmMode::kVhe);
  for (int cpu : input.cpus) {
    v1::PcpuPmu* pcpu = info.add_pcpus();
    pcpu->set_pcpu(static_cast<uint32_t>(cpu));
    const auto pmu = input.cpu_pmus.find(cpu);
    pcpu->set_pmu_id(pmu != input.cpu_pmus.end() ? pmu->second : "");
    // A guest gets the host PMU's N by default; the VMM cannot read PMCR_EL0 at EL2 itself.
    pcpu->set_num_counters(input.support.host_n);
  }
  const VpmuSupport& support = input.support;
  v1::KvmPmuSupport* s = info.mutable_kvm_pmu_support();
  s->set_kvm_mode(KvmModeName(input.facts.mode));
  s->set_host_counters(support.host_n);
  s->set_filter(support.filter);
  s->set_set_pmu(support.set_pmu);
  s->set_set_nr_counters(support.set_nr_counters);
  s->set_pmcr_n_writable(support.pmcr_n_writable);
  s->set_partition_attribute(support.partition);
  s->set_binary_stats(input.facts.binary_stats);
  if (!support.set_nr_counters && support.pmcr_n_writable) {
    s->add_fallbacks("h < N is set by writing PMCR_EL0.N with KVM_SET_ONE_REG (no SET_NR_COUNTERS)");
  }
  if (!support.set_nr_counters && !support.pmcr_n_writable) {
    s->add_fallbacks("h < N is refused: neither SET_NR_COUNTERS nor a writable PMCR_EL0.N");
  }
  if (!support.partition) {
    s->add_fallbacks("no partition attribute: guests get KVM's emulated PMU (PMU_IMPLEMENTATION_EMULATED)");
  }
  if (!support.filter) s->add_fallbacks("no FILTER attribute: VMs with an event filter are refused");
  if (input.facts.mode != KvmMode::kVhe) {
    s->add_fallbacks("KVM is not in VHE mode: partitioning is impossible (PMU.md section 2)");
  }
  return info;
}

v1::TelemetryReport BuildKvmReport(const KvmReportInput& input) {
  v1::TelemetryReport report;
  report.set_host_id(input.host_id);
  report.mutable_interval()->set_start_unix_ns(input.start_unix_ns);
  report.mutable_interval()->set_end_unix_ns(input.end_unix_ns);
  const uint64_t length = static_cast<uint64_t>(input.end_unix_ns - input.start_unix_ns);

  for (const v1::KvmVm& vm : input.config->vms()) {
    v1::VmInfo* info = report.add_vms();
    info->set_vm_id(vm.vm_id());
    info->set_tenant_id(vm.tenant_id());
    info->set_vcpus(vm.vcpus());
    uint32_t h = vm.has_h() ? vm.h() : input.support.host_n / 2;
    bool partitioned = false;
    for (const CanaryVmResult& run : input.runs) {
      if (run.config.vm_id != vm.vm_id()) continue;
      h = run.h;
      partitioned = run.partition_enabled;
      // PMCR_EL0.N as the canary read it; a vCPU that saw something else than h wins, so that a
      // difference is never hidden by its siblings.
      for (const CanaryVcpuResult& vcpu : run.vcpus) {
        if (vcpu.report.magic != CANARY_MAGIC) continue;
        const uint32_t seen = static_cast<uint32_t>(vcpu.report.pmcr_n);
        if (!info->has_guest_visible_counters() || seen != run.h) info->set_guest_visible_counters(seen);
      }
    }
    info->set_guest_counters(h);
    info->set_policy(input.config->kernel_policy());
    if (vm.has_event_filter()) *info->mutable_event_filter() = vm.event_filter();
    info->set_implementation(partitioned ? v1::PMU_IMPLEMENTATION_PARTITIONED : v1::PMU_IMPLEMENTATION_EMULATED);
  }

  size_t events_left = input.overflow_event_limit;
  uint64_t dropped = 0;
  auto add_events = [&](const CanaryVmResult& run, const CanaryVcpuResult& vcpu, const CounterVerdict& c,
                        v1::OverflowClass cls, uint64_t n) {
    for (uint64_t i = 0; i < n; ++i) {
      if (events_left == 0) {
        ++dropped;
        continue;
      }
      --events_left;
      v1::OverflowEvent* event = report.add_overflow_events();
      // The canary reports counts, not times: every wrap of a run carries the run's end.
      event->set_time_unix_ns(std::clamp<int64_t>(run.end_unix_ns, input.start_unix_ns, input.end_unix_ns - 1));
      event->set_pcpu(static_cast<uint32_t>(std::max(vcpu.last_cpu, 0)));
      event->set_counter(c.counter);
      event->set_owner_kind(v1::OWNER_KIND_GUEST);
      event->set_vm_id(run.config.vm_id);
      event->set_vcpu(static_cast<uint32_t>(vcpu.vcpu));
      event->set_tenant_id(run.config.tenant_id);
      event->set_event_code(c.event);
      event->set_overflow_class(cls);
      if (cls == v1::OVERFLOW_CLASS_LOST) event->set_lost_reason(v1::LOST_REASON_IRQ_MISSING);
    }
  };
  for (const CanaryVmResult& run : input.runs) {
    for (const CanaryVcpuResult& vcpu : run.vcpus) {
      const VcpuVerdict verdict = JudgeVcpu(run, vcpu);
      v1::VcpuStats* stats = report.add_vcpu_stats();
      *stats->mutable_interval() = report.interval();
      stats->set_vm_id(run.config.vm_id);
      stats->set_vcpu(static_cast<uint32_t>(vcpu.vcpu));
      stats->set_tenant_id(run.config.tenant_id);
      // vcpu_load/vcpu_put around every KVM_RUN and at every preemption of the vCPU thread.
      const uint64_t switches = vcpu.run_stats.run_calls + vcpu.voluntary_switches + vcpu.involuntary_switches;
      stats->set_loads(switches);
      stats->set_puts(switches);
      stats->set_run_time_ns(std::min(vcpu.thread_cpu_ns, length));
      stats->set_ownership_at_end(v1::OWNERSHIP_STATE_FREE);  // the canary disabled its PMU
      uint64_t delivered = 0, coalesced = 0, lost = 0;
      for (const CounterVerdict& c : verdict.counters) {
        delivered += std::min(c.interrupts, c.wraps);
        coalesced += c.coalesced;
        lost += c.irq_missing;
      }
      stats->mutable_overflows()->set_delivered(delivered);
      stats->mutable_overflows()->set_coalesced(coalesced);
      stats->mutable_overflows()->set_lost(lost);
      stats->set_virtual_irq_assertions(delivered);
      if (lost > 0) {
        v1::LostReasonCount* count = stats->add_lost_by_reason();
        count->set_reason(v1::LOST_REASON_IRQ_MISSING);
        count->set_count(lost);
      }
      // Lost wraps first: they are the ones that must reach the server.
      for (const CounterVerdict& c : verdict.counters) add_events(run, vcpu, c, v1::OVERFLOW_CLASS_LOST, c.irq_missing);
      for (const CounterVerdict& c : verdict.counters) {
        add_events(run, vcpu, c, v1::OVERFLOW_CLASS_DELIVERED, std::min(c.interrupts, c.wraps));
        add_events(run, vcpu, c, v1::OVERFLOW_CLASS_COALESCED, c.coalesced);
      }
    }
  }
  if (dropped > 0) {
    v1::TelemetryDrops* drops = report.add_drops();
    drops->set_stage(v1::DROP_STAGE_SHIM_RING);
    drops->set_count(dropped);
    *drops->mutable_interval() = report.interval();
  }
  // Ownership: (pCPU, VM, vCPU) -> ns, merged over the runs of the interval.
  struct GuestOwner {
    const CanaryVmResult* run;  // the last run of the VM (its h and tenant)
    int vcpu;
    uint64_t ns;
  };
  std::map<int, std::vector<GuestOwner>> owners;
  for (int cpu : input.cpus) owners[cpu];
  for (const CanaryVmResult& run : input.runs) {
    for (const CanaryVcpuResult& vcpu : run.vcpus) {
      for (const auto& [cpu, ns] : vcpu.resident_ns_by_cpu) {
        // A CPU HostInfo does not name (e.g. brought online after the probe) cannot be reported.
        if (!input.cpus.empty() && !owners.contains(cpu)) continue;
        std::vector<GuestOwner>& here = owners[cpu];
        auto it = std::find_if(here.begin(), here.end(), [&](const GuestOwner& o) {
          return o.run->config.vm_id == run.config.vm_id && o.vcpu == vcpu.vcpu;
        });
        if (it == here.end()) {
          here.push_back(GuestOwner{&run, vcpu.vcpu, ns});
        } else {
          it->run = &run;
          it->ns += ns;
        }
      }
    }
  }
  for (auto& [cpu, here] : owners) {
    // OwnershipSample holds at most 256 residencies: the longest ones stay.
    constexpr size_t kMaxResidencies = 256;
    if (here.size() > kMaxResidencies) {
      std::stable_sort(here.begin(), here.end(), [](const GuestOwner& a, const GuestOwner& b) { return a.ns > b.ns; });
      here.resize(kMaxResidencies);
    }
    v1::OwnershipSample* sample = report.add_ownership();
    sample->set_pcpu(static_cast<uint32_t>(cpu));
    *sample->mutable_interval() = report.interval();
    for (const GuestOwner& o : here) {
      v1::OwnerResidency* residency = sample->add_residencies();
      residency->set_owner_kind(v1::OWNER_KIND_GUEST);
      residency->set_vm_id(o.run->config.vm_id);
      residency->set_vcpu(static_cast<uint32_t>(o.vcpu));
      residency->set_tenant_id(o.run->config.tenant_id);
      residency->set_counter_mask(pmu::GuestCounterMask(static_cast<int>(o.run->h)));
      residency->set_resident_ns(std::min(o.ns, length));
    }
  }
  for (const HostCpuCounters& cpu : input.host_deltas) {
    v1::HostCounterStats* stats = report.add_host_counters();
    stats->set_pcpu(static_cast<uint32_t>(cpu.cpu));
    *stats->mutable_interval() = report.interval();
    stats->set_host_events(cpu.events);
    stats->set_enabled_ns(cpu.enabled_ns);
    stats->set_running_ns(cpu.running_ns);
  }
  return report;
}

}  // namespace fleetpmu::kvm
