// Adding up per-interval telemetry: the Query API and the rollups sum VcpuStats of many
// intervals into one (docs/proto.md: "Counts are deltas ... so the server can add intervals
// together").
//
// Contract:
//   * MergeVcpuStats adds every count of `from` into `into`, merges the maps key by key, the
//     lost_by_reason lists reason by reason (kept sorted by reason), the histograms with
//     MergeHistogram, and widens `interval` to cover both. Identity fields (vm_id, vcpu,
//     tenant_id) are taken from `from` when `into` has none. ownership_at_end follows the
//     later interval.
//   * MergeHistogram is exact: equal bounds add bucket by bucket; different bounds merge onto
//     their common bounds (every bucket of either histogram lies inside one bucket of the
//     common set), so no sample changes bucket. An empty histogram (no samples, no bounds) is
//     the identity.
//   * Pure functions; inputs are trusted (validated at ingest).
#ifndef FLEETPMU_SERVER_STORAGE_VCPU_STATS_MERGE_H_
#define FLEETPMU_SERVER_STORAGE_VCPU_STATS_MERGE_H_

#include "fleetpmu/v1/telemetry.pb.h"

namespace fleetpmu::server {

void MergeHistogram(const fleetpmu::v1::LatencyHistogram& from,
                    fleetpmu::v1::LatencyHistogram* into);

void MergeVcpuStats(const fleetpmu::v1::VcpuStats& from, fleetpmu::v1::VcpuStats* into);

// Adds `from` into `into`, reason by reason, keeping `into` sorted by reason and free of zero
// counts.
void MergeLostByReason(
    const google::protobuf::RepeatedPtrField<fleetpmu::v1::LostReasonCount>& from,
    google::protobuf::RepeatedPtrField<fleetpmu::v1::LostReasonCount>* into);

}  // namespace fleetpmu::server

#endif  // FLEETPMU_SERVER_STORAGE_VCPU_STATS_MERGE_H_
