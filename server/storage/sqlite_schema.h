// The SQLite schema of fleetpmu-server and its migrations (docs/server.md "Schema").
//
// Contract:
//   * The schema version lives in PRAGMA user_version. MigrateSchema brings a database at any
//     older version (0 = empty file) to kSchemaVersion, one migration per transaction, and
//     refuses (FailedPrecondition) a database newer than this binary knows.
//   * Migrations are append-only: a released migration is never edited; a change is a new
//     migration with the next number.
//   * Runs on the writer connection, before any other statement.
#ifndef FLEETPMU_SERVER_STORAGE_SQLITE_SCHEMA_H_
#define FLEETPMU_SERVER_STORAGE_SQLITE_SCHEMA_H_

#include "absl/status/status.h"
#include "server/storage/sqlite_db.h"

namespace fleetpmu::server {

inline constexpr int kSchemaVersion = 1;

absl::Status MigrateSchema(SqliteDb& db);

}  // namespace fleetpmu::server

#endif  // FLEETPMU_SERVER_STORAGE_SQLITE_SCHEMA_H_
