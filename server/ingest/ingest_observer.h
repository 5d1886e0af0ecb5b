// IngestObserver: what the ingest service tells the rest of the server (the Prometheus
// exporter, logs) about streams and batches, so that ingest depends on no metrics library.
//
// Contract: every method may be called concurrently from gRPC threads and from the storage
// writer thread; implementations must be thread-safe, quick, and must not call back into
// the ingest service. BatchStored is called once per batch whose commit created rows (never
// for a duplicate), after the commit.
#ifndef FLEETPMU_SERVER_INGEST_INGEST_OBSERVER_H_
#define FLEETPMU_SERVER_INGEST_INGEST_OBSERVER_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "fleetpmu/v1/ingest.pb.h"
#include "server/ingest/batch_validator.h"

namespace fleetpmu::server {

// Why a batch was refused for now (the agent resends it later); label `reason` of
// fleetpmu_ingest_batches_refused_total.
enum class RefusalReason {
  kRateLimited,     // per-stream batches per second exceeded
  kStorageBusy,     // the storage write queue is full
  kStorageFailed,   // the commit failed (disk full, I/O error)
  kAwaitingResend,  // an earlier seq was refused; it must come again first
};
inline constexpr RefusalReason kAllRefusalReasons[] = {
    RefusalReason::kRateLimited, RefusalReason::kStorageBusy, RefusalReason::kStorageFailed,
    RefusalReason::kAwaitingResend};

absl::string_view RefusalReasonName(RefusalReason reason);

class IngestObserver {
 public:
  virtual ~IngestObserver() = default;
  virtual void StreamOpened() {}
  virtual void StreamClosed() {}
  // A stream beyond ServerConfig.limits.max_streams was refused.
  virtual void StreamRefused() {}
  virtual void HelloAccepted(const std::string& /*host_id*/,
                             const fleetpmu::v1::HostInfo& /*info*/) {}
  virtual void BatchStored(const std::string& /*host_id*/, const fleetpmu::v1::Batch& /*batch*/,
                           int64_t /*committed_unix_ns*/) {}
  virtual void BatchDuplicate(const std::string& /*host_id*/) {}
  virtual void BatchRejected(const std::string& /*host_id*/, RejectReason /*reason*/) {}
  virtual void BatchRefused(const std::string& /*host_id*/, RefusalReason /*reason*/) {}
};

}  // namespace fleetpmu::server

#endif  // FLEETPMU_SERVER_INGEST_INGEST_OBSERVER_H_
