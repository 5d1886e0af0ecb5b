#include "hypervisor-shim/sim/host_simulator.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"

namespace fleetpmu::sim {
namespace {

using google::protobuf::util::TimeUtil;
using partition::HostReservation;
using pmu::ExceptionLevel;
constexpr uint64_t kNever = std::numeric_limits<uint64_t>::max();
constexpr uint64_t kNsPerSecond = 1000000000ull;

uint64_t Nanos(const google::protobuf::Duration& d) {
  const int64_t ns = TimeUtil::DurationToNanoseconds(d);
  return ns > 0 ? static_cast<uint64_t>(ns) : 0;
}

partition::EventFilter FilterFrom(const v1::EventFilter& config) {
  partition::EventFilter filter;
  for (const v1::EventFilterRange& r : config.ranges()) {
    filter.AddRange(static_cast<uint16_t>(r.base_event()), r.nevents(),
                    r.action() == v1::FILTER_ACTION_DENY ? partition::EventFilter::Action::kDeny
                                                         : partition::EventFilter::Action::kAllow);
  }
  return filter;
}

}  // namespace

absl::StatusOr<std::unique_ptr<HostSimulator>> HostSimulator::Create(const v1::SimHost& config,
                                                                     SimulatorOptions options) {
  std::unique_ptr<HostSimulator> sim(new HostSimulator(config, options));
  if (absl::Status s = sim->Build(); !s.ok()) return s;
  return sim;
}

HostSimulator::HostSimulator(const v1::SimHost& config, SimulatorOptions options)
    : config_(config), options_(options), rng_(config.seed()) {}

void HostSimulator::LossTally::OnOverflowRecord(const partition::OverflowRecord& r) {
  if (r.cls == partition::OverflowClass::kLost && r.owner.kind == partition::OverflowOwner::Kind::kVcpu &&
      r.pcpu >= 0) {
    sim->vcpus_[r.owner.id].lost_on[r.pcpu] = true;
  }
  if (next != nullptr) next->OnOverflowRecord(r);
}

absl::Status HostSimulator::Build() {
  host_ = std::make_unique<partition::PartitionedHost>(partition::PartitionedHostOptions{
      .ground_truth = options_.ground_truth,
      .check_invariants = options_.check_invariants,
      .expected_wraps_from_ideal = false});
  tally_.sim = this;
  host_->mutable_ledger().set_sink(&tally_);
  slice_ns_ = std::max<uint64_t>(Nanos(config_.time_slice()), 1000);
  migration_probability_ = config_.migration_probability();
  const HostReservation reservation = config_.reservation_mode() == v1::RESERVATION_MODE_DYNAMIC
                                          ? HostReservation::kDynamic
                                          : HostReservation::kStatic;
  // Static reservation: the boot parameter gives guests as many counters as the largest VM asks.
  int guest_counters = 0;
  for (const v1::SimVm& vm : config_.vms()) guest_counters = std::max<int>(guest_counters, vm.h());

  std::vector<pmu::PmuFeatures> pcpu_features;
  for (const v1::PcpuGroup& g : config_.pcpu_groups()) {
    for (uint32_t i = 0; i < g.count(); ++i) {
      pmu::PmuFeatures f{.num_counters = static_cast<int>(g.n_counters()), .p5 = g.p5(), .hpmn0 = g.hpmn0(),
                         .fgt = g.fgt()};
      absl::StatusOr<int> id = host_->AddPcpu(f, reservation, std::min(guest_counters, f.num_counters));
      if (!id.ok()) return id.status();
      pcpu_features.push_back(f);
    }
  }
  if (pcpu_features.empty()) return absl::InvalidArgumentError("sim host has no pCPUs");
  pcpus_.resize(pcpu_features.size());

  std::vector<uint16_t> host_codes;
  for (const v1::HostEvent& e : config_.host_events()) {
    host_codes.push_back(static_cast<uint16_t>(e.event_code()));
    for (size_t p = 0; p < pcpus_.size(); ++p) {
      if (e.pcpus_size() > 0 && std::find(e.pcpus().begin(), e.pcpus().end(), p) == e.pcpus().end()) continue;
      absl::StatusOr<int> id = host_->AddHostEvent(static_cast<int>(p), e.name(),
                                                   static_cast<uint16_t>(e.event_code()), e.sample_period());
      if (!id.ok()) return id.status();
    }
  }

  // A VM is created for the PMU of pCPU 0; pCPUs with another PMU run its vCPUs trapped.
  const pmu::PmuFeatures& home = pcpu_features[0];
  for (const v1::SimVm& vm : config_.vms()) {
    plans_.push_back(std::make_unique<WorkloadPlan>(
        PlanWorkload(vm.workload(), static_cast<int>(vm.h()), home.p5, host_codes)));
    const WorkloadPlan* plan = plans_.back().get();
    for (uint32_t i = 0; i < vm.vcpus(); ++i) {
      partition::VcpuPmuConfig c;
      c.h = static_cast<int>(vm.h());
      c.policy = vm.policy() == v1::POLICY_SEED_V5 ? partition::SwitchPolicy::kSeedV5
                                                   : partition::SwitchPolicy::kReviewed;
      c.partitioned = vm.implementation() != v1::PMU_IMPLEMENTATION_EMULATED;
      c.features = home;
      c.filter = FilterFrom(vm.event_filter());
      absl::StatusOr<int> id = host_->AddVcpu(std::move(c));
      if (!id.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("vm ", vm.vm_id(), ": ", id.status().message()));
      }
      Vcpu v;
      v.id = *id;
      v.plan = plan;
      v.since_arm.assign(plan->counters.size(), 0);
      v.ran_on.assign(pcpus_.size(), false);
      v.lost_on.assign(pcpus_.size(), false);
      if (plan->run_between_halts_ns != 0) {
        v.next_halt_ns = static_cast<uint64_t>(-std::log(1.0 - Uniform()) * plan->run_between_halts_ns);
      }
      vcpus_.push_back(std::move(v));
      info_.push_back({vm.vm_id(), vm.tenant_id(), static_cast<int>(i), static_cast<int>(vm.h()),
                       vm.policy() == v1::POLICY_SEED_V5 ? v1::POLICY_SEED_V5 : v1::POLICY_REVIEWED});
    }
  }
  for (size_t i = 0; i < vcpus_.size(); ++i) pcpus_[i % pcpus_.size()].runqueue.push_back(static_cast<int>(i));
  for (size_t p = 0; p < pcpus_.size(); ++p) queue_.push({0, static_cast<int>(p)});
  return absl::OkStatus();
}

absl::Status HostSimulator::RunUntil(uint64_t until_ns) {
  while (!queue_.empty() && queue_.top().at_ns < until_ns) {
    const Wake w = queue_.top();
    queue_.pop();
    absl::StatusOr<uint64_t> next = RunSlice(w.pcpu, w.at_ns);
    if (!next.ok()) return next.status();
    queue_.push({*next, w.pcpu});
  }
  now_ns_ = std::max(now_ns_, until_ns);
  host_->SetTime(now_ns_);
  return absl::OkStatus();
}

int HostSimulator::PickVcpu(int pcpu, uint64_t now) {
  Pcpu& p = pcpus_[pcpu];
  const size_t n = p.runqueue.size() - p.head;
  for (size_t i = 0; i < n; ++i) {
    const int idx = p.runqueue[p.head];
    ++p.head;
    Vcpu& v = vcpus_[idx];
    if (v.halted && v.wake_at_ns <= now) {
      v.halted = false;
      (void)host_->SetHalted(v.id, false);
    }
    if (!v.halted) return idx;
    p.runqueue.push_back(idx);  // still asleep: keep its place at the back
  }
  return -1;
}

uint64_t HostSimulator::EventsIn(Vcpu& v, uint64_t ns) {
  const unsigned __int128 total = static_cast<unsigned __int128>(v.plan->rate_hz) * ns + v.rate_remainder;
  v.rate_remainder = static_cast<uint64_t>(total % kNsPerSecond);
  return static_cast<uint64_t>(total / kNsPerSecond);
}

uint64_t HostSimulator::NsUntilWrap(const Vcpu& v) const {
  if (v.plan->rate_hz == 0) return kNever;
  uint64_t events = kNever;
  for (size_t i = 0; i < v.plan->counters.size(); ++i) {
    const uint64_t period = v.plan->counters[i].period;
    events = std::min(events, period - (v.since_arm[i] % period));
  }
  if (events == kNever) return kNever;
  const unsigned __int128 ns =
      (static_cast<unsigned __int128>(events) * kNsPerSecond + v.plan->rate_hz - 1) / v.plan->rate_hz;
  return ns > (kNever >> 2) ? kNever : static_cast<uint64_t>(ns);
}

absl::Status HostSimulator::RunGuest(int pcpu, Vcpu& v, uint64_t t, uint64_t end, uint64_t* stopped) {
  const WorkloadPlan& plan = *v.plan;
  const partition::VcpuPmu& state = host_->vcpu(v.id);
  if (!v.programmed && plan.kind != v1::Workload::IDLE) {
    // perf's probe before its first event setup. An idle guest never touches the PMU (a probe
    // would promote it out of FREE), so its VM reports no guest_visible_counters.
    absl::StatusOr<uint32_t> n = ProbeCounterCount(*host_, pcpu);
    if (!n.ok()) return n.status();
    info_[v.id].observed_n = static_cast<int>(*n);
    if (absl::Status s = ProgramCounters(*host_, pcpu, plan); !s.ok()) return s;
    v.programmed = true;
  }
  uint64_t irq_at = kNever;
  uint64_t handler_at = (v.handler_due || state.virtual_irq_level) ? t + plan.handler_latency_ns : kNever;
  const uint64_t halt_at = plan.run_between_halts_ns != 0 ? t + (v.next_halt_ns > v.run_ns ? v.next_halt_ns - v.run_ns : 0)
                                                          : kNever;
  for (;;) {
    const uint64_t wrap = plan.counters.empty() ? kNever : NsUntilWrap(v);
    uint64_t next = end;
    if (wrap != kNever && t + wrap < next) next = t + wrap;
    next = std::min({next, irq_at, handler_at, halt_at});
    if (next > t) {
      host_->SetTime(next);
      const uint64_t n = EventsIn(v, next - t);
      if (n != 0) {
        for (uint16_t e : plan.generated) {
          if (absl::Status s = host_->CountGuestEvent(pcpu, e, n, ExceptionLevel::kEl0); !s.ok()) return s;
        }
        for (size_t i = 0; i < plan.counters.size(); ++i) {
          if (!state.config.filter.Allows(plan.counters[i].event)) continue;
          // perf's expectation: one overflow per period of events, seen or not.
          const uint64_t period = plan.counters[i].period;
          const uint64_t before = v.since_arm[i];
          v.since_arm[i] += n;
          const uint64_t crossed = v.since_arm[i] / period - before / period;
          if (crossed != 0) host_->mutable_ledger().RecordExpectedWraps(v.id, crossed);
        }
      }
      v.run_ns += next - t;
      t = next;
    }
    if (irq_at == kNever && host_->HostInterruptPending(pcpu)) irq_at = t + kHostIrqLatencyNs;
    if (t >= irq_at) {
      if (absl::Status s = host_->HandleHostInterrupt(pcpu); !s.ok()) return s;
      irq_at = kNever;
      if (state.virtual_irq_level && handler_at == kNever) handler_at = t + plan.handler_latency_ns;
    }
    if (t >= handler_at) {
      absl::StatusOr<uint32_t> seen = RunOverflowHandler(*host_, pcpu, plan);
      if (!seen.ok()) return seen.status();
      for (size_t i = 0; i < plan.counters.size(); ++i) {
        if (*seen & (1u << plan.counters[i].counter)) v.since_arm[i] %= plan.counters[i].period;
      }
      handler_at = state.virtual_irq_level ? t + plan.handler_latency_ns : kNever;
      v.handler_due = false;
    }
    if (t >= halt_at) {
      // WFI: the vCPU gives up the pCPU until its timer (or a PMU interrupt) wakes it.
      v.halted = true;
      (void)host_->SetHalted(v.id, true);
      v.wake_at_ns = t + static_cast<uint64_t>(-std::log(1.0 - Uniform()) * plan.halt_ns);
      v.next_halt_ns = v.run_ns + static_cast<uint64_t>(-std::log(1.0 - Uniform()) * plan.run_between_halts_ns);
      break;
    }
    if (t >= end) break;
  }
  v.handler_due = handler_at != kNever;
  *stopped = t;
  return absl::OkStatus();
}

void HostSimulator::AddResidency(int pcpu, partition::OverflowOwner owner, uint32_t mask, uint64_t ns) {
  if (ns == 0) return;
  for (OwnershipResidency& r : pcpus_[pcpu].ownership) {
    if (r.owner == owner && r.counter_mask == mask) {
      r.resident_ns += ns;
      return;
    }
  }
  pcpus_[pcpu].ownership.push_back({owner, mask, ns});
}

void HostSimulator::RecordOwnership(int pcpu, const Vcpu& v, uint64_t ns) {
  const partition::VcpuPmu& state = host_->vcpu(v.id);
  // A FREE or trapped vCPU holds no hardware counter; a GUEST_OWNED one holds its guest mask.
  if (state.in_hardware) AddResidency(pcpu, partition::OverflowOwner::Vcpu(v.id), state.guest_mask(), ns);
  for (const partition::HostEvent& e : host_->pcpu(pcpu).host_events) {
    if (e.counter >= 0) AddResidency(pcpu, partition::OverflowOwner::Host(e.id), 1u << e.counter, ns);
  }
}

std::vector<OwnershipResidency> HostSimulator::TakeOwnership(int pcpu) {
  std::vector<OwnershipResidency> out;
  out.swap(pcpus_[pcpu].ownership);
  return out;
}

absl::StatusOr<uint64_t> HostSimulator::RunSlice(int pcpu, uint64_t start) {
  host_->SetTime(start);
  const int idx = PickVcpu(pcpu, start);
  Pcpu& p = pcpus_[pcpu];
  if (p.head > 1024 && p.head * 2 > p.runqueue.size()) {
    p.runqueue.erase(p.runqueue.begin(), p.runqueue.begin() + static_cast<std::ptrdiff_t>(p.head));
    p.head = 0;
  }
  if (idx < 0) {
    // Nothing runnable: the pCPU idles in the host until the earliest timer.
    uint64_t wake = start + slice_ns_;
    for (size_t i = p.head; i < p.runqueue.size(); ++i) wake = std::min(wake, vcpus_[p.runqueue[i]].wake_at_ns);
    return std::max(wake, start + kSwitchGapNs);
  }
  Vcpu& v = vcpus_[idx];
  v.ran_on[pcpu] = true;
  if (absl::Status s = host_->Load(v.id, pcpu); !s.ok()) return s;
  if (absl::Status s = host_->EnterGuest(pcpu); !s.ok()) return s;
  ++switches_;
  uint64_t stopped = start;
  if (absl::Status s = RunGuest(pcpu, v, start, start + slice_ns_, &stopped); !s.ok()) return s;
  RecordOwnership(pcpu, v, stopped - start);
  if (absl::Status s = host_->ExitGuest(pcpu); !s.ok()) return s;
  if (absl::Status s = host_->Put(pcpu); !s.ok()) return s;
  // An interrupt raised near the end of the slice is taken after the put.
  if (host_->HostInterruptPending(pcpu)) {
    if (absl::Status s = host_->HandleHostInterrupt(pcpu); !s.ok()) return s;
  }
  if (host_->vcpu(v.id).virtual_irq_level) v.handler_due = true;
  // The host's scheduler tick: host events squeezed off the PMU take turns (perf multiplexing).
  if (absl::Status s = host_->RotateHostEvents(pcpu); !s.ok()) return s;
  int target = pcpu;
  if (!v.halted && pcpus_.size() > 1 && Uniform() < migration_probability_) {
    target = static_cast<int>(rng_() % (pcpus_.size() - 1));
    if (target >= pcpu) ++target;
  }
  pcpus_[target].runqueue.push_back(idx);
  return stopped + kSwitchGapNs;
}

}  // namespace fleetpmu::sim
