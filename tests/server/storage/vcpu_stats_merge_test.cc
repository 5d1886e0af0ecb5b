#include "server/storage/vcpu_stats_merge.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/telemetry_fixtures.h"

namespace fleetpmu::server {
namespace {

using ::fleetpmu::server::testing::kBaseUnixNs;
using ::fleetpmu::server::testing::kSecondNs;
using ::fleetpmu::server::testing::MakeHistogram;
using ::fleetpmu::server::testing::MakeVcpuStats;
using ::fleetpmu::server::testing::MakeVm;
using ::fleetpmu::v1::LatencyHistogram;
using ::testing::ElementsAre;

LatencyHistogram Histogram(std::initializer_list<uint64_t> bounds,
                           std::initializer_list<uint64_t> counts) {
  LatencyHistogram h;
  uint64_t total = 0;
  for (uint64_t bound : bounds) h.add_bucket_upper_bounds_ns(bound);
  for (uint64_t count : counts) {
    h.add_bucket_counts(count);
    total += count;
  }
  h.set_count(total);
  h.set_sum_ns(total * 10);
  return h;
}

TEST(MergeHistogramTest, EqualBoundsAddBucketByBucket) {
  LatencyHistogram into = MakeHistogram(1, 2);
  MergeHistogram(MakeHistogram(10, 20), &into);
  EXPECT_THAT(into.bucket_upper_bounds_ns(), ElementsAre(1000, 10000));
  EXPECT_THAT(into.bucket_counts(), ElementsAre(11, 22, 0));
  EXPECT_EQ(into.count(), 33u);
  EXPECT_EQ(into.sum_ns(), 11u * 500 + 22u * 5000);
}

TEST(MergeHistogramTest, DifferentBoundsMergeOntoCommonBoundsExactly) {
  LatencyHistogram into = Histogram({100, 200, 400}, {1, 2, 3, 4});
  MergeHistogram(Histogram({200, 300, 400, 800}, {10, 20, 30, 40, 50}), &into);
  EXPECT_THAT(into.bucket_upper_bounds_ns(), ElementsAre(200, 400));
  // <=200: 1+2+10; (200,400]: 3+20+30; >400: 4+40+50.
  EXPECT_THAT(into.bucket_counts(), ElementsAre(13, 53, 94));
  EXPECT_EQ(into.count(), 160u);
}

TEST(MergeHistogramTest, EmptyHistogramIsTheIdentity) {
  LatencyHistogram into;
  MergeHistogram(MakeHistogram(3, 4), &into);
  EXPECT_EQ(into.SerializeAsString(), MakeHistogram(3, 4).SerializeAsString());
  MergeHistogram(LatencyHistogram(), &into);
  EXPECT_EQ(into.SerializeAsString(), MakeHistogram(3, 4).SerializeAsString());
}

TEST(MergeVcpuStatsTest, SumsCountsMapsAndWidensInterval) {
  const fleetpmu::v1::VmInfo vm = MakeVm("vm-1", "tenant-a");
  fleetpmu::v1::VcpuStats into;
  MergeVcpuStats(MakeVcpuStats(vm, 1, kBaseUnixNs + 10 * kSecondNs, kBaseUnixNs + 20 * kSecondNs),
                 &into);
  fleetpmu::v1::VcpuStats earlier =
      MakeVcpuStats(vm, 1, kBaseUnixNs, kBaseUnixNs + 10 * kSecondNs, 2);
  earlier.set_ownership_at_end(fleetpmu::v1::OWNERSHIP_STATE_FREE);
  (*earlier.mutable_traps_by_register())["PMCR_EL0"] = 5;
  MergeVcpuStats(earlier, &into);

  EXPECT_EQ(into.vm_id(), "vm-1");
  EXPECT_EQ(into.tenant_id(), "tenant-a");
  EXPECT_EQ(into.vcpu(), 1u);
  EXPECT_EQ(into.interval().start_unix_ns(), kBaseUnixNs);
  EXPECT_EQ(into.interval().end_unix_ns(), kBaseUnixNs + 20 * kSecondNs);
  // The later interval decides the state at the end.
  EXPECT_EQ(into.ownership_at_end(), fleetpmu::v1::OWNERSHIP_STATE_GUEST_OWNED);
  EXPECT_EQ(into.loads(), 200u);
  EXPECT_EQ(into.traps_by_register().at("PMOVSSET_EL0"), 4u);
  EXPECT_EQ(into.traps_by_register().at("PMCR_EL0"), 5u);
  EXPECT_EQ(into.overflows().lost(), 3u);
  ASSERT_EQ(into.lost_by_reason_size(), 1);
  EXPECT_EQ(into.lost_by_reason(0).count(), 3u);
  EXPECT_EQ(into.load_latency().count(), 150u);
  EXPECT_EQ(into.run_time_ns(), static_cast<uint64_t>(10 * kSecondNs));
}

}  // namespace
}  // namespace fleetpmu::server
