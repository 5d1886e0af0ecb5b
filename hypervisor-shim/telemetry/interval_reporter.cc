#include "hypervisor-shim/telemetry/interval_reporter.h"

#include <algorithm>
#include <utility>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "hypervisor-shim/pmu/pmu_registers.h"

namespace fleetpmu::telemetry {
namespace {

using partition::OverflowClass;
using partition::OverflowCounts;
using partition::OverflowOwner;
using partition::VcpuSwitchStats;

// Delta of a cumulative counter against what was already reported. The ledger derives
// counter_not_loaded from ground truth (ideal minus real wraps), which may shrink for a while;
// reporting only growth past the high-water mark keeps every delta non-negative and the sum of
// the deltas equal to the highest cumulative value seen.
uint64_t Advance(uint64_t now, uint64_t* reported) {
  if (now <= *reported) return 0;
  const uint64_t delta = now - *reported;
  *reported = now;
  return delta;
}

v1::LostReason ToProto(partition::LostReason reason) {
  switch (reason) {
    case partition::LostReason::kFlagClearedUnseen:
      return v1::LOST_REASON_FLAG_CLEARED_UNSEEN;
    case partition::LostReason::kFlagLeftForOtherOwner:
      return v1::LOST_REASON_FLAG_LEFT_FOR_OTHER_OWNER;
    case partition::LostReason::kInterruptDisabledAtPut:
      return v1::LOST_REASON_INTERRUPT_DISABLED_AT_PUT;
    case partition::LostReason::kCounterNotLoaded:
      return v1::LOST_REASON_COUNTER_NOT_LOADED;
    case partition::LostReason::kHostClobbered:
      return v1::LOST_REASON_HOST_CLOBBERED;
  }
  return v1::LOST_REASON_UNSPECIFIED;
}

v1::OverflowClass ToProto(OverflowClass c) {
  switch (c) {
    case OverflowClass::kDelivered:
      return v1::OVERFLOW_CLASS_DELIVERED;
    case OverflowClass::kCoalesced:
      return v1::OVERFLOW_CLASS_COALESCED;
    case OverflowClass::kLost:
      return v1::OVERFLOW_CLASS_LOST;
    case OverflowClass::kPending:
      return v1::OVERFLOW_CLASS_PENDING;
  }
  return v1::OVERFLOW_CLASS_UNSPECIFIED;
}

// Moves the growth of `now` over `*reported` into `out` (counts of one interval) and the
// lost_by_reason list. `pending` is taken as is: it is a level, not a count.
void AdvanceOverflows(const OverflowCounts& now, OverflowCounts* reported, v1::OverflowCounts* out,
                      google::protobuf::RepeatedPtrField<v1::LostReasonCount>* lost_by_reason,
                      uint64_t* misattributed) {
  out->set_delivered(Advance(now.delivered, &reported->delivered));
  out->set_coalesced(Advance(now.coalesced, &reported->coalesced));
  uint64_t lost = 0;
  for (int r = 0; r < partition::kLostReasonCount; ++r) {
    const uint64_t delta = Advance(now.lost_by_reason[r], &reported->lost_by_reason[r]);
    if (delta == 0) continue;
    v1::LostReasonCount* entry = lost_by_reason->Add();
    entry->set_reason(ToProto(static_cast<partition::LostReason>(r)));
    entry->set_count(delta);
    lost += delta;
  }
  out->set_lost(lost);
  out->set_pending(now.pending);
  const uint64_t misattributed_delta = Advance(now.misattributed, &reported->misattributed);
  if (misattributed != nullptr) *misattributed = misattributed_delta;
}

// Spreads `accesses` register accesses over `samples` swaps as evenly as integers allow and
// records each swap's modelled latency.
void FillSwapLatency(uint64_t samples, uint64_t accesses, v1::LatencyHistogram* h) {
  for (uint64_t bound : kSwapLatencyBucketsNs) h->add_bucket_upper_bounds_ns(bound);
  std::array<uint64_t, kSwapLatencyBucketsNs.size() + 1> counts{};
  if (samples != 0) {
    const uint64_t base = accesses / samples;
    const uint64_t heavier = accesses % samples;  // swaps that took one access more
    auto add = [&counts](uint64_t latency_ns, uint64_t n) {
      if (n == 0) return;
      size_t bucket = 0;
      while (bucket < kSwapLatencyBucketsNs.size() && latency_ns > kSwapLatencyBucketsNs[bucket]) ++bucket;
      counts[bucket] += n;
    };
    add(base * kNsPerRegisterAccess, samples - heavier);
    add((base + 1) * kNsPerRegisterAccess, heavier);
  }
  for (uint64_t c : counts) h->add_bucket_counts(c);
  h->set_sum_ns(samples == 0 ? 0 : accesses * kNsPerRegisterAccess);
  h->set_count(samples);
}

// "PMEVTYPER<n>_EL0" for the indexed registers, the architectural name otherwise.
std::string TrapKey(pmu::PmuReg reg) {
  if (reg == pmu::PmuReg::kPmevcntr) return "PMEVCNTR<n>_EL0";
  if (reg == pmu::PmuReg::kPmevtyper) return "PMEVTYPER<n>_EL0";
  return pmu::RegisterName({reg, 0});
}

void SetInterval(int64_t start, int64_t end, v1::Interval* interval) {
  interval->set_start_unix_ns(start);
  interval->set_end_unix_ns(end);
}

}  // namespace

class IntervalReporter::Sink final : public partition::OverflowRecordSink {
 public:
  explicit Sink(IntervalReporter* reporter) : reporter_(reporter) {}
  void OnOverflowRecord(const partition::OverflowRecord& record) override { reporter_->OnOverflow(record); }

 private:
  IntervalReporter* const reporter_;
};

IntervalReporter::IntervalReporter(sim::HostSimulator* sim, IntervalReporterOptions options)
    : sim_(sim),
      options_(std::move(options)),
      sink_(std::make_unique<Sink>(this)),
      ring_(options_.overflow_ring_capacity) {
  const partition::PartitionedHost& host = sim_->host();
  last_pcpu_.assign(host.num_vcpus(), 0);
  vcpus_.resize(host.num_vcpus());
  pcpus_.resize(host.num_pcpus());
  // Start from the simulator's state now, so that a reporter attached to a running simulator
  // reports only what happens from here on.
  for (int v = 0; v < host.num_vcpus(); ++v) {
    vcpus_[v].stats = host.vcpu(v).stats;
    vcpus_[v].overflows = host.ledger().Report(OverflowOwner::Vcpu(v));
    vcpus_[v].run_ns = sim_->vcpu_run_ns(v);
  }
  for (int p = 0; p < host.num_pcpus(); ++p) {
    const partition::PcpuPmu& pcpu = host.pcpu(p);
    PcpuBaseline& b = pcpus_[p];
    b.moved = pcpu.events_moved_at_load;
    b.squeezed = pcpu.events_squeezed_at_load;
    for (const partition::HostEvent& e : pcpu.host_events) {
      b.enabled_ns += e.enabled_ns;
      b.running_ns += e.running_ns;
      const OverflowCounts c = host.ledger().Report(OverflowOwner::Host(e.id));
      b.host_overflows.delivered += c.delivered;
      b.host_overflows.coalesced += c.coalesced;
      b.host_overflows.misattributed += c.misattributed;
      for (int r = 0; r < partition::kLostReasonCount; ++r) b.host_overflows.lost_by_reason[r] += c.lost_by_reason[r];
      if (e.id >= static_cast<int>(host_event_names_.size())) host_event_names_.resize(e.id + 1);
      host_event_names_[e.id] = {e.name, e.event};
    }
  }
  reported_until_ns_ = sim_->now_ns();
  BuildHostInfo();
  sim_->set_overflow_sink(sink_.get());
}

IntervalReporter::~IntervalReporter() { sim_->set_overflow_sink(nullptr); }

void IntervalReporter::OnOverflow(const partition::OverflowRecord& record) {
  // Keep room for lost wraps: they are always worth reporting, delivered ones are a sample.
  if (record.cls != OverflowClass::kLost && ring_.size_approx() >= (ring_.capacity() + 1) / 2) {
    ++ring_dropped_;
    return;
  }
  RingedOverflow entry;
  entry.record = record;
  const partition::PartitionedHost& host = sim_->host();
  if (record.owner.kind == OverflowOwner::Kind::kVcpu && record.owner.id >= 0 &&
      record.owner.id < host.num_vcpus()) {
    const partition::VcpuPmu& v = host.vcpu(record.owner.id);
    int& last = last_pcpu_[record.owner.id];
    if (record.pcpu >= 0) {
      last = record.pcpu;
    } else if (v.loaded_on >= 0) {
      last = v.loaded_on;
    }
    // A flag in vCPU memory has no pCPU: report where the vCPU runs or last ran.
    entry.pcpu = record.pcpu >= 0 ? record.pcpu : last;
    // The guest's own PMEVTYPER value (kept in memory even while loaded, PMU.md section 2).
    entry.event_code = record.counter == pmu::kCycleCounterBit
                           ? pmu::kEventCpuCycles
                           : (v.saved.state().evtyper[record.counter] & pmu::evtyper::kEventMask);
  } else {
    entry.pcpu = std::max(record.pcpu, 0);
    if (record.owner.kind == OverflowOwner::Kind::kHost && record.owner.id >= 0 &&
        record.owner.id < static_cast<int>(host_event_names_.size())) {
      entry.event_code = host_event_names_[record.owner.id].event_code;
    }
  }
  (void)ring_.TryPush(std::move(entry));
}

void IntervalReporter::BuildHostInfo() {
  const v1::SimHost& config = sim_->config();
  host_info_.set_host_id(config.host_id());
  host_info_.set_reservation_mode(config.reservation_mode());
  host_info_.set_backend(v1::BACKEND_SIM);
  host_info_.set_shim_version(options_.shim_version);
  host_info_.set_vhe(true);  // the simulated host runs its kernel at EL2, as partitioning needs
  uint32_t pcpu = 0;
  for (const v1::PcpuGroup& group : config.pcpu_groups()) {
    for (uint32_t i = 0; i < group.count(); ++i) {
      v1::PcpuPmu* p = host_info_.add_pcpus();
      p->set_pcpu(pcpu++);
      p->set_pmu_id(group.pmu_id());
      p->set_num_counters(group.n_counters());
      if (group.p5()) {
        // The model implements PMUv3p5's 64-bit counters; without it the version is not modelled.
        p->set_pmuv3_version("3.5");
        p->set_pmuver(6);
      }
      p->set_has_fgt(group.fgt());
      p->set_has_hpmn0(group.hpmn0());
      p->set_has_p5(group.p5());
      p->set_cpu_model(group.cpu_model());
    }
  }
}

void IntervalReporter::AddDrops(v1::DropStage stage, uint64_t count, uint64_t bytes) {
  if (stage <= v1::DROP_STAGE_UNSPECIFIED || stage >= v1::DropStage_ARRAYSIZE) return;
  extra_drop_count_[stage] += count;
  extra_drop_bytes_[stage] += bytes;
}

int64_t IntervalReporter::UnixNs(uint64_t virtual_ns) const {
  return options_.start_unix_ns + static_cast<int64_t>(virtual_ns);
}

v1::TelemetryReport IntervalReporter::TakeReport(uint64_t end_ns, bool final) {
  const uint64_t start_ns = reported_until_ns_;
  if (end_ns <= start_ns) end_ns = start_ns + 1;  // contract violation; keep the interval valid
  const uint64_t length_ns = end_ns - start_ns;
  v1::TelemetryReport report;
  report.set_host_id(sim_->config().host_id());
  v1::Interval interval;
  SetInterval(UnixNs(start_ns), UnixNs(end_ns), &interval);
  *report.mutable_interval() = interval;
  FillVms(&report);
  FillVcpuStats(interval, length_ns, &report);
  FillOverflowEvents(end_ns, final, &report);
  FillOwnership(interval, length_ns, &report);
  FillHostCounters(interval, &report);
  FillDrops(interval, &report);
  if (reports_taken_ == 0) *report.mutable_host_info() = host_info_;
  reported_until_ns_ = end_ns;
  ++reports_taken_;
  return report;
}

void IntervalReporter::FillVms(v1::TelemetryReport* report) const {
  const v1::SimHost& config = sim_->config();
  for (const v1::SimVm& vm : config.vms()) {
    v1::VmInfo* info = report->add_vms();
    // What the VM's guests saw; a vCPU that saw something else than the others wins, so that a
    // difference from h is never averaged away.
    int seen = -1;
    for (const sim::SimVcpuInfo& v : sim_->vcpus()) {
      if (v.vm_id != vm.vm_id() || v.observed_n < 0) continue;
      if (seen < 0 || v.observed_n != static_cast<int>(vm.h())) seen = v.observed_n;
    }
    if (seen >= 0) info->set_guest_visible_counters(static_cast<uint32_t>(seen));
    info->set_vm_id(vm.vm_id());
    info->set_tenant_id(vm.tenant_id());
    info->set_vcpus(vm.vcpus());
    info->set_guest_counters(vm.h());
    info->set_policy(vm.policy());
    if (vm.has_event_filter()) *info->mutable_event_filter() = vm.event_filter();
    info->set_implementation(vm.implementation());
  }
}

void IntervalReporter::FillVcpuStats(const v1::Interval& interval, uint64_t length_ns,
                                     v1::TelemetryReport* report) {
  const partition::PartitionedHost& host = sim_->host();
  for (int id = 0; id < host.num_vcpus(); ++id) {
    const sim::SimVcpuInfo& info = sim_->vcpus()[id];
    const partition::VcpuPmu& vcpu = host.vcpu(id);
    const VcpuSwitchStats& now = vcpu.stats;
    VcpuBaseline& base = vcpus_[id];
    VcpuSwitchStats& was = base.stats;

    v1::VcpuStats* out = report->add_vcpu_stats();
    *out->mutable_interval() = interval;
    out->set_vm_id(info.vm_id);
    out->set_vcpu(static_cast<uint32_t>(info.vcpu_index));
    out->set_tenant_id(info.tenant_id);
    out->set_loads(Advance(now.loads, &was.loads));
    out->set_puts(Advance(now.puts, &was.puts));
    const uint64_t swaps = Advance(now.swaps_done, &was.swaps_done);
    out->set_swaps_done(swaps);
    out->set_swaps_skipped(Advance(now.swaps_skipped, &was.swaps_skipped));
    out->set_promotions(Advance(now.promotions, &was.promotions));
    out->set_trapped_fallbacks(Advance(now.trapped_fallbacks, &was.trapped_fallbacks));
    const uint64_t load_accesses = Advance(now.load_register_accesses, &was.load_register_accesses);
    const uint64_t put_accesses = Advance(now.put_register_accesses, &was.put_register_accesses);
    FillSwapLatency(swaps, load_accesses, out->mutable_load_latency());
    FillSwapLatency(swaps, put_accesses, out->mutable_put_latency());
    out->set_register_accesses(load_accesses + put_accesses);
    for (int r = 0; r < pmu::kPmuRegCount; ++r) {
      const uint64_t traps = Advance(now.traps_by_register[r], &was.traps_by_register[r]);
      // The simulator handles every trap in the hypervisor's fast path: there is no VMM to exit
      // to, so traps_full_exit_by_register stays empty.
      if (traps != 0) (*out->mutable_traps_by_register())[TrapKey(static_cast<pmu::PmuReg>(r))] = traps;
    }
    out->set_host_irqs_attributed(Advance(now.host_irqs_attributed, &was.host_irqs_attributed));
    out->set_virtual_irq_assertions(Advance(now.virtual_irq_assertions, &was.virtual_irq_assertions));
    out->set_halted_wakes(Advance(now.halted_wakes, &was.halted_wakes));
    out->set_invariant_violations(Advance(now.invariant_violations, &was.invariant_violations));

    uint64_t misattributed = 0;
    AdvanceOverflows(host.ledger().Report(OverflowOwner::Vcpu(id)), &base.overflows, out->mutable_overflows(),
                     out->mutable_lost_by_reason(), &misattributed);
    out->set_misattributed(misattributed);

    base.run_carry_ns += Advance(sim_->vcpu_run_ns(id), &base.run_ns);
    const uint64_t run = std::min(base.run_carry_ns, length_ns);
    base.run_carry_ns -= run;
    out->set_run_time_ns(run);
    out->set_ownership_at_end(vcpu.ownership == partition::PmuOwnership::kGuestOwned
                                  ? v1::OWNERSHIP_STATE_GUEST_OWNED
                                  : v1::OWNERSHIP_STATE_FREE);
  }
}

void IntervalReporter::FillOverflowEvents(uint64_t end_ns, bool final, v1::TelemetryReport* report) {
  std::vector<RingedOverflow> due;
  due.swap(held_events_);
  while (std::optional<RingedOverflow> e = ring_.TryPop()) due.push_back(std::move(*e));
  const std::vector<sim::SimVcpuInfo>& vcpus = sim_->vcpus();
  for (RingedOverflow& e : due) {
    const partition::OverflowRecord& r = e.record;
    uint64_t time_ns = r.time_ns;
    if (time_ns >= end_ns) {
      if (!final) {
        held_events_.push_back(std::move(e));
        continue;
      }
      time_ns = end_ns - 1;
    }
    v1::OverflowEvent* out = report->add_overflow_events();
    out->set_time_unix_ns(UnixNs(time_ns));
    out->set_pcpu(static_cast<uint32_t>(e.pcpu));
    out->set_counter(static_cast<uint32_t>(r.counter));
    if (r.owner.kind == OverflowOwner::Kind::kVcpu && r.owner.id >= 0 &&
        r.owner.id < static_cast<int>(vcpus.size())) {
      const sim::SimVcpuInfo& info = vcpus[r.owner.id];
      out->set_owner_kind(v1::OWNER_KIND_GUEST);
      out->set_vm_id(info.vm_id);
      out->set_vcpu(static_cast<uint32_t>(info.vcpu_index));
      out->set_tenant_id(info.tenant_id);
    } else {
      out->set_owner_kind(v1::OWNER_KIND_HOST);
      if (r.owner.id >= 0 && r.owner.id < static_cast<int>(host_event_names_.size())) {
        out->set_host_event(host_event_names_[r.owner.id].name);
      }
    }
    out->set_event_code(e.event_code);
    out->set_overflow_class(ToProto(r.cls));
    if (r.cls == OverflowClass::kLost) out->set_lost_reason(ToProto(r.reason));
    if (r.cls == OverflowClass::kDelivered) out->set_wrap_to_handler_ns(r.wrap_to_handler_ns);
  }
}

void IntervalReporter::FillOwnership(const v1::Interval& interval, uint64_t length_ns,
                                     v1::TelemetryReport* report) {
  const std::vector<sim::SimVcpuInfo>& vcpus = sim_->vcpus();
  for (int p = 0; p < static_cast<int>(pcpus_.size()); ++p) {
    std::vector<PendingResidency>& owed = pcpus_[p].residencies;
    // Merge this interval's residencies into what is still owed, by (owner, mask): host events
    // are one owner (OWNER_KIND_HOST) for OwnershipSample.
    for (const sim::OwnershipResidency& r : sim_->TakeOwnership(p)) {
      PendingResidency key;
      if (r.owner.kind == OverflowOwner::Kind::kVcpu) {
        key.kind = v1::OWNER_KIND_GUEST;
        key.vcpu = r.owner.id;
      } else {
        key.kind = v1::OWNER_KIND_HOST;
      }
      key.mask = r.counter_mask;
      auto it = std::find_if(owed.begin(), owed.end(), [&key](const PendingResidency& o) {
        return o.kind == key.kind && o.vcpu == key.vcpu && o.mask == key.mask;
      });
      if (it == owed.end()) {
        key.ns = r.resident_ns;
        owed.push_back(key);
      } else {
        it->ns += r.resident_ns;
      }
    }
    v1::OwnershipSample* sample = report->add_ownership();
    sample->set_pcpu(static_cast<uint32_t>(p));
    *sample->mutable_interval() = interval;
    for (PendingResidency& o : owed) {
      const uint64_t ns = std::min(o.ns, length_ns);
      o.ns -= ns;
      if (ns == 0) continue;
      v1::OwnerResidency* out = sample->add_residencies();
      out->set_owner_kind(o.kind);
      if (o.kind == v1::OWNER_KIND_GUEST && o.vcpu >= 0 && o.vcpu < static_cast<int>(vcpus.size())) {
        out->set_vm_id(vcpus[o.vcpu].vm_id);
        out->set_vcpu(static_cast<uint32_t>(vcpus[o.vcpu].vcpu_index));
        out->set_tenant_id(vcpus[o.vcpu].tenant_id);
      }
      out->set_counter_mask(o.mask);
      out->set_resident_ns(ns);
    }
    owed.erase(std::remove_if(owed.begin(), owed.end(), [](const PendingResidency& o) { return o.ns == 0; }),
               owed.end());
  }
}

void IntervalReporter::FillHostCounters(const v1::Interval& interval, v1::TelemetryReport* report) {
  const partition::PartitionedHost& host = sim_->host();
  for (int p = 0; p < host.num_pcpus(); ++p) {
    const partition::PcpuPmu& pcpu = host.pcpu(p);
    PcpuBaseline& base = pcpus_[p];
    v1::HostCounterStats* out = report->add_host_counters();
    out->set_pcpu(static_cast<uint32_t>(p));
    *out->mutable_interval() = interval;
    out->set_host_events(static_cast<uint32_t>(pcpu.host_events.size()));
    out->set_events_moved_at_load(Advance(pcpu.events_moved_at_load, &base.moved));
    out->set_events_squeezed_at_load(Advance(pcpu.events_squeezed_at_load, &base.squeezed));
    uint64_t enabled = 0;
    uint64_t running = 0;
    OverflowCounts overflows;
    for (const partition::HostEvent& e : pcpu.host_events) {
      enabled += e.enabled_ns;
      running += e.running_ns;
      const OverflowCounts c = host.ledger().Report(OverflowOwner::Host(e.id));
      overflows.delivered += c.delivered;
      overflows.coalesced += c.coalesced;
      overflows.pending += c.pending;
      overflows.misattributed += c.misattributed;
      for (int r = 0; r < partition::kLostReasonCount; ++r) overflows.lost_by_reason[r] += c.lost_by_reason[r];
    }
    out->set_enabled_ns(Advance(enabled, &base.enabled_ns));
    out->set_running_ns(Advance(running, &base.running_ns));
    AdvanceOverflows(overflows, &base.host_overflows, out->mutable_overflows(), out->mutable_lost_by_reason(),
                     nullptr);
  }
}

void IntervalReporter::FillDrops(const v1::Interval& interval, v1::TelemetryReport* report) {
  const uint64_t ring_total = ring_.dropped() + ring_dropped_;
  AddDrops(v1::DROP_STAGE_SHIM_RING, ring_total - ring_dropped_reported_, 0);
  ring_dropped_reported_ = ring_total;
  for (int stage = v1::DROP_STAGE_UNSPECIFIED + 1; stage < v1::DropStage_ARRAYSIZE; ++stage) {
    if (extra_drop_count_[stage] == 0 && extra_drop_bytes_[stage] == 0) continue;
    v1::TelemetryDrops* drops = report->add_drops();
    drops->set_stage(static_cast<v1::DropStage>(stage));
    drops->set_count(extra_drop_count_[stage]);
    drops->set_bytes(extra_drop_bytes_[stage]);
    *drops->mutable_interval() = interval;
    extra_drop_count_[stage] = 0;
    extra_drop_bytes_[stage] = 0;
  }
}

std::string SerializeDeterministically(const google::protobuf::Message& message) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    message.SerializeToCodedStream(&coded);
  }  // the CodedOutputStream flushes into `out` when it goes away
  return out;
}

}  // namespace fleetpmu::telemetry
