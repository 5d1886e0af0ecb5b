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
  const uint64_t one = MakeBatch("h", 1000).ByteSizeLong() + 16;
  auto spool = Spool::Open(Options(3 * one));
  ASSERT_TRUE(spool.ok());
  for (int i = 0; i < 5; ++i) ASSERT_TRUE((*spool)->Append(MakeBatch("h", 1000), i).ok());
  auto batches = (*spool)->ReadAfter(0, 10);
  ASSERT_TRUE(batches.ok());
  ASSERT_FALSE(batches->empty());
  EXPECT_GT((*batches)[0].seq, 1u) << "the oldest went";
  EXPECT_EQ(batches->back().seq, 5u) << "the newest stayed";
  const SpoolStats stats = (*spool)->stats();
  EXPECT_LE(stats.bytes, 3 * one);
  EXPECT_EQ(stats.dropped_batches, 5 - batches->size());
  auto drops = (*spool)->TakeDrops();
  ASSERT_TRUE(drops.ok());
  ASSERT_EQ(drops->size(), 1u);
  EXPECT_EQ((*drops)[0].stage(), v1::DROP_STAGE_AGENT_SPOOL);
  EXPECT_EQ((*drops)[0].count(), stats.dropped_batches);
  EXPECT_TRUE((*spool)->TakeDrops()->empty()) << "reported once";
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
