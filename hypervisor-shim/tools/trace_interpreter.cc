#include "hypervisor-shim/tools/trace_interpreter.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace fleetpmu::tools {
namespace {

using partition::HostReservation;
using partition::OverflowOwner;
using pmu::AccessOutcome;
using pmu::ExceptionLevel;
using pmu::PmuReg;
using pmu::PmuRegRef;

absl::StatusOr<uint64_t> ParseNumber(absl::string_view text, absl::string_view what) {
  uint64_t value = 0;
  bool ok = false;
  if (absl::StartsWithIgnoreCase(text, "0x")) {
    ok = text.size() > 2 && absl::SimpleHexAtoi(text.substr(2), &value);
  } else {
    ok = absl::SimpleAtoi(text, &value);
  }
  if (!ok) return absl::InvalidArgumentError(absl::StrCat(what, " '", text, "' is not a decimal or 0x hex number"));
  return value;
}

absl::StatusOr<PmuRegRef> ParseRegister(absl::string_view text) {
  std::optional<PmuRegRef> ref = pmu::ParseRegisterName(std::string_view(text.data(), text.size()));
  if (!ref) return absl::InvalidArgumentError(absl::StrCat("unknown register '", text, "'"));
  return *ref;
}

// "key=value" -> value, or nullopt if `word` is not that key.
std::optional<absl::string_view> Option(absl::string_view word, absl::string_view key) {
  if (!absl::ConsumePrefix(&word, key) || !absl::ConsumePrefix(&word, "=")) return std::nullopt;
  return word;
}

absl::Status Arity(const std::vector<absl::string_view>& words, size_t n, absl::string_view usage) {
  if (words.size() != n) return absl::InvalidArgumentError(absl::StrCat("usage: ", usage));
  return absl::OkStatus();
}

// "<a>" or "<a>-<b>" event ranges for the VM's event filter.
absl::Status AddFilterRange(partition::EventFilter& filter, absl::string_view spec,
                            partition::EventFilter::Action action) {
  std::vector<absl::string_view> ends = absl::StrSplit(spec, '-');
  if (ends.empty() || ends.size() > 2) return absl::InvalidArgumentError(absl::StrCat("bad event range '", spec, "'"));
  absl::StatusOr<uint64_t> lo = ParseNumber(ends[0], "event");
  if (!lo.ok()) return lo.status();
  uint64_t hi = *lo;
  if (ends.size() == 2) {
    absl::StatusOr<uint64_t> h = ParseNumber(ends[1], "event");
    if (!h.ok()) return h.status();
    hi = *h;
  }
  if (hi < *lo || hi > 0xFFFF) return absl::InvalidArgumentError(absl::StrCat("bad event range '", spec, "'"));
  filter.AddRange(static_cast<uint16_t>(*lo), static_cast<uint32_t>(hi - *lo + 1), action);
  return absl::OkStatus();
}

}  // namespace

TraceInterpreter::TraceInterpreter(Options options, std::ostream& out)
    : options_(options), out_(out) {}

uint64_t TraceInterpreter::invariant_violations() const {
  return host_ ? host_->checker().total() : 0;
}

absl::Status TraceInterpreter::ExecuteAll(absl::string_view text) {
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::Status s = Execute(line, ++line_number); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status TraceInterpreter::Execute(absl::string_view line, int line_number) {
  if (size_t hash = line.find('#'); hash != absl::string_view::npos) line = line.substr(0, hash);
  std::vector<absl::string_view> words = absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
  if (words.empty()) return absl::OkStatus();
  absl::Status s = Dispatch(words);
  if (!s.ok()) {
    return absl::Status(s.code(), absl::StrCat("line ", line_number, ": ", s.message()));
  }
  if (auto_isb_ && host_) {
    host_->RawHardware(cpu_).ContextSynchronize();
    const partition::VcpuPmu* v = host_->pcpu(cpu_).loaded;
    if (v != nullptr && v->in_guest) (void)host_->GuestContextSynchronize(cpu_);
  }
  ReportNewViolations();
  return absl::OkStatus();
}

void TraceInterpreter::ReportNewViolations() {
  if (!host_ || !options_.check_invariants) return;
  const auto& first = host_->checker().first();
  for (; violations_reported_ < first.size(); ++violations_reported_) {
    out_ << "invariant " << first[violations_reported_].invariant
         << " violated: " << first[violations_reported_].message << "\n";
  }
}

absl::Status TraceInterpreter::NeedHost() const {
  if (!host_) return absl::FailedPreconditionError("no PMU yet: start the trace with 'pmu N=<n>'");
  return absl::OkStatus();
}

void TraceInterpreter::PrintAccess(absl::string_view reg, const pmu::AccessResult& r) {
  switch (r.outcome) {
    case AccessOutcome::kOk: out_ << absl::StrFormat("%s = 0x%016x\n", reg, r.value); break;
    case AccessOutcome::kUndefined: out_ << reg << " = UNDEFINED\n"; break;
    case AccessOutcome::kTrapToEl2: out_ << reg << " = TRAPPED_TO_EL2\n"; break;
    case AccessOutcome::kUnpredictable: out_ << reg << " = UNPREDICTABLE: " << r.why << "\n"; break;
  }
}

absl::Status TraceInterpreter::Dispatch(const std::vector<absl::string_view>& w) {
  const absl::string_view cmd = w[0];
  if (cmd == "pmu") return Reinitialise(w);
  if (cmd == "el") {
    if (absl::Status s = Arity(w, 2, "el <0|1|2>"); !s.ok()) return s;
    if (w[1] == "0") el_ = ExceptionLevel::kEl0;
    else if (w[1] == "1") el_ = ExceptionLevel::kEl1;
    else if (w[1] == "2") el_ = ExceptionLevel::kEl2;
    else return absl::InvalidArgumentError(absl::StrCat("exception level '", w[1], "' is not 0, 1 or 2"));
    return absl::OkStatus();
  }
  if (cmd == "autoisb") {
    if (w.size() != 2 || (w[1] != "on" && w[1] != "off")) return absl::InvalidArgumentError("usage: autoisb <on|off>");
    auto_isb_ = w[1] == "on";
    return absl::OkStatus();
  }
  if (absl::Status s = NeedHost(); !s.ok()) return s;
  if (cmd == "read") return RawAccess(w, /*is_write=*/false);
  if (cmd == "write") return RawAccess(w, /*is_write=*/true);
  if (cmd == "event") {
    if (absl::Status s = Arity(w, 3, "event <code> <count>"); !s.ok()) return s;
    absl::StatusOr<uint64_t> code = ParseNumber(w[1], "event code");
    if (!code.ok()) return code.status();
    absl::StatusOr<uint64_t> count = ParseNumber(w[2], "event count");
    if (!count.ok()) return count.status();
    if (*code == 0 || *code > 0xFFFF) {
      return absl::InvalidArgumentError("event code must be in [0x1,0xFFFF] (SW_INCR counts through PMSWINC_EL0)");
    }
    host_->RawHardware(cpu_).CountEvent(static_cast<uint16_t>(*code), *count, el_);
    return absl::OkStatus();
  }
  if (cmd == "irq") {
    if (absl::Status s = Arity(w, 1, "irq"); !s.ok()) return s;
    out_ << "irq = " << (host_->HostInterruptPending(cpu_) ? 1 : 0) << "\n";
    return absl::OkStatus();
  }
  if (cmd == "isb") {
    host_->RawHardware(cpu_).ContextSynchronize();
    return absl::OkStatus();
  }
  if (cmd == "cpu") {
    if (absl::Status s = Arity(w, 2, "cpu <index>"); !s.ok()) return s;
    absl::StatusOr<uint64_t> i = ParseNumber(w[1], "cpu");
    if (!i.ok()) return i.status();
    if (*i >= static_cast<uint64_t>(host_->num_pcpus())) {
      return absl::OutOfRangeError(absl::StrCat("cpu ", *i, " does not exist (", host_->num_pcpus(), " cpus)"));
    }
    cpu_ = static_cast<int>(*i);
    return absl::OkStatus();
  }
  if (cmd == "time") {
    if (absl::Status s = Arity(w, 2, "time <ns>"); !s.ok()) return s;
    absl::StatusOr<uint64_t> t = ParseNumber(w[1], "time");
    if (!t.ok()) return t.status();
    host_->SetTime(*t);
    return absl::OkStatus();
  }
  if (cmd == "vcpu") return CreateVcpu(w);
  if (cmd == "load") {
    if (absl::Status s = Arity(w, 2, "load <vcpu>"); !s.ok()) return s;
    absl::StatusOr<uint64_t> v = ParseNumber(w[1], "vcpu");
    if (!v.ok()) return v.status();
    return host_->Load(static_cast<int>(*v), cpu_);
  }
  if (cmd == "enter") return host_->EnterGuest(cpu_);
  if (cmd == "exit") return host_->ExitGuest(cpu_);
  if (cmd == "put") return host_->Put(cpu_);
  if (cmd == "hostirq") return host_->HandleHostInterrupt(cpu_);
  if (cmd == "guest") return Guest(w);
  if (cmd == "perf") {
    if (w.size() < 3 || w.size() > 4) return absl::InvalidArgumentError("usage: perf <name> <event> [period]");
    absl::StatusOr<uint64_t> event = ParseNumber(w[2], "event");
    if (!event.ok()) return event.status();
    if (*event > 0xFFFF) return absl::InvalidArgumentError(absl::StrCat("event ", *event, " is outside [0,0xFFFF]"));
    uint64_t period = 0;
    if (w.size() == 4) {
      absl::StatusOr<uint64_t> p = ParseNumber(w[3], "period");
      if (!p.ok()) return p.status();
      period = *p;
    }
    absl::StatusOr<int> id = host_->AddHostEvent(cpu_, std::string(w[1]), static_cast<uint16_t>(*event), period);
    return id.status();
  }
  if (cmd == "show") return Show(w);
  if (cmd == "check") {
    host_->CheckInvariants();
    out_ << "invariants: " << host_->checker().Summary() << "\n";
    return absl::OkStatus();
  }
  if (cmd == "finish") {
    host_->FinishAccounting();
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown command '", cmd, "'"));
}

absl::Status TraceInterpreter::Reinitialise(const std::vector<absl::string_view>& w) {
  pmu::PmuFeatures f;
  f.num_counters = -1;
  int cpus = 1;
  HostReservation reservation = HostReservation::kStatic;
  int guest_counters = -1;
  bool perf_defaults = false;
  for (size_t i = 1; i < w.size(); ++i) {
    if (auto n = Option(w[i], "N")) {
      absl::StatusOr<uint64_t> v = ParseNumber(*n, "N");
      if (!v.ok()) return v.status();
      if (*v > 31) return absl::InvalidArgumentError(absl::StrCat("N=", *v, " is outside [0,31]"));
      f.num_counters = static_cast<int>(*v);
    } else if (w[i] == "p5") {
      f.p5 = true;
    } else if (w[i] == "hpmn0") {
      f.hpmn0 = true;
    } else if (w[i] == "fgt") {
      f.fgt = true;
    } else if (w[i] == "perf") {
      perf_defaults = true;
    } else if (auto c = Option(w[i], "cpus")) {
      absl::StatusOr<uint64_t> v = ParseNumber(*c, "cpus");
      if (!v.ok()) return v.status();
      if (*v == 0 || *v > 256) return absl::InvalidArgumentError("cpus must be in [1,256]");
      cpus = static_cast<int>(*v);
    } else if (auto r = Option(w[i], "reservation")) {
      if (*r == "static") reservation = HostReservation::kStatic;
      else if (*r == "dynamic") reservation = HostReservation::kDynamic;
      else return absl::InvalidArgumentError(absl::StrCat("reservation '", *r, "' is not static or dynamic"));
    } else if (auto g = Option(w[i], "guest_counters")) {
      absl::StatusOr<uint64_t> v = ParseNumber(*g, "guest_counters");
      if (!v.ok()) return v.status();
      if (*v > 31) return absl::InvalidArgumentError(absl::StrCat("guest_counters=", *v, " is outside [0,31]"));
      guest_counters = static_cast<int>(*v);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown pmu option '", w[i], "'"));
    }
  }
  if (f.num_counters < 0) return absl::InvalidArgumentError("usage: pmu N=<0..31> [p5] [hpmn0] [fgt] ...");
  if (guest_counters < 0) guest_counters = f.num_counters;
  auto host = std::make_unique<partition::PartitionedHost>(
      partition::PartitionedHostOptions{.ground_truth = true, .check_invariants = options_.check_invariants});
  for (int i = 0; i < cpus; ++i) {
    absl::StatusOr<int> id = host->AddPcpu(f, reservation, guest_counters, perf_defaults);
    if (!id.ok()) return id.status();
  }
  host_ = std::move(host);
  features_ = f;
  el_ = ExceptionLevel::kEl0;
  cpu_ = 0;
  violations_reported_ = 0;
  return absl::OkStatus();
}

absl::Status TraceInterpreter::CreateVcpu(const std::vector<absl::string_view>& w) {
  if (w.size() < 3) return absl::InvalidArgumentError("usage: vcpu <id> h=<h> [policy=reviewed|seed-v5] [trapped] [deny=<a>[-<b>]] [allow=<a>[-<b>]]");
  absl::StatusOr<uint64_t> id = ParseNumber(w[1], "vcpu id");
  if (!id.ok()) return id.status();
  if (*id != static_cast<uint64_t>(host_->num_vcpus())) {
    return absl::InvalidArgumentError(absl::StrCat("vcpu ids are given in order: the next one is ", host_->num_vcpus()));
  }
  partition::VcpuPmuConfig config;
  config.features = features_;
  config.h = -1;
  for (size_t i = 2; i < w.size(); ++i) {
    if (auto h = Option(w[i], "h")) {
      absl::StatusOr<uint64_t> v = ParseNumber(*h, "h");
      if (!v.ok()) return v.status();
      config.h = static_cast<int>(std::min<uint64_t>(*v, 64));
    } else if (auto p = Option(w[i], "policy")) {
      if (*p == "reviewed") config.policy = partition::SwitchPolicy::kReviewed;
      else if (*p == "seed-v5") config.policy = partition::SwitchPolicy::kSeedV5;
      else return absl::InvalidArgumentError(absl::StrCat("policy '", *p, "' is not reviewed or seed-v5"));
    } else if (w[i] == "trapped") {
      config.partitioned = false;
    } else if (auto d = Option(w[i], "deny")) {
      if (absl::Status s = AddFilterRange(config.filter, *d, partition::EventFilter::Action::kDeny); !s.ok()) return s;
    } else if (auto a = Option(w[i], "allow")) {
      if (absl::Status s = AddFilterRange(config.filter, *a, partition::EventFilter::Action::kAllow); !s.ok()) return s;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown vcpu option '", w[i], "'"));
    }
  }
  if (config.h < 0) return absl::InvalidArgumentError("vcpu needs h=<guest counters>");
  return host_->AddVcpu(std::move(config)).status();
}

absl::Status TraceInterpreter::RawAccess(const std::vector<absl::string_view>& w, bool is_write) {
  if (absl::Status s = Arity(w, is_write ? 3 : 2, is_write ? "write <REG> <value>" : "read <REG>"); !s.ok()) return s;
  absl::StatusOr<PmuRegRef> ref = ParseRegister(w[1]);
  if (!ref.ok()) return ref.status();
  uint64_t value = 0;
  if (is_write) {
    absl::StatusOr<uint64_t> v = ParseNumber(w[2], "value");
    if (!v.ok()) return v.status();
    value = *v;
  }
  pmu::AccessResult r;
  const partition::VcpuPmu* loaded = host_->pcpu(cpu_).loaded;
  if (el_ == ExceptionLevel::kEl2 && (loaded == nullptr || !loaded->in_guest)) {
    absl::StatusOr<pmu::AccessResult> host = host_->HostAccess(cpu_, *ref, value, is_write);
    if (!host.ok()) return host.status();
    r = *host;
  } else {
    pmu::Pmuv3& hw = host_->RawHardware(cpu_);
    r = is_write ? hw.Write(*ref, value, el_) : hw.Read(*ref, el_);
  }
  if (!is_write) {
    PrintAccess(w[1], r);
  } else if (!r.ok()) {
    out_ << "write ";
    PrintAccess(w[1], r);
  }
  return absl::OkStatus();
}

absl::Status TraceInterpreter::Guest(const std::vector<absl::string_view>& w) {
  if (w.size() < 2) return absl::InvalidArgumentError("usage: guest <read REG | write REG value | event code count | isb>");
  if (el_ == ExceptionLevel::kEl2) return absl::FailedPreconditionError("guest commands run at el 0 or el 1");
  const absl::string_view sub = w[1];
  if (sub == "isb") return host_->GuestContextSynchronize(cpu_);
  if (sub == "event") {
    if (absl::Status s = Arity(w, 4, "guest event <code> <count>"); !s.ok()) return s;
    absl::StatusOr<uint64_t> code = ParseNumber(w[2], "event code");
    if (!code.ok()) return code.status();
    absl::StatusOr<uint64_t> count = ParseNumber(w[3], "event count");
    if (!count.ok()) return count.status();
    if (*code == 0 || *code > 0xFFFF) return absl::InvalidArgumentError("event code must be in [0x1,0xFFFF]");
    return host_->CountGuestEvent(cpu_, static_cast<uint16_t>(*code), *count, el_);
  }
  const bool is_write = sub == "write";
  if (!is_write && sub != "read") return absl::InvalidArgumentError(absl::StrCat("unknown guest command '", sub, "'"));
  if (absl::Status s = Arity(w, is_write ? 4 : 3, is_write ? "guest write <REG> <value>" : "guest read <REG>"); !s.ok()) return s;
  absl::StatusOr<PmuRegRef> ref = ParseRegister(w[2]);
  if (!ref.ok()) return ref.status();
  uint64_t value = 0;
  if (is_write) {
    absl::StatusOr<uint64_t> v = ParseNumber(w[3], "value");
    if (!v.ok()) return v.status();
    value = *v;
  }
  absl::StatusOr<pmu::AccessResult> r = host_->GuestAccess(cpu_, *ref, value, is_write, el_);
  if (!r.ok()) return r.status();
  if (!is_write) {
    PrintAccess(absl::StrCat("guest ", w[2]), *r);
  } else if (!r->ok()) {
    out_ << "guest write ";
    PrintAccess(w[2], *r);
  }
  return absl::OkStatus();
}

absl::Status TraceInterpreter::Show(const std::vector<absl::string_view>& w) {
  if (w.size() != 3 || w[1] != "vcpu") return absl::InvalidArgumentError("usage: show vcpu <id>");
  absl::StatusOr<uint64_t> id = ParseNumber(w[2], "vcpu");
  if (!id.ok()) return id.status();
  if (*id >= static_cast<uint64_t>(host_->num_vcpus())) return absl::OutOfRangeError(absl::StrCat("vcpu ", *id, " does not exist"));
  const partition::VcpuPmu& v = host_->vcpu(static_cast<int>(*id));
  const pmu::Pmuv3State& s = v.saved.state();
  const std::string p = absl::StrCat("vcpu ", v.id);
  out_ << absl::StrFormat("%s: h=%d policy=%s mode=%s ownership=%s loaded_on=%d in_guest=%d virq=%d\n", p, v.config.h,
                          partition::SwitchPolicyName(v.config.policy),
                          v.mode == partition::PmuMode::kPartitioned ? "partitioned" : "trapped",
                          v.ownership == partition::PmuOwnership::kFree ? "FREE" : "GUEST_OWNED", v.loaded_on,
                          v.in_guest, v.virtual_irq_level);
  out_ << absl::StrFormat("%s PMCR_EL0 = 0x%016x\n", p, s.pmcr | (static_cast<uint64_t>(v.config.h) << pmu::pmcr::kNShift));
  out_ << absl::StrFormat("%s PMCNTENSET_EL0 = 0x%016x\n", p, s.cnten);
  out_ << absl::StrFormat("%s PMINTENSET_EL1 = 0x%016x\n", p, s.inten);
  out_ << absl::StrFormat("%s PMOVSSET_EL0 = 0x%016x\n", p, s.ovs);
  out_ << absl::StrFormat("%s PMSELR_EL0 = 0x%016x\n", p, s.pmselr);
  out_ << absl::StrFormat("%s PMUSERENR_EL0 = 0x%016x\n", p, s.pmuserenr);
  out_ << absl::StrFormat("%s PMCCNTR_EL0 = 0x%016x\n", p, s.ccntr);
  out_ << absl::StrFormat("%s PMCCFILTR_EL0 = 0x%016x\n", p, s.ccfiltr);
  for (int n = 0; n < v.config.h; ++n) {
    out_ << absl::StrFormat("%s PMEVCNTR%d_EL0 = 0x%016x\n", p, n, s.evcntr[n]);
    out_ << absl::StrFormat("%s PMEVTYPER%d_EL0 = 0x%016x\n", p, n, s.evtyper[n]);
  }
  const partition::OverflowCounts c = host_->ledger().Report(OverflowOwner::Vcpu(v.id));
  out_ << absl::StrFormat("%s overflows: delivered=%d coalesced=%d lost=%d pending=%d misattributed=%d\n", p,
                          c.delivered, c.coalesced, c.lost(), c.pending, c.misattributed);
  for (int r = 0; r < partition::kLostReasonCount; ++r) {
    if (c.lost_by_reason[r] != 0) {
      out_ << absl::StrFormat("%s lost %s=%d\n", p, partition::LostReasonName(static_cast<partition::LostReason>(r)),
                              c.lost_by_reason[r]);
    }
  }
  const partition::VcpuSwitchStats& st = v.stats;
  uint64_t traps = 0;
  for (uint64_t t : st.traps_by_register) traps += t;
  out_ << absl::StrFormat("%s switches: loads=%d puts=%d swaps=%d skipped=%d promotions=%d fallbacks=%d traps=%d\n", p,
                          st.loads, st.puts, st.swaps_done, st.swaps_skipped, st.promotions, st.trapped_fallbacks, traps);
  return absl::OkStatus();
}

}  // namespace fleetpmu::tools
