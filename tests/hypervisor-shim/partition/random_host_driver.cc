#include "tests/hypervisor-shim/partition/random_host_driver.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace fleetpmu::partition::testing {
namespace {

using pmu::ExceptionLevel;
using pmu::PmuReg;
using pmu::PmuRegRef;

constexpr uint16_t kGuestEvents[] = {pmu::kEventInstRetired, pmu::kEventCpuCycles,
                                     pmu::kEventL1dCacheRefill, pmu::kEventBrMisPred};

}  // namespace

HostShape HostShape::Random(std::mt19937_64& rng, bool fgt, SwitchPolicy policy) {
  HostShape s;
  const int sizes[] = {1, 3, 6, 6, 10};
  s.features.num_counters = sizes[rng() % 5];
  s.features.p5 = rng() % 2;
  s.features.hpmn0 = rng() % 2;
  s.features.fgt = fgt;
  s.pcpus = 2 + static_cast<int>(rng() % 2);
  s.vcpus = 3;
  s.reservation = rng() % 2 ? HostReservation::kDynamic : HostReservation::kStatic;
  const int n = s.features.num_counters;
  s.static_guest_counters = n > 1 ? n - 1 : n;
  const int max_h = s.reservation == HostReservation::kStatic ? s.static_guest_counters : n;
  const int min_h = s.features.hpmn0 ? 0 : 1;
  for (int i = 0; i < s.vcpus; ++i) {
    s.h.push_back(min_h + static_cast<int>(rng() % (max_h - min_h + 1)));
    s.policies.push_back(policy);
  }
  s.first_vcpu_trapped = rng() % 3 == 0;
  return s;
}

std::string HostShape::Describe() const {
  std::string h_list;
  for (int h_i : h) absl::StrAppend(&h_list, h_list.empty() ? "" : ",", h_i);
  return absl::StrFormat("pcpus=%d N=%d p5=%d hpmn0=%d fgt=%d reservation=%s guest_counters=%d h=[%s] trapped0=%d", pcpus,
                         features.num_counters, features.p5, features.hpmn0, features.fgt,
                         reservation == HostReservation::kStatic ? "static" : "dynamic", static_guest_counters, h_list, first_vcpu_trapped);
}

std::string Action::Describe() const {
  static const char* kNames[] = {"load", "enter", "exit", "put", "guest-read", "guest-write", "guest-event",
                                 "guest-handler", "guest-isb", "host-event", "host-user-write", "host-irq", "time"};
  return absl::StrFormat("%s pcpu=%d vcpu=%d reg=%s value=0x%x el=%d", kNames[static_cast<int>(kind)], pcpu, vcpu,
                         pmu::RegisterName(reg), value, static_cast<int>(el));
}

absl::Status BuildHost(const HostShape& shape, PartitionedHost& host) {
  for (int p = 0; p < shape.pcpus; ++p) {
    absl::StatusOr<int> id = host.AddPcpu(shape.features, shape.reservation, shape.static_guest_counters);
    if (!id.ok()) return id.status();
    if (shape.host_perf_events) {
      if (auto e = host.AddHostEvent(p, "cycles", pmu::kEventCpuCycles, 4000); !e.ok()) return e.status();
      if (auto e = host.AddHostEvent(p, "instructions", pmu::kEventInstRetired, 9000); !e.ok()) return e.status();
    }
  }
  for (int v = 0; v < shape.vcpus; ++v) {
    VcpuPmuConfig config;
    config.h = shape.h[v];
    config.policy = shape.policies[v];
    config.features = shape.features;
    config.partitioned = !(v == 0 && shape.first_vcpu_trapped);
    if (v == 2) config.filter.AddRange(pmu::kEventBrMisPred, 1, EventFilter::Action::kDeny);
    if (absl::StatusOr<int> id = host.AddVcpu(std::move(config)); !id.ok()) return id.status();
  }
  return absl::OkStatus();
}

uint64_t RandomHostDriver::InterestingValue() {
  switch (rng_() % 10) {
    case 0: case 1: case 2: case 3: return 0xFFFFFFFFull - (rng_() % 64);       // about to wrap at 32
    case 4: return ~0ull - (rng_() % 64);                                      // about to wrap at 64
    case 5: return 0;
    default: return rng_() % 100000;
  }
}

PmuRegRef RandomHostDriver::GuestRegister(int h) {
  static const PmuReg kRegs[] = {PmuReg::kPmcr, PmuReg::kPmcntenset, PmuReg::kPmcntenclr, PmuReg::kPmintenset,
                                 PmuReg::kPmintenclr, PmuReg::kPmovsset, PmuReg::kPmovsclr, PmuReg::kPmselr,
                                 PmuReg::kPmswinc, PmuReg::kPmxevcntr, PmuReg::kPmxevtyper, PmuReg::kPmccntr,
                                 PmuReg::kPmccfiltr, PmuReg::kPmuserenr, PmuReg::kPmevcntr, PmuReg::kPmevtyper,
                                 PmuReg::kPmevcntr, PmuReg::kPmevtyper, PmuReg::kPmcntenset};
  PmuRegRef ref{kRegs[rng_() % std::size(kRegs)]};
  if (ref.reg == PmuReg::kPmevcntr || ref.reg == PmuReg::kPmevtyper) {
    ref.n = static_cast<uint8_t>(rng_() % (h + 1));  // sometimes one past the guest's counters
  }
  return ref;
}

Action RandomHostDriver::Pick() {
  std::vector<std::pair<Action, int>> options;  // action, weight
  auto add = [&](Action a, int w) { options.emplace_back(a, w); };
  std::vector<bool> loaded(host_.num_vcpus());
  for (int v = 0; v < host_.num_vcpus(); ++v) loaded[v] = host_.vcpu(v).loaded_on >= 0;
  for (int p = 0; p < host_.num_pcpus(); ++p) {
    const VcpuPmu* v = host_.pcpu(p).loaded;
    if (host_.HostInterruptPending(p)) add({Action::Kind::kHostIrq, p}, 30);
    if (v == nullptr) {
      for (int i = 0; i < host_.num_vcpus(); ++i) {
        if (!loaded[i]) add({Action::Kind::kLoad, p, i}, 4);
      }
      add({Action::Kind::kHostEvent, p}, 2);
      add({Action::Kind::kHostUserWrite, p}, 1);
    } else if (!v->in_guest) {
      add({Action::Kind::kEnter, p, v->id}, 8);
      add({Action::Kind::kPut, p, v->id}, 3);
      add({Action::Kind::kHostEvent, p, v->id}, 1);
      add({Action::Kind::kHostUserWrite, p, v->id}, 1);
    } else {
      add({Action::Kind::kGuestRead, p, v->id}, 6);
      add({Action::Kind::kGuestWrite, p, v->id}, 12);
      add({Action::Kind::kGuestEvent, p, v->id}, 10);
      add({Action::Kind::kGuestHandler, p, v->id}, v->virtual_irq_level ? 20 : 1);
      add({Action::Kind::kGuestIsb, p, v->id}, 1);
      add({Action::Kind::kExit, p, v->id}, 5);
    }
  }
  add({Action::Kind::kAdvanceTime}, 2);
  int total = 0;
  for (auto& [a, w] : options) total += w;
  int pick = static_cast<int>(rng_() % total);
  Action chosen = options.back().first;
  for (auto& [a, w] : options) {
    if (pick < w) { chosen = a; break; }
    pick -= w;
  }
  // Fill in the details.
  switch (chosen.kind) {
    case Action::Kind::kGuestRead:
    case Action::Kind::kGuestWrite: {
      const int h = host_.vcpu(chosen.vcpu).config.h;
      chosen.reg = GuestRegister(h);
      chosen.el = rng_() % 5 == 0 ? ExceptionLevel::kEl0 : ExceptionLevel::kEl1;
      switch (chosen.reg.reg) {
        case PmuReg::kPmcr:
          // Never PMCR.D: the /64 prescaler is not architectural state and no switch saves it.
          chosen.value = (rng_() % 3 ? pmu::pmcr::kE : 0) | (rng_() % 2 ? pmu::pmcr::kLc : 0) |
                         (rng_() % 2 ? pmu::pmcr::kLp : 0) | (rng_() % 8 == 0 ? pmu::pmcr::kP : 0) |
                         (rng_() % 8 == 0 ? pmu::pmcr::kC : 0) | (rng_() % 4 == 0 ? pmu::pmcr::kDp : 0);
          break;
        case PmuReg::kPmevtyper:
        case PmuReg::kPmxevtyper: {
          static const uint16_t kTypes[] = {0x00, 0x08, 0x11, 0x03, 0x10, 0x1E, 0x08, 0x11};
          uint32_t filter = 0;
          if (rng_() % 4 == 0) filter |= pmu::evtyper::kU;
          if (rng_() % 6 == 0) filter |= pmu::evtyper::kP;
          if (rng_() % 4 == 0) filter |= pmu::evtyper::kNsh;
          if (rng_() % 10 == 0) filter |= pmu::evtyper::kNsk;
          chosen.value = filter | kTypes[rng_() % std::size(kTypes)];
          break;
        }
        case PmuReg::kPmccfiltr:
          chosen.value = rng_() % 4 == 0 ? pmu::evtyper::kU : (rng_() % 4 == 0 ? pmu::evtyper::kNsh : 0);
          break;
        case PmuReg::kPmselr: chosen.value = rng_() % 4 == 0 ? 31 : rng_() % 8; break;
        case PmuReg::kPmuserenr: chosen.value = rng_() % 16; break;
        case PmuReg::kPmevcntr:
        case PmuReg::kPmxevcntr:
        case PmuReg::kPmccntr: chosen.value = InterestingValue(); break;
        default: chosen.value = rng_() % 3 == 0 ? 0xFFFFFFFFull : rng_() & 0x8000003F; break;
      }
      break;
    }
    case Action::Kind::kGuestEvent:
      chosen.value = rng_() % 8 == 0 ? (1ull << 20) + rng_() % 1000 : 1 + rng_() % 200;
      chosen.reg.n = static_cast<uint8_t>(rng_() % std::size(kGuestEvents));
      chosen.el = rng_() % 3 == 0 ? ExceptionLevel::kEl0 : ExceptionLevel::kEl1;
      break;
    case Action::Kind::kHostEvent:
      chosen.value = 1 + rng_() % 3000;
      chosen.reg.n = static_cast<uint8_t>(rng_() % 2);
      break;
    case Action::Kind::kHostUserWrite:
      chosen.reg = rng_() % 2 ? PmuRegRef{PmuReg::kPmuserenr} : PmuRegRef{PmuReg::kPmselr};
      chosen.value = rng_() % 16;
      break;
    case Action::Kind::kAdvanceTime: chosen.value = 1 + rng_() % 20000; break;
    default: break;
  }
  return chosen;
}

absl::Status RandomHostDriver::Step() {
  Action a = Pick();
  script_.push_back(a);
  return Apply(a);
}

absl::Status RandomHostDriver::Apply(const Action& a) {
  const int step = static_cast<int>(observations_.size());
  switch (a.kind) {
    case Action::Kind::kLoad: return host_.Load(a.vcpu, a.pcpu);
    case Action::Kind::kEnter: return host_.EnterGuest(a.pcpu);
    case Action::Kind::kExit: return host_.ExitGuest(a.pcpu);
    case Action::Kind::kPut: return host_.Put(a.pcpu);
    case Action::Kind::kGuestRead:
    case Action::Kind::kGuestWrite: {
      const bool is_write = a.kind == Action::Kind::kGuestWrite;
      absl::StatusOr<pmu::AccessResult> r = host_.GuestAccess(a.pcpu, a.reg, a.value, is_write, a.el);
      if (!r.ok()) return r.status();
      // Guests synchronise after selecting a counter, as Linux does; a PMXEV* access without it
      // is CONSTRAINED UNPREDICTABLE and would make the ideal vPMU's answer meaningless.
      if (is_write && a.reg.reg == PmuReg::kPmselr) {
        if (absl::Status s = host_.GuestContextSynchronize(a.pcpu); !s.ok()) return s;
      }
      if (r->outcome != pmu::AccessOutcome::kUnpredictable) {
        observations_.push_back({step, a.vcpu, absl::StrCat(is_write ? "w " : "r ", pmu::RegisterName(a.reg), " ",
                                                            static_cast<int>(r->outcome)),
                                 is_write ? 0 : r->value});
      }
      return absl::OkStatus();
    }
    case Action::Kind::kGuestEvent:
      return host_.CountGuestEvent(a.pcpu, kGuestEvents[a.reg.n], a.value, a.el);
    case Action::Kind::kGuestHandler: {
      // The guest's perf interrupt handler: read the overflow status, clear what it saw.
      absl::StatusOr<pmu::AccessResult> r =
          host_.GuestAccess(a.pcpu, {PmuReg::kPmovsset}, 0, false, ExceptionLevel::kEl1);
      if (!r.ok()) return r.status();
      observations_.push_back({step, a.vcpu, "handler PMOVSSET", r->value});
      if (r->value != 0) {
        absl::StatusOr<pmu::AccessResult> w =
            host_.GuestAccess(a.pcpu, {PmuReg::kPmovsclr}, r->value, true, ExceptionLevel::kEl1);
        if (!w.ok()) return w.status();
      }
      return absl::OkStatus();
    }
    case Action::Kind::kGuestIsb: return host_.GuestContextSynchronize(a.pcpu);
    case Action::Kind::kHostEvent:
      return host_.CountHostEvent(a.pcpu, a.reg.n ? pmu::kEventCpuCycles : pmu::kEventInstRetired, a.value);
    case Action::Kind::kHostUserWrite: return host_.HostAccess(a.pcpu, a.reg, a.value, true).status();
    case Action::Kind::kHostIrq: return host_.HandleHostInterrupt(a.pcpu);
    case Action::Kind::kAdvanceTime:
      now_ns_ += a.value;
      host_.SetTime(now_ns_);
      return absl::OkStatus();
  }
  return absl::InternalError("unknown action");
}

}  // namespace fleetpmu::partition::testing
