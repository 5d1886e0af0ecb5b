// A thin RAII layer over one SQLite connection: open with pragmas, run statements, keep
// prepared statements for the life of the connection. Errors are absl::Status naming the SQL
// step that failed and SQLite's message.
//
// Contract:
//   * SqliteDb owns one sqlite3 connection and every statement it prepared; both are finalized
//     when it is destroyed. Not thread-safe: one thread uses a connection at a time (SQLite's
//     own rule for a connection opened with SQLITE_OPEN_NOMUTEX).
//   * Prepare(sql) caches: the same SQL text returns the same statement, reset and with its
//     bindings cleared, so hot paths pay for parsing once.
//   * A Statement reference stays valid as long as the SqliteDb lives. Use ScopedReset (or
//     Reset()) when done so that a read statement does not hold a WAL snapshot open.
#ifndef FLEETPMU_SERVER_STORAGE_SQLITE_DB_H_
#define FLEETPMU_SERVER_STORAGE_SQLITE_DB_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

struct sqlite3;
struct sqlite3_stmt;

namespace fleetpmu::server {

// One prepared statement. Parameters are 1-based as in SQLite; columns 0-based.
class SqliteStatement {
 public:
  SqliteStatement(sqlite3* db, sqlite3_stmt* stmt, std::string sql);
  ~SqliteStatement();
  SqliteStatement(const SqliteStatement&) = delete;
  SqliteStatement& operator=(const SqliteStatement&) = delete;

  SqliteStatement& Bind(int index, int64_t value);
  SqliteStatement& Bind(int index, double value);
  // Text is copied by SQLite (SQLITE_TRANSIENT).
  SqliteStatement& BindText(int index, absl::string_view value);
  SqliteStatement& BindBlob(int index, absl::string_view bytes);
  SqliteStatement& BindNull(int index);

  // Runs one step: true = a row is available, false = done.
  absl::StatusOr<bool> Step();
  // Steps to completion, for statements that return no rows.
  absl::Status Run();
  // Resets the statement and clears its bindings.
  void Reset();

  int64_t ColumnInt(int column) const;
  double ColumnDouble(int column) const;
  std::string ColumnText(int column) const;
  std::string ColumnBlob(int column) const;
  bool ColumnIsNull(int column) const;

  const std::string& sql() const { return sql_; }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_;
  std::string sql_;
  // The first bind error since the last Reset (reported by Step, so binders can chain).
  absl::Status bind_status_;
};

// Resets a statement when it goes out of scope.
class ScopedReset {
 public:
  explicit ScopedReset(SqliteStatement& statement) : statement_(statement) {}
  ~ScopedReset() { statement_.Reset(); }
  ScopedReset(const ScopedReset&) = delete;
  ScopedReset& operator=(const ScopedReset&) = delete;

 private:
  SqliteStatement& statement_;
};

class SqliteDb {
 public:
  enum class Mode { kReadWrite, kReadOnly };

  // Opens (creating it in kReadWrite mode) the database at `path` and sets busy_timeout.
  static absl::StatusOr<std::unique_ptr<SqliteDb>> Open(const std::string& path, Mode mode);
  ~SqliteDb();
  SqliteDb(const SqliteDb&) = delete;
  SqliteDb& operator=(const SqliteDb&) = delete;

  // Runs one or more statements that return no rows (schema, pragmas, BEGIN/COMMIT).
  absl::Status Exec(absl::string_view sql);
  // Runs a statement returning one integer (e.g. "PRAGMA user_version").
  absl::StatusOr<int64_t> QueryInt(absl::string_view sql);
  // A cached prepared statement for `sql`, reset.
  absl::StatusOr<SqliteStatement*> Prepare(absl::string_view sql);

  // Rows changed by the last INSERT/UPDATE/DELETE; rowid of the last INSERT.
  int64_t Changes() const;
  int64_t LastInsertRowId() const;

  sqlite3* handle() const { return db_; }
  const std::string& path() const { return path_; }

 private:
  SqliteDb(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}

  sqlite3* db_;
  std::string path_;
  absl::flat_hash_map<std::string, std::unique_ptr<SqliteStatement>> statements_;
};

// "sqlite: <what>: <sqlite message> (code N)" as an Internal status, or Unavailable for
// SQLITE_BUSY / SQLITE_FULL / SQLITE_IOERR, which a caller may retry later.
absl::Status SqliteError(sqlite3* db, int code, absl::string_view what);

}  // namespace fleetpmu::server

#endif  // FLEETPMU_SERVER_STORAGE_SQLITE_DB_H_
