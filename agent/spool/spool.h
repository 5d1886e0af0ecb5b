// Spool: the agent's durable queue of telemetry batches, one SQLite file in WAL mode.
//
// Contract:
//  - Append() commits a batch (with its sequence number) before it returns: once it returns OK
//    the batch survives a crash of the agent (synchronous=FULL), so the agent may then
//    acknowledge the reports to the shim.
//  - Sequence numbers are per spool epoch, start at 1 and never repeat. The epoch is chosen when
//    the file is created and kept across restarts, so a restarted agent resumes the same
//    (agent_epoch, seq) sequence and replays what the server has not acknowledged.
//  - The spool is bounded in bytes (serialized batch sizes). When an append would exceed the
//    bound, DROP_OLDEST deletes the oldest batches first and DROP_NEWEST refuses the new batch
//    (RESOURCE_EXHAUSTED). Either way the drop is counted, persisted, and handed upstream once
//    through TakeDrops(); a dropped batch that was carrying such a report (Batch.agent_drops)
//    hands it back, so no drop goes unreported because its messenger was dropped too.
//  - Acknowledge(seq) deletes every batch with a sequence number <= seq.
//
// Thread-safe: every method takes the spool's mutex; SQLite is used from one thread at a time.
#ifndef FLEETPMU_AGENT_SPOOL_SPOOL_H_
#define FLEETPMU_AGENT_SPOOL_SPOOL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "fleetpmu/v1/config.pb.h"
#include "fleetpmu/v1/ingest.pb.h"
#include "fleetpmu/v1/telemetry.pb.h"

struct sqlite3;

namespace fleetpmu::agent {

struct SpoolOptions {
  std::string path;
  uint64_t max_bytes = 256ull << 20;
  v1::SpoolOverflowPolicy overflow_policy = v1::SPOOL_OVERFLOW_POLICY_DROP_OLDEST;
  // Epoch for a newly created file; 0 = derived from the creation time and randomness.
  uint64_t new_epoch = 0;
};

struct SpoolStats {
  uint64_t batches = 0;          // waiting for an ack
  uint64_t bytes = 0;
  uint64_t next_seq = 1;
  uint64_t dropped_batches = 0;  // since the file was created
  uint64_t dropped_bytes = 0;
};

// Where one shim's stream stands: the highest report seq of (shim_id, shim_epoch) in the spool.
struct ShimCursor {
  std::string shim_id;
  uint64_t shim_epoch = 0;
  uint64_t seq = 0;
};

struct SpooledBatch {
  uint64_t seq = 0;
  std::string serialized;  // a serialized v1::Batch with agent_epoch and seq set
};

class Spool {
 public:
  static absl::StatusOr<std::unique_ptr<Spool>> Open(const SpoolOptions& options);
  ~Spool();
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  uint64_t epoch() const { return epoch_; }
  uint64_t max_bytes() const { return max_bytes_; }

  // Sets agent_epoch, seq and created_unix_ns on `batch`, adds the spool drops not yet reported
  // (Batch.agent_drops, DROP_STAGE_AGENT_SPOOL) in the same transaction, stores it durably,
  // returns the seq.
  // With `cursor`, the shim's cursor is advanced in the same transaction, so a report is in the
  // spool if and only if its cursor says so (the shim's acks survive an agent restart).
  absl::StatusOr<uint64_t> Append(v1::Batch batch, int64_t now_unix_ns, const ShimCursor* cursor = nullptr);
  // The cursor of a shim's epoch; seq 0 if the spool has never seen that (shim_id, shim_epoch).
  absl::StatusOr<uint64_t> SpooledShimSeq(const std::string& shim_id, uint64_t shim_epoch);
  // Up to `limit` batches with seq > `after_seq`, oldest first.
  absl::StatusOr<std::vector<SpooledBatch>> ReadAfter(uint64_t after_seq, size_t limit);
  // Deletes batches with seq <= `seq`.
  absl::Status Acknowledge(uint64_t seq);
  // The host's latest HostInfo as the shims described it (pCPUs and their PMUs), kept so that a
  // restarted agent's hello carries it before any shim has reconnected.
  absl::Status SaveHostInfo(const v1::HostInfo& info);
  // The saved HostInfo; an empty message if none was saved.
  absl::StatusOr<v1::HostInfo> LoadHostInfo();

  // Spool drops not yet reported upstream, as TelemetryDrops; clears them. (Append() attaches
  // them itself; this is for callers that report drops some other way.)
  absl::StatusOr<std::vector<v1::TelemetryDrops>> TakeDrops();
  // When drops are pending and no report is coming to carry them, spools a batch holding only
  // those drops. Returns its seq, or 0 if nothing was pending.
  absl::StatusOr<uint64_t> AppendPendingDrops(int64_t now_unix_ns);
  SpoolStats stats() const;

 private:
  Spool() = default;
  absl::Status Init(const SpoolOptions& options);
  absl::Status Exec(const char* sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status LoadState() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<uint64_t> AppendLocked(v1::Batch batch, int64_t now_unix_ns, const ShimCursor* cursor)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AttachPendingDrops(v1::Batch& batch, int64_t now_unix_ns) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status DropOldestFor(uint64_t incoming) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status SaveCounters() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RequeueCarriedDrops(const v1::Batch& batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RollBack(absl::Status cause) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::string path_;
  uint64_t max_bytes_ = 0;
  v1::SpoolOverflowPolicy policy_ = v1::SPOOL_OVERFLOW_POLICY_DROP_OLDEST;
  uint64_t epoch_ = 0;
  SpoolStats stats_ ABSL_GUARDED_BY(mu_);
  uint64_t unreported_batches_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t unreported_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t first_unreported_drop_unix_ns_ ABSL_GUARDED_BY(mu_) = 0;  // 0: none since this start
};

}  // namespace fleetpmu::agent

#endif  // FLEETPMU_AGENT_SPOOL_SPOOL_H_
