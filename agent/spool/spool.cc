#include "agent/spool/spool.h"

#include <sqlite3.h>

#include <chrono>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"

namespace fleetpmu::agent {
namespace {

constexpr int kSchemaVersion = 3;

// Owns one prepared statement.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) { rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr); }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  bool ok() const { return rc_ == SQLITE_OK; }
  sqlite3_stmt* get() { return stmt_; }

 private:
  sqlite3_stmt* stmt_ = nullptr;
  int rc_ = SQLITE_ERROR;
};

absl::Status SqliteError(sqlite3* db, absl::string_view what) {
  return absl::InternalError(absl::StrCat("spool: ", what, ": ", sqlite3_errmsg(db)));
}

uint64_t FreshEpoch() {
  // Distinct across restarts that lose the file: time in the high bits, randomness below.
  const uint64_t ns = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
  std::random_device rd;
  return ((ns / 1000000) << 16) ^ (rd() & 0xFFFF) ^ 1;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Spool>> Spool::Open(const SpoolOptions& options) {
  if (options.path.empty()) return absl::InvalidArgumentError("spool: empty path");
  std::unique_ptr<Spool> spool(new Spool());
  if (absl::Status s = spool->Init(options); !s.ok()) return s;
  return spool;
}

Spool::~Spool() {
  absl::MutexLock lock(&mu_);
  if (db_ != nullptr) sqlite3_close(db_);
}

absl::Status Spool::Exec(const char* sql) {
  char* error = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    absl::Status s = absl::InternalError(absl::StrCat("spool ", path_, ": ", error ? error : "error", " in: ", sql));
    sqlite3_free(error);
    return s;
  }
  return absl::OkStatus();
}

absl::Status Spool::Init(const SpoolOptions& options) {
  absl::MutexLock lock(&mu_);
  path_ = options.path;
  max_bytes_ = options.max_bytes;
  policy_ = options.overflow_policy;
  if (sqlite3_open_v2(path_.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    absl::Status s = absl::UnavailableError(absl::StrCat("spool: cannot open ", path_, ": ",
                                                         db_ ? sqlite3_errmsg(db_) : "out of memory"));
    return s;
  }
  sqlite3_busy_timeout(db_, 5000);
  // WAL for concurrent readers; FULL so that a committed batch survives a crash of the machine.
  if (absl::Status s = Exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"); !s.ok()) return s;
  int version = 0;
  {
    Statement st(db_, "PRAGMA user_version");
    if (!st.ok() || sqlite3_step(st.get()) != SQLITE_ROW) return SqliteError(db_, "reading user_version");
    version = sqlite3_column_int(st.get(), 0);
  }
  if (version > kSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrCat("spool ", path_, " has schema version ", version,
                                                      ", newer than this agent's ", kSchemaVersion));
  }
  if (version == 0) {
    const uint64_t epoch = options.new_epoch != 0 ? options.new_epoch : FreshEpoch();
    const std::string create = absl::StrCat(
        "BEGIN IMMEDIATE;"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
        "CREATE TABLE batches (seq INTEGER PRIMARY KEY, size INTEGER NOT NULL, body BLOB NOT NULL);"
        "INSERT INTO meta VALUES ('epoch', ", static_cast<int64_t>(epoch & 0x7FFFFFFFFFFFFFFFull), "), ('next_seq', 1),"
        " ('dropped_batches', 0), ('dropped_bytes', 0), ('unreported_batches', 0), ('unreported_bytes', 0);"
        "PRAGMA user_version = 1;"
        "COMMIT;");
    if (absl::Status s = Exec(create.c_str()); !s.ok()) return s;
    version = 1;
  }
  if (version == 1) {
    // v2: per-shim cursors, committed with the batch that carries the report.
    if (absl::Status s = Exec("BEGIN IMMEDIATE;"
                              "CREATE TABLE shim_cursors (shim_id TEXT NOT NULL, shim_epoch INTEGER NOT NULL,"
                              " seq INTEGER NOT NULL, PRIMARY KEY (shim_id, shim_epoch));"
                              "PRAGMA user_version = 2;"
                              "COMMIT;");
        !s.ok()) {
      return s;
    }
    version = 2;
  }
  if (version == 2) {
    // v3: facts about the host that must outlive a restart (the shims' HostInfo).
    if (absl::Status s = Exec("BEGIN IMMEDIATE;"
                              "CREATE TABLE facts (key TEXT PRIMARY KEY, value BLOB NOT NULL);"
                              "PRAGMA user_version = 3;"
                              "COMMIT;");
        !s.ok()) {
      return s;
    }
  }
  return LoadState();
}

absl::Status Spool::LoadState() {
  Statement meta(db_, "SELECT key, value FROM meta");
  if (!meta.ok()) return SqliteError(db_, "reading meta");
  while (sqlite3_step(meta.get()) == SQLITE_ROW) {
    const std::string key = reinterpret_cast<const char*>(sqlite3_column_text(meta.get(), 0));
    const uint64_t value = static_cast<uint64_t>(sqlite3_column_int64(meta.get(), 1));
    if (key == "epoch") epoch_ = value;
    else if (key == "next_seq") stats_.next_seq = value;
    else if (key == "dropped_batches") stats_.dropped_batches = value;
    else if (key == "dropped_bytes") stats_.dropped_bytes = value;
    else if (key == "unreported_batches") unreported_batches_ = value;
    else if (key == "unreported_bytes") unreported_bytes_ = value;
  }
  Statement totals(db_, "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM batches");
  if (!totals.ok() || sqlite3_step(totals.get()) != SQLITE_ROW) return SqliteError(db_, "counting batches");
  stats_.batches = static_cast<uint64_t>(sqlite3_column_int64(totals.get(), 0));
  stats_.bytes = static_cast<uint64_t>(sqlite3_column_int64(totals.get(), 1));
  if (epoch_ == 0) return absl::DataLossError(absl::StrCat("spool ", path_, " has no epoch"));
  return absl::OkStatus();
}

absl::Status Spool::SaveCounters() {
  const std::string sql = absl::StrCat(
      "UPDATE meta SET value = CASE key"
      " WHEN 'next_seq' THEN ", stats_.next_seq,
      " WHEN 'dropped_batches' THEN ", stats_.dropped_batches,
      " WHEN 'dropped_bytes' THEN ", stats_.dropped_bytes,
      " WHEN 'unreported_batches' THEN ", unreported_batches_,
      " WHEN 'unreported_bytes' THEN ", unreported_bytes_,
      " ELSE value END;");
  return Exec(sql.c_str());
}

absl::Status Spool::DropOldestFor(uint64_t incoming) {
  while (stats_.bytes + incoming > max_bytes_ && stats_.batches > 0) {
    Statement oldest(db_, "SELECT seq, size, body FROM batches ORDER BY seq LIMIT 1");
    if (!oldest.ok() || sqlite3_step(oldest.get()) != SQLITE_ROW) return SqliteError(db_, "finding the oldest batch");
    const int64_t seq = sqlite3_column_int64(oldest.get(), 0);
    const uint64_t size = static_cast<uint64_t>(sqlite3_column_int64(oldest.get(), 1));
    v1::Batch dropped;
    if (dropped.ParseFromArray(sqlite3_column_blob(oldest.get(), 2), sqlite3_column_bytes(oldest.get(), 2))) {
      RequeueCarriedDrops(dropped);
    }
    Statement del(db_, "DELETE FROM batches WHERE seq = ?");
    sqlite3_bind_int64(del.get(), 1, seq);
    if (!del.ok() || sqlite3_step(del.get()) != SQLITE_DONE) return SqliteError(db_, "dropping the oldest batch");
    --stats_.batches;
    stats_.bytes -= size;
    ++stats_.dropped_batches;
    stats_.dropped_bytes += size;
    ++unreported_batches_;
    unreported_bytes_ += size;
  }
  return absl::OkStatus();
}

void Spool::RequeueCarriedDrops(const v1::Batch& batch) {
  // A batch that goes may carry the report of earlier spool drops (TakeDrops() handed them to
  // it): they go back to the unreported counters so that the next batch tells the server.
  for (const v1::TelemetryDrops& carried : batch.agent_drops()) {
    if (carried.stage() != v1::DROP_STAGE_AGENT_SPOOL) continue;
    unreported_batches_ += carried.count();
    unreported_bytes_ += carried.bytes();
  }
}

absl::Status Spool::RollBack(absl::Status cause) {
  (void)Exec("ROLLBACK;");
  (void)LoadState();  // in-memory counters follow what is on disk
  return cause;
}

absl::StatusOr<uint64_t> Spool::SpooledShimSeq(const std::string& shim_id, uint64_t shim_epoch) {
  absl::MutexLock lock(&mu_);
  Statement st(db_, "SELECT seq FROM shim_cursors WHERE shim_id = ? AND shim_epoch = ?");
  sqlite3_bind_text(st.get(), 1, shim_id.data(), static_cast<int>(shim_id.size()), SQLITE_STATIC);
  sqlite3_bind_int64(st.get(), 2, static_cast<int64_t>(shim_epoch));
  if (!st.ok()) return SqliteError(db_, "reading a shim cursor");
  const int rc = sqlite3_step(st.get());
  if (rc == SQLITE_ROW) return static_cast<uint64_t>(sqlite3_column_int64(st.get(), 0));
  if (rc == SQLITE_DONE) return 0u;
  return SqliteError(db_, "reading a shim cursor");
}

absl::StatusOr<uint64_t> Spool::Append(v1::Batch batch, int64_t now_unix_ns, const ShimCursor* cursor) {
  absl::MutexLock lock(&mu_);
  return AppendLocked(std::move(batch), now_unix_ns, cursor);
}

absl::StatusOr<uint64_t> Spool::AppendPendingDrops(int64_t now_unix_ns) {
  absl::MutexLock lock(&mu_);
  if (unreported_batches_ == 0) return 0u;
  return AppendLocked(v1::Batch(), now_unix_ns, nullptr);
}

void Spool::AttachPendingDrops(v1::Batch& batch, int64_t now_unix_ns) {
  if (unreported_batches_ == 0) return;
  v1::TelemetryDrops* drops = batch.add_agent_drops();
  drops->set_stage(v1::DROP_STAGE_AGENT_SPOOL);
  drops->set_count(unreported_batches_);
  drops->set_bytes(unreported_bytes_);
  // When the drops began is known only if it was since this process started; else "just now".
  const int64_t since = first_unreported_drop_unix_ns_ != 0 && first_unreported_drop_unix_ns_ < now_unix_ns
                            ? first_unreported_drop_unix_ns_
                            : now_unix_ns - 1;
  drops->mutable_interval()->set_start_unix_ns(since);
  drops->mutable_interval()->set_end_unix_ns(now_unix_ns);
  unreported_batches_ = 0;  // on disk with this batch's transaction; RollBack() reloads them
  unreported_bytes_ = 0;
  first_unreported_drop_unix_ns_ = 0;
}

absl::StatusOr<uint64_t> Spool::AppendLocked(v1::Batch batch, int64_t now_unix_ns, const ShimCursor* cursor) {
  const uint64_t seq = stats_.next_seq;
  batch.set_agent_epoch(epoch_);
  batch.set_seq(seq);
  batch.set_created_unix_ns(now_unix_ns);
  if (absl::Status s = Exec("BEGIN IMMEDIATE;"); !s.ok()) return s;
  AttachPendingDrops(batch, now_unix_ns);
  std::string body;
  if (!batch.SerializeToString(&body)) return RollBack(absl::InternalError("spool: cannot serialize batch"));
  const uint64_t size = body.size();
  if (stats_.bytes + size > max_bytes_) {
    if (policy_ == v1::SPOOL_OVERFLOW_POLICY_DROP_NEWEST || size > max_bytes_) {
      RequeueCarriedDrops(batch);
      ++stats_.dropped_batches;
      stats_.dropped_bytes += size;
      ++unreported_batches_;
      unreported_bytes_ += size;
      if (first_unreported_drop_unix_ns_ == 0) first_unreported_drop_unix_ns_ = now_unix_ns;
      if (absl::Status s = SaveCounters(); !s.ok()) return RollBack(s);
      if (absl::Status s = Exec("COMMIT;"); !s.ok()) return RollBack(s);
      return absl::ResourceExhaustedError(absl::StrCat("spool ", path_, " is full (", stats_.bytes, " of ", max_bytes_,
                                                       " bytes): batch of ", size, " bytes dropped"));
    }
    if (absl::Status s = DropOldestFor(size); !s.ok()) return RollBack(s);
    if (first_unreported_drop_unix_ns_ == 0) first_unreported_drop_unix_ns_ = now_unix_ns;
  }
  {
    Statement insert(db_, "INSERT INTO batches (seq, size, body) VALUES (?, ?, ?)");
    sqlite3_bind_int64(insert.get(), 1, static_cast<int64_t>(seq));
    sqlite3_bind_int64(insert.get(), 2, static_cast<int64_t>(size));
    sqlite3_bind_blob(insert.get(), 3, body.data(), static_cast<int>(size), SQLITE_STATIC);
    if (!insert.ok() || sqlite3_step(insert.get()) != SQLITE_DONE) return RollBack(SqliteError(db_, "inserting a batch"));
  }
  if (cursor != nullptr) {
    Statement upsert(db_,
                     "INSERT INTO shim_cursors (shim_id, shim_epoch, seq) VALUES (?, ?, ?)"
                     " ON CONFLICT (shim_id, shim_epoch) DO UPDATE SET seq = excluded.seq");
    sqlite3_bind_text(upsert.get(), 1, cursor->shim_id.data(), static_cast<int>(cursor->shim_id.size()), SQLITE_STATIC);
    sqlite3_bind_int64(upsert.get(), 2, static_cast<int64_t>(cursor->shim_epoch));
    sqlite3_bind_int64(upsert.get(), 3, static_cast<int64_t>(cursor->seq));
    if (!upsert.ok() || sqlite3_step(upsert.get()) != SQLITE_DONE) return RollBack(SqliteError(db_, "advancing a shim cursor"));
  }
  stats_.next_seq = seq + 1;
  ++stats_.batches;
  stats_.bytes += size;
  if (absl::Status s = SaveCounters(); !s.ok()) return RollBack(s);
  if (absl::Status s = Exec("COMMIT;"); !s.ok()) return RollBack(s);
  return seq;
}

absl::StatusOr<std::vector<SpooledBatch>> Spool::ReadAfter(uint64_t after_seq, size_t limit) {
  absl::MutexLock lock(&mu_);
  Statement st(db_, "SELECT seq, body FROM batches WHERE seq > ? ORDER BY seq LIMIT ?");
  sqlite3_bind_int64(st.get(), 1, static_cast<int64_t>(after_seq));
  sqlite3_bind_int64(st.get(), 2, static_cast<int64_t>(limit));
  if (!st.ok()) return SqliteError(db_, "reading batches");
  std::vector<SpooledBatch> out;
  int rc;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
    SpooledBatch b;
    b.seq = static_cast<uint64_t>(sqlite3_column_int64(st.get(), 0));
    const void* blob = sqlite3_column_blob(st.get(), 1);
    b.serialized.assign(static_cast<const char*>(blob), static_cast<size_t>(sqlite3_column_bytes(st.get(), 1)));
    out.push_back(std::move(b));
  }
  if (rc != SQLITE_DONE) return SqliteError(db_, "reading batches");
  return out;
}

absl::Status Spool::Acknowledge(uint64_t seq) {
  absl::MutexLock lock(&mu_);
  Statement del(db_, "DELETE FROM batches WHERE seq <= ?");
  sqlite3_bind_int64(del.get(), 1, static_cast<int64_t>(seq));
  if (!del.ok() || sqlite3_step(del.get()) != SQLITE_DONE) return SqliteError(db_, "deleting acknowledged batches");
  return LoadState();
}

absl::Status Spool::SaveHostInfo(const v1::HostInfo& info) {
  absl::MutexLock lock(&mu_);
  std::string body;
  if (!info.SerializeToString(&body)) return absl::InternalError("spool: cannot serialize HostInfo");
  Statement st(db_, "INSERT INTO facts (key, value) VALUES ('host_info', ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value");
  sqlite3_bind_blob(st.get(), 1, body.data(), static_cast<int>(body.size()), SQLITE_STATIC);
  if (!st.ok() || sqlite3_step(st.get()) != SQLITE_DONE) return SqliteError(db_, "saving the host info");
  return absl::OkStatus();
}

absl::StatusOr<v1::HostInfo> Spool::LoadHostInfo() {
  absl::MutexLock lock(&mu_);
  Statement st(db_, "SELECT value FROM facts WHERE key = 'host_info'");
  if (!st.ok()) return SqliteError(db_, "reading the host info");
  v1::HostInfo info;
  const int rc = sqlite3_step(st.get());
  if (rc == SQLITE_ROW) {
    if (!info.ParseFromArray(sqlite3_column_blob(st.get(), 0), sqlite3_column_bytes(st.get(), 0))) {
      return absl::DataLossError(absl::StrCat("spool ", path_, ": the saved host info is corrupt"));
    }
  } else if (rc != SQLITE_DONE) {
    return SqliteError(db_, "reading the host info");
  }
  return info;
}

absl::StatusOr<std::vector<v1::TelemetryDrops>> Spool::TakeDrops() {
  absl::MutexLock lock(&mu_);
  std::vector<v1::TelemetryDrops> out;
  if (unreported_batches_ == 0) return out;
  v1::TelemetryDrops d;
  d.set_stage(v1::DROP_STAGE_AGENT_SPOOL);
  d.set_count(unreported_batches_);
  d.set_bytes(unreported_bytes_);
  const uint64_t batches = unreported_batches_, bytes = unreported_bytes_;
  unreported_batches_ = 0;
  unreported_bytes_ = 0;
  first_unreported_drop_unix_ns_ = 0;
  if (absl::Status s = SaveCounters(); !s.ok()) {
    unreported_batches_ = batches;
    unreported_bytes_ = bytes;
    return s;
  }
  out.push_back(std::move(d));
  return out;
}

SpoolStats Spool::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace fleetpmu::agent
