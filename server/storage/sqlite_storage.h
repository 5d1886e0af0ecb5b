// SqliteStorage: the Storage of fleetpmu-server in one SQLite file (DESIGN.md "Storage";
// schema in sqlite_schema.cc, documented in docs/server.md "Schema").
//
// Contract (beyond storage.h's):
//   * WAL mode, synchronous=FULL: when `done` reports a commit, the transaction is in the WAL
//     and fsync'ed, so an ack sent after it survives a crash or power loss.
//   * One writer thread owns the only read-write connection. It takes up to
//     max_ops_per_transaction queued operations at a time and applies them in one transaction
//     (each inside a SAVEPOINT, so one failing operation does not undo the others), commits
//     once, then calls every `done` in order. Statements are prepared once per connection.
//   * Reads use a small pool of query-only connections (`readers`); a read waits for a free
//     connection, never for the writer.
//   * Retention: SubmitRetention, and, when retention_period > 0, a pass by the writer thread
//     every retention_period with now = clock(). A pass rolls raw rows that started before
//     now - raw_retention into per-bucket rollups (bucket = rollup_interval) and deletes them,
//     deletes overflow events and rejected-batch records older than the raw window, and
//     rollups and stale cursors older than now - rollup_retention.
//   * Shutdown() (also run by the destructor) stops accepting operations (Submit* then return
//     Unavailable), applies everything already queued, calls every `done`, and joins the
//     writer. Thread-safe.
#ifndef FLEETPMU_SERVER_STORAGE_SQLITE_STORAGE_H_
#define FLEETPMU_SERVER_STORAGE_SQLITE_STORAGE_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/storage/sqlite_db.h"
#include "server/storage/storage.h"

namespace fleetpmu::server {

struct SqliteStorageOptions {
  // Database file; created when missing.
  std::string path;
  int64_t raw_retention_ns = int64_t{48} * 3600 * 1000000000;
  int64_t rollup_interval_ns = int64_t{60} * 1000000000;
  int64_t rollup_retention_ns = int64_t{90} * 24 * 3600 * 1000000000;
  // Write queue bounds (storage.h "Bounded").
  size_t max_queued_ops = 1024;
  size_t max_queued_bytes = size_t{256} << 20;
  // Operations grouped into one transaction at most.
  size_t max_ops_per_transaction = 64;
  // Query-only connections.
  int readers = 2;
  // Periodic retention by the writer thread; zero = only SubmitRetention.
  absl::Duration retention_period = absl::ZeroDuration();
  // Clock of the periodic retention, Unix ns. Default: absl::Now().
  std::function<int64_t()> clock;
  // Told the outcome of every periodic retention pass, on the writer thread (for logs).
  std::function<void(const absl::StatusOr<RetentionResult>&)> on_retention;
};

class SqliteStorage final : public Storage {
 public:
  // Opens or creates the database, migrates its schema, starts the writer thread.
  static absl::StatusOr<std::unique_ptr<SqliteStorage>> Open(SqliteStorageOptions options);
  ~SqliteStorage() override;

  void Shutdown();

  absl::Status SubmitRegistration(AgentRegistration registration,
                                  std::shared_ptr<CommitChain> chain,
                                  RegistrationDone done) override;
  absl::Status SubmitCommit(IngestCommit commit, std::shared_ptr<CommitChain> chain,
                            CommitDone done) override;
  absl::Status SubmitRetention(int64_t now_unix_ns, RetentionDone done) override;
  StorageStats Stats() const override;

  absl::StatusOr<bool> TenantExists(const std::string& tenant_id) override;
  absl::StatusOr<bool> HostExists(const std::string& host_id) override;
  absl::StatusOr<bool> TenantRanOnHost(const std::string& tenant_id,
                                       const std::string& host_id) override;
  absl::StatusOr<uint64_t> DurableSeq(const std::string& host_id, uint64_t agent_epoch) override;
  absl::StatusOr<Page<fleetpmu::v1::HostSummary>> ListHosts(const std::string& tenant_id,
                                                            PageRequest page) override;
  absl::StatusOr<std::vector<fleetpmu::v1::PcpuOwnership>> GetCounterOwnership(
      const OwnershipQuery& query) override;
  absl::StatusOr<Page<fleetpmu::v1::HostOverflowEvent>> ListOverflowEvents(
      const OverflowQuery& query, PageRequest page) override;
  absl::StatusOr<LostSummary> GetLostOverflowSummary(const LostSummaryQuery& query,
                                                     PageRequest page) override;
  absl::StatusOr<Page<fleetpmu::v1::HostVcpuStats>> GetVcpuStats(const VcpuStatsQuery& query,
                                                                 PageRequest page) override;
  absl::StatusOr<int64_t> OldestDataUnixNs() override;

 private:
  struct RegistrationOp {
    AgentRegistration registration;
    RegistrationDone done;
  };
  struct CommitOp {
    IngestCommit commit;
    CommitDone done;
  };
  struct RetentionOp {
    int64_t now_unix_ns;
    RetentionDone done;
  };
  struct Op {
    std::variant<RegistrationOp, CommitOp, RetentionOp> body;
    std::shared_ptr<CommitChain> chain;
    size_t bytes = 0;
  };
  // What applying one op produced, delivered after the transaction's outcome is known.
  struct Outcome;

  // A query-only connection borrowed from the pool, returned on destruction.
  class Reader {
   public:
    Reader(SqliteStorage* owner, std::unique_ptr<SqliteDb> db)
        : owner_(owner), db_(std::move(db)) {}
    Reader(Reader&& other) = default;
    Reader& operator=(Reader&&) = delete;
    ~Reader();
    SqliteDb& db() { return *db_; }

   private:
    SqliteStorage* owner_;
    std::unique_ptr<SqliteDb> db_;
  };

  SqliteStorage(SqliteStorageOptions options, std::unique_ptr<SqliteDb> writer_db,
                std::vector<std::unique_ptr<SqliteDb>> readers);

  absl::Status Enqueue(Op op);
  bool HasWorkLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WriterLoop();
  // Applies a group of ops in one transaction and calls their `done`.
  void ApplyGroup(std::vector<Op>& group);
  absl::Status ApplyRegistration(const AgentRegistration& registration, RegistrationResult& out);
  absl::Status ApplyCommit(const IngestCommit& commit, CommitResult& out);
  absl::Status ApplyRetention(int64_t now_unix_ns, RetentionResult& out);
  absl::Status StoreBatch(const std::string& host_id, const fleetpmu::v1::Batch& batch,
                          int64_t now_unix_ns);
  absl::Status UpsertHostInfo(const std::string& host_id, const fleetpmu::v1::HostInfo& info,
                              int64_t now_unix_ns, const uint64_t* agent_epoch);
  absl::StatusOr<uint64_t> WriterCursor(const std::string& host_id, uint64_t agent_epoch);

  Reader AcquireReader();
  bool HasIdleReaderLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(readers_mu_);

  const SqliteStorageOptions options_;
  // Writer thread only (after Open).
  std::unique_ptr<SqliteDb> writer_db_;
  mutable absl::Mutex mu_;
  std::deque<Op> queue_ ABSL_GUARDED_BY(mu_);
  size_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  StorageStats stats_ ABSL_GUARDED_BY(mu_);

  mutable absl::Mutex readers_mu_;
  std::vector<std::unique_ptr<SqliteDb>> idle_readers_ ABSL_GUARDED_BY(readers_mu_);

  absl::Mutex shutdown_mu_;
  std::thread writer_;  // joined under shutdown_mu_
};

}  // namespace fleetpmu::server

#endif  // FLEETPMU_SERVER_STORAGE_SQLITE_STORAGE_H_
