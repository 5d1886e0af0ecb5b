// BatchValidator: the rules a Batch must pass before fleetpmu-server stores it (docs/server.md
// "Validation rules" lists every rule with its reason name; docs/proto.md "Exactly once, agent
// to server" says what happens to a refused batch).
//
// Contract:
//   * Validate() checks every record of a batch against the stream's HostContext (the host of
//     the AgentHello, its pCPUs and the VMs it has reported) and returns OK or
//     InvalidArgument whose message names the record and field, e.g.
//       "report[3].vcpu_stats[0].overflows: lost=2 but lost_by_reason sums to 1".
//     The first problem found decides; `*reason` says which rule, for the per-reason counter.
//   * Batches are all-or-nothing: on OK the context has learned the batch's VMs and host facts
//     (so the next batch may name them); on error the context is unchanged.
//   * TooLarge(reason) says whether the rule is a size bound (IngestError TOO_LARGE rather than
//     INVALID_BATCH).
//   * Counting: every rejection is counted by reason; Rejected() reads the counters. Validate
//     is const and thread-safe (the counters are atomic); a HostContext belongs to one stream.
//   * Time comes in as now_unix_ns; the validator reads no clock.
#ifndef FLEETPMU_SERVER_INGEST_BATCH_VALIDATOR_H_
#define FLEETPMU_SERVER_INGEST_BATCH_VALIDATOR_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "fleetpmu/v1/ingest.pb.h"
#include "fleetpmu/v1/telemetry.pb.h"
#include "server/identity.h"

namespace fleetpmu::server {

// Why a batch was refused; the names (RejectReasonName) are the `reason` label of
// fleetpmu_ingest_batches_rejected_total.
enum class RejectReason {
  kTooLarge,               // serialized batch over max_message_bytes
  kTooManyReports,         // more reports than max_batch_records
  kEmptyBatch,             // no report and no agent drops
  kBadSeq,                 // seq 0
  kHostMismatch,           // a report or HostInfo names another host than the stream's
  kBadHostInfo,            // HostInfo breaks its rules (pCPUs, labels, capabilities)
  kBadIdentity,            // vm_id, tenant_id, ... not 1..128 bytes of [A-Za-z0-9._-]
  kBadInterval,            // missing, empty, too long, or outside its report
  kBadTimestamp,           // outside [now - max_age, now + max_future_skew]
  kMissingEnum,            // a required enum is UNSPECIFIED (or unknown)
  kUnknownVm,              // vm_id not in this report nor reported before by the host
  kTenantMismatch,         // tenant_id differs from the VM's
  kVcpuOutOfRange,         // vcpu >= the VM's vcpus
  kUnknownPcpu,            // pcpu not in the host's HostInfo
  kCounterOutOfRange,      // counter index or mask bit not < N (or 31), or outside [0,h)
  kBadGuestCounters,       // h > N, h > 31, or h = 0 without FEAT_HPMN0
  kBadVm,                  // vcpus outside 1..512
  kBadEventFilter,         // an EventFilter range breaks its rules
  kBadHistogram,           // bounds, bucket count, count != sum of buckets
  kInconsistentOverflows,  // lost != sum(lost_by_reason), class/lost_reason mismatch
  kInconsistentCounts,     // a time or count exceeds what its interval allows
  kDuplicateRecord,        // the same VM, vCPU or pCPU twice in one report
  kTooManyEntries,         // a repeated field or map over its documented bound
  kOutOfRange,             // another numeric field outside its documented range
};
inline constexpr size_t kRejectReasonCount = static_cast<size_t>(RejectReason::kOutOfRange) + 1;

// "too_large", "bad_interval", ...
absl::string_view RejectReasonName(RejectReason reason);

// Size rules answer TOO_LARGE, every other INVALID_BATCH.
bool TooLarge(RejectReason reason);

struct ValidationLimits {
  // ServerConfig.limits.
  uint32_t max_batch_records = 1000;
  uint32_t max_message_bytes = 4 << 20;
  // Clock skew allowed for timestamps in the future.
  int64_t max_future_skew_ns = int64_t{5} * 60 * 1000000000;
  // Oldest data accepted (the rollup retention: older data would be deleted at once).
  int64_t max_age_ns = int64_t{90} * 24 * 3600 * 1000000000;
  // Longest report interval (ShimConfig.report_interval is at most 1h).
  int64_t max_report_interval_ns = int64_t{3600} * 1000000000;
};

// What a stream knows about its host: set from the hello, extended by each valid batch.
struct HostContext {
  std::string host_id;
  // pCPU index -> its PMU, from the latest HostInfo.
  absl::flat_hash_map<uint32_t, fleetpmu::v1::PcpuPmu> pcpus;
  // vm_id -> latest VmInfo.
  absl::flat_hash_map<std::string, fleetpmu::v1::VmInfo> vms;

  // Replaces the pCPU facts when `info` has pCPUs (a HostInfo without them changes none).
  void ApplyHostInfo(const fleetpmu::v1::HostInfo& info);
};

class BatchValidator {
 public:
  explicit BatchValidator(ValidationLimits limits) : limits_(limits) {}

  // A HostInfo from an AgentHello (path "hello.host_info") or a report. Not counted.
  absl::Status ValidateHostInfo(const fleetpmu::v1::HostInfo& info, const std::string& host_id,
                                absl::string_view path, RejectReason* reason) const;

  // See the file comment. `serialized_bytes` is the batch's wire size.
  absl::Status Validate(const fleetpmu::v1::Batch& batch, size_t serialized_bytes,
                        int64_t now_unix_ns, HostContext& context, RejectReason* reason) const;

  // Counts a rejection decided outside Validate (e.g. by the ingest service).
  void Count(RejectReason reason) const;
  // Batches refused so far, by reason.
  std::array<uint64_t, kRejectReasonCount> Rejected() const;

  const ValidationLimits& limits() const { return limits_; }

 private:
  const ValidationLimits limits_;
  mutable std::array<std::atomic<uint64_t>, kRejectReasonCount> rejected_{};
};

}  // namespace fleetpmu::server

#endif  // FLEETPMU_SERVER_INGEST_BATCH_VALIDATOR_H_
