#include "server/storage/sqlite_storage.h"

#include <sqlite3.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/telemetry_fixtures.h"

namespace fleetpmu::server {
namespace {

using ::fleetpmu::server::testing::GuestMask;
using ::fleetpmu::server::testing::kBaseUnixNs;
using ::fleetpmu::server::testing::kSecondNs;
using ::fleetpmu::server::testing::MakeBatch;
using ::fleetpmu::server::testing::MakeHostInfo;
using ::fleetpmu::server::testing::MakeReport;
using ::fleetpmu::server::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int64_t kHourNs = 3600 * kSecondNs;

// Reads one integer straight from the file with the sqlite3 C API, as an operator would.
int64_t SqlInt(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK) << sql;
  int64_t value = -1;
  if (sqlite3_step(stmt) == SQLITE_ROW) value = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return value;
}

std::string SqlText(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK) << sql;
  std::string value;
  if (sqlite3_step(stmt) == SQLITE_ROW) {
    value = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return value;
}

class SqliteStorageTest : public ::testing::Test {
 protected:
  SqliteStorageOptions Options() {
    SqliteStorageOptions options;
    options.path = dir_.File("fleetpmu.db");
    options.raw_retention_ns = 2 * kHourNs;
    options.rollup_interval_ns = 60 * kSecondNs;
    options.rollup_retention_ns = 48 * kHourNs;
    return options;
  }

  std::unique_ptr<SqliteStorage> OpenStorage() { return OpenStorage(Options()); }
  std::unique_ptr<SqliteStorage> OpenStorage(SqliteStorageOptions options) {
    absl::StatusOr<std::unique_ptr<SqliteStorage>> storage = SqliteStorage::Open(options);
    EXPECT_TRUE(storage.ok()) << storage.status();
    return storage.ok() ? std::move(*storage) : nullptr;
  }

  static AgentRegistration Hello(const std::string& host, uint64_t epoch) {
    AgentRegistration registration;
    registration.host_id = host;
    registration.agent_epoch = epoch;
    registration.host_info = MakeHostInfo(host);
    registration.now_unix_ns = kBaseUnixNs;
    return registration;
  }

  static IngestCommit CommitOf(const std::string& host, uint64_t epoch, uint64_t seq, int64_t start,
                               int reports = 1) {
    IngestCommit commit;
    commit.host_id = host;
    commit.agent_epoch = epoch;
    commit.seq = seq;
    commit.batch =
        std::make_shared<const fleetpmu::v1::Batch>(MakeBatch(host, epoch, seq, start, reports));
    commit.now_unix_ns = start + reports * 10 * kSecondNs;
    return commit;
  }

  static IngestCommit RejectionOf(const std::string& host, uint64_t epoch, uint64_t seq) {
    IngestCommit commit;
    commit.host_id = host;
    commit.agent_epoch = epoch;
    commit.seq = seq;
    commit.rejection_code = fleetpmu::v1::IngestError::INVALID_BATCH;
    commit.rejection_reason = "report[0].interval: end 5 is not after start 7";
    commit.now_unix_ns = kBaseUnixNs;
    return commit;
  }

  static uint64_t TotalLoads(SqliteStorage& storage, const std::string& tenant) {
    VcpuStatsQuery query;
    query.tenant_id = tenant;
    query.range = {0, kBaseUnixNs + 1000 * kHourNs};
    absl::StatusOr<Page<fleetpmu::v1::HostVcpuStats>> stats = storage.GetVcpuStats(query, {0, 100});
    EXPECT_TRUE(stats.ok()) << stats.status();
    uint64_t loads = 0;
    if (stats.ok()) {
      for (const auto& item : stats->items) loads += item.stats().loads();
    }
    return loads;
  }

  TempDir dir_;
};

TEST_F(SqliteStorageTest, NewDatabaseIsInWalModeAtCurrentSchemaVersion) {
  std::unique_ptr<SqliteStorage> storage = OpenStorage();
  ASSERT_NE(storage, nullptr);
  const std::string path = Options().path;
  EXPECT_EQ(SqlText(path, "PRAGMA journal_mode"), "wal");
  EXPECT_EQ(SqlInt(path, "PRAGMA user_version"), 1);
  for (const char* table :
       {"hosts", "pmus", "pcpus", "tenants", "vms", "vcpu_stats", "vcpu_stats_rollup",
        "overflow_events", "lost_overflows", "lost_overflows_rollup", "ownership_intervals",
        "ownership_rollup", "host_counter_stats", "host_counter_rollup", "telemetry_drops",
        "telemetry_drops_rollup", "ingest_cursors", "rejected_batches"}) {
    EXPECT_EQ(SqlInt(path, std::string("SELECT count(*) FROM sqlite_master WHERE name = '") +
                               table + "'"),
              1)
        << table;
  }
}

TEST_F(SqliteStorageTest, RefusesDatabaseFromNewerServer) {
  {
    std::unique_ptr<SqliteStorage> storage = OpenStorage();
    ASSERT_NE(storage, nullptr);
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(Options().path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version = 99", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);

  absl::StatusOr<std::unique_ptr<SqliteStorage>> storage = SqliteStorage::Open(Options());
  ASSERT_FALSE(storage.ok());
  EXPECT_EQ(storage.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(storage.status().message(), HasSubstr("schema version 99"));
}

TEST_F(SqliteStorageTest, HelloOfNewEpochAnswersZeroAndRemembersHost) {
  std::unique_ptr<SqliteStorage> storage = OpenStorage();
  absl::StatusOr<RegistrationResult> hello = storage->Register(Hello("arm-1", 7));
  ASSERT_TRUE(hello.ok()) << hello.status();
  EXPECT_EQ(hello->durable_seq, 0u);
  EXPECT_TRUE(hello->vms.empty());
  EXPECT_TRUE(*storage->HostExists("arm-1"));
  EXPECT_FALSE(*storage->HostExists("arm-2"));
  EXPECT_EQ(SqlInt(Options().path, "SELECT count(*) FROM pcpus WHERE host_id = 'arm-1'"), 4);
  EXPECT_EQ(SqlInt(Options().path, "SELECT count(*) FROM pmus WHERE host_id = 'arm-1'"), 1);
}

TEST_F(SqliteStorageTest, CommitStoresBatchAndCursorTogether) {
  std::unique_ptr<SqliteStorage> storage = OpenStorage();
  ASSERT_TRUE(storage->Register(Hello("arm-1", 7)).ok());
  absl::StatusOr<CommitResult> result = storage->Commit(CommitOf("arm-1", 7, 1, kBaseUnixNs, 2));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->outcome, CommitResult::Outcome::kStored);
  EXPECT_EQ(result->durable_seq, 1u);
  EXPECT_EQ(*storage->DurableSeq("arm-1", 7), 1u);
  EXPECT_EQ(*storage->DurableSeq("arm-1", 8), 0u);
  // Two reports of two vCPUs with 100 loads each.
  EXPECT_EQ(TotalLoads(*storage, "tenant-a"), 400u);
  EXPECT_TRUE(*storage->TenantExists("tenant-a"));
  EXPECT_TRUE(*storage->TenantRanOnHost("tenant-a", "arm-1"));
  EXPECT_FALSE(*storage->TenantRanOnHost("tenant-b", "arm-1"));

  absl::StatusOr<Page<fleetpmu::v1::HostSummary>> hosts = storage->ListHosts("", {0, 10});
  ASSERT_TRUE(hosts.ok()) << hosts.status();
  ASSERT_EQ(hosts->items.size(), 1u);
  EXPECT_EQ(hosts->items[0].host_info().host_id(), "arm-1");
  EXPECT_EQ(hosts->items[0].host_info().pcpus_size(), 4);
  EXPECT_EQ(hosts->items[0].agent_epoch(), 7u);
  EXPECT_EQ(hosts->items[0].durable_seq(), 1u);
  EXPECT_EQ(hosts->items[0].last_report_unix_ns(), kBaseUnixNs + 20 * kSecondNs);
}

TEST_F(SqliteStorageTest, ReplayedSeqIsAcknowledgedAndNotStoredAgain) {
  std::unique_ptr<SqliteStorage> storage = OpenStorage();
  ASSERT_TRUE(storage->Commit(CommitOf("arm-1", 7, 1, kBaseUnixNs)).ok());
  ASSERT_TRUE(storage->Commit(CommitOf("arm-1", 7, 2, kBaseUnixNs + 10 * kSecondNs)).ok());
  absl::StatusOr<CommitResult> replay = storage->Commit(CommitOf("arm-1", 7, 1, kBaseUnixNs));
  ASSERT_TRUE(replay.ok()) << replay.status();
  EXPECT_EQ(replay->outcome, CommitResult::Outcome::kDuplicate);
  EXPECT_EQ(replay->durable_seq, 2u);
  EXPECT_EQ(TotalLoads(*storage, "tenant-a"), 400u);
  EXPECT_EQ(SqlInt(Options().path, "SELECT count(*) FROM vcpu_stats"), 4);
}

TEST_F(SqliteStorageTest, GapsAreAcceptedAndCursorNeverMovesBack) {
  std::unique_ptr<SqliteStorage> storage = OpenStorage();
  ASSERT_TRUE(storage->Commit(CommitOf("arm-1", 7, 1, kBaseUnixNs)).ok());
  absl::StatusOr<CommitResult> gap = storage->Commit(CommitOf("arm-1", 7, 5, kBaseUnixNs));
  ASSERT_TRUE(gap.ok());
  EXPECT_EQ(gap->outcome, CommitResult::Outcome::kStored);
  EXPECT_EQ(gap->durable_seq, 5u);
  absl::StatusOr<CommitResult> late = storage->Commit(CommitOf("arm-1", 7, 3, kBaseUnixNs));
  ASSERT_TRUE(late.ok());
  EXPECT_EQ(late->outcome, CommitResult::Outcome::kDuplicate);
  EXPECT_EQ(*storage->DurableSeq("arm-1", 7), 5u);
}

TEST_F(SqliteStorageTest, RejectionAdvancesCursorSoTheAckCoversIt) {
  std::unique_ptr<SqliteStorage> storage = OpenStorage();
  absl::StatusOr<CommitResult> rejected = storage->Commit(RejectionOf("arm-1", 7, 1));
  ASSERT_TRUE(rejected.ok()) << rejected.status();
  EXPECT_EQ(rejected->outcome, CommitResult::Outcome::kRejectionRecorded);
  EXPECT_EQ(rejected->durable_seq, 1u);
  EXPECT_EQ(SqlText(Options().path, "SELECT reason FROM rejected_batches WHERE seq = 1"),
            "report[0].interval: end 5 is not after start 7");
  absl::StatusOr<CommitResult> resent = storage->Commit(CommitOf("arm-1", 7, 1, kBaseUnixNs));
  ASSERT_TRUE(resent.ok());
  EXPECT_EQ(resent->outcome, CommitResult::Outcome::kDuplicate);
  EXPECT_EQ(TotalLoads(*storage, "tenant-a"), 0u);
}

TEST_F(SqliteStorageTest, CommittedDataSurvivesCloseAndReopen) {
  {
    std::unique_ptr<SqliteStorage> storage = OpenStorage();
    ASSERT_TRUE(storage->Register(Hello("arm-1", 7)).ok());
    ASSERT_TRUE(storage->Commit(CommitOf("arm-1", 7, 1, kBaseUnixNs)).ok());
    ASSERT_TRUE(storage->Commit(CommitOf("arm-1", 7, 2, kBaseUnixNs + 10 * kSecondNs)).ok());
  }
  std::unique_ptr<SqliteStorage> storage = OpenStorage();
  absl::StatusOr<RegistrationResult> hello = storage->Register(Hello("arm-1", 7));
  ASSERT_TRUE(hello.ok()) << hello.status();
  EXPECT_EQ(hello->durable_seq, 2u);
  ASSERT_EQ(hello->vms.size(), 1u);
  EXPECT_EQ(hello->vms[0].vm_id(), "vm-1");
  EXPECT_EQ(hello->vms[0].guest_counters(), 3u);
  EXPECT_EQ(TotalLoads(*storage, "tenant-a"), 400u);
  // The agent resends seq 2 after the restart: acknowledged, not stored twice.
  absl::StatusOr<CommitResult> replay =
      storage->Commit(CommitOf("arm-1", 7, 2, kBaseUnixNs + 10 * kSecondNs));
  ASSERT_TRUE(replay.ok());
  EXPECT_EQ(replay->outcome, CommitResult::Outcome::kDuplicate);
  EXPECT_EQ(TotalLoads(*storage, "tenant-a"), 400u);
}

TEST_F(SqliteStorageTest, ShutdownAppliesQueuedOperationsThenRefusesNewOnes) {
  std::unique_ptr<SqliteStorage> storage = OpenStorage();
  std::vector<absl::StatusOr<CommitResult>> results;
  for (uint64_t seq = 1; seq <= 5; ++seq) {
    ASSERT_TRUE(storage
                    ->SubmitCommit(CommitOf("arm-1", 7, seq, kBaseUnixNs), nullptr,
                                   [&](absl::StatusOr<CommitResult> result) {
                                     results.push_back(std::move(result));
                                   })
                    .ok());
  }
  storage->Shutdown();
  ASSERT_EQ(results.size(), 5u);
  for (const auto& result : results) EXPECT_TRUE(result.ok()) << result.status();
  absl::Status refused = storage->SubmitCommit(CommitOf("arm-1", 7, 6, kBaseUnixNs), nullptr,
                                               [](absl::StatusOr<CommitResult>) {});
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable);
}

// Holds the writer thread inside a `done` callback until released, so a test can fill the
// queue deterministically.
class WriterGate {
 public:
  Storage::CommitDone Hold() {
    return [this](absl::StatusOr<CommitResult>) {
      entered_.Notify();
      release_.WaitForNotification();
    };
  }
  void WaitUntilHeld() { entered_.WaitForNotification(); }
  void Release() { release_.Notify(); }

 private:
  absl::Notification entered_;
  absl::Notification release_;
};

TEST_F(SqliteStorageTest, FullQueueRefusesWithResourceExhaustedAndCountsIt) {
  SqliteStorageOptions options = Options();
  options.max_queued_ops = 2;
  std::unique_ptr<SqliteStorage> storage = OpenStorage(options);
  WriterGate gate;
  ASSERT_TRUE(
      storage->SubmitCommit(CommitOf("arm-1", 7, 1, kBaseUnixNs), nullptr, gate.Hold()).ok());
  gate.WaitUntilHeld();
  auto ignore = [](absl::StatusOr<CommitResult>) {};
  EXPECT_TRUE(storage->SubmitCommit(CommitOf("arm-1", 7, 2, kBaseUnixNs), nullptr, ignore).ok());
  EXPECT_TRUE(storage->SubmitCommit(CommitOf("arm-1", 7, 3, kBaseUnixNs), nullptr, ignore).ok());
  absl::Status full = storage->SubmitCommit(CommitOf("arm-1", 7, 4, kBaseUnixNs), nullptr, ignore);
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(full.message(), HasSubstr("storage write queue full"));
  StorageStats stats = storage->Stats();
  EXPECT_EQ(stats.queue_full_refusals, 1u);
  EXPECT_EQ(stats.queued_ops, 2u);
  gate.Release();
  storage->Shutdown();
  EXPECT_EQ(*storage->DurableSeq("arm-1", 7), 3u);
}

TEST_F(SqliteStorageTest, QueuedOperationsCommitTogetherInOneTransaction) {
  std::unique_ptr<SqliteStorage> storage = OpenStorage();
  WriterGate gate;
  ASSERT_TRUE(
      storage->SubmitCommit(CommitOf("arm-1", 7, 1, kBaseUnixNs), nullptr, gate.Hold()).ok());
  gate.WaitUntilHeld();
  for (uint64_t seq = 2; seq <= 6; ++seq) {
    ASSERT_TRUE(storage
                    ->SubmitCommit(CommitOf("arm-1", 7, seq, kBaseUnixNs), nullptr,
                                   [](absl::StatusOr<CommitResult>) {})
                    .ok());
  }
  gate.Release();
  storage->Shutdown();
  const StorageStats stats = storage->Stats();
  EXPECT_EQ(stats.ops_applied, 6u);
  EXPECT_EQ(stats.transactions_committed, 2u);
}

TEST_F(SqliteStorageTest, FailedOperationBreaksItsChainSoNoLaterSeqSkipsIt) {
  std::unique_ptr<SqliteStorage> storage = OpenStorage();
  // Two pCPUs with the same index violate the pcpus primary key: the op fails in storage.
  IngestCommit bad = CommitOf("arm-1", 7, 1, kBaseUnixNs);
  fleetpmu::v1::HostInfo info = MakeHostInfo("arm-1");
  info.mutable_pcpus(1)->set_pcpu(0);
  fleetpmu::v1::Batch bad_batch = *bad.batch;
  *bad_batch.mutable_reports(0)->mutable_host_info() = info;
  bad.batch = std::make_shared<const fleetpmu::v1::Batch>(std::move(bad_batch));

  auto chain = std::make_shared<CommitChain>();
  WriterGate gate;
  // Hold the writer so that both ops of the chain land in one group.
  ASSERT_TRUE(
      storage->SubmitCommit(CommitOf("other", 1, 1, kBaseUnixNs), nullptr, gate.Hold()).ok());
  gate.WaitUntilHeld();
  std::vector<absl::StatusOr<CommitResult>> results;
  auto keep = [&](absl::StatusOr<CommitResult> result) { results.push_back(std::move(result)); };
  ASSERT_TRUE(storage->SubmitCommit(std::move(bad), chain, keep).ok());
  ASSERT_TRUE(storage->SubmitCommit(CommitOf("arm-1", 7, 2, kBaseUnixNs), chain, keep).ok());
  ASSERT_TRUE(storage->SubmitCommit(CommitOf("arm-2", 1, 1, kBaseUnixNs), nullptr, keep).ok());
  gate.Release();
  storage->Shutdown();

  ASSERT_EQ(results.size(), 3u);
  EXPECT_FALSE(results[0].ok());
  EXPECT_THAT(results[0].status().message(), HasSubstr("pcpus"));
  ASSERT_FALSE(results[1].ok());
  EXPECT_EQ(results[1].status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(results[2].ok()) << results[2].status();
  EXPECT_TRUE(chain->broken());
  EXPECT_EQ(*storage->DurableSeq("arm-1", 7), 0u);
  EXPECT_EQ(*storage->DurableSeq("arm-2", 1), 1u);
}

TEST_F(SqliteStorageTest, OwnershipGivesMaskShareAndHPerVm) {
  std::unique_ptr<SqliteStorage> storage = OpenStorage();
  ASSERT_TRUE(storage->Register(Hello("arm-1", 7)).ok());
  ASSERT_TRUE(storage->Commit(CommitOf("arm-1", 7, 1, kBaseUnixNs, 2)).ok());

  OwnershipQuery query;
  query.tenant_id = "tenant-a";
  query.range = TimeWindow{kBaseUnixNs, kBaseUnixNs + 20 * kSecondNs};
  absl::StatusOr<std::vector<fleetpmu::v1::PcpuOwnership>> ownership =
      storage->GetCounterOwnership(query);
  ASSERT_TRUE(ownership.ok()) << ownership.status();
  ASSERT_EQ(ownership->size(), 2u);
  const fleetpmu::v1::PcpuOwnership& pcpu0 = (*ownership)[0];
  EXPECT_EQ(pcpu0.host_id(), "arm-1");
  EXPECT_EQ(pcpu0.pcpu(), 0u);
  EXPECT_EQ(pcpu0.num_counters(), 6u);
  EXPECT_EQ(pcpu0.counter_mask(), GuestMask(3));
  EXPECT_DOUBLE_EQ(pcpu0.resident_share(), 0.5);
  ASSERT_EQ(pcpu0.vms_size(), 1);
  EXPECT_EQ(pcpu0.vms(0).vm_id(), "vm-1");
  EXPECT_EQ(pcpu0.vms(0).guest_counters(), 3u);
  EXPECT_DOUBLE_EQ(pcpu0.vms(0).resident_share(), 0.5);
  EXPECT_DOUBLE_EQ((*ownership)[1].resident_share(), 0.25);

  // Half of the window has no data: the share halves.
  query.range = TimeWindow{kBaseUnixNs, kBaseUnixNs + 40 * kSecondNs};
  ownership = storage->GetCounterOwnership(query);
  ASSERT_TRUE(ownership.ok());
  EXPECT_DOUBLE_EQ((*ownership)[0].resident_share(), 0.25);

  // At an instant: held (share 1) on both pCPUs.
  query.range.reset();
  query.at_unix_ns = kBaseUnixNs + 5 * kSecondNs;
  ownership = storage->GetCounterOwnership(query);
  ASSERT_TRUE(ownership.ok());
  ASSERT_EQ(ownership->size(), 2u);
  EXPECT_DOUBLE_EQ((*ownership)[0].resident_share(), 1.0);

  query.at_unix_ns = kBaseUnixNs + 50 * kSecondNs;
  ownership = storage->GetCounterOwnership(query);
  ASSERT_TRUE(ownership.ok());
  EXPECT_TRUE(ownership->empty());

  query.tenant_id = "tenant-b";
  query.at_unix_ns = kBaseUnixNs + 5 * kSecondNs;
  ownership = storage->GetCounterOwnership(query);
  ASSERT_TRUE(ownership.ok());
  EXPECT_TRUE(ownership->empty());
}

TEST_F(SqliteStorageTest, OverflowEventsNewestFirstWithFiltersAndPages) {
  std::unique_ptr<SqliteStorage> storage = OpenStorage();
  ASSERT_TRUE(storage->Commit(CommitOf("arm-1", 7, 1, kBaseUnixNs, 3)).ok());

  OverflowQuery all;
  absl::StatusOr<Page<fleetpmu::v1::HostOverflowEvent>> page =
      storage->ListOverflowEvents(all, {0, 4});
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->items.size(), 4u);
  EXPECT_TRUE(page->more);
  EXPECT_EQ(page->items[0].event().time_unix_ns(), kBaseUnixNs + 22 * kSecondNs);
  EXPECT_EQ(page->items[1].event().time_unix_ns(), kBaseUnixNs + 21 * kSecondNs);
  page = storage->ListOverflowEvents(all, {4, 4});
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->items.size(), 2u);
  EXPECT_FALSE(page->more);

  OverflowQuery lost;
  lost.lost_only = true;
  lost.tenant_id = "tenant-a";
  lost.since_unix_ns = kBaseUnixNs + 10 * kSecondNs;
  page = storage->ListOverflowEvents(lost, {0, 100});
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->items.size(), 2u);
  for (const auto& item : page->items) {
    EXPECT_EQ(item.host_id(), "arm-1");
    EXPECT_EQ(item.event().overflow_class(), fleetpmu::v1::OVERFLOW_CLASS_LOST);
    EXPECT_EQ(item.event().lost_reason(), fleetpmu::v1::LOST_REASON_FLAG_CLEARED_UNSEEN);
    EXPECT_EQ(item.event().vm_id(), "vm-1");
  }
  OverflowQuery other_host;
  other_host.host_id = "arm-2";
  page = storage->ListOverflowEvents(other_host, {0, 100});
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(page->items.empty());
}

TEST_F(SqliteStorageTest, LostSummaryGroupsByTenantHostAndReason) {
  std::unique_ptr<SqliteStorage> storage = OpenStorage();
  ASSERT_TRUE(storage->Commit(CommitOf("arm-1", 7, 1, kBaseUnixNs, 2)).ok());
  LostSummaryQuery query;
  query.range = {kBaseUnixNs, kBaseUnixNs + kHourNs};
  absl::StatusOr<LostSummary> summary = storage->GetLostOverflowSummary(query, {0, 100});
  ASSERT_TRUE(summary.ok()) << summary.status();
  ASSERT_EQ(summary->rows.size(), 2u);
  // Host-owned counters first (tenant ''), then tenant-a.
  EXPECT_EQ(summary->rows[0].tenant_id(), "");
  EXPECT_EQ(summary->rows[0].reason(), fleetpmu::v1::LOST_REASON_HOST_CLOBBERED);
  EXPECT_EQ(summary->rows[0].count(), 4u);
  EXPECT_EQ(summary->rows[1].tenant_id(), "tenant-a");
  EXPECT_EQ(summary->rows[1].host_id(), "arm-1");
  EXPECT_EQ(summary->rows[1].count(), 2u);
  EXPECT_EQ(summary->total_lost, 6u);

  query.tenant_id = "tenant-a";
  summary = storage->GetLostOverflowSummary(query, {0, 100});
  ASSERT_TRUE(summary.ok());
  ASSERT_EQ(summary->rows.size(), 1u);
  EXPECT_EQ(summary->total_lost, 2u);
}

TEST_F(SqliteStorageTest, VcpuStatsAreSummedPerVcpuAndHost) {
  std::unique_ptr<SqliteStorage> storage = OpenStorage();
  ASSERT_TRUE(storage->Commit(CommitOf("arm-1", 7, 1, kBaseUnixNs, 3)).ok());
  VcpuStatsQuery query;
  query.tenant_id = "tenant-a";
  query.range = {kBaseUnixNs, kBaseUnixNs + kHourNs};
  absl::StatusOr<Page<fleetpmu::v1::HostVcpuStats>> page = storage->GetVcpuStats(query, {0, 1});
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->items.size(), 1u);
  EXPECT_TRUE(page->more);
  const fleetpmu::v1::VcpuStats& stats = page->items[0].stats();
  EXPECT_EQ(page->items[0].host_id(), "arm-1");
  EXPECT_EQ(stats.vm_id(), "vm-1");
  EXPECT_EQ(stats.vcpu(), 0u);
  EXPECT_EQ(stats.loads(), 300u);
  EXPECT_EQ(stats.load_latency().count(), 225u);
  EXPECT_THAT(stats.load_latency().bucket_counts(), ElementsAre(210, 15, 0));
  EXPECT_EQ(stats.traps_by_register().at("PMOVSSET_EL0"), 6u);
  EXPECT_EQ(stats.overflows().lost(), 3u);
  EXPECT_EQ(stats.interval().start_unix_ns(), kBaseUnixNs);
  EXPECT_EQ(stats.interval().end_unix_ns(), kBaseUnixNs + 30 * kSecondNs);

  page = storage->GetVcpuStats(query, {1, 1});
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->items.size(), 1u);
  EXPECT_FALSE(page->more);
  EXPECT_EQ(page->items[0].stats().vcpu(), 1u);
}

TEST_F(SqliteStorageTest, RetentionRollsOldRowsUpWithoutChangingAnswers) {
  std::unique_ptr<SqliteStorage> storage = OpenStorage();
  ASSERT_TRUE(storage->Register(Hello("arm-1", 7)).ok());
  // Six 10 s reports (one minute bucket) three hours ago, one recent report.
  ASSERT_TRUE(storage->Commit(CommitOf("arm-1", 7, 1, kBaseUnixNs, 6)).ok());
  const int64_t now = kBaseUnixNs + 3 * kHourNs;
  ASSERT_TRUE(storage->Commit(CommitOf("arm-1", 7, 2, now - 20 * kSecondNs)).ok());

  const std::string path = Options().path;
  VcpuStatsQuery stats_query;
  stats_query.tenant_id = "tenant-a";
  stats_query.range = {kBaseUnixNs, now};
  OwnershipQuery ownership_query;
  ownership_query.tenant_id = "tenant-a";
  ownership_query.range = TimeWindow{kBaseUnixNs, kBaseUnixNs + 60 * kSecondNs};
  LostSummaryQuery lost_query;
  lost_query.range = {kBaseUnixNs, now};

  auto before_stats = storage->GetVcpuStats(stats_query, {0, 100});
  auto before_ownership = storage->GetCounterOwnership(ownership_query);
  auto before_lost = storage->GetLostOverflowSummary(lost_query, {0, 100});
  ASSERT_TRUE(before_stats.ok() && before_ownership.ok() && before_lost.ok());
  EXPECT_EQ(SqlInt(path, "SELECT count(*) FROM vcpu_stats"), 14);

  absl::StatusOr<RetentionResult> retention = storage->RunRetention(now);
  ASSERT_TRUE(retention.ok()) << retention.status();
  EXPECT_EQ(retention->raw_cutoff_unix_ns, now - 2 * kHourNs);
  EXPECT_GT(retention->raw_rows_rolled_up, 0u);

  // Old raw rows are gone, one rollup row per (vCPU, minute) holds them; recent rows stay.
  EXPECT_EQ(SqlInt(path, "SELECT count(*) FROM vcpu_stats"), 2);
  EXPECT_EQ(SqlInt(path, "SELECT count(*) FROM vcpu_stats_rollup"), 2);
  EXPECT_EQ(SqlInt(path, "SELECT count(*) FROM ownership_intervals"), 4);
  EXPECT_EQ(SqlInt(path, "SELECT count(*) FROM ownership_rollup"), 4);
  EXPECT_EQ(SqlInt(path, "SELECT count(*) FROM lost_overflows_rollup"), 2);
  EXPECT_EQ(SqlInt(path, "SELECT count(*) FROM host_counter_rollup"), 1);
  EXPECT_EQ(SqlInt(path, "SELECT count(*) FROM telemetry_drops_rollup"), 1);
  // Overflow events are raw-only: the old ones are deleted, the lost counts survive.
  EXPECT_EQ(SqlInt(path, "SELECT count(*) FROM overflow_events"), 2);

  auto after_stats = storage->GetVcpuStats(stats_query, {0, 100});
  auto after_ownership = storage->GetCounterOwnership(ownership_query);
  auto after_lost = storage->GetLostOverflowSummary(lost_query, {0, 100});
  ASSERT_TRUE(after_stats.ok() && after_ownership.ok() && after_lost.ok());
  ASSERT_EQ(after_stats->items.size(), before_stats->items.size());
  for (size_t i = 0; i < after_stats->items.size(); ++i) {
    EXPECT_EQ(after_stats->items[i].SerializeAsString(),
              before_stats->items[i].SerializeAsString());
  }
  ASSERT_EQ(after_ownership->size(), before_ownership->size());
  for (size_t i = 0; i < after_ownership->size(); ++i) {
    EXPECT_DOUBLE_EQ((*after_ownership)[i].resident_share(),
                     (*before_ownership)[i].resident_share());
    EXPECT_EQ((*after_ownership)[i].counter_mask(), (*before_ownership)[i].counter_mask());
  }
  EXPECT_EQ(after_lost->total_lost, before_lost->total_lost);

  // A second pass finds nothing more to roll up and changes nothing.
  retention = storage->RunRetention(now);
  ASSERT_TRUE(retention.ok());
  EXPECT_EQ(retention->raw_rows_rolled_up, 0u);
  EXPECT_EQ(SqlInt(path, "SELECT count(*) FROM vcpu_stats_rollup"), 2);
}

TEST_F(SqliteStorageTest, RetentionDeletesRollupsPastTheirWindow) {
  std::unique_ptr<SqliteStorage> storage = OpenStorage();
  ASSERT_TRUE(storage->Commit(CommitOf("arm-1", 7, 1, kBaseUnixNs, 2)).ok());
  const std::string path = Options().path;
  ASSERT_TRUE(storage->RunRetention(kBaseUnixNs + 3 * kHourNs).ok());
  EXPECT_EQ(SqlInt(path, "SELECT count(*) FROM vcpu_stats_rollup"), 2);
  ASSERT_TRUE(storage->RunRetention(kBaseUnixNs + 49 * kHourNs).ok());
  EXPECT_EQ(SqlInt(path, "SELECT count(*) FROM vcpu_stats_rollup"), 0);
  EXPECT_EQ(SqlInt(path, "SELECT count(*) FROM ownership_rollup"), 0);
  EXPECT_EQ(SqlInt(path, "SELECT count(*) FROM lost_overflows_rollup"), 0);
  EXPECT_EQ(*storage->OldestDataUnixNs(), 0);
}

TEST_F(SqliteStorageTest, PeriodicRetentionRunsOnTheWriterThread) {
  SqliteStorageOptions options = Options();
  options.clock = [] { return kBaseUnixNs + 3 * kHourNs; };
  options.retention_period = absl::Milliseconds(1);
  // The first pass that finds rows to roll up (passes before the commit find none).
  absl::Notification rolled_up;
  options.on_retention = [&](const absl::StatusOr<RetentionResult>& result) {
    ASSERT_TRUE(result.ok()) << result.status();
    if (result->raw_rows_rolled_up > 0 && !rolled_up.HasBeenNotified()) rolled_up.Notify();
  };
  std::unique_ptr<SqliteStorage> storage = OpenStorage(options);
  ASSERT_TRUE(storage->Commit(CommitOf("arm-1", 7, 1, kBaseUnixNs)).ok());
  rolled_up.WaitForNotification();
  storage->Shutdown();
  EXPECT_EQ(SqlInt(Options().path, "SELECT count(*) FROM vcpu_stats"), 0);
  EXPECT_EQ(SqlInt(Options().path, "SELECT count(*) FROM vcpu_stats_rollup"), 2);
}

TEST_F(SqliteStorageTest, HostsFilteredByTenantAndPaged) {
  std::unique_ptr<SqliteStorage> storage = OpenStorage();
  for (const std::string host : {"arm-1", "arm-2", "arm-3"}) {
    ASSERT_TRUE(storage->Register(Hello(host, 1)).ok());
  }
  IngestCommit other = CommitOf("arm-2", 1, 1, kBaseUnixNs);
  fleetpmu::v1::Batch other_batch = *other.batch;
  *other_batch.mutable_reports(0) = MakeReport("arm-2", kBaseUnixNs, "vm-9", "tenant-b");
  other.batch = std::make_shared<const fleetpmu::v1::Batch>(std::move(other_batch));
  ASSERT_TRUE(storage->Commit(std::move(other)).ok());
  ASSERT_TRUE(storage->Commit(CommitOf("arm-3", 1, 1, kBaseUnixNs)).ok());

  auto page = storage->ListHosts("", {0, 2});
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->items.size(), 2u);
  EXPECT_TRUE(page->more);
  EXPECT_EQ(page->items[0].host_info().host_id(), "arm-1");
  page = storage->ListHosts("", {2, 2});
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->items.size(), 1u);
  EXPECT_FALSE(page->more);
  page = storage->ListHosts("tenant-b", {0, 100});
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->items.size(), 1u);
  EXPECT_EQ(page->items[0].host_info().host_id(), "arm-2");
}

}  // namespace
}  // namespace fleetpmu::server
