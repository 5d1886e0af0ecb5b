#include "agent/spool/spool.h"

#include <filesystem>
#include <string>

#include "gtest/gtest.h"

namespace fleetpmu::agent {
namespace {

class SpoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("fleetpmu-spool-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  SpoolOptions Options(uint64_t max_bytes = 1 << 20) {
    return {.path = (dir_ / "spool.db").string(), .max_bytes = max_bytes, .new_epoch = 77};
  }
  // A batch of roughly `bytes` serialized bytes whose one report names `host`.
  static v1::Batch MakeBatch(const std::string& host, size_t bytes = 100) {
    v1::Batch b;
    v1::TelemetryReport* r = b.add_reports();
    r->set_host_id(host);
    r->add_vms()->set_vm_id(std::string(bytes, 'x'));
    return b;
  }

  std::filesystem::path dir_;
};

TEST_F(SpoolTest, AppendAssignsEpochAndConsecutiveSequenceNumbers) {
  auto spool = Spool::Open(Options());
  ASSERT_TRUE(spool.ok()) << spool.status();
  EXPECT_EQ((*spool)->epoch(), 77u);
  EXPECT_EQ(*(*spool)->Append(MakeBatch("a"), 1), 1u);
  EXPECT_EQ(*(*spool)->Append(MakeBatch("b"), 2), 2u);
  auto batches = (*spool)->ReadAfter(0, 10);
  ASSERT_TRUE(batches.ok());
  ASSERT_EQ(batches->size(), 2u);
  v1::Batch second;
  ASSERT_TRUE(second.ParseFromString((*batches)[1].serialized));
  EXPECT_EQ(second.agent_epoch(), 77u);
  EXPECT_EQ(second.seq(), 2u);
  EXPECT_EQ(second.created_unix_ns(), 2);
  EXPECT_EQ(second.reports(0).host_id(), "b");
}

TEST_F(SpoolTest, SurvivesReopenWithItsEpochAndUnacknowledgedBatches) {
  {
    auto spool = Spool::Open(Options());
    ASSERT_TRUE(spool.ok());
    for (int i = 0; i < 5; ++i) ASSERT_TRUE((*spool)->Append(MakeBatch("h"), i).ok());
    ASSERT_TRUE((*spool)->Acknowledge(2).ok());
  }
  SpoolOptions reopened = Options();
  reopened.new_epoch = 99;  // ignored: the file already has an epoch
  auto spool = Spool::Open(reopened);
  ASSERT_TRUE(spool.ok()) << spool.status();
  EXPECT_EQ((*spool)->epoch(), 77u);
  auto batches = (*spool)->ReadAfter(0, 10);
  ASSERT_TRUE(batches.ok());
  ASSERT_EQ(batches->size(), 3u);
  EXPECT_EQ((*batches)[0].seq, 3u);
  EXPECT_EQ(*(*spool)->Append(MakeBatch("h"), 9), 6u) << "sequence numbers never repeat";
}

TEST_F(SpoolTest, FullSpoolDropsTheOldestAndReportsItOnce) {
  const uint64_t one = MakeBatch("h", 1000).ByteSizeLong() + 64;
  auto spool = Spool::Open(Options(3 * one));
  ASSERT_TRUE(spool.ok());
  for (int i = 0; i < 5; ++i) ASSERT_TRUE((*spool)->Append(MakeBatch("h", 1000), i + 1).ok());
  auto batches = (*spool)->ReadAfter(0, 10);
  ASSERT_TRUE(batches.ok());
  ASSERT_FALSE(batches->empty());
  EXPECT_GT((*batches)[0].seq, 1u) << "the oldest went";
  EXPECT_EQ(batches->back().seq, 5u) << "the newest stayed";
  const SpoolStats stats = (*spool)->stats();
  EXPECT_LE(stats.bytes, 3 * one);
  EXPECT_EQ(stats.dropped_batches, 5 - batches->size());
  // Drops made room for batch k travel with batch k+1; the last ones wait for the next append.
  uint64_t carried = 0;
  for (const SpooledBatch& sb : *batches) {
    v1::Batch b;
    ASSERT_TRUE(b.ParseFromString(sb.serialized));
    for (const v1::TelemetryDrops& d : b.agent_drops()) {
      EXPECT_EQ(d.stage(), v1::DROP_STAGE_AGENT_SPOOL);
      EXPECT_LT(d.interval().start_unix_ns(), d.interval().end_unix_ns());
      carried += d.count();
    }
  }
  auto drops = (*spool)->TakeDrops();
  ASSERT_TRUE(drops.ok());
  ASSERT_EQ(drops->size(), 1u);
  EXPECT_EQ((*drops)[0].stage(), v1::DROP_STAGE_AGENT_SPOOL);
  EXPECT_EQ(carried + (*drops)[0].count(), stats.dropped_batches);
  EXPECT_TRUE((*spool)->TakeDrops()->empty()) << "reported once";
}

TEST_F(SpoolTest, PendingDropsGoUpInADropsOnlyBatch) {
  const uint64_t one = MakeBatch("h", 1000).ByteSizeLong() + 64;
  auto spool = Spool::Open(Options(2 * one));
  ASSERT_TRUE(spool.ok());
  EXPECT_EQ(*(*spool)->AppendPendingDrops(1), 0u) << "nothing pending: nothing spooled";
  for (int i = 0; i < 4; ++i) ASSERT_TRUE((*spool)->Append(MakeBatch("h", 1000), 10 + i).ok());
  ASSERT_TRUE((*spool)->Acknowledge(4).ok());
  absl::StatusOr<uint64_t> seq = (*spool)->AppendPendingDrops(20);
  ASSERT_TRUE(seq.ok()) << seq.status();
  EXPECT_EQ(*seq, 5u);
  auto batches = (*spool)->ReadAfter(4, 10);
  ASSERT_TRUE(batches.ok());
  ASSERT_EQ(batches->size(), 1u);
  v1::Batch b;
  ASSERT_TRUE(b.ParseFromString((*batches)[0].serialized));
  EXPECT_EQ(b.reports_size(), 0);
  ASSERT_EQ(b.agent_drops_size(), 1);
  EXPECT_EQ(b.agent_drops(0).interval().end_unix_ns(), 20);
  // Batches 3 and 4 carried the drops before them; this one carries the rest.
  EXPECT_GT(b.agent_drops(0).count(), 0u);
  EXPECT_EQ(*(*spool)->AppendPendingDrops(21), 0u) << "reported once";
}

TEST_F(SpoolTest, DropNewestRefusesAndKeepsHistory) {
  const uint64_t one = MakeBatch("h", 1000).ByteSizeLong() + 16;
  SpoolOptions o = Options(2 * one);
  o.overflow_policy = v1::SPOOL_OVERFLOW_POLICY_DROP_NEWEST;
  auto spool = Spool::Open(o);
  ASSERT_TRUE(spool.ok());
  ASSERT_TRUE((*spool)->Append(MakeBatch("h", 1000), 0).ok());
  ASSERT_TRUE((*spool)->Append(MakeBatch("h", 1000), 0).ok());
  absl::StatusOr<uint64_t> third = (*spool)->Append(MakeBatch("h", 1000), 0);
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(third.status().message().find("full"), absl::string_view::npos) << third.status();
  EXPECT_EQ((*spool)->ReadAfter(0, 10)->front().seq, 1u);
  EXPECT_EQ((*spool)->stats().dropped_batches, 1u);
}

// The agent hands each batch the drops reported so far (TakeDrops -> Batch.agent_drops). When
// that batch is dropped in turn, the drops it carried must be reported again, or the server
// would hear of fewer drops than happened.
uint64_t CarriedDrops(const v1::Batch& b) {
  uint64_t n = 0;
  for (const v1::TelemetryDrops& d : b.agent_drops()) n += d.count();
  return n;
}

TEST_F(SpoolTest, DroppedBatchHandsBackTheDropsItCarried) {
  for (v1::SpoolOverflowPolicy policy : {v1::SPOOL_OVERFLOW_POLICY_DROP_OLDEST, v1::SPOOL_OVERFLOW_POLICY_DROP_NEWEST}) {
    std::filesystem::remove(dir_ / "spool.db");
    const uint64_t one = MakeBatch("h", 1000).ByteSizeLong() + 64;
    SpoolOptions o = Options(3 * one);
    o.overflow_policy = policy;
    auto spool = Spool::Open(o);
    ASSERT_TRUE(spool.ok());
    for (int i = 0; i < 20; ++i) {
      (void)(*spool)->Append(MakeBatch("h", 1000), i + 1);  // DROP_NEWEST refuses some: the point
    }
    uint64_t reported = 0;
    auto left = (*spool)->ReadAfter(0, 100);
    ASSERT_TRUE(left.ok());
    for (const SpooledBatch& sb : *left) {
      v1::Batch b;
      ASSERT_TRUE(b.ParseFromString(sb.serialized));
      reported += CarriedDrops(b);
    }
    auto pending = (*spool)->TakeDrops();
    ASSERT_TRUE(pending.ok());
    for (const v1::TelemetryDrops& d : *pending) reported += d.count();
    const uint64_t dropped = (*spool)->stats().dropped_batches;
    EXPECT_GT(dropped, 10u) << v1::SpoolOverflowPolicy_Name(policy);
    EXPECT_EQ(reported, dropped) << v1::SpoolOverflowPolicy_Name(policy)
                                 << ": drops carried by surviving batches plus those pending";
  }
}

TEST_F(SpoolTest, UnreportedDropsSurviveARestart) {
  const uint64_t one = MakeBatch("h", 1000).ByteSizeLong() + 16;
  {
    auto spool = Spool::Open(Options(one));
    ASSERT_TRUE(spool.ok());
    ASSERT_TRUE((*spool)->Append(MakeBatch("h", 1000), 0).ok());
    ASSERT_TRUE((*spool)->Append(MakeBatch("h", 1000), 0).ok());
  }
  auto spool = Spool::Open(Options(one));
  ASSERT_TRUE(spool.ok());
  auto drops = (*spool)->TakeDrops();
  ASSERT_TRUE(drops.ok());
  ASSERT_EQ(drops->size(), 1u);
  EXPECT_EQ((*drops)[0].count(), 1u);
}

TEST_F(SpoolTest, UnwritablePathIsAClearError) {
  auto spool = Spool::Open({.path = (dir_ / "missing" / "dir" / "spool.db").string()});
  ASSERT_FALSE(spool.ok());
  EXPECT_NE(spool.status().message().find("cannot open"), absl::string_view::npos) << spool.status();
}

}  // namespace
}  // namespace fleetpmu::agent

namespace fleetpmu::agent {
namespace {

TEST_F(SpoolTest, ShimCursorAdvancesWithItsBatchAndSurvivesReopen) {
  {
    auto spool = Spool::Open(Options());
    ASSERT_TRUE(spool.ok());
    EXPECT_EQ(*(*spool)->SpooledShimSeq("shim-a", 5), 0u);
    ShimCursor cursor{"shim-a", 5, 1};
    ASSERT_TRUE((*spool)->Append(MakeBatch("h"), 0, &cursor).ok());
    cursor.seq = 2;
    ASSERT_TRUE((*spool)->Append(MakeBatch("h"), 0, &cursor).ok());
  }
  auto spool = Spool::Open(Options());
  ASSERT_TRUE(spool.ok());
  EXPECT_EQ(*(*spool)->SpooledShimSeq("shim-a", 5), 2u);
  EXPECT_EQ(*(*spool)->SpooledShimSeq("shim-a", 6), 0u) << "a new shim epoch starts over";
}

TEST_F(SpoolTest, RefusedBatchDoesNotAdvanceTheShimCursor) {
  SpoolOptions o = Options(MakeBatch("h", 1000).ByteSizeLong() + 16);
  o.overflow_policy = v1::SPOOL_OVERFLOW_POLICY_DROP_NEWEST;
  auto spool = Spool::Open(o);
  ASSERT_TRUE(spool.ok());
  ShimCursor cursor{"s", 1, 1};
  ASSERT_TRUE((*spool)->Append(MakeBatch("h", 1000), 0, &cursor).ok());
  cursor.seq = 2;
  EXPECT_FALSE((*spool)->Append(MakeBatch("h", 1000), 0, &cursor).ok());
  EXPECT_EQ(*(*spool)->SpooledShimSeq("s", 1), 1u);
}

}  // namespace
}  // namespace fleetpmu::agent

namespace fleetpmu::agent {
namespace {

TEST_F(SpoolTest, HostInfoOutlivesARestart) {
  {
    auto spool = Spool::Open(Options());
    ASSERT_TRUE(spool.ok());
    EXPECT_EQ((*spool)->LoadHostInfo()->pcpus_size(), 0);
    v1::HostInfo info;
    info.add_pcpus()->set_num_counters(6);
    info.add_pcpus()->set_num_counters(6);
    ASSERT_TRUE((*spool)->SaveHostInfo(info).ok());
  }
  auto spool = Spool::Open(Options());
  ASSERT_TRUE(spool.ok());
  absl::StatusOr<v1::HostInfo> info = (*spool)->LoadHostInfo();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->pcpus_size(), 2);
}

}  // namespace
}  // namespace fleetpmu::agent
