#include "hypervisor-shim/sim/guest_workload.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"

namespace fleetpmu::sim {
namespace {

using google::protobuf::util::TimeUtil;
using pmu::ExceptionLevel;
using pmu::PmuReg;
using pmu::PmuRegRef;
constexpr ExceptionLevel kEl1 = ExceptionLevel::kEl1;

uint64_t Nanos(const google::protobuf::Duration& d) {
  const int64_t ns = TimeUtil::DurationToNanoseconds(d);
  return ns > 0 ? static_cast<uint64_t>(ns) : 0;
}

PmuRegRef CounterRegister(int counter) {
  return counter == pmu::kCycleCounterBit ? PmuRegRef{PmuReg::kPmccntr}
                                          : PmuRegRef{PmuReg::kPmevcntr, static_cast<uint8_t>(counter)};
}

absl::Status Write(partition::PartitionedHost& host, int pcpu, PmuRegRef ref, uint64_t value) {
  absl::StatusOr<pmu::AccessResult> r = host.GuestAccess(pcpu, ref, value, /*is_write=*/true, kEl1);
  return r.status();
}

}  // namespace

WorkloadPlan PlanWorkload(const v1::Workload& workload, int h, bool p5,
                          const std::vector<uint16_t>& host_events) {
  WorkloadPlan plan;
  plan.kind = workload.kind() == v1::Workload::KIND_UNSPECIFIED ? v1::Workload::COUNTING : workload.kind();
  plan.rate_hz = workload.event_rate_hz();
  plan.handler_latency_ns = Nanos(workload.handler_latency());
  plan.run_between_halts_ns = workload.has_run_between_halts() ? Nanos(workload.run_between_halts()) : 0;
  plan.halt_ns = Nanos(workload.halt_duration());
  plan.long_counters = p5;
  if (plan.kind != v1::Workload::IDLE) {
    int next = 0;
    for (uint32_t e : workload.events()) {
      ProgrammedCounter c;
      c.event = static_cast<uint16_t>(e);
      if (c.event == pmu::kEventCpuCycles && (plan.counter_mask & pmu::kCycleCounterMask) == 0) {
        c.counter = pmu::kCycleCounterBit;
      } else if (next < h) {
        c.counter = next++;
      } else {
        continue;
      }
      // PMCCNTR runs with PMCR.LC and event counters with PMCR.LP where p5 offers it.
      const bool wide = c.counter == pmu::kCycleCounterBit || p5;
      const uint64_t full = wide ? 0 : (1ull << 32);  // 0 stands for 2^64
      const uint64_t period = plan.kind == v1::Workload::SAMPLING ? workload.sample_period() : full;
      c.period = period == 0 ? ~0ull : period;
      c.preset = wide ? (0 - c.period) : ((1ull << 32) - (c.period & 0xFFFFFFFFull)) & 0xFFFFFFFFull;
      if (plan.kind == v1::Workload::COUNTING) c.preset = 0;
      plan.counters.push_back(c);
      plan.counter_mask |= 1u << c.counter;
      plan.generated.push_back(c.event);
    }
  }
  for (uint16_t e : host_events) {
    if (std::find(plan.generated.begin(), plan.generated.end(), e) == plan.generated.end()) {
      plan.generated.push_back(e);
    }
  }
  return plan;
}

absl::StatusOr<uint32_t> ProbeCounterCount(partition::PartitionedHost& host, int pcpu) {
  absl::StatusOr<pmu::AccessResult> r = host.GuestAccess(pcpu, {PmuReg::kPmcr}, 0, /*is_write=*/false, kEl1);
  if (!r.ok()) return r.status();
  if (!r->ok()) return absl::InternalError(absl::StrCat("guest read of PMCR_EL0 failed: ", r->why ? r->why : "?"));
  return static_cast<uint32_t>((r->value & pmu::pmcr::kNMask) >> pmu::pmcr::kNShift);
}

absl::Status ProgramCounters(partition::PartitionedHost& host, int pcpu, const WorkloadPlan& plan) {
  if (plan.kind == v1::Workload::IDLE) return absl::OkStatus();
  for (const ProgrammedCounter& c : plan.counters) {
    if (c.counter == pmu::kCycleCounterBit) {
      if (absl::Status s = Write(host, pcpu, {PmuReg::kPmccfiltr}, 0); !s.ok()) return s;
    } else {
      if (absl::Status s = Write(host, pcpu, {PmuReg::kPmevtyper, static_cast<uint8_t>(c.counter)}, c.event); !s.ok()) return s;
    }
    if (absl::Status s = Write(host, pcpu, CounterRegister(c.counter), c.preset); !s.ok()) return s;
  }
  if (absl::Status s = Write(host, pcpu, {PmuReg::kPmovsclr}, plan.counter_mask); !s.ok()) return s;
  if (absl::Status s = Write(host, pcpu, {PmuReg::kPmintenset}, plan.counter_mask); !s.ok()) return s;
  if (absl::Status s = Write(host, pcpu, {PmuReg::kPmcntenset}, plan.counter_mask); !s.ok()) return s;
  const uint64_t pmcr = pmu::pmcr::kE | pmu::pmcr::kLc | (plan.long_counters ? pmu::pmcr::kLp : 0);
  return Write(host, pcpu, {PmuReg::kPmcr}, pmcr);
}

absl::StatusOr<uint32_t> RunOverflowHandler(partition::PartitionedHost& host, int pcpu, const WorkloadPlan& plan) {
  absl::StatusOr<pmu::AccessResult> flags = host.GuestAccess(pcpu, {PmuReg::kPmovsset}, 0, false, kEl1);
  if (!flags.ok()) return flags.status();
  const uint32_t seen = static_cast<uint32_t>(flags->value);
  if (seen == 0) return 0u;
  for (const ProgrammedCounter& c : plan.counters) {
    if ((seen & (1u << c.counter)) == 0 || plan.kind != v1::Workload::SAMPLING) continue;
    // Re-arm relative to how far the counter ran past the wrap, as perf's period logic does.
    absl::StatusOr<pmu::AccessResult> now = host.GuestAccess(pcpu, CounterRegister(c.counter), 0, false, kEl1);
    if (!now.ok()) return now.status();
    const bool wide = c.counter == pmu::kCycleCounterBit || plan.long_counters;
    const uint64_t past = wide ? now->value : (now->value & 0xFFFFFFFFull);
    if (absl::Status s = Write(host, pcpu, CounterRegister(c.counter), c.preset + past); !s.ok()) return s;
  }
  if (absl::Status s = Write(host, pcpu, {PmuReg::kPmovsclr}, seen); !s.ok()) return s;
  return seen;
}

}  // namespace fleetpmu::sim
