#include "server/ingest/batch_validator.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace fleetpmu::server {

using fleetpmu::v1::Batch;
using fleetpmu::v1::EventFilter;
using fleetpmu::v1::HostInfo;
using fleetpmu::v1::Interval;
using fleetpmu::v1::LatencyHistogram;
using fleetpmu::v1::LostReasonCount;
using fleetpmu::v1::OverflowCounts;
using fleetpmu::v1::TelemetryReport;
using fleetpmu::v1::VmInfo;

namespace {

constexpr uint32_t kCycleCounter = 31;
constexpr uint32_t kCycleCounterBit = 1u << kCycleCounter;
constexpr uint32_t kMaxCounters = 31;
constexpr uint32_t kMaxEventCode = 0xFFFF;
constexpr int kMaxPcpus = 4096;
constexpr int kMaxVmsPerReport = 1024;
constexpr uint32_t kMaxVcpus = 512;
constexpr int kMaxResidencies = 256;
constexpr int kMaxTrapKeys = 64;
constexpr int kMaxFilterRanges = 256;
constexpr int kMaxHistogramBounds = 64;
constexpr int kMaxLabels = 32;
constexpr size_t kMaxLabelKeyBytes = 63;
constexpr size_t kMaxLabelValueBytes = 255;
constexpr int kMaxKvmCapabilities = 64;
constexpr size_t kMaxMapKeyBytes = 128;

struct Problem {
  RejectReason reason;
  std::string message;
};
using Check = std::optional<Problem>;

template <typename... Args>
Check Fail(RejectReason reason, absl::string_view path, const Args&... what) {
  return Problem{reason, absl::StrCat(path, ": ", what...)};
}

std::string Quote(absl::string_view text) {
  // Identities end up in logs and errors: show at most 64 bytes, escaped.
  const bool cut = text.size() > 64;
  return absl::StrCat("\"", absl::CHexEscape(text.substr(0, 64)), cut ? "...\"" : "\"");
}

uint32_t GuestMask(uint32_t h) {
  return (h == 0 ? 0u : static_cast<uint32_t>((uint64_t{1} << h) - 1)) | kCycleCounterBit;
}

// Bits allowed on a pCPU with N counters: [0,N) and the cycle counter.
uint32_t PcpuMask(uint32_t n) { return GuestMask(std::min(n, kMaxCounters)); }

Check CheckIdentity(absl::string_view id, absl::string_view path) {
  if (!IsValidIdentity(id)) {
    return Fail(RejectReason::kBadIdentity, path, Quote(id),
                " is not 1..128 bytes of [A-Za-z0-9._-]");
  }
  return std::nullopt;
}

// The walk over one batch: limits, clock, and what is known about the host (a copy, committed
// to the stream's context only when the whole batch is valid).
class BatchWalk {
 public:
  BatchWalk(const ValidationLimits& limits, int64_t now_unix_ns, HostContext context)
      : limits_(limits), now_(now_unix_ns), context_(std::move(context)) {}

  HostContext& context() { return context_; }

  Check Timestamp(int64_t t, absl::string_view path) const {
    if (t < now_ - limits_.max_age_ns) {
      return Fail(RejectReason::kBadTimestamp, path, t, " is older than the retention (",
                  limits_.max_age_ns / 1000000000, " s before the server's clock ", now_, ")");
    }
    if (t > now_ + limits_.max_future_skew_ns) {
      return Fail(RejectReason::kBadTimestamp, path, t, " is more than ",
                  limits_.max_future_skew_ns / 1000000000, " s ahead of the server's clock ", now_);
    }
    return std::nullopt;
  }

  // A record interval: set, non-empty, inside `outer` when given.
  Check RecordInterval(bool present, const Interval& interval, const Interval* outer,
                       absl::string_view path) const {
    if (!present) return Fail(RejectReason::kBadInterval, path, "missing (required)");
    if (interval.end_unix_ns() <= interval.start_unix_ns()) {
      return Fail(RejectReason::kBadInterval, path, "end ", interval.end_unix_ns(),
                  " is not after start ", interval.start_unix_ns());
    }
    if (outer != nullptr && (interval.start_unix_ns() < outer->start_unix_ns() ||
                             interval.end_unix_ns() > outer->end_unix_ns())) {
      return Fail(RejectReason::kBadInterval, path, "[", interval.start_unix_ns(), ", ",
                  interval.end_unix_ns(), ") is not inside the report interval [",
                  outer->start_unix_ns(), ", ", outer->end_unix_ns(), ")");
    }
    if (auto problem = Timestamp(interval.start_unix_ns(), absl::StrCat(path, ".start_unix_ns"))) {
      return problem;
    }
    return Timestamp(interval.end_unix_ns(), absl::StrCat(path, ".end_unix_ns"));
  }

  // The VM a guest record names: known, same tenant, vCPU in range.
  Check GuestOwner(absl::string_view vm_id, absl::string_view tenant_id, uint32_t vcpu,
                   absl::string_view path, const VmInfo** vm_out) const {
    auto it = context_.vms.find(std::string(vm_id));
    if (it == context_.vms.end()) {
      return Fail(RejectReason::kUnknownVm, path, "vm_id ", Quote(vm_id),
                  " is not in this report's vms nor reported before by host ",
                  Quote(context_.host_id));
    }
    const VmInfo& vm = it->second;
    if (tenant_id != vm.tenant_id()) {
      return Fail(RejectReason::kTenantMismatch, path, "tenant_id ", Quote(tenant_id),
                  " differs from VM ", Quote(vm_id), "'s tenant ", Quote(vm.tenant_id()));
    }
    if (vcpu >= vm.vcpus()) {
      return Fail(RejectReason::kVcpuOutOfRange, path, "vcpu ", vcpu, " >= vcpus=", vm.vcpus(),
                  " of VM ", Quote(vm_id));
    }
    *vm_out = &vm;
    return std::nullopt;
  }

  Check Pcpu(uint32_t pcpu, absl::string_view path, const fleetpmu::v1::PcpuPmu** pmu) const {
    auto it = context_.pcpus.find(pcpu);
    if (it == context_.pcpus.end()) {
      return Fail(RejectReason::kUnknownPcpu, path, "pcpu ", pcpu, " is not a pCPU of host ",
                  Quote(context_.host_id), " (", context_.pcpus.size(), " pCPUs in its HostInfo)");
    }
    *pmu = &it->second;
    return std::nullopt;
  }

  Check Vm(const VmInfo& vm, absl::string_view path) const;
  Check Histogram(const LatencyHistogram& histogram, absl::string_view path) const;
  Check Overflows(const OverflowCounts& counts,
                  const google::protobuf::RepeatedPtrField<LostReasonCount>& lost_by_reason,
                  absl::string_view path) const;
  Check Report(const TelemetryReport& report, absl::string_view path);

 private:
  const ValidationLimits& limits_;
  const int64_t now_;
  HostContext context_;
};

Check BatchWalk::Vm(const VmInfo& vm, absl::string_view path) const {
  if (auto problem = CheckIdentity(vm.vm_id(), absl::StrCat(path, ".vm_id"))) return problem;
  if (auto problem = CheckIdentity(vm.tenant_id(), absl::StrCat(path, ".tenant_id"))) {
    return problem;
  }
  if (vm.vcpus() < 1 || vm.vcpus() > kMaxVcpus) {
    return Fail(RejectReason::kBadVm, absl::StrCat(path, ".vcpus"), vm.vcpus(), " is outside 1..",
                kMaxVcpus);
  }
  if (!fleetpmu::v1::Policy_IsValid(vm.policy()) ||
      vm.policy() == fleetpmu::v1::POLICY_UNSPECIFIED) {
    return Fail(RejectReason::kMissingEnum, absl::StrCat(path, ".policy"),
                "UNSPECIFIED or unknown (required)");
  }
  if (!fleetpmu::v1::PmuImplementation_IsValid(vm.implementation()) ||
      vm.implementation() == fleetpmu::v1::PMU_IMPLEMENTATION_UNSPECIFIED) {
    return Fail(RejectReason::kMissingEnum, absl::StrCat(path, ".implementation"),
                "UNSPECIFIED or unknown (required)");
  }
  // h <= N: at most the largest N of the host (a VM may be confined to the bigger pCPUs;
  // every pCPU where it actually held counters is checked against h in ownership samples).
  uint32_t largest_n = 0;
  bool any_hpmn0 = false;
  for (const auto& [index, pmu] : context_.pcpus) {
    largest_n = std::max(largest_n, pmu.num_counters());
    any_hpmn0 = any_hpmn0 || pmu.has_hpmn0();
  }
  const std::string h_path = absl::StrCat(path, ".guest_counters");
  if (vm.guest_counters() > kMaxCounters) {
    return Fail(RejectReason::kBadGuestCounters, h_path, vm.guest_counters(), " exceeds 31");
  }
  // What the guest saw may differ from h (that is what it is reported for), but PMCR_EL0.N is
  // a 5-bit field.
  if (vm.has_guest_visible_counters() && vm.guest_visible_counters() > kMaxCounters) {
    return Fail(RejectReason::kBadGuestCounters, absl::StrCat(path, ".guest_visible_counters"),
                vm.guest_visible_counters(), " exceeds 31 (PMCR_EL0.N is 5 bits)");
  }
  if (!context_.pcpus.empty() && vm.guest_counters() > largest_n) {
    return Fail(RejectReason::kBadGuestCounters, h_path, "h=", vm.guest_counters(),
                " exceeds N=", largest_n, " of every pCPU of host ", Quote(context_.host_id));
  }
  if (vm.guest_counters() == 0 &&
      vm.implementation() == fleetpmu::v1::PMU_IMPLEMENTATION_PARTITIONED &&
      !context_.pcpus.empty() && !any_hpmn0) {
    return Fail(RejectReason::kBadGuestCounters, h_path,
                "h=0 for a partitioned VM needs FEAT_HPMN0, which no pCPU of host ",
                Quote(context_.host_id), " has");
  }
  if (vm.has_event_filter()) {
    const EventFilter& filter = vm.event_filter();
    if (filter.ranges_size() > kMaxFilterRanges) {
      return Fail(RejectReason::kTooManyEntries, absl::StrCat(path, ".event_filter.ranges"),
                  filter.ranges_size(), " ranges, at most ", kMaxFilterRanges);
    }
    for (int i = 0; i < filter.ranges_size(); ++i) {
      const auto& range = filter.ranges(i);
      const std::string range_path = absl::StrCat(path, ".event_filter.ranges[", i, "]");
      if (range.base_event() > kMaxEventCode || range.nevents() < 1 ||
          uint64_t{range.base_event()} + range.nevents() > uint64_t{kMaxEventCode} + 1) {
        return Fail(RejectReason::kBadEventFilter, range_path, "base_event=", range.base_event(),
                    " nevents=", range.nevents(), " is not a range inside 0..0xFFFF");
      }
      if (!fleetpmu::v1::FilterAction_IsValid(range.action()) ||
          range.action() == fleetpmu::v1::FILTER_ACTION_UNSPECIFIED) {
        return Fail(RejectReason::kMissingEnum, absl::StrCat(range_path, ".action"),
                    "UNSPECIFIED or unknown (required)");
      }
    }
  }
  return std::nullopt;
}

Check BatchWalk::Histogram(const LatencyHistogram& histogram, absl::string_view path) const {
  const int bounds = histogram.bucket_upper_bounds_ns_size();
  // No samples and no layout: the histogram was not filled (e.g. a vCPU that never swapped).
  if (bounds == 0 && histogram.bucket_counts_size() == 0 && histogram.count() == 0 &&
      histogram.sum_ns() == 0) {
    return std::nullopt;
  }
  if (bounds < 1 || bounds > kMaxHistogramBounds) {
    return Fail(RejectReason::kBadHistogram, path, bounds, " bucket_upper_bounds_ns, want 1..",
                kMaxHistogramBounds);
  }
  for (int i = 1; i < bounds; ++i) {
    if (histogram.bucket_upper_bounds_ns(i) <= histogram.bucket_upper_bounds_ns(i - 1)) {
      return Fail(RejectReason::kBadHistogram, path, "bucket_upper_bounds_ns[", i,
                  "]=", histogram.bucket_upper_bounds_ns(i), " is not above [", i - 1,
                  "]=", histogram.bucket_upper_bounds_ns(i - 1));
    }
  }
  if (histogram.bucket_counts_size() != bounds + 1) {
    return Fail(RejectReason::kBadHistogram, path, histogram.bucket_counts_size(),
                " bucket_counts for ", bounds, " bounds, want ", bounds + 1,
                " (one more for +Inf)");
  }
  uint64_t sum = 0;
  for (uint64_t count : histogram.bucket_counts()) {
    if (__builtin_add_overflow(sum, count, &sum)) {
      return Fail(RejectReason::kBadHistogram, path, "bucket_counts overflow uint64");
    }
  }
  if (sum != histogram.count()) {
    return Fail(RejectReason::kBadHistogram, path, "count=", histogram.count(),
                " but bucket_counts sum to ", sum);
  }
  return std::nullopt;
}

Check BatchWalk::Overflows(
    const OverflowCounts& counts,
    const google::protobuf::RepeatedPtrField<LostReasonCount>& lost_by_reason,
    absl::string_view path) const {
  uint64_t lost = 0;
  absl::flat_hash_set<int> seen;
  for (int i = 0; i < lost_by_reason.size(); ++i) {
    const LostReasonCount& entry = lost_by_reason.Get(i);
    const std::string entry_path = absl::StrCat(path, ".lost_by_reason[", i, "]");
    if (!fleetpmu::v1::LostReason_IsValid(entry.reason()) ||
        entry.reason() == fleetpmu::v1::LOST_REASON_UNSPECIFIED) {
      return Fail(RejectReason::kMissingEnum, absl::StrCat(entry_path, ".reason"),
                  "UNSPECIFIED or unknown (required)");
    }
    if (!seen.insert(entry.reason()).second) {
      return Fail(RejectReason::kDuplicateRecord, entry_path, "reason ",
                  fleetpmu::v1::LostReason_Name(entry.reason()), " appears twice");
    }
    if (entry.count() == 0) {
      return Fail(RejectReason::kInconsistentOverflows, absl::StrCat(entry_path, ".count"),
                  "0 (entries are only for reasons with count > 0)");
    }
    if (__builtin_add_overflow(lost, entry.count(), &lost)) {
      return Fail(RejectReason::kInconsistentOverflows, path, "lost_by_reason overflows uint64");
    }
  }
  if (lost != counts.lost()) {
    return Fail(RejectReason::kInconsistentOverflows, absl::StrCat(path, ".overflows"),
                "lost=", counts.lost(), " but lost_by_reason sums to ", lost);
  }
  return std::nullopt;
}

Check BatchWalk::Report(const TelemetryReport& report, absl::string_view path) {
  if (report.host_id() != context_.host_id) {
    return Fail(RejectReason::kHostMismatch, absl::StrCat(path, ".host_id"),
                Quote(report.host_id()), " differs from the stream's host ",
                Quote(context_.host_id));
  }
  const Interval& interval = report.interval();
  if (auto problem = RecordInterval(report.has_interval(), interval, nullptr,
                                    absl::StrCat(path, ".interval"))) {
    return problem;
  }
  const int64_t length = interval.end_unix_ns() - interval.start_unix_ns();
  if (length > limits_.max_report_interval_ns) {
    return Fail(RejectReason::kBadInterval, absl::StrCat(path, ".interval"), "length ", length,
                " ns exceeds ", limits_.max_report_interval_ns,
                " ns (ShimConfig.report_interval is at most 1h)");
  }

  // Host facts first: the records below are checked against them.
  if (report.has_host_info()) {
    const std::string info_path = absl::StrCat(path, ".host_info");
    if (!report.host_info().host_id().empty() && report.host_info().host_id() != context_.host_id) {
      return Fail(RejectReason::kHostMismatch, absl::StrCat(info_path, ".host_id"),
                  Quote(report.host_info().host_id()), " differs from the stream's host ",
                  Quote(context_.host_id));
    }
    context_.ApplyHostInfo(report.host_info());
  }

  if (report.vms_size() > kMaxVmsPerReport) {
    return Fail(RejectReason::kTooManyEntries, absl::StrCat(path, ".vms"), report.vms_size(),
                " VMs, at most ", kMaxVmsPerReport);
  }
  absl::flat_hash_set<std::string> report_vms;
  for (int i = 0; i < report.vms_size(); ++i) {
    const VmInfo& vm = report.vms(i);
    const std::string vm_path = absl::StrCat(path, ".vms[", i, "]");
    if (auto problem = Vm(vm, vm_path)) return problem;
    if (!report_vms.insert(vm.vm_id()).second) {
      return Fail(RejectReason::kDuplicateRecord, absl::StrCat(vm_path, ".vm_id"),
                  Quote(vm.vm_id()), " appears twice in the report");
    }
    context_.vms[vm.vm_id()] = vm;
  }

  absl::flat_hash_set<std::pair<std::string, uint32_t>> vcpus_seen;
  for (int i = 0; i < report.vcpu_stats_size(); ++i) {
    const fleetpmu::v1::VcpuStats& stats = report.vcpu_stats(i);
    const std::string stats_path = absl::StrCat(path, ".vcpu_stats[", i, "]");
    if (auto problem = RecordInterval(stats.has_interval(), stats.interval(), &interval,
                                      absl::StrCat(stats_path, ".interval"))) {
      return problem;
    }
    const VmInfo* vm = nullptr;
    if (auto problem =
            GuestOwner(stats.vm_id(), stats.tenant_id(), stats.vcpu(), stats_path, &vm)) {
      return problem;
    }
    if (!vcpus_seen.insert({stats.vm_id(), stats.vcpu()}).second) {
      return Fail(RejectReason::kDuplicateRecord, stats_path, "vCPU ", stats.vcpu(), " of VM ",
                  Quote(stats.vm_id()), " appears twice in the report");
    }
    const uint64_t stats_length =
        static_cast<uint64_t>(stats.interval().end_unix_ns() - stats.interval().start_unix_ns());
    if (stats.run_time_ns() > stats_length) {
      return Fail(RejectReason::kInconsistentCounts, absl::StrCat(stats_path, ".run_time_ns"),
                  stats.run_time_ns(), " exceeds the interval's ", stats_length, " ns");
    }
    if (stats.swaps_done() + stats.swaps_skipped() > stats.loads() + stats.puts()) {
      return Fail(RejectReason::kInconsistentCounts, stats_path, "swaps_done=", stats.swaps_done(),
                  " + swaps_skipped=", stats.swaps_skipped(), " exceed loads=", stats.loads(),
                  " + puts=", stats.puts());
    }
    if (auto problem = Histogram(stats.load_latency(), absl::StrCat(stats_path, ".load_latency"))) {
      return problem;
    }
    if (auto problem = Histogram(stats.put_latency(), absl::StrCat(stats_path, ".put_latency"))) {
      return problem;
    }
    for (const auto* traps : {&stats.traps_by_register(), &stats.traps_full_exit_by_register()}) {
      const bool full_exit = traps == &stats.traps_full_exit_by_register();
      const std::string traps_path = absl::StrCat(
          stats_path, full_exit ? ".traps_full_exit_by_register" : ".traps_by_register");
      if (traps->size() > kMaxTrapKeys) {
        return Fail(RejectReason::kTooManyEntries, traps_path, traps->size(), " keys, at most ",
                    kMaxTrapKeys);
      }
      for (const auto& [name, count] : *traps) {
        if (name.empty() || name.size() > kMaxMapKeyBytes) {
          return Fail(RejectReason::kBadIdentity, traps_path, "key ", Quote(name),
                      " is not a register name of 1..128 bytes");
        }
        if (full_exit) {
          auto all = stats.traps_by_register().find(name);
          const uint64_t total = all == stats.traps_by_register().end() ? 0 : all->second;
          if (count > total) {
            return Fail(RejectReason::kInconsistentCounts,
                        absl::StrCat(traps_path, "[", Quote(name), "]"), count,
                        " full exits but traps_by_register has ", total);
          }
        }
      }
    }
    if (auto problem = Overflows(stats.overflows(), stats.lost_by_reason(), stats_path)) {
      return problem;
    }
    if (!fleetpmu::v1::OwnershipState_IsValid(stats.ownership_at_end())) {
      return Fail(RejectReason::kMissingEnum, absl::StrCat(stats_path, ".ownership_at_end"),
                  "unknown value ", stats.ownership_at_end());
    }
  }

  for (int i = 0; i < report.overflow_events_size(); ++i) {
    const fleetpmu::v1::OverflowEvent& event = report.overflow_events(i);
    const std::string event_path = absl::StrCat(path, ".overflow_events[", i, "]");
    if (event.time_unix_ns() < interval.start_unix_ns() ||
        event.time_unix_ns() >= interval.end_unix_ns()) {
      return Fail(RejectReason::kBadTimestamp, absl::StrCat(event_path, ".time_unix_ns"),
                  event.time_unix_ns(), " is outside the report interval [",
                  interval.start_unix_ns(), ", ", interval.end_unix_ns(), ")");
    }
    const fleetpmu::v1::PcpuPmu* pmu = nullptr;
    if (auto problem = Pcpu(event.pcpu(), event_path, &pmu)) return problem;
    if (event.counter() != kCycleCounter && event.counter() >= pmu->num_counters()) {
      return Fail(RejectReason::kCounterOutOfRange, absl::StrCat(event_path, ".counter"),
                  "counter ", event.counter(), " >= N=", pmu->num_counters(), " of pCPU ",
                  event.pcpu(), " (and not 31, the cycle counter)");
    }
    if (event.event_code() > kMaxEventCode) {
      return Fail(RejectReason::kOutOfRange, absl::StrCat(event_path, ".event_code"),
                  event.event_code(), " exceeds 0xFFFF");
    }
    if (event.owner_kind() == fleetpmu::v1::OWNER_KIND_GUEST) {
      const VmInfo* vm = nullptr;
      if (auto problem =
              GuestOwner(event.vm_id(), event.tenant_id(), event.vcpu(), event_path, &vm)) {
        return problem;
      }
      if (event.counter() != kCycleCounter && event.counter() >= vm->guest_counters()) {
        return Fail(RejectReason::kCounterOutOfRange, absl::StrCat(event_path, ".counter"),
                    "guest counter ", event.counter(), " >= h=", vm->guest_counters(), " of VM ",
                    Quote(vm->vm_id()));
      }
      if (!event.host_event().empty()) {
        return Fail(RejectReason::kInconsistentOverflows, absl::StrCat(event_path, ".host_event"),
                    "set for a guest owner");
      }
    } else if (event.owner_kind() == fleetpmu::v1::OWNER_KIND_HOST) {
      if (!event.vm_id().empty() || !event.tenant_id().empty()) {
        return Fail(RejectReason::kInconsistentOverflows, event_path,
                    "vm_id/tenant_id set for a host owner");
      }
    } else {
      return Fail(RejectReason::kMissingEnum, absl::StrCat(event_path, ".owner_kind"),
                  "UNSPECIFIED or unknown (required)");
    }
    const auto overflow_class = event.overflow_class();
    if (!fleetpmu::v1::OverflowClass_IsValid(overflow_class) ||
        overflow_class == fleetpmu::v1::OVERFLOW_CLASS_UNSPECIFIED) {
      return Fail(RejectReason::kMissingEnum, absl::StrCat(event_path, ".overflow_class"),
                  "UNSPECIFIED or unknown (required)");
    }
    const bool lost = overflow_class == fleetpmu::v1::OVERFLOW_CLASS_LOST;
    const bool has_reason = event.lost_reason() != fleetpmu::v1::LOST_REASON_UNSPECIFIED;
    if (lost && (!has_reason || !fleetpmu::v1::LostReason_IsValid(event.lost_reason()))) {
      return Fail(RejectReason::kMissingEnum, absl::StrCat(event_path, ".lost_reason"),
                  "UNSPECIFIED or unknown for a LOST wrap (required)");
    }
    if (!lost && has_reason) {
      return Fail(RejectReason::kInconsistentOverflows, absl::StrCat(event_path, ".lost_reason"),
                  fleetpmu::v1::LostReason_Name(event.lost_reason()), " set for a ",
                  fleetpmu::v1::OverflowClass_Name(overflow_class),
                  " wrap (only LOST has a reason)");
    }
    if (event.wrap_to_handler_ns() != 0 &&
        overflow_class != fleetpmu::v1::OVERFLOW_CLASS_DELIVERED) {
      return Fail(RejectReason::kInconsistentOverflows,
                  absl::StrCat(event_path, ".wrap_to_handler_ns"), "set for a ",
                  fleetpmu::v1::OverflowClass_Name(overflow_class),
                  " wrap (only DELIVERED has a handler)");
    }
  }

  absl::flat_hash_set<uint32_t> ownership_pcpus;
  for (int i = 0; i < report.ownership_size(); ++i) {
    const fleetpmu::v1::OwnershipSample& sample = report.ownership(i);
    const std::string sample_path = absl::StrCat(path, ".ownership[", i, "]");
    const fleetpmu::v1::PcpuPmu* pmu = nullptr;
    if (auto problem = Pcpu(sample.pcpu(), sample_path, &pmu)) return problem;
    if (!ownership_pcpus.insert(sample.pcpu()).second) {
      return Fail(RejectReason::kDuplicateRecord, sample_path, "pCPU ", sample.pcpu(),
                  " has two ownership samples in the report");
    }
    if (auto problem = RecordInterval(sample.has_interval(), sample.interval(), &interval,
                                      absl::StrCat(sample_path, ".interval"))) {
      return problem;
    }
    if (sample.residencies_size() > kMaxResidencies) {
      return Fail(RejectReason::kTooManyEntries, absl::StrCat(sample_path, ".residencies"),
                  sample.residencies_size(), " entries, at most ", kMaxResidencies);
    }
    const uint64_t sample_length =
        static_cast<uint64_t>(sample.interval().end_unix_ns() - sample.interval().start_unix_ns());
    for (int j = 0; j < sample.residencies_size(); ++j) {
      const fleetpmu::v1::OwnerResidency& residency = sample.residencies(j);
      const std::string residency_path = absl::StrCat(sample_path, ".residencies[", j, "]");
      if (residency.resident_ns() > sample_length) {
        return Fail(RejectReason::kInconsistentCounts, absl::StrCat(residency_path, ".resident_ns"),
                    residency.resident_ns(), " exceeds the sample's ", sample_length, " ns");
      }
      const uint32_t allowed = PcpuMask(pmu->num_counters());
      if ((residency.counter_mask() & ~allowed) != 0) {
        return Fail(RejectReason::kCounterOutOfRange, absl::StrCat(residency_path, ".counter_mask"),
                    absl::StrFormat("0x%08x has counters outside [0,N=%u) and 31 of pCPU %u",
                                    residency.counter_mask(), pmu->num_counters(), sample.pcpu()));
      }
      if (residency.owner_kind() == fleetpmu::v1::OWNER_KIND_GUEST) {
        const VmInfo* vm = nullptr;
        if (auto problem = GuestOwner(residency.vm_id(), residency.tenant_id(), residency.vcpu(),
                                      residency_path, &vm)) {
          return problem;
        }
        if (vm->guest_counters() > pmu->num_counters()) {
          return Fail(RejectReason::kBadGuestCounters, residency_path, "VM ", Quote(vm->vm_id()),
                      " with h=", vm->guest_counters(), " held counters on pCPU ", sample.pcpu(),
                      " with N=", pmu->num_counters());
        }
        if ((residency.counter_mask() & ~GuestMask(vm->guest_counters())) != 0) {
          return Fail(RejectReason::kCounterOutOfRange,
                      absl::StrCat(residency_path, ".counter_mask"),
                      absl::StrFormat("0x%08x has counters outside the guest range [0,h=%u) and 31",
                                      residency.counter_mask(), vm->guest_counters()));
        }
      } else if (residency.owner_kind() == fleetpmu::v1::OWNER_KIND_HOST) {
        if (!residency.vm_id().empty() || !residency.tenant_id().empty()) {
          return Fail(RejectReason::kInconsistentCounts, residency_path,
                      "vm_id/tenant_id set for the host owner");
        }
      } else {
        return Fail(RejectReason::kMissingEnum, absl::StrCat(residency_path, ".owner_kind"),
                    "UNSPECIFIED or unknown (required)");
      }
    }
  }

  absl::flat_hash_set<uint32_t> counter_pcpus;
  for (int i = 0; i < report.host_counters_size(); ++i) {
    const fleetpmu::v1::HostCounterStats& counters = report.host_counters(i);
    const std::string counters_path = absl::StrCat(path, ".host_counters[", i, "]");
    const fleetpmu::v1::PcpuPmu* pmu = nullptr;
    if (auto problem = Pcpu(counters.pcpu(), counters_path, &pmu)) return problem;
    if (!counter_pcpus.insert(counters.pcpu()).second) {
      return Fail(RejectReason::kDuplicateRecord, counters_path, "pCPU ", counters.pcpu(),
                  " has two host counter records in the report");
    }
    if (auto problem = RecordInterval(counters.has_interval(), counters.interval(), &interval,
                                      absl::StrCat(counters_path, ".interval"))) {
      return problem;
    }
    if (counters.running_ns() > counters.enabled_ns()) {
      return Fail(RejectReason::kInconsistentCounts, counters_path,
                  "running_ns=", counters.running_ns(),
                  " exceeds enabled_ns=", counters.enabled_ns());
    }
    if (auto problem = Overflows(counters.overflows(), counters.lost_by_reason(), counters_path)) {
      return problem;
    }
  }

  for (int i = 0; i < report.drops_size(); ++i) {
    const fleetpmu::v1::TelemetryDrops& drop = report.drops(i);
    const std::string drop_path = absl::StrCat(path, ".drops[", i, "]");
    if (!fleetpmu::v1::DropStage_IsValid(drop.stage()) ||
        drop.stage() == fleetpmu::v1::DROP_STAGE_UNSPECIFIED) {
      return Fail(RejectReason::kMissingEnum, absl::StrCat(drop_path, ".stage"),
                  "UNSPECIFIED or unknown (required)");
    }
    if (auto problem = RecordInterval(drop.has_interval(), drop.interval(), nullptr,
                                      absl::StrCat(drop_path, ".interval"))) {
      return problem;
    }
  }
  return std::nullopt;
}

}  // namespace

absl::string_view RejectReasonName(RejectReason reason) {
  switch (reason) {
    case RejectReason::kTooLarge:
      return "too_large";
    case RejectReason::kTooManyReports:
      return "too_many_reports";
    case RejectReason::kEmptyBatch:
      return "empty_batch";
    case RejectReason::kBadSeq:
      return "bad_seq";
    case RejectReason::kHostMismatch:
      return "host_mismatch";
    case RejectReason::kBadHostInfo:
      return "bad_host_info";
    case RejectReason::kBadIdentity:
      return "bad_identity";
    case RejectReason::kBadInterval:
      return "bad_interval";
    case RejectReason::kBadTimestamp:
      return "bad_timestamp";
    case RejectReason::kMissingEnum:
      return "missing_enum";
    case RejectReason::kUnknownVm:
      return "unknown_vm";
    case RejectReason::kTenantMismatch:
      return "tenant_mismatch";
    case RejectReason::kVcpuOutOfRange:
      return "vcpu_out_of_range";
    case RejectReason::kUnknownPcpu:
      return "unknown_pcpu";
    case RejectReason::kCounterOutOfRange:
      return "counter_out_of_range";
    case RejectReason::kBadGuestCounters:
      return "bad_guest_counters";
    case RejectReason::kBadVm:
      return "bad_vm";
    case RejectReason::kBadEventFilter:
      return "bad_event_filter";
    case RejectReason::kBadHistogram:
      return "bad_histogram";
    case RejectReason::kInconsistentOverflows:
      return "inconsistent_overflows";
    case RejectReason::kInconsistentCounts:
      return "inconsistent_counts";
    case RejectReason::kDuplicateRecord:
      return "duplicate_record";
    case RejectReason::kTooManyEntries:
      return "too_many_entries";
    case RejectReason::kOutOfRange:
      return "out_of_range";
  }
  return "unknown";
}

bool TooLarge(RejectReason reason) {
  return reason == RejectReason::kTooLarge || reason == RejectReason::kTooManyReports;
}

void HostContext::ApplyHostInfo(const HostInfo& info) {
  if (info.pcpus_size() == 0) return;
  pcpus.clear();
  for (const fleetpmu::v1::PcpuPmu& pcpu : info.pcpus()) pcpus[pcpu.pcpu()] = pcpu;
}

absl::Status BatchValidator::ValidateHostInfo(const HostInfo& info, const std::string& host_id,
                                              absl::string_view path, RejectReason* reason) const {
  auto fail = [&](RejectReason why, std::string message) {
    *reason = why;
    return absl::InvalidArgumentError(std::move(message));
  };
  if (!info.host_id().empty() && info.host_id() != host_id) {
    return fail(RejectReason::kHostMismatch,
                absl::StrCat(path, ".host_id: ", Quote(info.host_id()),
                             " differs from the stream's host ", Quote(host_id)));
  }
  if (info.pcpus_size() > kMaxPcpus) {
    return fail(RejectReason::kBadHostInfo,
                absl::StrCat(path, ".pcpus: ", info.pcpus_size(), " pCPUs, at most ", kMaxPcpus));
  }
  for (int i = 0; i < info.pcpus_size(); ++i) {
    const fleetpmu::v1::PcpuPmu& pcpu = info.pcpus(i);
    const std::string pcpu_path = absl::StrCat(path, ".pcpus[", i, "]");
    if (i > 0 && pcpu.pcpu() <= info.pcpus(i - 1).pcpu()) {
      return fail(
          RejectReason::kBadHostInfo,
          absl::StrCat(pcpu_path, ".pcpu: ", pcpu.pcpu(), " after ", info.pcpus(i - 1).pcpu(),
                       " (pCPUs must be sorted by index, each once)"));
    }
    if (pcpu.num_counters() > kMaxCounters) {
      return fail(RejectReason::kBadHostInfo,
                  absl::StrCat(pcpu_path, ".num_counters: ", pcpu.num_counters(),
                               " exceeds 31 (PMCR_EL0.N is 5 bits)"));
    }
    if (!IsValidIdentity(pcpu.pmu_id())) {
      return fail(RejectReason::kBadHostInfo,
                  absl::StrCat(pcpu_path, ".pmu_id: ", Quote(pcpu.pmu_id()),
                               " is not 1..128 bytes of [A-Za-z0-9._-]"));
    }
  }
  if (info.labels_size() > kMaxLabels) {
    return fail(RejectReason::kBadHostInfo, absl::StrCat(path, ".labels: ", info.labels_size(),
                                                         " labels, at most ", kMaxLabels));
  }
  for (const auto& [key, value] : info.labels()) {
    const bool key_ok = !key.empty() && key.size() <= kMaxLabelKeyBytes &&
                        std::all_of(key.begin(), key.end(), [](char c) {
                          return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
                        });
    if (!key_ok || value.size() > kMaxLabelValueBytes) {
      return fail(RejectReason::kBadHostInfo,
                  absl::StrCat(path, ".labels[", Quote(key),
                               "]: keys are 1..63 bytes of [a-z0-9_], values at most 255 bytes"));
    }
  }
  if (info.kvm_capabilities_size() > kMaxKvmCapabilities) {
    return fail(RejectReason::kBadHostInfo,
                absl::StrCat(path, ".kvm_capabilities: ", info.kvm_capabilities_size(),
                             " entries, at most ", kMaxKvmCapabilities));
  }
  for (const auto& [key, value] : info.kvm_capabilities()) {
    if (key.empty() || key.size() > kMaxMapKeyBytes || value.size() > kMaxLabelValueBytes) {
      return fail(RejectReason::kBadHostInfo,
                  absl::StrCat(path, ".kvm_capabilities[", Quote(key),
                               "]: keys are 1..128 bytes, values at most 255 bytes"));
    }
  }
  for (const std::string* text :
       {&info.arch(), &info.kernel(), &info.shim_version(), &info.agent_version()}) {
    if (text->size() > kMaxLabelValueBytes) {
      return fail(RejectReason::kBadHostInfo,
                  absl::StrCat(path, ": a version, arch or kernel string exceeds 255 bytes"));
    }
  }
  return absl::OkStatus();
}

absl::Status BatchValidator::Validate(const Batch& batch, size_t serialized_bytes,
                                      int64_t now_unix_ns, HostContext& context,
                                      RejectReason* reason) const {
  std::optional<Problem> problem;
  auto check = [&]() -> Check {
    if (serialized_bytes > limits_.max_message_bytes) {
      return Fail(RejectReason::kTooLarge, "batch", serialized_bytes, " bytes exceed ",
                  limits_.max_message_bytes, " (HelloAck.max_message_bytes)");
    }
    if (batch.seq() == 0) return Fail(RejectReason::kBadSeq, "batch.seq", "0 (seq starts at 1)");
    // A batch with no report still counts when it tells of agent drops: the agent sends one when
    // drops happened and no report is left to carry them (its spool dropped them all).
    if (batch.reports_size() == 0 && batch.agent_drops_size() == 0) {
      return Fail(RejectReason::kEmptyBatch, "batch.reports", "empty (and no agent_drops)");
    }
    if (static_cast<uint32_t>(batch.reports_size()) > limits_.max_batch_records) {
      return Fail(RejectReason::kTooManyReports, "batch.reports", batch.reports_size(),
                  " reports exceed ", limits_.max_batch_records, " (HelloAck.max_batch_records)");
    }
    if (batch.created_unix_ns() < 0 ||
        batch.created_unix_ns() > now_unix_ns + limits_.max_future_skew_ns) {
      return Fail(RejectReason::kBadTimestamp, "batch.created_unix_ns", batch.created_unix_ns(),
                  " is negative or ahead of the server's clock ", now_unix_ns);
    }
    BatchWalk walk(limits_, now_unix_ns, context);
    for (int i = 0; i < batch.reports_size(); ++i) {
      const TelemetryReport& report = batch.reports(i);
      const std::string path = absl::StrCat("report[", i, "]");
      if (report.has_host_info()) {
        RejectReason info_reason;
        absl::Status info = ValidateHostInfo(report.host_info(), context.host_id,
                                             absl::StrCat(path, ".host_info"), &info_reason);
        if (!info.ok()) return Problem{info_reason, std::string(info.message())};
      }
      if (i > 0 &&
          report.interval().start_unix_ns() < batch.reports(i - 1).interval().start_unix_ns()) {
        return Fail(RejectReason::kBadInterval, absl::StrCat(path, ".interval"),
                    "starts before report[", i - 1, "] (reports are in interval order)");
      }
      if (auto found = walk.Report(report, path)) return found;
    }
    for (int i = 0; i < batch.agent_drops_size(); ++i) {
      const fleetpmu::v1::TelemetryDrops& drop = batch.agent_drops(i);
      const std::string drop_path = absl::StrCat("batch.agent_drops[", i, "]");
      if (!fleetpmu::v1::DropStage_IsValid(drop.stage()) ||
          drop.stage() == fleetpmu::v1::DROP_STAGE_UNSPECIFIED) {
        return Fail(RejectReason::kMissingEnum, absl::StrCat(drop_path, ".stage"),
                    "UNSPECIFIED or unknown (required)");
      }
      if (auto found = walk.RecordInterval(drop.has_interval(), drop.interval(), nullptr,
                                           absl::StrCat(drop_path, ".interval"))) {
        return found;
      }
    }
    context = std::move(walk.context());
    return std::nullopt;
  };
  problem = check();
  if (!problem.has_value()) return absl::OkStatus();
  *reason = problem->reason;
  Count(problem->reason);
  return absl::InvalidArgumentError(problem->message);
}

void BatchValidator::Count(RejectReason reason) const {
  rejected_[static_cast<size_t>(reason)].fetch_add(1, std::memory_order_relaxed);
}

std::array<uint64_t, kRejectReasonCount> BatchValidator::Rejected() const {
  std::array<uint64_t, kRejectReasonCount> counts{};
  for (size_t i = 0; i < kRejectReasonCount; ++i) {
    counts[i] = rejected_[i].load(std::memory_order_relaxed);
  }
  return counts;
}

}  // namespace fleetpmu::server
