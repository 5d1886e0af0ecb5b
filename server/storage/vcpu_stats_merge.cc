#include "server/storage/vcpu_stats_merge.h"

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <map>
#include <vector>

namespace fleetpmu::server {
namespace {

using fleetpmu::v1::LatencyHistogram;
using fleetpmu::v1::LostReasonCount;
using fleetpmu::v1::VcpuStats;

bool IsEmpty(const LatencyHistogram& h) {
  return h.count() == 0 && h.sum_ns() == 0 && h.bucket_upper_bounds_ns_size() == 0 &&
         h.bucket_counts_size() == 0;
}

// Adds the buckets of `h` onto `common` bounds (see the header: exact by construction).
void Rebucket(const LatencyHistogram& h, const std::vector<uint64_t>& common,
              std::vector<uint64_t>& counts) {
  for (int i = 0; i < h.bucket_counts_size(); ++i) {
    size_t j = common.size();  // +Inf
    if (i < h.bucket_upper_bounds_ns_size()) {
      j = static_cast<size_t>(
          std::lower_bound(common.begin(), common.end(), h.bucket_upper_bounds_ns(i)) -
          common.begin());
    }
    counts[j] += h.bucket_counts(i);
  }
}

void AddMap(const google::protobuf::Map<std::string, uint64_t>& from,
            google::protobuf::Map<std::string, uint64_t>* into) {
  for (const auto& [key, value] : from) (*into)[key] += value;
}

void AddOverflows(const fleetpmu::v1::OverflowCounts& from, fleetpmu::v1::OverflowCounts* into) {
  into->set_delivered(into->delivered() + from.delivered());
  into->set_coalesced(into->coalesced() + from.coalesced());
  into->set_lost(into->lost() + from.lost());
  into->set_pending(into->pending() + from.pending());
}

}  // namespace

void MergeHistogram(const LatencyHistogram& from, LatencyHistogram* into) {
  if (IsEmpty(from)) return;
  if (IsEmpty(*into)) {
    *into = from;
    return;
  }
  const bool same_bounds =
      from.bucket_upper_bounds_ns_size() == into->bucket_upper_bounds_ns_size() &&
      std::equal(from.bucket_upper_bounds_ns().begin(), from.bucket_upper_bounds_ns().end(),
                 into->bucket_upper_bounds_ns().begin()) &&
      from.bucket_counts_size() == into->bucket_counts_size();
  if (same_bounds) {
    for (int i = 0; i < from.bucket_counts_size(); ++i) {
      into->set_bucket_counts(i, into->bucket_counts(i) + from.bucket_counts(i));
    }
  } else {
    std::vector<uint64_t> common;
    std::set_intersection(from.bucket_upper_bounds_ns().begin(),
                          from.bucket_upper_bounds_ns().end(),
                          into->bucket_upper_bounds_ns().begin(),
                          into->bucket_upper_bounds_ns().end(), std::back_inserter(common));
    std::vector<uint64_t> counts(common.size() + 1, 0);
    Rebucket(from, common, counts);
    Rebucket(*into, common, counts);
    into->clear_bucket_upper_bounds_ns();
    into->clear_bucket_counts();
    for (uint64_t bound : common) into->add_bucket_upper_bounds_ns(bound);
    for (uint64_t count : counts) into->add_bucket_counts(count);
  }
  into->set_sum_ns(into->sum_ns() + from.sum_ns());
  into->set_count(into->count() + from.count());
}

void MergeLostByReason(const google::protobuf::RepeatedPtrField<LostReasonCount>& from,
                       google::protobuf::RepeatedPtrField<LostReasonCount>* into) {
  std::map<int, uint64_t> by_reason;
  for (const LostReasonCount& entry : *into) by_reason[entry.reason()] += entry.count();
  for (const LostReasonCount& entry : from) by_reason[entry.reason()] += entry.count();
  into->Clear();
  for (const auto& [reason, count] : by_reason) {
    if (count == 0) continue;
    LostReasonCount* entry = into->Add();
    entry->set_reason(static_cast<fleetpmu::v1::LostReason>(reason));
    entry->set_count(count);
  }
}

void MergeVcpuStats(const VcpuStats& from, VcpuStats* into) {
  const bool into_empty = !into->has_interval();
  if (into->vm_id().empty()) into->set_vm_id(from.vm_id());
  if (into->tenant_id().empty()) into->set_tenant_id(from.tenant_id());
  if (into_empty) into->set_vcpu(from.vcpu());

  if (from.has_interval()) {
    fleetpmu::v1::Interval* interval = into->mutable_interval();
    if (into_empty) {
      *interval = from.interval();
      into->set_ownership_at_end(from.ownership_at_end());
    } else {
      if (from.interval().end_unix_ns() >= interval->end_unix_ns()) {
        into->set_ownership_at_end(from.ownership_at_end());
      }
      interval->set_start_unix_ns(
          std::min(interval->start_unix_ns(), from.interval().start_unix_ns()));
      interval->set_end_unix_ns(std::max(interval->end_unix_ns(), from.interval().end_unix_ns()));
    }
  }

  into->set_loads(into->loads() + from.loads());
  into->set_puts(into->puts() + from.puts());
  into->set_swaps_done(into->swaps_done() + from.swaps_done());
  into->set_swaps_skipped(into->swaps_skipped() + from.swaps_skipped());
  into->set_promotions(into->promotions() + from.promotions());
  into->set_trapped_fallbacks(into->trapped_fallbacks() + from.trapped_fallbacks());
  if (from.has_load_latency()) MergeHistogram(from.load_latency(), into->mutable_load_latency());
  if (from.has_put_latency()) MergeHistogram(from.put_latency(), into->mutable_put_latency());
  into->set_register_accesses(into->register_accesses() + from.register_accesses());
  AddMap(from.traps_by_register(), into->mutable_traps_by_register());
  AddMap(from.traps_full_exit_by_register(), into->mutable_traps_full_exit_by_register());
  into->set_host_irqs_attributed(into->host_irqs_attributed() + from.host_irqs_attributed());
  into->set_virtual_irq_assertions(into->virtual_irq_assertions() + from.virtual_irq_assertions());
  into->set_halted_wakes(into->halted_wakes() + from.halted_wakes());
  if (from.has_overflows()) AddOverflows(from.overflows(), into->mutable_overflows());
  if (from.lost_by_reason_size() > 0) {
    MergeLostByReason(from.lost_by_reason(), into->mutable_lost_by_reason());
  }
  into->set_misattributed(into->misattributed() + from.misattributed());
  into->set_run_time_ns(into->run_time_ns() + from.run_time_ns());
  into->set_invariant_violations(into->invariant_violations() + from.invariant_violations());
}

}  // namespace fleetpmu::server
