#include "server/storage/sqlite_schema.h"

#include <cstdint>

#include "absl/strings/str_cat.h"

namespace fleetpmu::server {
namespace {

// Version 1. Time columns are Unix ns; counts are uint64 stored in SQLite's int64 (same bits).
// Raw tables hold one row per record of a TelemetryReport; *_rollup tables hold the same data
// summed per (key, bucket) for rows older than the raw retention window. The index list is
// made for the Query API (docs/server.md "Schema" names the query each index serves).
constexpr char kMigration1[] = R"sql(
CREATE TABLE hosts (
  host_id             TEXT PRIMARY KEY,
  host_info           BLOB NOT NULL,       -- latest fleetpmu.v1.HostInfo, serialized
  agent_epoch         INTEGER NOT NULL,    -- epoch of the latest AgentHello
  first_seen_unix_ns  INTEGER NOT NULL,
  last_hello_unix_ns  INTEGER NOT NULL,
  last_report_unix_ns INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- Distinct PMU descriptions of a host; pCPUs point at one.
CREATE TABLE pmus (
  pmu_key       INTEGER PRIMARY KEY,
  host_id       TEXT NOT NULL,
  pmu_id        TEXT NOT NULL,
  num_counters  INTEGER NOT NULL,
  pmuv3_version TEXT NOT NULL,
  pmuver        INTEGER NOT NULL,
  has_fgt       INTEGER NOT NULL,
  has_hpmn0     INTEGER NOT NULL,
  has_p5        INTEGER NOT NULL
);
CREATE INDEX pmus_by_host ON pmus (host_id);

CREATE TABLE pcpus (
  host_id   TEXT NOT NULL,
  pcpu      INTEGER NOT NULL,
  pmu_key   INTEGER NOT NULL REFERENCES pmus (pmu_key),
  cpu_model TEXT NOT NULL,
  PRIMARY KEY (host_id, pcpu)
) WITHOUT ROWID;

CREATE TABLE tenants (
  tenant_id          TEXT PRIMARY KEY,
  first_seen_unix_ns INTEGER NOT NULL,
  last_seen_unix_ns  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE vms (
  host_id            TEXT NOT NULL,
  vm_id              TEXT NOT NULL,
  tenant_id          TEXT NOT NULL,
  vcpus              INTEGER NOT NULL,
  guest_counters     INTEGER NOT NULL,     -- h
  policy             INTEGER NOT NULL,
  implementation     INTEGER NOT NULL,
  vm_info            BLOB NOT NULL,        -- latest fleetpmu.v1.VmInfo, serialized
  first_seen_unix_ns INTEGER NOT NULL,
  last_seen_unix_ns  INTEGER NOT NULL,
  PRIMARY KEY (host_id, vm_id)
) WITHOUT ROWID;
CREATE INDEX vms_by_tenant ON vms (tenant_id, host_id);

CREATE TABLE vcpu_stats (
  host_id       TEXT NOT NULL,
  tenant_id     TEXT NOT NULL,
  vm_id         TEXT NOT NULL,
  vcpu          INTEGER NOT NULL,
  start_unix_ns INTEGER NOT NULL,
  end_unix_ns   INTEGER NOT NULL,
  stats         BLOB NOT NULL              -- fleetpmu.v1.VcpuStats, serialized
);
CREATE INDEX vcpu_stats_by_tenant ON vcpu_stats (tenant_id, vm_id, vcpu, start_unix_ns);
CREATE INDEX vcpu_stats_by_start ON vcpu_stats (start_unix_ns);

CREATE TABLE vcpu_stats_rollup (
  host_id              TEXT NOT NULL,
  tenant_id            TEXT NOT NULL,
  vm_id                TEXT NOT NULL,
  vcpu                 INTEGER NOT NULL,
  bucket_start_unix_ns INTEGER NOT NULL,
  bucket_end_unix_ns   INTEGER NOT NULL,   -- end of the latest interval merged in
  stats                BLOB NOT NULL,      -- merged fleetpmu.v1.VcpuStats
  PRIMARY KEY (host_id, vm_id, vcpu, bucket_start_unix_ns)
) WITHOUT ROWID;
CREATE INDEX vcpu_stats_rollup_by_tenant
  ON vcpu_stats_rollup (tenant_id, vm_id, vcpu, bucket_start_unix_ns);
CREATE INDEX vcpu_stats_rollup_by_start ON vcpu_stats_rollup (bucket_start_unix_ns);

CREATE TABLE overflow_events (
  id                 INTEGER PRIMARY KEY,
  host_id            TEXT NOT NULL,
  time_unix_ns       INTEGER NOT NULL,
  pcpu               INTEGER NOT NULL,
  counter            INTEGER NOT NULL,
  owner_kind         INTEGER NOT NULL,
  vm_id              TEXT NOT NULL,
  vcpu               INTEGER NOT NULL,
  tenant_id          TEXT NOT NULL,
  host_event         TEXT NOT NULL,
  event_code         INTEGER NOT NULL,
  overflow_class     INTEGER NOT NULL,
  lost_reason        INTEGER NOT NULL,
  wrap_to_handler_ns INTEGER NOT NULL
);
CREATE INDEX overflow_events_by_time ON overflow_events (time_unix_ns);
CREATE INDEX overflow_events_by_tenant ON overflow_events (tenant_id, time_unix_ns);
CREATE INDEX overflow_events_by_host ON overflow_events (host_id, time_unix_ns);
CREATE INDEX overflow_events_lost ON overflow_events (time_unix_ns) WHERE overflow_class = 3;

-- Lost wraps per (host, tenant, reason) and interval, from VcpuStats.lost_by_reason (tenant
-- set) and HostCounterStats.lost_by_reason (tenant_id = '').
CREATE TABLE lost_overflows (
  host_id       TEXT NOT NULL,
  tenant_id     TEXT NOT NULL,
  reason        INTEGER NOT NULL,
  start_unix_ns INTEGER NOT NULL,
  end_unix_ns   INTEGER NOT NULL,
  count         INTEGER NOT NULL
);
CREATE INDEX lost_overflows_by_tenant ON lost_overflows (tenant_id, host_id, start_unix_ns);
CREATE INDEX lost_overflows_by_start ON lost_overflows (start_unix_ns);

CREATE TABLE lost_overflows_rollup (
  host_id              TEXT NOT NULL,
  tenant_id            TEXT NOT NULL,
  reason               INTEGER NOT NULL,
  bucket_start_unix_ns INTEGER NOT NULL,
  bucket_end_unix_ns   INTEGER NOT NULL,
  count                INTEGER NOT NULL,
  PRIMARY KEY (tenant_id, host_id, reason, bucket_start_unix_ns)
) WITHOUT ROWID;
CREATE INDEX lost_overflows_rollup_by_start ON lost_overflows_rollup (bucket_start_unix_ns);

-- One row per OwnerResidency of an OwnershipSample.
CREATE TABLE ownership_intervals (
  host_id       TEXT NOT NULL,
  pcpu          INTEGER NOT NULL,
  start_unix_ns INTEGER NOT NULL,
  end_unix_ns   INTEGER NOT NULL,
  owner_kind    INTEGER NOT NULL,
  tenant_id     TEXT NOT NULL,
  vm_id         TEXT NOT NULL,
  vcpu          INTEGER NOT NULL,
  counter_mask  INTEGER NOT NULL,
  resident_ns   INTEGER NOT NULL
);
CREATE INDEX ownership_by_tenant ON ownership_intervals (tenant_id, host_id, start_unix_ns);
CREATE INDEX ownership_by_pcpu ON ownership_intervals (host_id, pcpu, start_unix_ns);
CREATE INDEX ownership_by_start ON ownership_intervals (start_unix_ns);

CREATE TABLE ownership_rollup (
  host_id              TEXT NOT NULL,
  pcpu                 INTEGER NOT NULL,
  bucket_start_unix_ns INTEGER NOT NULL,
  bucket_end_unix_ns   INTEGER NOT NULL,
  owner_kind           INTEGER NOT NULL,
  tenant_id            TEXT NOT NULL,
  vm_id                TEXT NOT NULL,
  vcpu                 INTEGER NOT NULL,
  counter_mask         INTEGER NOT NULL,
  resident_ns          INTEGER NOT NULL,
  PRIMARY KEY (host_id, pcpu, bucket_start_unix_ns, owner_kind, tenant_id, vm_id, vcpu,
               counter_mask)
) WITHOUT ROWID;
CREATE INDEX ownership_rollup_by_tenant
  ON ownership_rollup (tenant_id, host_id, bucket_start_unix_ns);
CREATE INDEX ownership_rollup_by_start ON ownership_rollup (bucket_start_unix_ns);

CREATE TABLE host_counter_stats (
  host_id                 TEXT NOT NULL,
  pcpu                    INTEGER NOT NULL,
  start_unix_ns           INTEGER NOT NULL,
  end_unix_ns             INTEGER NOT NULL,
  host_events             INTEGER NOT NULL,
  events_moved_at_load    INTEGER NOT NULL,
  events_squeezed_at_load INTEGER NOT NULL,
  enabled_ns              INTEGER NOT NULL,
  running_ns              INTEGER NOT NULL,
  delivered               INTEGER NOT NULL,
  coalesced               INTEGER NOT NULL,
  lost                    INTEGER NOT NULL,
  pending                 INTEGER NOT NULL
);
CREATE INDEX host_counter_stats_by_pcpu ON host_counter_stats (host_id, pcpu, start_unix_ns);
CREATE INDEX host_counter_stats_by_start ON host_counter_stats (start_unix_ns);

CREATE TABLE host_counter_rollup (
  host_id                 TEXT NOT NULL,
  pcpu                    INTEGER NOT NULL,
  bucket_start_unix_ns    INTEGER NOT NULL,
  bucket_end_unix_ns      INTEGER NOT NULL,
  host_events             INTEGER NOT NULL,  -- the largest value in the bucket
  events_moved_at_load    INTEGER NOT NULL,
  events_squeezed_at_load INTEGER NOT NULL,
  enabled_ns              INTEGER NOT NULL,
  running_ns              INTEGER NOT NULL,
  delivered               INTEGER NOT NULL,
  coalesced               INTEGER NOT NULL,
  lost                    INTEGER NOT NULL,
  pending                 INTEGER NOT NULL,
  PRIMARY KEY (host_id, pcpu, bucket_start_unix_ns)
) WITHOUT ROWID;
CREATE INDEX host_counter_rollup_by_start ON host_counter_rollup (bucket_start_unix_ns);

-- Our pipeline dropping records: source 'shim' (TelemetryReport.drops) or 'agent'
-- (Batch.agent_drops).
CREATE TABLE telemetry_drops (
  host_id       TEXT NOT NULL,
  source        TEXT NOT NULL,
  stage         INTEGER NOT NULL,
  start_unix_ns INTEGER NOT NULL,
  end_unix_ns   INTEGER NOT NULL,
  count         INTEGER NOT NULL,
  bytes         INTEGER NOT NULL
);
CREATE INDEX telemetry_drops_by_host ON telemetry_drops (host_id, start_unix_ns);
CREATE INDEX telemetry_drops_by_start ON telemetry_drops (start_unix_ns);

CREATE TABLE telemetry_drops_rollup (
  host_id              TEXT NOT NULL,
  source               TEXT NOT NULL,
  stage                INTEGER NOT NULL,
  bucket_start_unix_ns INTEGER NOT NULL,
  bucket_end_unix_ns   INTEGER NOT NULL,
  count                INTEGER NOT NULL,
  bytes                INTEGER NOT NULL,
  PRIMARY KEY (host_id, source, stage, bucket_start_unix_ns)
) WITHOUT ROWID;
CREATE INDEX telemetry_drops_rollup_by_start ON telemetry_drops_rollup (bucket_start_unix_ns);

-- Exactly once: the highest seq stored (or permanently rejected) per agent spool.
CREATE TABLE ingest_cursors (
  host_id         TEXT NOT NULL,
  agent_epoch     INTEGER NOT NULL,
  durable_seq     INTEGER NOT NULL,
  updated_unix_ns INTEGER NOT NULL,
  PRIMARY KEY (host_id, agent_epoch)
) WITHOUT ROWID;

-- Batches refused permanently (INVALID_BATCH, TOO_LARGE); their seq advanced the cursor.
CREATE TABLE rejected_batches (
  host_id          TEXT NOT NULL,
  agent_epoch      INTEGER NOT NULL,
  seq              INTEGER NOT NULL,
  code             INTEGER NOT NULL,
  reason           TEXT NOT NULL,
  rejected_unix_ns INTEGER NOT NULL,
  PRIMARY KEY (host_id, agent_epoch, seq)
) WITHOUT ROWID;
)sql";

struct Migration {
  int version;
  const char* sql;
};

constexpr Migration kMigrations[] = {
    {1, kMigration1},
};

}  // namespace

absl::Status MigrateSchema(SqliteDb& db) {
  absl::StatusOr<int64_t> version = db.QueryInt("PRAGMA user_version");
  if (!version.ok()) return version.status();
  if (*version > kSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        db.path(), ": schema version ", *version, " is newer than this fleetpmu-server knows (",
        kSchemaVersion, "); run a newer server or restore a backup"));
  }
  for (const Migration& migration : kMigrations) {
    if (migration.version <= *version) continue;
    if (absl::Status status = db.Exec("BEGIN IMMEDIATE"); !status.ok()) return status;
    absl::Status status = db.Exec(migration.sql);
    if (status.ok()) {
      status = db.Exec(absl::StrCat("PRAGMA user_version = ", migration.version));
    }
    if (status.ok()) status = db.Exec("COMMIT");
    if (!status.ok()) {
      db.Exec("ROLLBACK").IgnoreError();
      return absl::Status(status.code(),
                          absl::StrCat(db.path(), ": migration to schema version ",
                                       migration.version, " failed: ", status.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace fleetpmu::server
