#include "server/storage/sqlite_db.h"

#include <sqlite3.h>

#include <utility>

#include "absl/strings/str_cat.h"

namespace fleetpmu::server {

absl::Status SqliteError(sqlite3* db, int code, absl::string_view what) {
  const char* message = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(code);
  std::string text = absl::StrCat("sqlite: ", what, ": ", message, " (code ", code, ")");
  switch (code & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
      return absl::UnavailableError(text);
    default:
      return absl::InternalError(text);
  }
}

SqliteStatement::SqliteStatement(sqlite3* db, sqlite3_stmt* stmt, std::string sql)
    : db_(db), stmt_(stmt), sql_(std::move(sql)) {}

SqliteStatement::~SqliteStatement() { sqlite3_finalize(stmt_); }

namespace {

// Keeps the first error of a chain of binds.
void Note(absl::Status& status, sqlite3* db, int code, const std::string& sql, int index) {
  if (code == SQLITE_OK || !status.ok()) return;
  status = SqliteError(db, code, absl::StrCat("bind parameter ", index, " of \"", sql, "\""));
}

}  // namespace

SqliteStatement& SqliteStatement::Bind(int index, int64_t value) {
  Note(bind_status_, db_, sqlite3_bind_int64(stmt_, index, value), sql_, index);
  return *this;
}

SqliteStatement& SqliteStatement::Bind(int index, double value) {
  Note(bind_status_, db_, sqlite3_bind_double(stmt_, index, value), sql_, index);
  return *this;
}

SqliteStatement& SqliteStatement::BindText(int index, absl::string_view value) {
  Note(bind_status_, db_,
       sqlite3_bind_text64(stmt_, index, value.data(), value.size(), SQLITE_TRANSIENT, SQLITE_UTF8),
       sql_, index);
  return *this;
}

SqliteStatement& SqliteStatement::BindBlob(int index, absl::string_view bytes) {
  // A zero-length blob must still be a blob, not NULL: give SQLite a non-null pointer.
  static const char kEmpty = 0;
  Note(bind_status_, db_,
       sqlite3_bind_blob64(stmt_, index, bytes.empty() ? &kEmpty : bytes.data(), bytes.size(),
                           SQLITE_TRANSIENT),
       sql_, index);
  return *this;
}

SqliteStatement& SqliteStatement::BindNull(int index) {
  Note(bind_status_, db_, sqlite3_bind_null(stmt_, index), sql_, index);
  return *this;
}

absl::StatusOr<bool> SqliteStatement::Step() {
  if (!bind_status_.ok()) return bind_status_;
  const int code = sqlite3_step(stmt_);
  if (code == SQLITE_ROW) return true;
  if (code == SQLITE_DONE) return false;
  return SqliteError(db_, code, absl::StrCat("step \"", sql_, "\""));
}

absl::Status SqliteStatement::Run() {
  while (true) {
    absl::StatusOr<bool> row = Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::OkStatus();
  }
}

void SqliteStatement::Reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
  bind_status_ = absl::OkStatus();
}

int64_t SqliteStatement::ColumnInt(int column) const { return sqlite3_column_int64(stmt_, column); }

double SqliteStatement::ColumnDouble(int column) const {
  return sqlite3_column_double(stmt_, column);
}

std::string SqliteStatement::ColumnText(int column) const {
  const unsigned char* text = sqlite3_column_text(stmt_, column);
  if (text == nullptr) return std::string();
  return std::string(reinterpret_cast<const char*>(text),
                     static_cast<size_t>(sqlite3_column_bytes(stmt_, column)));
}

std::string SqliteStatement::ColumnBlob(int column) const {
  const void* blob = sqlite3_column_blob(stmt_, column);
  if (blob == nullptr) return std::string();
  return std::string(static_cast<const char*>(blob),
                     static_cast<size_t>(sqlite3_column_bytes(stmt_, column)));
}

bool SqliteStatement::ColumnIsNull(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

absl::StatusOr<std::unique_ptr<SqliteDb>> SqliteDb::Open(const std::string& path, Mode mode) {
  sqlite3* db = nullptr;
  const int flags = (mode == Mode::kReadWrite ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE
                                              : SQLITE_OPEN_READONLY) |
                    SQLITE_OPEN_NOMUTEX;
  const int code = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  if (code != SQLITE_OK) {
    absl::Status status = SqliteError(db, code, absl::StrCat("open ", path));
    sqlite3_close(db);
    return status;
  }
  sqlite3_extended_result_codes(db, 1);
  // Readers wait for a checkpoint or the writer's lock instead of failing at once.
  sqlite3_busy_timeout(db, 5000);
  return std::unique_ptr<SqliteDb>(new SqliteDb(db, path));
}

SqliteDb::~SqliteDb() {
  statements_.clear();
  sqlite3_close(db_);
}

int64_t SqliteDb::Changes() const { return sqlite3_changes64(db_); }

int64_t SqliteDb::LastInsertRowId() const { return sqlite3_last_insert_rowid(db_); }

absl::Status SqliteDb::Exec(absl::string_view sql) {
  const std::string text(sql);
  char* error = nullptr;
  const int code = sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &error);
  if (code == SQLITE_OK) return absl::OkStatus();
  std::string message = error != nullptr ? error : sqlite3_errstr(code);
  sqlite3_free(error);
  absl::Status status = SqliteError(db_, code, absl::StrCat("exec \"", text, "\""));
  return absl::Status(status.code(), absl::StrCat(status.message(), " [", message, "]"));
}

absl::StatusOr<int64_t> SqliteDb::QueryInt(absl::string_view sql) {
  absl::StatusOr<SqliteStatement*> statement = Prepare(sql);
  if (!statement.ok()) return statement.status();
  ScopedReset reset(**statement);
  absl::StatusOr<bool> row = (*statement)->Step();
  if (!row.ok()) return row.status();
  if (!*row) return absl::InternalError(absl::StrCat("sqlite: no row from \"", sql, "\""));
  return (*statement)->ColumnInt(0);
}

absl::StatusOr<SqliteStatement*> SqliteDb::Prepare(absl::string_view sql) {
  const std::string key(sql);
  auto it = statements_.find(key);
  if (it != statements_.end()) {
    it->second->Reset();
    return it->second.get();
  }
  sqlite3_stmt* stmt = nullptr;
  const int code = sqlite3_prepare_v3(db_, key.data(), static_cast<int>(key.size()),
                                      SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
  if (code != SQLITE_OK) return SqliteError(db_, code, absl::StrCat("prepare \"", key, "\""));
  auto owned = std::make_unique<SqliteStatement>(db_, stmt, key);
  SqliteStatement* raw = owned.get();
  statements_.emplace(key, std::move(owned));
  return raw;
}

}  // namespace fleetpmu::server
