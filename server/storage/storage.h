// Storage: where fleetpmu-server keeps what the agents sent (DESIGN.md "Storage"). An interface,
// so that a fleet that outgrows one server can put PostgreSQL under stateless replicas; the
// default implementation is SqliteStorage (sqlite_storage.h).
//
// Contract of every implementation:
//   * Writes are asynchronous, ordered and single-writer. Submit() enqueues one operation and
//     returns at once. The writer applies operations in submission order and calls each
//     operation's `done` exactly once, on the writer thread, after the transaction that holds
//     the operation committed (or failed). `done` must be quick and must not call Submit*
//     synchronously waiting for the result (it runs on the thread that would produce it).
//   * Bounded: when the queue holds max_queued_ops operations or max_queued_bytes bytes,
//     Submit() returns ResourceExhausted, does not enqueue and never calls `done`; the
//     refusal is counted in Stats(). A caller answers with backpressure (IngestError
//     RESOURCE_EXHAUSTED), never by buffering without bound.
//   * Exactly once (docs/proto.md "Exactly once, agent to server"): an IngestCommit stores its
//     batch's records (or its rejection) and advances the (host_id, agent_epoch) cursor to seq
//     in the same transaction. A seq <= the stored cursor is a duplicate: nothing is stored and
//     the result says kDuplicate with the current cursor. The cursor never moves backwards.
//   * Chains: operations that share a CommitChain must commit in order with no hole. When one
//     of them fails, the chain breaks and every later operation on it fails with Unavailable
//     without being applied, so a failed seq s is never skipped by a committed s+1 (which
//     would move the cursor past s and lose it).
//   * Reads (the query methods) are synchronous, thread-safe, see only committed data, and
//     never wait for the write queue.
//   * Time is passed in (now_unix_ns), never read from a clock inside the storage, except for
//     the implementation's own periodic retention, which the implementation documents.
#ifndef FLEETPMU_SERVER_STORAGE_STORAGE_H_
#define FLEETPMU_SERVER_STORAGE_STORAGE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fleetpmu/v1/ingest.pb.h"
#include "fleetpmu/v1/query.pb.h"
#include "fleetpmu/v1/telemetry.pb.h"

namespace fleetpmu::server {

// Shared by the operations of one ingest stream; see "Chains" above. Only the storage writer
// thread reads or writes it.
class CommitChain {
 public:
  bool broken() const { return broken_; }
  void Break() { broken_ = true; }

 private:
  bool broken_ = false;
};

// An agent said hello: remember its host facts, answer with its cursor.
struct AgentRegistration {
  // Identity accepted for the stream (from the certificate under mTLS).
  std::string host_id;
  uint64_t agent_epoch = 0;
  // host_id inside is replaced by `host_id`.
  fleetpmu::v1::HostInfo host_info;
  int64_t now_unix_ns = 0;
};

struct RegistrationResult {
  // Cursor of (host_id, agent_epoch); 0 = nothing stored yet.
  uint64_t durable_seq = 0;
  // Every VM the server has stored for the host (the latest VmInfo of each), so that ingest
  // can check vcpu_stats against VMs named in earlier batches.
  std::vector<fleetpmu::v1::VmInfo> vms;
};

// One batch to store, or a batch refused permanently whose seq must still advance the cursor.
struct IngestCommit {
  std::string host_id;
  uint64_t agent_epoch = 0;
  uint64_t seq = 0;
  // Stored when set (already validated: storage trusts it). Null = a rejection. Shared so
  // that the submitter can still read the batch in `done` (metrics) without a copy.
  std::shared_ptr<const fleetpmu::v1::Batch> batch;
  // For a rejection: INVALID_BATCH or TOO_LARGE and the reason sent to the agent.
  fleetpmu::v1::IngestError::Code rejection_code = fleetpmu::v1::IngestError::CODE_UNSPECIFIED;
  std::string rejection_reason;
  int64_t now_unix_ns = 0;
  // Bytes this operation holds in memory (counted against max_queued_bytes); 0 = computed.
  size_t bytes = 0;
};

struct CommitResult {
  enum class Outcome { kStored, kRejectionRecorded, kDuplicate };
  Outcome outcome = Outcome::kStored;
  // The cursor after the operation: every seq <= durable_seq is durable.
  uint64_t durable_seq = 0;
};

// What a retention pass did.
struct RetentionResult {
  int64_t raw_cutoff_unix_ns = 0;
  int64_t rollup_cutoff_unix_ns = 0;
  uint64_t raw_rows_rolled_up = 0;
  uint64_t rows_deleted = 0;
};

// Counters of the write path, for /metrics.
struct StorageStats {
  uint64_t queued_ops = 0;
  uint64_t queued_bytes = 0;
  uint64_t queue_full_refusals = 0;
  uint64_t transactions_committed = 0;
  uint64_t transactions_failed = 0;
  uint64_t ops_applied = 0;
  double commit_seconds_sum = 0;
};

// A resolved time range [start_unix_ns, end_unix_ns), both set.
struct TimeWindow {
  int64_t start_unix_ns = 0;
  int64_t end_unix_ns = 0;
};

// A page of a list: offset into the full ordered answer and the number of items wanted.
struct PageRequest {
  int64_t offset = 0;
  int32_t limit = 100;
};

template <typename T>
struct Page {
  std::vector<T> items;
  // More items follow this page.
  bool more = false;
};

struct OwnershipQuery {
  std::string tenant_id;  // required
  std::string host_id;    // empty = every host
  // Exactly one of: a range, or an instant.
  std::optional<TimeWindow> range;
  std::optional<int64_t> at_unix_ns;
};

struct OverflowQuery {
  bool lost_only = false;
  std::string tenant_id;  // empty = every owner, host perf events included
  std::string host_id;    // empty = every host
  int64_t since_unix_ns = 0;
};

struct LostSummaryQuery {
  std::string tenant_id;  // empty = every tenant and the host's own counters
  std::string host_id;
  TimeWindow range;
};

struct LostSummary {
  std::vector<fleetpmu::v1::LostOverflowCount> rows;  // this page
  uint64_t total_lost = 0;                            // over all pages
  bool more = false;
};

struct VcpuStatsQuery {
  std::string tenant_id;  // required
  std::string vm_id;      // empty = every VM of the tenant
  TimeWindow range;
};

class Storage {
 public:
  using RegistrationDone = absl::AnyInvocable<void(absl::StatusOr<RegistrationResult>)>;
  using CommitDone = absl::AnyInvocable<void(absl::StatusOr<CommitResult>)>;
  using RetentionDone = absl::AnyInvocable<void(absl::StatusOr<RetentionResult>)>;

  virtual ~Storage() = default;

  // --- Writes (asynchronous, see the file comment) ------------------------------------------
  virtual absl::Status SubmitRegistration(AgentRegistration registration,
                                          std::shared_ptr<CommitChain> chain,
                                          RegistrationDone done) = 0;
  virtual absl::Status SubmitCommit(IngestCommit commit, std::shared_ptr<CommitChain> chain,
                                    CommitDone done) = 0;
  // Rolls raw rows older than now - raw_retention into rollups and deletes rollups older than
  // now - rollup_retention.
  virtual absl::Status SubmitRetention(int64_t now_unix_ns, RetentionDone done) = 0;

  // Blocking conveniences over the Submit* calls (tests, tools). Never call them from `done`.
  absl::StatusOr<RegistrationResult> Register(AgentRegistration registration);
  absl::StatusOr<CommitResult> Commit(IngestCommit commit);
  absl::StatusOr<RetentionResult> RunRetention(int64_t now_unix_ns);

  virtual StorageStats Stats() const = 0;

  // --- Reads (synchronous) ------------------------------------------------------------------
  virtual absl::StatusOr<bool> TenantExists(const std::string& tenant_id) = 0;
  virtual absl::StatusOr<bool> HostExists(const std::string& host_id) = 0;
  // Whether `tenant_id` ran a VM on `host_id`.
  virtual absl::StatusOr<bool> TenantRanOnHost(const std::string& tenant_id,
                                               const std::string& host_id) = 0;
  // The stored cursor of (host_id, agent_epoch), 0 if none.
  virtual absl::StatusOr<uint64_t> DurableSeq(const std::string& host_id, uint64_t agent_epoch) = 0;

  // Sorted by host_id; `tenant_id` non-empty = only hosts where it ran VMs.
  virtual absl::StatusOr<Page<fleetpmu::v1::HostSummary>> ListHosts(const std::string& tenant_id,
                                                                    PageRequest page) = 0;
  // Every pCPU where the tenant held counters, sorted by (host_id, pcpu); the whole answer
  // (the caller pages it). `now_unix_ns` resolves nothing here: the range is resolved already.
  virtual absl::StatusOr<std::vector<fleetpmu::v1::PcpuOwnership>> GetCounterOwnership(
      const OwnershipQuery& query) = 0;
  // Newest first.
  virtual absl::StatusOr<Page<fleetpmu::v1::HostOverflowEvent>> ListOverflowEvents(
      const OverflowQuery& query, PageRequest page) = 0;
  virtual absl::StatusOr<LostSummary> GetLostOverflowSummary(const LostSummaryQuery& query,
                                                             PageRequest page) = 0;
  // Sorted by (vm_id, vcpu, host_id), counts summed and histograms merged.
  virtual absl::StatusOr<Page<fleetpmu::v1::HostVcpuStats>> GetVcpuStats(
      const VcpuStatsQuery& query, PageRequest page) = 0;
  // Earliest start_unix_ns of any stored data (raw or rollup), 0 when empty; resolves
  // "start = 0 = the oldest data kept".
  virtual absl::StatusOr<int64_t> OldestDataUnixNs() = 0;
};

}  // namespace fleetpmu::server

#endif  // FLEETPMU_SERVER_STORAGE_STORAGE_H_
