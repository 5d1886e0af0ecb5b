#include "hypervisor-shim/partition/partitioned_host.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "hypervisor-shim/partition/context_switch.h"
#include "hypervisor-shim/partition/host_reservation.h"
#include "hypervisor-shim/partition/pmu_trap_handler.h"

namespace fleetpmu::partition {

using pmu::AccessOutcome;
using pmu::AccessResult;
using pmu::ExceptionLevel;
using pmu::PmuReg;
using pmu::PmuRegRef;

class PartitionedHost::HardwareWraps final : public pmu::OverflowObserver {
 public:
  HardwareWraps(OverflowLedger& ledger, const PcpuPmu& pcpu) : ledger_(ledger), pcpu_(pcpu) {}
  void OnCounterWrap(int counter, uint64_t wraps, bool) override {
    ledger_.RecordWrap(FlagLocation::Hardware(pcpu_.index), counter, pcpu_.counter_owner[counter], wraps);
  }

 private:
  OverflowLedger& ledger_;
  const PcpuPmu& pcpu_;
};

class PartitionedHost::MemoryWraps final : public pmu::OverflowObserver {
 public:
  MemoryWraps(OverflowLedger& ledger, int vcpu) : ledger_(ledger), vcpu_(vcpu) {}
  void OnCounterWrap(int counter, uint64_t wraps, bool) override {
    ledger_.RecordWrap(FlagLocation::Memory(vcpu_), counter, OverflowOwner::Vcpu(vcpu_), wraps);
  }

 private:
  OverflowLedger& ledger_;
  int vcpu_;
};

class PartitionedHost::IdealWraps final : public pmu::OverflowObserver {
 public:
  IdealWraps(OverflowLedger& ledger, int vcpu) : ledger_(ledger), vcpu_(vcpu) {}
  void OnCounterWrap(int, uint64_t wraps, bool) override { ledger_.RecordExpectedWraps(vcpu_, wraps); }

 private:
  OverflowLedger& ledger_;
  int vcpu_;
};

PartitionedHost::PartitionedHost(PartitionedHostOptions options) : options_(options) {
  ledger_.set_ground_truth(options_.ground_truth || !options_.expected_wraps_from_ideal);
}

PartitionedHost::~PartitionedHost() = default;

absl::StatusOr<int> PartitionedHost::AddPcpu(const pmu::PmuFeatures& features,
                                             HostReservation reservation,
                                             int static_guest_counters,
                                             bool linux_perf_defaults) {
  if (features.num_counters < 0 || features.num_counters > pmu::kMaxEventCounters) {
    return absl::InvalidArgumentError(
        absl::StrCat("pCPU PMU N=", features.num_counters, " is outside [0,31]"));
  }
  if (reservation == HostReservation::kStatic &&
      (static_guest_counters < 0 || static_guest_counters > features.num_counters)) {
    return absl::InvalidArgumentError(absl::StrCat("static reservation of ", static_guest_counters,
                                                   " guest counters exceeds N=", features.num_counters));
  }
  const int index = num_pcpus();
  pcpus_.push_back(std::make_unique<PcpuPmu>(index, features, reservation, static_guest_counters,
                                             linux_perf_defaults));
  PcpuPmu& p = *pcpus_.back();
  observers_.push_back(std::make_unique<HardwareWraps>(ledger_, p));
  p.hw.set_overflow_observer(observers_.back().get());
  host_user_state_.emplace_back(0, 0);
  return index;
}

absl::StatusOr<int> PartitionedHost::AddVcpu(VcpuPmuConfig config) {
  if (config.h < 0 || config.h > config.features.num_counters) {
    return absl::InvalidArgumentError(absl::StrCat(
        "h=", config.h, " guest counters is outside [0,N=", config.features.num_counters,
        "]: MDCR_EL2.HPMN > N is UNPREDICTABLE"));
  }
  const int id = num_vcpus();
  vcpus_.push_back(std::make_unique<VcpuPmu>(id, std::move(config), options_.ground_truth));
  VcpuPmu& v = *vcpus_.back();
  observers_.push_back(std::make_unique<MemoryWraps>(ledger_, id));
  v.saved.set_overflow_observer(observers_.back().get());
  if (v.ideal && options_.expected_wraps_from_ideal) {
    observers_.push_back(std::make_unique<IdealWraps>(ledger_, id));
    v.ideal->set_overflow_observer(observers_.back().get());
  }
  return id;
}

absl::StatusOr<int> PartitionedHost::AddHostEvent(int pcpu, std::string name, uint16_t event,
                                                  uint64_t period) {
  if (absl::Status s = CheckPcpu(pcpu); !s.ok()) return s;
  PcpuPmu& p = *pcpus_[pcpu];
  if (p.loaded != nullptr) {
    return absl::FailedPreconditionError("host events are added while no vCPU is loaded");
  }
  partition::HostEvent e;
  e.id = next_host_event_id_++;
  e.name = std::move(name);
  e.event = event;
  e.period = period;
  p.host_events.push_back(std::move(e));
  ScheduleHostEvents(p, ledger_);
  return p.host_events.back().id;
}

void PartitionedHost::SetTime(uint64_t now_ns) {
  if (now_ns < now_ns_) return;  // time never runs backwards
  now_ns_ = now_ns;
  ledger_.set_now(now_ns);
}

absl::Status PartitionedHost::CheckPcpu(int pcpu) const {
  if (pcpu < 0 || pcpu >= num_pcpus()) {
    return absl::OutOfRangeError(absl::StrCat("pCPU ", pcpu, " does not exist (", num_pcpus(), " pCPUs)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<VcpuPmu*> PartitionedHost::RunningVcpu(int pcpu) {
  if (absl::Status s = CheckPcpu(pcpu); !s.ok()) return s;
  VcpuPmu* v = pcpus_[pcpu]->loaded;
  if (v == nullptr || !v->in_guest) {
    return absl::FailedPreconditionError(absl::StrCat("no vCPU is running in guest context on pCPU ", pcpu));
  }
  return v;
}

void PartitionedHost::AfterOperation(const PcpuPmu& pcpu, VcpuPmu* vcpu) {
  if (!options_.check_invariants) return;
  // Only the pCPU an operation touched can have changed; vCPUs elsewhere are checked when they
  // are switched.
  checker_.CheckPcpuState(pcpu);
  checker_.CheckLost(ledger_.total_lost(), ledger_.total_misattributed());
  const uint64_t total = checker_.total();
  if (vcpu != nullptr) vcpu->stats.invariant_violations += total - violations_charged_;
  violations_charged_ = total;
}

absl::Status PartitionedHost::SetHalted(int vcpu, bool halted) {
  if (vcpu < 0 || vcpu >= num_vcpus()) return absl::OutOfRangeError(absl::StrCat("vCPU ", vcpu, " does not exist"));
  vcpus_[vcpu]->halted = halted;
  return absl::OkStatus();
}

void PartitionedHost::CheckInvariants() {
  checker_.CheckState(*this);
  checker_.CheckLost(ledger_.total_lost(), ledger_.total_misattributed());
}

absl::Status PartitionedHost::Load(int vcpu, int pcpu) {
  if (absl::Status s = CheckPcpu(pcpu); !s.ok()) return s;
  if (vcpu < 0 || vcpu >= num_vcpus()) return absl::OutOfRangeError(absl::StrCat("vCPU ", vcpu, " does not exist"));
  PcpuPmu& p = *pcpus_[pcpu];
  VcpuPmu& v = *vcpus_[vcpu];
  if (p.loaded != nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("pCPU ", pcpu, " already has vCPU ", p.loaded->id, " loaded"));
  }
  if (v.loaded_on >= 0) {
    return absl::FailedPreconditionError(absl::StrCat("vCPU ", vcpu, " is already loaded on pCPU ", v.loaded_on));
  }
  PcpuSnapshot before;
  if (options_.check_invariants) before = InvariantChecker::Snapshot(p);
  AccountHostEventTime(p, now_ns_);
  const uint64_t accesses = p.hw.access_counts().total;
  const uint64_t host_accesses = p.host_reservation_accesses;
  p.preemption_disabled = true;
  p.loaded = &v;
  v.loaded_on = pcpu;
  SwitchContext ctx = Context(p, v);
  ContextSwitchFor(v.config.policy).Load(ctx);
  p.preemption_disabled = false;
  v.stats.load_register_accesses +=
      (p.hw.access_counts().total - accesses) - (p.host_reservation_accesses - host_accesses);
  UpdateVirtualIrq(v, &p);
  if (options_.check_invariants) {
    checker_.CheckLoad(before, p, v);
    AfterOperation(p, &v);
  }
  return absl::OkStatus();
}

absl::Status PartitionedHost::EnterGuest(int pcpu) {
  if (absl::Status s = CheckPcpu(pcpu); !s.ok()) return s;
  PcpuPmu& p = *pcpus_[pcpu];
  if (p.loaded == nullptr) return absl::FailedPreconditionError(absl::StrCat("no vCPU loaded on pCPU ", pcpu));
  VcpuPmu& v = *p.loaded;
  if (v.in_guest) return absl::FailedPreconditionError(absl::StrCat("vCPU ", v.id, " is already in guest context"));
  PcpuSnapshot before;
  if (options_.check_invariants) before = InvariantChecker::Snapshot(p);
  const uint64_t accesses = p.hw.access_counts().total;
  SwitchContext ctx = Context(p, v);
  ContextSwitchFor(v.config.policy).EnterGuest(ctx);
  // Exception return: the guest's own view of its PMU is synchronised too.
  v.saved.ContextSynchronize();
  if (v.ideal) v.ideal->ContextSynchronize();
  v.stats.entry_exit_register_accesses += p.hw.access_counts().total - accesses;
  if (options_.check_invariants) {
    checker_.CheckEntry(before, p, v);
    AfterOperation(p, &v);
  }
  return absl::OkStatus();
}

absl::Status PartitionedHost::ExitGuest(int pcpu) {
  absl::StatusOr<VcpuPmu*> running = RunningVcpu(pcpu);
  if (!running.ok()) return running.status();
  PcpuPmu& p = *pcpus_[pcpu];
  VcpuPmu& v = **running;
  const uint64_t accesses = p.hw.access_counts().total;
  SwitchContext ctx = Context(p, v);
  ContextSwitchFor(v.config.policy).ExitGuest(ctx);
  // Exception entry synchronises the guest's context.
  v.saved.ContextSynchronize();
  if (v.ideal) v.ideal->ContextSynchronize();
  v.stats.entry_exit_register_accesses += p.hw.access_counts().total - accesses;
  UpdateVirtualIrq(v, &p);
  AfterOperation(p, &v);
  return absl::OkStatus();
}

absl::Status PartitionedHost::Put(int pcpu) {
  if (absl::Status s = CheckPcpu(pcpu); !s.ok()) return s;
  PcpuPmu& p = *pcpus_[pcpu];
  if (p.loaded == nullptr) return absl::FailedPreconditionError(absl::StrCat("no vCPU loaded on pCPU ", pcpu));
  VcpuPmu& v = *p.loaded;
  if (v.in_guest) {
    return absl::FailedPreconditionError(absl::StrCat("vCPU ", v.id, " is in guest context: exit before put"));
  }
  PcpuSnapshot before;
  if (options_.check_invariants) before = InvariantChecker::Snapshot(p);
  const bool was_owned = v.mode == PmuMode::kPartitioned && v.ownership == PmuOwnership::kGuestOwned;
  AccountHostEventTime(p, now_ns_);
  const uint64_t accesses = p.hw.access_counts().total;
  p.preemption_disabled = true;
  SwitchContext ctx = Context(p, v);
  ContextSwitchFor(v.config.policy).Put(ctx);
  v.stats.put_register_accesses += p.hw.access_counts().total - accesses;
  if (options_.check_invariants) checker_.CheckPut(before, p, v, was_owned);
  const bool partitioned = v.mode == PmuMode::kPartitioned;
  p.loaded = nullptr;
  v.loaded_on = -1;
  // Step 5: with dynamic reservation the host takes [0,h) and PMCCNTR back.
  if (partitioned && p.reservation == HostReservation::kDynamic) ScheduleHostEvents(p, ledger_);
  p.preemption_disabled = false;
  UpdateVirtualIrq(v, nullptr);
  if (options_.check_invariants) {
    checker_.CheckHostUserState(p, host_user_state_[pcpu].first, host_user_state_[pcpu].second, v.id);
    AfterOperation(p, &v);
  }
  return absl::OkStatus();
}

absl::StatusOr<AccessResult> PartitionedHost::GuestAccess(int pcpu, PmuRegRef ref, uint64_t value,
                                                          bool is_write, ExceptionLevel el) {
  if (el == ExceptionLevel::kEl2) return absl::InvalidArgumentError("guest accesses run at EL0 or EL1");
  absl::StatusOr<VcpuPmu*> running = RunningVcpu(pcpu);
  if (!running.ok()) return running.status();
  PcpuPmu& p = *pcpus_[pcpu];
  VcpuPmu& v = **running;
  PcpuSnapshot before;
  if (options_.check_invariants) before = InvariantChecker::Snapshot(p);

  AccessResult ideal;
  if (v.ideal) ideal = is_write ? v.ideal->Write(ref, value, el) : v.ideal->Read(ref, el);

  const ContextSwitch& policy = ContextSwitchFor(v.config.policy);
  const uint64_t promotions = v.stats.promotions;
  AccessResult result;
  for (int attempt = 0; attempt < 3; ++attempt) {
    result = is_write ? p.hw.Write(ref, value, el) : p.hw.Read(ref, el);
    if (result.outcome != AccessOutcome::kTrapToEl2) {
      ++v.stats.direct_accesses;
      break;
    }
    p.hw.ContextSynchronize();  // exception entry
    SwitchContext ctx = Context(p, v);
    TrapResult trap = HandlePmuTrap(ctx, policy, ref, value, is_write, el);
    p.hw.ContextSynchronize();  // exception return
    result = trap.access;
    if (!trap.retry) break;
  }
  if (options_.check_invariants) {
    if (v.stats.promotions != promotions) checker_.CheckPromotion(before, p, v);
    if (v.ideal) checker_.CheckGuestAccess(v, ref, is_write, result, ideal);
    if (is_write) checker_.CheckGuestWrite(before, p, v, ref, value);
    AfterOperation(p, &v);
  }
  return result;
}

absl::Status PartitionedHost::GuestContextSynchronize(int pcpu) {
  absl::StatusOr<VcpuPmu*> running = RunningVcpu(pcpu);
  if (!running.ok()) return running.status();
  pcpus_[pcpu]->hw.ContextSynchronize();
  (*running)->saved.ContextSynchronize();
  if ((*running)->ideal) (*running)->ideal->ContextSynchronize();
  return absl::OkStatus();
}

absl::Status PartitionedHost::CountGuestEvent(int pcpu, uint16_t event, uint64_t count, ExceptionLevel el) {
  if (el == ExceptionLevel::kEl2) return absl::InvalidArgumentError("guest events happen at EL0 or EL1");
  absl::StatusOr<VcpuPmu*> running = RunningVcpu(pcpu);
  if (!running.ok()) return running.status();
  VcpuPmu& v = **running;
  const bool allowed = v.config.filter.Allows(event);
  if (v.ideal && allowed) v.ideal->CountEvent(event, count, el);
  // The hardware counts whatever is programmed: the guest's counters if its state is loaded,
  // host events on the host range in any case.
  pcpus_[pcpu]->hw.CountEvent(event, count, el);
  if (v.mode == PmuMode::kTrapped && allowed) {
    // Trapped fallback: the emulated vPMU counts (KVM backs it with host perf events).
    v.saved.CountEvent(event, count, el);
    UpdateVirtualIrq(v, pcpus_[pcpu].get());
  }
  AfterOperation(*pcpus_[pcpu], &v);
  return absl::OkStatus();
}

absl::StatusOr<AccessResult> PartitionedHost::HostAccess(int pcpu, PmuRegRef ref, uint64_t value,
                                                         bool is_write) {
  if (absl::Status s = CheckPcpu(pcpu); !s.ok()) return s;
  PcpuPmu& p = *pcpus_[pcpu];
  if (p.loaded != nullptr && p.loaded->in_guest) {
    return absl::FailedPreconditionError(absl::StrCat("pCPU ", pcpu, " is in guest context"));
  }
  const uint32_t flags_before = p.hw.state().ovs;
  AccessResult r = is_write ? p.hw.Write(ref, value, ExceptionLevel::kEl2)
                            : p.hw.Read(ref, ExceptionLevel::kEl2);
  if (is_write && r.ok()) {
    if (ref.reg == PmuReg::kPmuserenr) host_user_state_[pcpu].first = p.hw.state().pmuserenr;
    if (ref.reg == PmuReg::kPmselr) host_user_state_[pcpu].second = p.hw.state().pmselr;
    if (ref.reg == PmuReg::kMdcrEl2 && p.loaded == nullptr) p.host_mdcr = p.hw.state().mdcr;
    const uint32_t cleared = flags_before & ~p.hw.state().ovs;
    if (cleared != 0) {
      ledger_.ClearUnseen(FlagLocation::Hardware(pcpu), cleared, LostReason::kHostClobbered);
    }
  }
  AfterOperation(p);
  return r;
}

absl::Status PartitionedHost::CountHostEvent(int pcpu, uint16_t event, uint64_t count) {
  if (absl::Status s = CheckPcpu(pcpu); !s.ok()) return s;
  PcpuPmu& p = *pcpus_[pcpu];
  if (p.loaded != nullptr && p.loaded->in_guest) {
    return absl::FailedPreconditionError(absl::StrCat("pCPU ", pcpu, " is in guest context: EL2 events happen after exit"));
  }
  p.hw.CountEvent(event, count, ExceptionLevel::kEl2);
  AfterOperation(p);
  return absl::OkStatus();
}

bool PartitionedHost::HostInterruptPending(int pcpu) const {
  return pcpu >= 0 && pcpu < num_pcpus() && pcpus_[pcpu]->hw.InterruptLine();
}

absl::Status PartitionedHost::HandleHostInterrupt(int pcpu) {
  if (absl::Status s = CheckPcpu(pcpu); !s.ok()) return s;
  PcpuPmu& p = *pcpus_[pcpu];
  pmu::Pmuv3& hw = p.hw;
  const uint32_t flags = static_cast<uint32_t>(hw.Read({PmuReg::kPmovsset}, ExceptionLevel::kEl2).value);
  VcpuPmu* v = p.loaded;
  const bool guest_live = v != nullptr && v->mode == PmuMode::kPartitioned && v->in_hardware;
  const uint32_t guest = guest_live ? v->guest_mask() : 0;

  // Host perf: its events' flags, then any other flag in the host range (perf clears all it reads).
  const uint32_t host_range = HostUsableCounters(p);
  const uint32_t handled = HandleHostEventOverflows(p, flags & ~guest, ledger_);
  const uint32_t stray = flags & ~guest & host_range & ~handled;
  if (stray != 0) {
    ledger_.ClearUnseen(FlagLocation::Hardware(pcpu), stray, LostReason::kHostClobbered);
    hw.Write({PmuReg::kPmovsclr}, stray, ExceptionLevel::kEl2);
  }

  // Guest flags become the running vCPU's: its in-memory PMOVSSET is canonical.
  const uint32_t guest_flags = flags & guest;
  if (guest_flags != 0) {
    v->saved.mutable_state()->ovs |= guest_flags;
    ledger_.Move(FlagLocation::Hardware(pcpu), FlagLocation::Memory(v->id), guest_flags);
    hw.Write({PmuReg::kPmovsclr}, guest_flags, ExceptionLevel::kEl2);
    ++v->stats.host_irqs_attributed;
    UpdateVirtualIrq(*v, &p);
  }
  AfterOperation(p, v);
  return absl::OkStatus();
}

absl::Status PartitionedHost::RotateHostEvents(int pcpu) {
  if (absl::Status s = CheckPcpu(pcpu); !s.ok()) return s;
  PcpuPmu& p = *pcpus_[pcpu];
  AccountHostEventTime(p, now_ns_);
  partition::RotateHostEvents(p, ledger_);
  AfterOperation(p);
  return absl::OkStatus();
}

void PartitionedHost::FinishAccounting() {
  for (const auto& p : pcpus_) {
    const OverflowOwner loaded = p->loaded ? OverflowOwner::Vcpu(p->loaded->id) : OverflowOwner::None();
    ledger_.ResolveOrphans(p->index, loaded, LostReason::kInterruptDisabledAtPut);
    AccountHostEventTime(*p, now_ns_);
  }
}

}  // namespace fleetpmu::partition
