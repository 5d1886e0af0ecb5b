// The write side of SqliteStorage: open, the queue, the writer thread, ingest and retention.
// The read side (Query API) is in sqlite_storage_read.cc.
#include "server/storage/sqlite_storage.h"

#include <algorithm>
#include <map>
#include <tuple>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "server/status_macros.h"
#include "server/storage/sqlite_schema.h"
#include "server/storage/vcpu_stats_merge.h"

namespace fleetpmu::server {

using fleetpmu::v1::Batch;
using fleetpmu::v1::HostInfo;
using fleetpmu::v1::TelemetryReport;
using fleetpmu::v1::VcpuStats;
using fleetpmu::v1::VmInfo;

namespace {

// Raw rows rolled up per chunk, so that a long-delayed retention pass keeps bounded memory.
constexpr int kRollupChunkRows = 20000;
// Fixed per-operation overhead counted against max_queued_bytes.
constexpr size_t kOpOverheadBytes = 256;

int64_t ToSql(uint64_t value) { return static_cast<int64_t>(value); }

int64_t Bucket(int64_t t, int64_t width) { return t - (t % width); }

// Checks that the connection really is in WAL mode (some filesystems refuse it).
absl::Status EnableWal(SqliteDb& db) {
  FLEETPMU_ASSIGN_OR_RETURN(SqliteStatement * statement, db.Prepare("PRAGMA journal_mode=WAL"));
  ScopedReset reset(*statement);
  FLEETPMU_ASSIGN_OR_RETURN(bool row, statement->Step());
  const std::string mode = row ? statement->ColumnText(0) : "";
  if (mode != "wal") {
    return absl::FailedPreconditionError(
        absl::StrCat(db.path(), ": cannot switch to WAL mode (journal_mode is \"", mode,
                     "\"); put the database on a local filesystem"));
  }
  return absl::OkStatus();
}

}  // namespace

struct SqliteStorage::Outcome {
  absl::Status status;
  RegistrationResult registration;
  CommitResult commit;
  RetentionResult retention;
};

SqliteStorage::Reader::~Reader() {
  if (db_ == nullptr) return;
  absl::MutexLock lock(&owner_->readers_mu_);
  owner_->idle_readers_.push_back(std::move(db_));
}

absl::StatusOr<std::unique_ptr<SqliteStorage>> SqliteStorage::Open(SqliteStorageOptions options) {
  if (options.path.empty()) return absl::InvalidArgumentError("sqlite storage: empty path");
  if (options.rollup_interval_ns <= 0 || options.raw_retention_ns <= 0 ||
      options.rollup_retention_ns < options.raw_retention_ns) {
    return absl::InvalidArgumentError(
        "sqlite storage: retention needs raw_retention > 0, rollup_interval > 0 and "
        "rollup_retention >= raw_retention");
  }
  if (options.max_queued_ops == 0 || options.max_ops_per_transaction == 0 || options.readers <= 0) {
    return absl::InvalidArgumentError(
        "sqlite storage: max_queued_ops, max_ops_per_transaction and readers must be > 0");
  }
  if (!options.clock) {
    options.clock = [] { return absl::ToUnixNanos(absl::Now()); };
  }

  FLEETPMU_ASSIGN_OR_RETURN(std::unique_ptr<SqliteDb> writer,
                            SqliteDb::Open(options.path, SqliteDb::Mode::kReadWrite));
  FLEETPMU_RETURN_IF_ERROR(EnableWal(*writer));
  // FULL: a commit is fsync'ed before `done` runs, so an ack never precedes durability.
  FLEETPMU_RETURN_IF_ERROR(writer->Exec("PRAGMA synchronous=FULL"));
  FLEETPMU_RETURN_IF_ERROR(writer->Exec("PRAGMA foreign_keys=ON"));
  FLEETPMU_RETURN_IF_ERROR(MigrateSchema(*writer));

  std::vector<std::unique_ptr<SqliteDb>> readers;
  for (int i = 0; i < options.readers; ++i) {
    FLEETPMU_ASSIGN_OR_RETURN(std::unique_ptr<SqliteDb> reader,
                              SqliteDb::Open(options.path, SqliteDb::Mode::kReadWrite));
    FLEETPMU_RETURN_IF_ERROR(reader->Exec("PRAGMA query_only=1"));
    readers.push_back(std::move(reader));
  }
  return std::unique_ptr<SqliteStorage>(
      new SqliteStorage(std::move(options), std::move(writer), std::move(readers)));
}

SqliteStorage::SqliteStorage(SqliteStorageOptions options, std::unique_ptr<SqliteDb> writer_db,
                             std::vector<std::unique_ptr<SqliteDb>> readers)
    : options_(std::move(options)), writer_db_(std::move(writer_db)) {
  {
    absl::MutexLock lock(&readers_mu_);
    idle_readers_ = std::move(readers);
  }
  writer_ = std::thread([this] { WriterLoop(); });
}

SqliteStorage::~SqliteStorage() { Shutdown(); }

void SqliteStorage::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  absl::MutexLock lock(&shutdown_mu_);
  if (writer_.joinable()) writer_.join();
}

absl::Status SqliteStorage::Enqueue(Op op) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("storage is shutting down");
  // One operation larger than the byte bound still goes through an empty queue; otherwise a
  // batch within max_message_bytes could never be stored.
  const bool bytes_full = !queue_.empty() && queued_bytes_ + op.bytes > options_.max_queued_bytes;
  if (queue_.size() >= options_.max_queued_ops || bytes_full) {
    ++stats_.queue_full_refusals;
    return absl::ResourceExhaustedError(
        absl::StrCat("storage write queue full (", queue_.size(), " operations, ", queued_bytes_,
                     " bytes queued; limits ", options_.max_queued_ops, " operations, ",
                     options_.max_queued_bytes, " bytes): storage is behind, retry later"));
  }
  queued_bytes_ += op.bytes;
  queue_.push_back(std::move(op));
  stats_.queued_ops = queue_.size();
  stats_.queued_bytes = queued_bytes_;
  return absl::OkStatus();
}

absl::Status SqliteStorage::SubmitRegistration(AgentRegistration registration,
                                               std::shared_ptr<CommitChain> chain,
                                               RegistrationDone done) {
  Op op;
  op.bytes = registration.host_info.ByteSizeLong() + kOpOverheadBytes;
  op.body = RegistrationOp{std::move(registration), std::move(done)};
  op.chain = std::move(chain);
  return Enqueue(std::move(op));
}

absl::Status SqliteStorage::SubmitCommit(IngestCommit commit, std::shared_ptr<CommitChain> chain,
                                         CommitDone done) {
  Op op;
  op.bytes = commit.bytes != 0 ? commit.bytes
                               : (commit.batch != nullptr ? commit.batch->ByteSizeLong() : 0) +
                                     commit.rejection_reason.size() + kOpOverheadBytes;
  op.body = CommitOp{std::move(commit), std::move(done)};
  op.chain = std::move(chain);
  return Enqueue(std::move(op));
}

absl::Status SqliteStorage::SubmitRetention(int64_t now_unix_ns, RetentionDone done) {
  Op op;
  op.bytes = kOpOverheadBytes;
  op.body = RetentionOp{now_unix_ns, std::move(done)};
  return Enqueue(std::move(op));
}

StorageStats SqliteStorage::Stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

bool SqliteStorage::HasWorkLocked() const { return !queue_.empty() || stopping_; }

void SqliteStorage::WriterLoop() {
  const bool periodic = options_.retention_period > absl::ZeroDuration();
  absl::Time next_retention = absl::Now() + options_.retention_period;
  while (true) {
    std::vector<Op> group;
    {
      absl::MutexLock lock(&mu_);
      const absl::Condition has_work(this, &SqliteStorage::HasWorkLocked);
      if (periodic) {
        mu_.AwaitWithDeadline(has_work, next_retention);
      } else {
        mu_.Await(has_work);
      }
      if (queue_.empty() && stopping_) break;
      while (!queue_.empty() && group.size() < options_.max_ops_per_transaction) {
        // A retention pass runs alone in its transaction.
        const bool retention = std::holds_alternative<RetentionOp>(queue_.front().body);
        if (retention && !group.empty()) break;
        queued_bytes_ -= queue_.front().bytes;
        group.push_back(std::move(queue_.front()));
        queue_.pop_front();
        if (retention) break;
      }
      stats_.queued_ops = queue_.size();
      stats_.queued_bytes = queued_bytes_;
    }
    if (!group.empty()) ApplyGroup(group);
    if (periodic && absl::Now() >= next_retention) {
      std::vector<Op> pass(1);
      pass[0].body = RetentionOp{options_.clock(), [this](absl::StatusOr<RetentionResult> result) {
                                   if (options_.on_retention) options_.on_retention(result);
                                 }};
      ApplyGroup(pass);
      next_retention = absl::Now() + options_.retention_period;
    }
  }
}

void SqliteStorage::ApplyGroup(std::vector<Op>& group) {
  const absl::Time started = absl::Now();
  std::vector<Outcome> outcomes(group.size());
  const absl::Status begin = writer_db_->Exec("BEGIN IMMEDIATE");
  for (size_t i = 0; i < group.size(); ++i) {
    Op& op = group[i];
    Outcome& outcome = outcomes[i];
    if (!begin.ok()) {
      outcome.status = begin;
      continue;
    }
    if (op.chain != nullptr && op.chain->broken()) {
      outcome.status =
          absl::UnavailableError("not applied: an earlier operation of this ingest stream failed");
      continue;
    }
    absl::Status status = writer_db_->Exec("SAVEPOINT op");
    if (status.ok()) {
      if (auto* registration = std::get_if<RegistrationOp>(&op.body)) {
        status = ApplyRegistration(registration->registration, outcome.registration);
      } else if (auto* commit = std::get_if<CommitOp>(&op.body)) {
        status = ApplyCommit(commit->commit, outcome.commit);
      } else {
        status = ApplyRetention(std::get<RetentionOp>(op.body).now_unix_ns, outcome.retention);
      }
      if (status.ok()) {
        status = writer_db_->Exec("RELEASE op");
      } else {
        writer_db_->Exec("ROLLBACK TO op").IgnoreError();
        writer_db_->Exec("RELEASE op").IgnoreError();
      }
    }
    outcome.status = status;
    // Later operations of this chain in the same group must not be applied.
    if (!status.ok() && op.chain != nullptr) op.chain->Break();
  }
  bool committed = false;
  if (begin.ok()) {
    const absl::Status commit = writer_db_->Exec("COMMIT");
    committed = commit.ok();
    if (!committed) {
      writer_db_->Exec("ROLLBACK").IgnoreError();
      for (Outcome& outcome : outcomes) {
        if (outcome.status.ok()) {
          outcome.status =
              absl::UnavailableError(absl::StrCat("transaction not committed: ", commit.message()));
        }
      }
    }
  }
  // A failed transaction breaks the chains of all its operations.
  for (size_t i = 0; i < group.size(); ++i) {
    if (!outcomes[i].status.ok() && group[i].chain != nullptr) group[i].chain->Break();
  }
  {
    absl::MutexLock lock(&mu_);
    if (committed) {
      ++stats_.transactions_committed;
    } else {
      ++stats_.transactions_failed;
    }
    stats_.ops_applied += group.size();
    stats_.commit_seconds_sum += absl::ToDoubleSeconds(absl::Now() - started);
  }
  for (size_t i = 0; i < group.size(); ++i) {
    Op& op = group[i];
    Outcome& outcome = outcomes[i];
    if (auto* registration = std::get_if<RegistrationOp>(&op.body)) {
      if (!registration->done) continue;
      if (outcome.status.ok()) {
        registration->done(std::move(outcome.registration));
      } else {
        registration->done(outcome.status);
      }
    } else if (auto* commit = std::get_if<CommitOp>(&op.body)) {
      if (!commit->done) continue;
      if (outcome.status.ok()) {
        commit->done(outcome.commit);
      } else {
        commit->done(outcome.status);
      }
    } else {
      RetentionOp& retention = std::get<RetentionOp>(op.body);
      if (!retention.done) continue;
      if (outcome.status.ok()) {
        retention.done(outcome.retention);
      } else {
        retention.done(outcome.status);
      }
    }
  }
}

absl::StatusOr<uint64_t> SqliteStorage::WriterCursor(const std::string& host_id,
                                                     uint64_t agent_epoch) {
  // The writer connection sees its own uncommitted writes, so a cursor advanced earlier in
  // this transaction is already visible here.
  FLEETPMU_ASSIGN_OR_RETURN(
      SqliteStatement * statement,
      writer_db_->Prepare(
          "SELECT durable_seq FROM ingest_cursors WHERE host_id = ?1 AND agent_epoch = ?2"));
  ScopedReset reset(*statement);
  statement->BindText(1, host_id).Bind(2, ToSql(agent_epoch));
  FLEETPMU_ASSIGN_OR_RETURN(bool row, statement->Step());
  return row ? static_cast<uint64_t>(statement->ColumnInt(0)) : 0;
}

absl::Status SqliteStorage::UpsertHostInfo(const std::string& host_id, const HostInfo& info,
                                           int64_t now_unix_ns, const uint64_t* agent_epoch) {
  HostInfo stored = info;
  stored.set_host_id(host_id);
  const std::string bytes = stored.SerializeAsString();
  if (agent_epoch != nullptr) {
    FLEETPMU_ASSIGN_OR_RETURN(
        SqliteStatement * upsert,
        writer_db_->Prepare(
            "INSERT INTO hosts (host_id, host_info, agent_epoch, first_seen_unix_ns, "
            "last_hello_unix_ns) VALUES (?1, ?2, ?3, ?4, ?4) "
            "ON CONFLICT (host_id) DO UPDATE SET host_info = excluded.host_info, "
            "agent_epoch = excluded.agent_epoch, last_hello_unix_ns = "
            "excluded.last_hello_unix_ns"));
    ScopedReset reset(*upsert);
    upsert->BindText(1, host_id)
        .BindBlob(2, bytes)
        .Bind(3, ToSql(*agent_epoch))
        .Bind(4, now_unix_ns);
    FLEETPMU_RETURN_IF_ERROR(upsert->Run());
  } else {
    FLEETPMU_ASSIGN_OR_RETURN(
        SqliteStatement * upsert,
        writer_db_->Prepare(
            "INSERT INTO hosts (host_id, host_info, agent_epoch, first_seen_unix_ns, "
            "last_hello_unix_ns) VALUES (?1, ?2, 0, ?3, ?3) "
            "ON CONFLICT (host_id) DO UPDATE SET host_info = excluded.host_info"));
    ScopedReset reset(*upsert);
    upsert->BindText(1, host_id).BindBlob(2, bytes).Bind(3, now_unix_ns);
    FLEETPMU_RETURN_IF_ERROR(upsert->Run());
  }
  // A HostInfo without pCPUs carries no PMU facts: keep the ones stored.
  if (info.pcpus_size() == 0) return absl::OkStatus();

  FLEETPMU_ASSIGN_OR_RETURN(SqliteStatement * delete_pcpus,
                            writer_db_->Prepare("DELETE FROM pcpus WHERE host_id = ?1"));
  {
    ScopedReset reset(*delete_pcpus);
    FLEETPMU_RETURN_IF_ERROR(delete_pcpus->BindText(1, host_id).Run());
  }
  FLEETPMU_ASSIGN_OR_RETURN(SqliteStatement * delete_pmus,
                            writer_db_->Prepare("DELETE FROM pmus WHERE host_id = ?1"));
  {
    ScopedReset reset(*delete_pmus);
    FLEETPMU_RETURN_IF_ERROR(delete_pmus->BindText(1, host_id).Run());
  }
  FLEETPMU_ASSIGN_OR_RETURN(
      SqliteStatement * insert_pmu,
      writer_db_->Prepare("INSERT INTO pmus (host_id, pmu_id, num_counters, pmuv3_version, "
                          "pmuver, has_fgt, has_hpmn0, has_p5) "
                          "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"));
  FLEETPMU_ASSIGN_OR_RETURN(
      SqliteStatement * insert_pcpu,
      writer_db_->Prepare(
          "INSERT INTO pcpus (host_id, pcpu, pmu_key, cpu_model) VALUES (?1, ?2, ?3, ?4)"));
  // One pmus row per distinct PMU description.
  std::map<std::tuple<std::string, uint32_t, std::string, uint32_t, bool, bool, bool>, int64_t>
      pmu_keys;
  for (const fleetpmu::v1::PcpuPmu& pcpu : info.pcpus()) {
    const auto key =
        std::make_tuple(pcpu.pmu_id(), pcpu.num_counters(), pcpu.pmuv3_version(), pcpu.pmuver(),
                        pcpu.has_fgt(), pcpu.has_hpmn0(), pcpu.has_p5());
    auto it = pmu_keys.find(key);
    if (it == pmu_keys.end()) {
      ScopedReset reset(*insert_pmu);
      insert_pmu->BindText(1, host_id)
          .BindText(2, pcpu.pmu_id())
          .Bind(3, int64_t{pcpu.num_counters()})
          .BindText(4, pcpu.pmuv3_version())
          .Bind(5, int64_t{pcpu.pmuver()})
          .Bind(6, int64_t{pcpu.has_fgt()})
          .Bind(7, int64_t{pcpu.has_hpmn0()})
          .Bind(8, int64_t{pcpu.has_p5()});
      FLEETPMU_RETURN_IF_ERROR(insert_pmu->Run());
      it = pmu_keys.emplace(key, writer_db_->LastInsertRowId()).first;
    }
    ScopedReset reset(*insert_pcpu);
    insert_pcpu->BindText(1, host_id)
        .Bind(2, int64_t{pcpu.pcpu()})
        .Bind(3, it->second)
        .BindText(4, pcpu.cpu_model());
    FLEETPMU_RETURN_IF_ERROR(insert_pcpu->Run());
  }
  return absl::OkStatus();
}

absl::Status SqliteStorage::ApplyRegistration(const AgentRegistration& registration,
                                              RegistrationResult& out) {
  FLEETPMU_RETURN_IF_ERROR(UpsertHostInfo(registration.host_id, registration.host_info,
                                          registration.now_unix_ns, &registration.agent_epoch));
  FLEETPMU_ASSIGN_OR_RETURN(out.durable_seq,
                            WriterCursor(registration.host_id, registration.agent_epoch));
  FLEETPMU_ASSIGN_OR_RETURN(
      SqliteStatement * vms,
      writer_db_->Prepare("SELECT vm_info FROM vms WHERE host_id = ?1 ORDER BY vm_id"));
  ScopedReset reset(*vms);
  vms->BindText(1, registration.host_id);
  while (true) {
    FLEETPMU_ASSIGN_OR_RETURN(bool row, vms->Step());
    if (!row) break;
    VmInfo vm;
    if (!vm.ParseFromString(vms->ColumnBlob(0))) {
      return absl::DataLossError(
          absl::StrCat("vms: unreadable VmInfo of host ", registration.host_id));
    }
    out.vms.push_back(std::move(vm));
  }
  return absl::OkStatus();
}

absl::Status SqliteStorage::ApplyCommit(const IngestCommit& commit, CommitResult& out) {
  FLEETPMU_ASSIGN_OR_RETURN(const uint64_t cursor,
                            WriterCursor(commit.host_id, commit.agent_epoch));
  if (commit.seq <= cursor) {
    out.outcome = CommitResult::Outcome::kDuplicate;
    out.durable_seq = cursor;
    return absl::OkStatus();
  }
  if (commit.batch != nullptr) {
    FLEETPMU_RETURN_IF_ERROR(StoreBatch(commit.host_id, *commit.batch, commit.now_unix_ns));
    out.outcome = CommitResult::Outcome::kStored;
  } else {
    FLEETPMU_ASSIGN_OR_RETURN(
        SqliteStatement * reject,
        writer_db_->Prepare("INSERT OR REPLACE INTO rejected_batches (host_id, agent_epoch, seq, "
                            "code, reason, rejected_unix_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"));
    ScopedReset reset(*reject);
    reject->BindText(1, commit.host_id)
        .Bind(2, ToSql(commit.agent_epoch))
        .Bind(3, ToSql(commit.seq))
        .Bind(4, int64_t{commit.rejection_code})
        .BindText(5, commit.rejection_reason)
        .Bind(6, commit.now_unix_ns);
    FLEETPMU_RETURN_IF_ERROR(reject->Run());
    out.outcome = CommitResult::Outcome::kRejectionRecorded;
  }
  FLEETPMU_ASSIGN_OR_RETURN(
      SqliteStatement * advance,
      writer_db_->Prepare(
          "INSERT INTO ingest_cursors (host_id, agent_epoch, durable_seq, updated_unix_ns) "
          "VALUES (?1, ?2, ?3, ?4) ON CONFLICT (host_id, agent_epoch) DO UPDATE SET "
          "durable_seq = MAX(durable_seq, excluded.durable_seq), "
          "updated_unix_ns = excluded.updated_unix_ns"));
  ScopedReset reset(*advance);
  advance->BindText(1, commit.host_id)
      .Bind(2, ToSql(commit.agent_epoch))
      .Bind(3, ToSql(commit.seq))
      .Bind(4, commit.now_unix_ns);
  FLEETPMU_RETURN_IF_ERROR(advance->Run());
  out.durable_seq = commit.seq;
  return absl::OkStatus();
}

absl::Status SqliteStorage::StoreBatch(const std::string& host_id, const Batch& batch,
                                       int64_t now_unix_ns) {
  SqliteDb& db = *writer_db_;
  // A batch may arrive for a host that never said hello through this storage (tools, tests):
  // give it a row so that joins find it.
  {
    HostInfo minimal;
    minimal.set_host_id(host_id);
    FLEETPMU_ASSIGN_OR_RETURN(
        SqliteStatement * ensure,
        db.Prepare("INSERT OR IGNORE INTO hosts (host_id, host_info, agent_epoch, "
                   "first_seen_unix_ns, last_hello_unix_ns) VALUES (?1, ?2, ?3, ?4, ?4)"));
    ScopedReset reset(*ensure);
    ensure->BindText(1, host_id)
        .BindBlob(2, minimal.SerializeAsString())
        .Bind(3, ToSql(batch.agent_epoch()))
        .Bind(4, now_unix_ns);
    FLEETPMU_RETURN_IF_ERROR(ensure->Run());
  }

  FLEETPMU_ASSIGN_OR_RETURN(
      SqliteStatement * upsert_tenant,
      db.Prepare("INSERT INTO tenants (tenant_id, first_seen_unix_ns, last_seen_unix_ns) "
                 "VALUES (?1, ?2, ?2) ON CONFLICT (tenant_id) DO UPDATE SET "
                 "last_seen_unix_ns = MAX(last_seen_unix_ns, excluded.last_seen_unix_ns)"));
  FLEETPMU_ASSIGN_OR_RETURN(
      SqliteStatement * upsert_vm,
      db.Prepare("INSERT INTO vms (host_id, vm_id, tenant_id, vcpus, guest_counters, policy, "
                 "implementation, vm_info, first_seen_unix_ns, last_seen_unix_ns) "
                 "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9) "
                 "ON CONFLICT (host_id, vm_id) DO UPDATE SET tenant_id = excluded.tenant_id, "
                 "vcpus = excluded.vcpus, guest_counters = excluded.guest_counters, "
                 "policy = excluded.policy, implementation = excluded.implementation, "
                 "vm_info = excluded.vm_info, "
                 "last_seen_unix_ns = MAX(last_seen_unix_ns, excluded.last_seen_unix_ns)"));
  FLEETPMU_ASSIGN_OR_RETURN(
      SqliteStatement * insert_vcpu,
      db.Prepare("INSERT INTO vcpu_stats (host_id, tenant_id, vm_id, vcpu, start_unix_ns, "
                 "end_unix_ns, stats) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"));
  FLEETPMU_ASSIGN_OR_RETURN(
      SqliteStatement * insert_lost,
      db.Prepare("INSERT INTO lost_overflows (host_id, tenant_id, reason, start_unix_ns, "
                 "end_unix_ns, count) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"));
  FLEETPMU_ASSIGN_OR_RETURN(
      SqliteStatement * insert_event,
      db.Prepare("INSERT INTO overflow_events (host_id, time_unix_ns, pcpu, counter, owner_kind, "
                 "vm_id, vcpu, tenant_id, host_event, event_code, overflow_class, lost_reason, "
                 "wrap_to_handler_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, "
                 "?13)"));
  FLEETPMU_ASSIGN_OR_RETURN(
      SqliteStatement * insert_ownership,
      db.Prepare("INSERT INTO ownership_intervals (host_id, pcpu, start_unix_ns, end_unix_ns, "
                 "owner_kind, tenant_id, vm_id, vcpu, counter_mask, resident_ns) "
                 "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"));
  FLEETPMU_ASSIGN_OR_RETURN(
      SqliteStatement * insert_host_counters,
      db.Prepare("INSERT INTO host_counter_stats (host_id, pcpu, start_unix_ns, end_unix_ns, "
                 "host_events, events_moved_at_load, events_squeezed_at_load, enabled_ns, "
                 "running_ns, delivered, coalesced, lost, pending) "
                 "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"));
  FLEETPMU_ASSIGN_OR_RETURN(
      SqliteStatement * insert_drop,
      db.Prepare("INSERT INTO telemetry_drops (host_id, source, stage, start_unix_ns, "
                 "end_unix_ns, count, bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"));

  auto store_drop = [&](const fleetpmu::v1::TelemetryDrops& drop,
                        absl::string_view source) -> absl::Status {
    ScopedReset reset(*insert_drop);
    insert_drop->BindText(1, host_id)
        .BindText(2, source)
        .Bind(3, int64_t{drop.stage()})
        .Bind(4, drop.interval().start_unix_ns())
        .Bind(5, drop.interval().end_unix_ns())
        .Bind(6, ToSql(drop.count()))
        .Bind(7, ToSql(drop.bytes()));
    return insert_drop->Run();
  };

  int64_t last_report_end = 0;
  for (const TelemetryReport& report : batch.reports()) {
    const int64_t start = report.interval().start_unix_ns();
    const int64_t end = report.interval().end_unix_ns();
    last_report_end = std::max(last_report_end, end);
    if (report.has_host_info()) {
      FLEETPMU_RETURN_IF_ERROR(UpsertHostInfo(host_id, report.host_info(), now_unix_ns, nullptr));
    }
    for (const VmInfo& vm : report.vms()) {
      {
        ScopedReset reset(*upsert_tenant);
        FLEETPMU_RETURN_IF_ERROR(upsert_tenant->BindText(1, vm.tenant_id()).Bind(2, end).Run());
      }
      ScopedReset reset(*upsert_vm);
      upsert_vm->BindText(1, host_id)
          .BindText(2, vm.vm_id())
          .BindText(3, vm.tenant_id())
          .Bind(4, int64_t{vm.vcpus()})
          .Bind(5, int64_t{vm.guest_counters()})
          .Bind(6, int64_t{vm.policy()})
          .Bind(7, int64_t{vm.implementation()})
          .BindBlob(8, vm.SerializeAsString())
          .Bind(9, end);
      FLEETPMU_RETURN_IF_ERROR(upsert_vm->Run());
    }

    // Lost wraps per (tenant, reason) over the report interval; '' = host-owned counters.
    std::map<std::pair<std::string, int>, uint64_t> lost;
    for (const VcpuStats& stats : report.vcpu_stats()) {
      ScopedReset reset(*insert_vcpu);
      insert_vcpu->BindText(1, host_id)
          .BindText(2, stats.tenant_id())
          .BindText(3, stats.vm_id())
          .Bind(4, int64_t{stats.vcpu()})
          .Bind(5, stats.interval().start_unix_ns())
          .Bind(6, stats.interval().end_unix_ns())
          .BindBlob(7, stats.SerializeAsString());
      FLEETPMU_RETURN_IF_ERROR(insert_vcpu->Run());
      for (const auto& entry : stats.lost_by_reason()) {
        lost[{stats.tenant_id(), entry.reason()}] += entry.count();
      }
    }
    for (const fleetpmu::v1::HostCounterStats& counters : report.host_counters()) {
      ScopedReset reset(*insert_host_counters);
      insert_host_counters->BindText(1, host_id)
          .Bind(2, int64_t{counters.pcpu()})
          .Bind(3, counters.interval().start_unix_ns())
          .Bind(4, counters.interval().end_unix_ns())
          .Bind(5, int64_t{counters.host_events()})
          .Bind(6, ToSql(counters.events_moved_at_load()))
          .Bind(7, ToSql(counters.events_squeezed_at_load()))
          .Bind(8, ToSql(counters.enabled_ns()))
          .Bind(9, ToSql(counters.running_ns()))
          .Bind(10, ToSql(counters.overflows().delivered()))
          .Bind(11, ToSql(counters.overflows().coalesced()))
          .Bind(12, ToSql(counters.overflows().lost()))
          .Bind(13, ToSql(counters.overflows().pending()));
      FLEETPMU_RETURN_IF_ERROR(insert_host_counters->Run());
      for (const auto& entry : counters.lost_by_reason()) {
        lost[{std::string(), entry.reason()}] += entry.count();
      }
    }
    for (const auto& [key, count] : lost) {
      ScopedReset reset(*insert_lost);
      insert_lost->BindText(1, host_id)
          .BindText(2, key.first)
          .Bind(3, int64_t{key.second})
          .Bind(4, start)
          .Bind(5, end)
          .Bind(6, ToSql(count));
      FLEETPMU_RETURN_IF_ERROR(insert_lost->Run());
    }
    for (const fleetpmu::v1::OverflowEvent& event : report.overflow_events()) {
      ScopedReset reset(*insert_event);
      insert_event->BindText(1, host_id)
          .Bind(2, event.time_unix_ns())
          .Bind(3, int64_t{event.pcpu()})
          .Bind(4, int64_t{event.counter()})
          .Bind(5, int64_t{event.owner_kind()})
          .BindText(6, event.vm_id())
          .Bind(7, int64_t{event.vcpu()})
          .BindText(8, event.tenant_id())
          .BindText(9, event.host_event())
          .Bind(10, int64_t{event.event_code()})
          .Bind(11, int64_t{event.overflow_class()})
          .Bind(12, int64_t{event.lost_reason()})
          .Bind(13, ToSql(event.wrap_to_handler_ns()));
      FLEETPMU_RETURN_IF_ERROR(insert_event->Run());
    }
    for (const fleetpmu::v1::OwnershipSample& sample : report.ownership()) {
      for (const fleetpmu::v1::OwnerResidency& residency : sample.residencies()) {
        ScopedReset reset(*insert_ownership);
        insert_ownership->BindText(1, host_id)
            .Bind(2, int64_t{sample.pcpu()})
            .Bind(3, sample.interval().start_unix_ns())
            .Bind(4, sample.interval().end_unix_ns())
            .Bind(5, int64_t{residency.owner_kind()})
            .BindText(6, residency.tenant_id())
            .BindText(7, residency.vm_id())
            .Bind(8, int64_t{residency.vcpu()})
            .Bind(9, int64_t{residency.counter_mask()})
            .Bind(10, ToSql(residency.resident_ns()));
        FLEETPMU_RETURN_IF_ERROR(insert_ownership->Run());
      }
    }
    for (const fleetpmu::v1::TelemetryDrops& drop : report.drops()) {
      FLEETPMU_RETURN_IF_ERROR(store_drop(drop, "shim"));
    }
  }
  for (const fleetpmu::v1::TelemetryDrops& drop : batch.agent_drops()) {
    FLEETPMU_RETURN_IF_ERROR(store_drop(drop, "agent"));
  }
  FLEETPMU_ASSIGN_OR_RETURN(
      SqliteStatement * last_report,
      db.Prepare("UPDATE hosts SET last_report_unix_ns = MAX(last_report_unix_ns, ?2) "
                 "WHERE host_id = ?1"));
  ScopedReset reset(*last_report);
  return last_report->BindText(1, host_id).Bind(2, last_report_end).Run();
}

absl::Status SqliteStorage::ApplyRetention(int64_t now_unix_ns, RetentionResult& out) {
  SqliteDb& db = *writer_db_;
  const int64_t width = options_.rollup_interval_ns;
  out.raw_cutoff_unix_ns = now_unix_ns - options_.raw_retention_ns;
  out.rollup_cutoff_unix_ns = now_unix_ns - options_.rollup_retention_ns;
  const int64_t raw_cutoff = out.raw_cutoff_unix_ns;

  // vcpu_stats: blobs merged in C++ (maps and histograms), chunk by chunk.
  FLEETPMU_ASSIGN_OR_RETURN(
      SqliteStatement * select_raw,
      db.Prepare("SELECT rowid, host_id, tenant_id, vm_id, vcpu, start_unix_ns, end_unix_ns, "
                 "stats FROM vcpu_stats WHERE start_unix_ns < ?1 ORDER BY start_unix_ns "
                 "LIMIT ?2"));
  FLEETPMU_ASSIGN_OR_RETURN(
      SqliteStatement * select_rollup,
      db.Prepare("SELECT stats, bucket_end_unix_ns FROM vcpu_stats_rollup WHERE host_id = ?1 "
                 "AND vm_id = ?2 AND vcpu = ?3 AND bucket_start_unix_ns = ?4"));
  FLEETPMU_ASSIGN_OR_RETURN(
      SqliteStatement * upsert_rollup,
      db.Prepare("INSERT OR REPLACE INTO vcpu_stats_rollup (host_id, tenant_id, vm_id, vcpu, "
                 "bucket_start_unix_ns, bucket_end_unix_ns, stats) "
                 "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"));
  FLEETPMU_ASSIGN_OR_RETURN(SqliteStatement * delete_raw,
                            db.Prepare("DELETE FROM vcpu_stats WHERE rowid = ?1"));
  while (true) {
    struct Merged {
      std::string tenant_id;
      int64_t bucket_end = 0;
      VcpuStats stats;
    };
    // Key: host_id, vm_id, vcpu, bucket start.
    std::map<std::tuple<std::string, std::string, int64_t, int64_t>, Merged> merged;
    std::vector<int64_t> rowids;
    {
      ScopedReset reset(*select_raw);
      select_raw->Bind(1, raw_cutoff).Bind(2, int64_t{kRollupChunkRows});
      while (true) {
        FLEETPMU_ASSIGN_OR_RETURN(bool row, select_raw->Step());
        if (!row) break;
        rowids.push_back(select_raw->ColumnInt(0));
        VcpuStats stats;
        if (!stats.ParseFromString(select_raw->ColumnBlob(7))) {
          return absl::DataLossError("vcpu_stats: unreadable row during rollup");
        }
        Merged& entry = merged[{select_raw->ColumnText(1), select_raw->ColumnText(3),
                                select_raw->ColumnInt(4), Bucket(select_raw->ColumnInt(5), width)}];
        entry.tenant_id = select_raw->ColumnText(2);
        entry.bucket_end = std::max(entry.bucket_end, select_raw->ColumnInt(6));
        MergeVcpuStats(stats, &entry.stats);
      }
    }
    for (auto& [key, entry] : merged) {
      const auto& [host, vm, vcpu, bucket] = key;
      {
        ScopedReset reset(*select_rollup);
        select_rollup->BindText(1, host).BindText(2, vm).Bind(3, vcpu).Bind(4, bucket);
        FLEETPMU_ASSIGN_OR_RETURN(bool row, select_rollup->Step());
        if (row) {
          VcpuStats existing;
          if (!existing.ParseFromString(select_rollup->ColumnBlob(0))) {
            return absl::DataLossError("vcpu_stats_rollup: unreadable row");
          }
          entry.bucket_end = std::max(entry.bucket_end, select_rollup->ColumnInt(1));
          MergeVcpuStats(entry.stats, &existing);
          entry.stats = std::move(existing);
        }
      }
      ScopedReset reset(*upsert_rollup);
      upsert_rollup->BindText(1, host)
          .BindText(2, entry.tenant_id)
          .BindText(3, vm)
          .Bind(4, vcpu)
          .Bind(5, bucket)
          .Bind(6, entry.bucket_end)
          .BindBlob(7, entry.stats.SerializeAsString());
      FLEETPMU_RETURN_IF_ERROR(upsert_rollup->Run());
    }
    for (int64_t rowid : rowids) {
      ScopedReset reset(*delete_raw);
      FLEETPMU_RETURN_IF_ERROR(delete_raw->Bind(1, rowid).Run());
    }
    out.raw_rows_rolled_up += rowids.size();
    if (rowids.size() < static_cast<size_t>(kRollupChunkRows)) break;
  }

  // The numeric tables roll up in SQL: sum per key and bucket, added onto existing buckets.
  struct SqlRollup {
    const char* insert;
    const char* remove;
  };
  static constexpr SqlRollup kSqlRollups[] = {
      {"INSERT INTO ownership_rollup (host_id, pcpu, bucket_start_unix_ns, bucket_end_unix_ns, "
       "owner_kind, tenant_id, vm_id, vcpu, counter_mask, resident_ns) "
       "SELECT host_id, pcpu, start_unix_ns - (start_unix_ns % ?2), MAX(end_unix_ns), "
       "owner_kind, tenant_id, vm_id, vcpu, counter_mask, SUM(resident_ns) "
       "FROM ownership_intervals WHERE start_unix_ns < ?1 "
       "GROUP BY host_id, pcpu, start_unix_ns - (start_unix_ns % ?2), owner_kind, tenant_id, "
       "vm_id, vcpu, counter_mask "
       "ON CONFLICT (host_id, pcpu, bucket_start_unix_ns, owner_kind, tenant_id, vm_id, vcpu, "
       "counter_mask) DO UPDATE SET resident_ns = resident_ns + excluded.resident_ns, "
       "bucket_end_unix_ns = MAX(bucket_end_unix_ns, excluded.bucket_end_unix_ns)",
       "DELETE FROM ownership_intervals WHERE start_unix_ns < ?1"},
      {"INSERT INTO lost_overflows_rollup (host_id, tenant_id, reason, bucket_start_unix_ns, "
       "bucket_end_unix_ns, count) "
       "SELECT host_id, tenant_id, reason, start_unix_ns - (start_unix_ns % ?2), "
       "MAX(end_unix_ns), SUM(count) FROM lost_overflows WHERE start_unix_ns < ?1 "
       "GROUP BY host_id, tenant_id, reason, start_unix_ns - (start_unix_ns % ?2) "
       "ON CONFLICT (tenant_id, host_id, reason, bucket_start_unix_ns) DO UPDATE SET "
       "count = count + excluded.count, "
       "bucket_end_unix_ns = MAX(bucket_end_unix_ns, excluded.bucket_end_unix_ns)",
       "DELETE FROM lost_overflows WHERE start_unix_ns < ?1"},
      {"INSERT INTO host_counter_rollup (host_id, pcpu, bucket_start_unix_ns, "
       "bucket_end_unix_ns, host_events, events_moved_at_load, events_squeezed_at_load, "
       "enabled_ns, running_ns, delivered, coalesced, lost, pending) "
       "SELECT host_id, pcpu, start_unix_ns - (start_unix_ns % ?2), MAX(end_unix_ns), "
       "MAX(host_events), SUM(events_moved_at_load), SUM(events_squeezed_at_load), "
       "SUM(enabled_ns), SUM(running_ns), SUM(delivered), SUM(coalesced), SUM(lost), "
       "SUM(pending) FROM host_counter_stats WHERE start_unix_ns < ?1 "
       "GROUP BY host_id, pcpu, start_unix_ns - (start_unix_ns % ?2) "
       "ON CONFLICT (host_id, pcpu, bucket_start_unix_ns) DO UPDATE SET "
       "bucket_end_unix_ns = MAX(bucket_end_unix_ns, excluded.bucket_end_unix_ns), "
       "host_events = MAX(host_events, excluded.host_events), "
       "events_moved_at_load = events_moved_at_load + excluded.events_moved_at_load, "
       "events_squeezed_at_load = events_squeezed_at_load + excluded.events_squeezed_at_load, "
       "enabled_ns = enabled_ns + excluded.enabled_ns, "
       "running_ns = running_ns + excluded.running_ns, "
       "delivered = delivered + excluded.delivered, "
       "coalesced = coalesced + excluded.coalesced, lost = lost + excluded.lost, "
       "pending = pending + excluded.pending",
       "DELETE FROM host_counter_stats WHERE start_unix_ns < ?1"},
      {"INSERT INTO telemetry_drops_rollup (host_id, source, stage, bucket_start_unix_ns, "
       "bucket_end_unix_ns, count, bytes) "
       "SELECT host_id, source, stage, start_unix_ns - (start_unix_ns % ?2), MAX(end_unix_ns), "
       "SUM(count), SUM(bytes) FROM telemetry_drops WHERE start_unix_ns < ?1 "
       "GROUP BY host_id, source, stage, start_unix_ns - (start_unix_ns % ?2) "
       "ON CONFLICT (host_id, source, stage, bucket_start_unix_ns) DO UPDATE SET "
       "count = count + excluded.count, bytes = bytes + excluded.bytes, "
       "bucket_end_unix_ns = MAX(bucket_end_unix_ns, excluded.bucket_end_unix_ns)",
       "DELETE FROM telemetry_drops WHERE start_unix_ns < ?1"},
  };
  for (const SqlRollup& rollup : kSqlRollups) {
    FLEETPMU_ASSIGN_OR_RETURN(SqliteStatement * insert, db.Prepare(rollup.insert));
    {
      ScopedReset reset(*insert);
      FLEETPMU_RETURN_IF_ERROR(insert->Bind(1, raw_cutoff).Bind(2, width).Run());
    }
    FLEETPMU_ASSIGN_OR_RETURN(SqliteStatement * remove, db.Prepare(rollup.remove));
    ScopedReset reset(*remove);
    FLEETPMU_RETURN_IF_ERROR(remove->Bind(1, raw_cutoff).Run());
    out.raw_rows_rolled_up += static_cast<uint64_t>(db.Changes());
  }

  // Plain deletions: raw-only data past the raw window, rollups past theirs, cursors of
  // epochs that are neither current nor updated within the rollup window.
  struct Deletion {
    const char* sql;
    bool raw;  // cutoff: raw (true) or rollup (false)
  };
  static constexpr Deletion kDeletions[] = {
      {"DELETE FROM overflow_events WHERE time_unix_ns < ?1", true},
      {"DELETE FROM rejected_batches WHERE rejected_unix_ns < ?1", true},
      {"DELETE FROM vcpu_stats_rollup WHERE bucket_start_unix_ns < ?1", false},
      {"DELETE FROM ownership_rollup WHERE bucket_start_unix_ns < ?1", false},
      {"DELETE FROM lost_overflows_rollup WHERE bucket_start_unix_ns < ?1", false},
      {"DELETE FROM host_counter_rollup WHERE bucket_start_unix_ns < ?1", false},
      {"DELETE FROM telemetry_drops_rollup WHERE bucket_start_unix_ns < ?1", false},
      {"DELETE FROM ingest_cursors WHERE updated_unix_ns < ?1 AND NOT EXISTS (SELECT 1 FROM "
       "hosts h WHERE h.host_id = ingest_cursors.host_id AND "
       "h.agent_epoch = ingest_cursors.agent_epoch)",
       false},
  };
  for (const Deletion& deletion : kDeletions) {
    FLEETPMU_ASSIGN_OR_RETURN(SqliteStatement * remove, db.Prepare(deletion.sql));
    ScopedReset reset(*remove);
    FLEETPMU_RETURN_IF_ERROR(
        remove->Bind(1, deletion.raw ? raw_cutoff : out.rollup_cutoff_unix_ns).Run());
    out.rows_deleted += static_cast<uint64_t>(db.Changes());
  }
  return absl::OkStatus();
}

}  // namespace fleetpmu::server
