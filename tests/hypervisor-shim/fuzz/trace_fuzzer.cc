// trace_fuzzer: libFuzzer target for the fleetpmu-pmu trace interpreter, with the PMU.md section 4
// invariant checker as the oracle.
//
// The input bytes are not a trace: they are decoded into one. A small host (random N, PMUv3p5,
// HPMN0, FGT, 1 or 2 pCPUs, static or dynamic reservation, host perf events) and 1 to 3 vCPUs with
// policy `reviewed` only are configured, then a random but legal interleaving of commands runs
// through fleetpmu::tools::TraceInterpreter with invariant checking on. The reviewed switch must
// keep every invariant, so any violation aborts the run after printing the whole trace (replay it
// with `fleetpmu-pmu --check-invariants TRACE`). With FLEETPMU_TRACE_FUZZER_PRINT set in the
// environment every decoded trace is printed to standard error.
//
// Only commands that are legitimate host or guest behaviour are generated, because anything that
// bypasses the hypervisor breaks invariants on purpose:
//   - guest read/write/event/isb, load, enter, exit, put, hostirq (hypervisor-mediated);
//   - host perf events (`perf`, at start-up), host code at EL2 outside guest context (`event` at
//     el 2, and writes of the host's own PMUSERENR/PMSELR, which invariant 12 is about);
//   - raw `read`s at any level, `show`, `check`, `time`, `autoisb`.
// Never raw writes at EL0/EL1, never `write MDCR_EL2` (or any other control register) at EL2,
// never guest PMCR.D (the /64 prescaler is not architectural state and is not context-switched,
// so the ideal vPMU would legitimately differ). The host always runs with Linux perf's PMU set-up
// (`perf`): with PMCR.E = 0 in host context a guest overflow raised just before exit cannot
// raise the physical line, so the virtual line stays low until put harvests the flag, and
// invariant 16 reports that difference from the ideal vPMU for the time in between.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "hypervisor-shim/partition/partitioned_host.h"
#include "hypervisor-shim/pmu/pmu_registers.h"
#include "hypervisor-shim/tools/trace_interpreter.h"

namespace {

using fleetpmu::tools::TraceInterpreter;

constexpr int kMaxSteps = 400;

// Guest-visible registers, with the indexed ones weighted up (they are where the partition is).
constexpr const char* kGuestRegisters[] = {
    "PMCR_EL0",       "PMCNTENSET_EL0", "PMCNTENCLR_EL0", "PMINTENSET_EL1", "PMINTENCLR_EL1",
    "PMOVSSET_EL0",   "PMOVSCLR_EL0",   "PMSELR_EL0",     "PMSWINC_EL0",    "PMXEVCNTR_EL0",
    "PMXEVTYPER_EL0", "PMCCNTR_EL0",    "PMCCFILTR_EL0",  "PMUSERENR_EL0",  "MDCR_EL2",
    "PMEVCNTR",       "PMEVTYPER",      "PMEVCNTR",       "PMEVTYPER",      "PMCNTENSET_EL0",
};
constexpr uint16_t kEvents[] = {0x08, 0x11, 0x03, 0x10, 0x1E, 0x08, 0x11, 0x16};

class TraceBuilder {
 public:
  explicit TraceBuilder(const uint8_t* data, size_t size)
      : in_(data, size), interpreter_({.check_invariants = true}, out_) {}

  void Run() {
    Configure();
    for (int step = 0; step < kMaxSteps && in_.remaining_bytes() > 0; ++step) Step();
    WindDown();
    Emit("check");
    if (interpreter_.invariant_violations() != 0) Fail();
    // FLEETPMU_TRACE_FUZZER_PRINT=1 prints every decoded trace, e.g. to turn a corpus file into
    // a trace: FLEETPMU_TRACE_FUZZER_PRINT=1 trace_fuzzer FILE
    static const bool print = std::getenv("FLEETPMU_TRACE_FUZZER_PRINT") != nullptr;
    if (print) std::fprintf(stderr, "%s", trace_.c_str());
  }

 private:
  // Executes one line; a line the interpreter refuses is dropped so that the recorded trace
  // replays exactly (refused lines change nothing).
  bool Emit(const std::string& line) {
    absl::Status s = interpreter_.Execute(line, lines_ + 1);
    if (!s.ok()) return false;
    ++lines_;
    trace_ += line;
    trace_ += '\n';
    return true;
  }

  const fleetpmu::partition::PartitionedHost& host() const { return *interpreter_.host(); }

  uint64_t InterestingValue() {
    switch (in_.ConsumeIntegralInRange(0, 7)) {
      case 0: case 1: case 2: return 0xFFFFFFFFull - in_.ConsumeIntegralInRange<uint64_t>(0, 63);
      case 3: return ~0ull - in_.ConsumeIntegralInRange<uint64_t>(0, 63);
      case 4: return 0;
      case 5: return in_.ConsumeIntegral<uint64_t>();
      default: return in_.ConsumeIntegralInRange<uint64_t>(0, 100000);
    }
  }

  uint32_t FilterBits() {
    static constexpr uint32_t kBits[] = {fleetpmu::pmu::evtyper::kP, fleetpmu::pmu::evtyper::kU,
                                         fleetpmu::pmu::evtyper::kNsk, fleetpmu::pmu::evtyper::kNsu,
                                         fleetpmu::pmu::evtyper::kNsh, fleetpmu::pmu::evtyper::kM};
    uint32_t bits = 0;
    for (uint32_t b : kBits) {
      if (in_.ConsumeIntegralInRange(0, 4) == 0) bits |= b;
    }
    return bits;
  }

  void Configure() {
    static constexpr int kSizes[] = {0, 1, 2, 3, 4, 6, 6, 8, 10};
    n_ = kSizes[in_.ConsumeIntegralInRange<size_t>(0, std::size(kSizes) - 1)];
    const bool p5 = in_.ConsumeBool();
    const bool hpmn0 = in_.ConsumeBool();
    const bool fgt = in_.ConsumeBool();
    cpus_ = in_.ConsumeIntegralInRange(1, 2);
    const bool dynamic = in_.ConsumeBool();
    const int guest_counters = in_.ConsumeIntegralInRange(0, n_);
    std::string pmu = absl::StrCat("pmu N=", n_, p5 ? " p5" : "", hpmn0 ? " hpmn0" : "", fgt ? " fgt" : "",
                                   " perf cpus=", cpus_, dynamic ? " reservation=dynamic" : " reservation=static");
    if (!dynamic) absl::StrAppend(&pmu, " guest_counters=", guest_counters);
    if (!Emit(pmu)) std::abort();  // the generator's own mistake

    // Host perf events are opened before any vCPU runs.
    for (int c = 0; c < cpus_; ++c) {
      Emit(absl::StrCat("cpu ", c));
      const int events = in_.ConsumeIntegralInRange(0, 2);
      for (int e = 0; e < events; ++e) {
        static constexpr uint64_t kPeriods[] = {0, 16, 100, 4000, 0x80000000ull};
        const uint16_t event = kEvents[in_.ConsumeIntegralInRange<size_t>(0, 2)];
        const uint64_t period = kPeriods[in_.ConsumeIntegralInRange<size_t>(0, std::size(kPeriods) - 1)];
        Emit(absl::StrFormat("perf host%d.%d 0x%x %d", c, e, event, period));
      }
    }
    Emit("cpu 0");
    cpu_ = 0;

    vcpus_ = in_.ConsumeIntegralInRange(1, 3);
    for (int v = 0; v < vcpus_; ++v) {
      std::string line = absl::StrCat("vcpu ", v, " h=", in_.ConsumeIntegralInRange(0, n_), " policy=reviewed");
      if (in_.ConsumeIntegralInRange(0, 7) == 0) absl::StrAppend(&line, " trapped");
      // Event filters that never deny SW_INCR (0x00) or CHAIN (0x1E): a denied SW_INCR or CHAIN
      // does not count in hardware (its type is programmed to exclude EL0 and EL1) but still
      // counts on the ideal vPMU, which applies the filter to guest events only, not to PMSWINC
      // writes or to the overflows of an even counter (reported: the model has to decide
      // whether the filter covers the events the PMU generates itself).
      if (in_.ConsumeIntegralInRange(0, 3) == 0) absl::StrAppend(&line, " deny=0x10");
      if (in_.ConsumeIntegralInRange(0, 7) == 0) absl::StrAppend(&line, " allow=0x0-0x1e");
      if (!Emit(line)) std::abort();
    }
  }

  void SetEl(int el) {
    if (el != el_) {
      Emit(absl::StrCat("el ", el));
      el_ = el;
    }
  }

  void Step() {
    if (cpus_ > 1 && in_.ConsumeIntegralInRange(0, 3) == 0) {
      const int c = in_.ConsumeIntegralInRange(0, cpus_ - 1);
      if (c != cpu_ && Emit(absl::StrCat("cpu ", c))) cpu_ = c;
    }
    const auto* loaded = host().pcpu(cpu_).loaded;
    const bool in_guest = loaded != nullptr && loaded->in_guest;

    // Things that fit any state.
    switch (in_.ConsumeIntegralInRange(0, 31)) {
      case 0: RawRead(); return;
      case 1:
        if (host().HostInterruptPending(cpu_) || in_.ConsumeIntegralInRange(0, 3) == 0) Emit("hostirq");
        return;
      case 2: Emit(absl::StrCat("time ", now_ns_ += in_.ConsumeIntegralInRange(1, 20000))); return;
      case 3: Emit(in_.ConsumeBool() ? "autoisb off" : "autoisb on"); return;
      case 4: Emit(absl::StrCat("show vcpu ", in_.ConsumeIntegralInRange(0, vcpus_ - 1))); return;
      case 5: Emit("check"); return;
      default: break;
    }
    if (host().HostInterruptPending(cpu_) && in_.ConsumeIntegralInRange(0, 2) == 0) {
      Emit("hostirq");
      return;
    }
    if (loaded == nullptr) {
      switch (in_.ConsumeIntegralInRange(0, 5)) {
        case 0: HostEvent(); return;
        case 1: HostUserWrite(); return;
        default: Load(); return;
      }
    }
    if (!in_guest) {
      switch (in_.ConsumeIntegralInRange(0, 9)) {
        case 0: HostEvent(); return;
        case 1: HostUserWrite(); return;
        case 2: case 3: Emit("put"); return;
        default: Emit("enter"); return;
      }
    }
    switch (in_.ConsumeIntegralInRange(0, 19)) {
      case 0: case 1: Emit("exit"); return;
      case 2: SetEl(GuestEl()); Emit("guest isb"); return;
      case 3: case 4: case 5: case 6: GuestEvent(); return;
      case 7: GuestHandler(); return;
      case 8: case 9: case 10: GuestAccess(/*is_write=*/false); return;
      default: GuestAccess(/*is_write=*/true); return;
    }
  }

  void Load() {
    std::vector<int> free;
    for (int v = 0; v < vcpus_; ++v) {
      if (host().vcpu(v).loaded_on < 0) free.push_back(v);
    }
    if (free.empty()) return;
    Emit(absl::StrCat("load ", free[in_.ConsumeIntegralInRange<size_t>(0, free.size() - 1)]));
  }

  // Host code at EL2 outside guest context: CPU_CYCLES or INST_RETIRED.
  void HostEvent() {
    SetEl(2);
    Emit(absl::StrFormat("event 0x%x %d", in_.ConsumeBool() ? 0x11 : 0x08, in_.ConsumeIntegralInRange(1, 5000)));
  }

  // The host's own PMUSERENR/PMSELR (what invariant 12 protects).
  void HostUserWrite() {
    SetEl(2);
    const bool userenr = in_.ConsumeBool();
    Emit(absl::StrFormat("write %s 0x%x", userenr ? "PMUSERENR_EL0" : "PMSELR_EL0",
                         in_.ConsumeIntegralInRange(0, userenr ? 15 : 31)));
  }

  void RawRead() {
    SetEl(in_.ConsumeIntegralInRange(0, 3) == 0 ? in_.ConsumeIntegralInRange(0, 1) : 2);
    Emit(absl::StrCat("read ", RegisterName()));
  }

  int GuestEl() { return in_.ConsumeIntegralInRange(0, 4) == 0 ? 0 : 1; }

  std::string RegisterName() {
    std::string name = kGuestRegisters[in_.ConsumeIntegralInRange<size_t>(0, std::size(kGuestRegisters) - 1)];
    if (name == "PMEVCNTR" || name == "PMEVTYPER") {
      // Sometimes one past the guest's counters, sometimes past N.
      absl::StrAppend(&name, in_.ConsumeIntegralInRange(0, n_ < 30 ? n_ : 30), "_EL0");
    }
    return name;
  }

  uint64_t GuestValue(const std::string& reg) {
    using namespace fleetpmu::pmu;
    if (reg == "PMCR_EL0") {
      // Anything but D (see the file comment); N is read-only, garbage there is ignored.
      return in_.ConsumeIntegral<uint64_t>() & ~pmcr::kD;
    }
    if (reg == "PMXEVTYPER_EL0" || reg.rfind("PMEVTYPER", 0) == 0) {
      uint16_t event = kEvents[in_.ConsumeIntegralInRange<size_t>(0, std::size(kEvents) - 1)];
      if (in_.ConsumeIntegralInRange(0, 7) == 0) event = in_.ConsumeIntegral<uint16_t>();
      if (in_.ConsumeIntegralInRange(0, 5) == 0) event = kEventSwIncr;
      return FilterBits() | event;
    }
    if (reg == "PMCCFILTR_EL0") return FilterBits();
    if (reg == "PMSELR_EL0") return in_.ConsumeIntegralInRange(0, 3) == 0 ? 31 : in_.ConsumeIntegralInRange(0, 11);
    if (reg == "PMUSERENR_EL0") return in_.ConsumeIntegralInRange(0, 15);
    if (reg == "PMCCNTR_EL0" || reg == "PMXEVCNTR_EL0" || reg.rfind("PMEVCNTR", 0) == 0) return InterestingValue();
    switch (in_.ConsumeIntegralInRange(0, 3)) {
      case 0: return 0xFFFFFFFFull;
      case 1: return in_.ConsumeIntegral<uint64_t>();
      default: return in_.ConsumeIntegral<uint32_t>() & 0x800003FFu;
    }
  }

  void GuestAccess(bool is_write) {
    SetEl(GuestEl());
    const std::string reg = RegisterName();
    if (!is_write) {
      Emit(absl::StrCat("guest read ", reg));
      return;
    }
    Emit(absl::StrFormat("guest write %s 0x%x", reg, GuestValue(reg)));
    // Guests synchronise after selecting a counter, as Linux does. Without it (autoisb off) a
    // PMXEV* access is CONSTRAINED UNPREDICTABLE, and the ideal vPMU, which is not synchronised by
    // the guest's exits and entries, would disagree with a legitimate choice of the hardware.
    if (reg == "PMSELR_EL0") Emit("guest isb");
  }

  void GuestEvent() {
    SetEl(GuestEl());
    uint16_t event = kEvents[in_.ConsumeIntegralInRange<size_t>(0, std::size(kEvents) - 1)];
    if (in_.ConsumeIntegralInRange(0, 9) == 0) event = in_.ConsumeIntegralInRange<uint16_t>(1, 0xFFFF);
    uint64_t count;
    switch (in_.ConsumeIntegralInRange(0, 7)) {
      case 0: count = (1ull << 32) + in_.ConsumeIntegralInRange<uint64_t>(0, 1000); break;
      case 1: count = in_.ConsumeIntegralInRange<uint64_t>(1, 1ull << 34); break;
      default: count = in_.ConsumeIntegralInRange<uint64_t>(1, 300); break;
    }
    Emit(absl::StrFormat("guest event 0x%x %d", event, count));
  }

  // The guest's overflow handler: read PMOVSSET at EL1, clear what it saw.
  void GuestHandler() {
    SetEl(1);
    const size_t before = out_.str().size();
    if (!Emit("guest read PMOVSSET_EL0")) return;
    // The read printed "guest PMOVSSET_EL0 = 0x<16 hex digits>" (or UNDEFINED etc.).
    const std::string printed = out_.str().substr(before);
    const size_t hex = printed.find("= 0x");
    if (hex == std::string::npos) return;
    const uint64_t seen = std::strtoull(printed.c_str() + hex + 4, nullptr, 16);
    if (seen != 0) Emit(absl::StrFormat("guest write PMOVSCLR_EL0 0x%x", seen));
  }

  // Ends every run in host context with nothing loaded, then settles the accounting.
  void WindDown() {
    for (int c = 0; c < cpus_; ++c) {
      if (host().pcpu(c).loaded == nullptr) continue;
      Emit(absl::StrCat("cpu ", c));
      cpu_ = c;
      if (host().pcpu(c).loaded->in_guest) Emit("exit");
      if (host().HostInterruptPending(c)) Emit("hostirq");
      Emit("put");
    }
    Emit("finish");
  }

  [[noreturn]] void Fail() {
    std::fprintf(stderr,
                 "trace_fuzzer: %llu invariant violation(s) under policy reviewed.\n"
                 "---- trace (replay: fleetpmu-pmu --check-invariants TRACE) ----\n%s"
                 "---- output ----\n%s----\n",
                 static_cast<unsigned long long>(interpreter_.invariant_violations()), trace_.c_str(),
                 out_.str().c_str());
    std::abort();
  }

  FuzzedDataProvider in_;
  std::ostringstream out_;
  TraceInterpreter interpreter_;
  std::string trace_;
  int lines_ = 0;
  int n_ = 0;
  int cpus_ = 1;
  int vcpus_ = 1;
  int cpu_ = 0;
  int el_ = 0;
  uint64_t now_ns_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  TraceBuilder(data, size).Run();
  return 0;
}
