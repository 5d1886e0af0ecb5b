// SpscRing: order, bounds, drop counting, and a producer and a consumer on two threads.
#include "hypervisor-shim/telemetry/spsc_ring.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace fleetpmu::telemetry {
namespace {

TEST(SpscRing, PopsInPushOrder) {
  SpscRing<int> ring(4);
  EXPECT_EQ(ring.TryPop(), std::nullopt);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(ring.TryPush(int{i}));
  EXPECT_EQ(ring.size_approx(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(ring.TryPop(), i);
  EXPECT_EQ(ring.TryPop(), std::nullopt);
  EXPECT_EQ(ring.dropped(), 0u);
}

TEST(SpscRing, FullRingRefusesCountsTheDropAndLeavesTheValueAlone) {
  SpscRing<std::unique_ptr<int>> ring(2);
  ASSERT_TRUE(ring.TryPush(std::make_unique<int>(1)));
  ASSERT_TRUE(ring.TryPush(std::make_unique<int>(2)));
  auto third = std::make_unique<int>(3);
  EXPECT_FALSE(ring.TryPush(std::move(third)));
  ASSERT_NE(third, nullptr);  // NOLINT(bugprone-use-after-move): the contract under test
  EXPECT_EQ(*third, 3);
  EXPECT_FALSE(ring.TryPush(std::move(third)));
  EXPECT_EQ(ring.dropped(), 2u);
  EXPECT_EQ(**ring.TryPop(), 1);
  ASSERT_TRUE(ring.TryPush(std::move(third)));  // room again
  EXPECT_EQ(**ring.TryPop(), 2);
  EXPECT_EQ(**ring.TryPop(), 3);
  EXPECT_EQ(ring.TryPop(), std::nullopt);
}

TEST(SpscRing, CapacityOneAlternatesAndZeroMeansOne) {
  SpscRing<int> ring(0);
  EXPECT_EQ(ring.capacity(), 1u);
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(ring.TryPush(int{i}));
    EXPECT_FALSE(ring.TryPush(int{-1}));
    EXPECT_EQ(ring.TryPop(), i);
  }
  EXPECT_EQ(ring.dropped(), 100u);
}

TEST(SpscRing, WrapsAroundManyTimesWithoutLosingOrder) {
  SpscRing<uint64_t> ring(5);  // not a power of two
  uint64_t next_in = 0, next_out = 0;
  for (int round = 0; round < 1000; ++round) {
    const int pushes = round % 6;  // 0..5, sometimes filling the ring
    for (int i = 0; i < pushes; ++i) {
      if (ring.TryPush(uint64_t{next_in})) ++next_in;
    }
    const int pops = (round * 7) % 6;
    for (int i = 0; i < pops; ++i) {
      if (std::optional<uint64_t> v = ring.TryPop()) {
        EXPECT_EQ(*v, next_out++);
      }
    }
  }
  while (std::optional<uint64_t> v = ring.TryPop()) {
    EXPECT_EQ(*v, next_out++);
  }
  EXPECT_EQ(next_out, next_in);
}

TEST(SpscRing, PopReleasesTheSlotsResources) {
  SpscRing<std::shared_ptr<int>> ring(2);
  auto value = std::make_shared<int>(7);
  ASSERT_TRUE(ring.TryPush(std::shared_ptr<int>(value)));
  EXPECT_EQ(value.use_count(), 2);
  { std::optional<std::shared_ptr<int>> popped = ring.TryPop(); }
  EXPECT_EQ(value.use_count(), 1);
}

// A producer that never waits against a consumer on another thread: what arrives arrives once
// and in order, and everything else is counted as dropped.
TEST(SpscRing, TwoThreadsNothingDuplicatedOrReorderedAndDropsCounted) {
  constexpr uint64_t kItems = 2'000'000;
  SpscRing<uint64_t> ring(64);
  std::atomic<bool> producer_done{false};
  uint64_t refused = 0;
  std::thread producer([&] {
    for (uint64_t i = 0; i < kItems; ++i) {
      if (!ring.TryPush(uint64_t{i})) ++refused;
    }
    producer_done.store(true, std::memory_order_release);
  });
  uint64_t received = 0;
  uint64_t last = 0;
  bool ordered = true;
  for (;;) {
    // Read the flag before popping: if it was set, everything the producer pushed is visible.
    const bool done = producer_done.load(std::memory_order_acquire);
    std::optional<uint64_t> v = ring.TryPop();
    if (!v) {
      if (done) break;
      std::this_thread::yield();
      continue;
    }
    if (received != 0 && *v <= last) ordered = false;
    last = *v;
    ++received;
  }
  producer.join();
  EXPECT_TRUE(ordered) << "an item came out twice or out of order";
  EXPECT_EQ(received + refused, kItems);
  EXPECT_EQ(ring.dropped(), refused);
  EXPECT_GT(received, 0u);
}

// The same with a producer that retries: every item arrives, exactly in order.
TEST(SpscRing, TwoThreadsLosslessWhenTheProducerRetries) {
  constexpr uint64_t kItems = 1'000'000;
  SpscRing<uint64_t> ring(8);
  std::thread producer([&] {
    for (uint64_t i = 0; i < kItems; ++i) {
      while (!ring.TryPush(uint64_t{i})) std::this_thread::yield();
    }
  });
  uint64_t expected = 0;
  uint64_t mismatches = 0;
  while (expected < kItems) {
    if (std::optional<uint64_t> v = ring.TryPop()) {
      if (*v != expected) ++mismatches;
      ++expected;
    } else {
      std::this_thread::yield();
    }
  }
  producer.join();
  EXPECT_EQ(mismatches, 0u);
  EXPECT_EQ(ring.TryPop(), std::nullopt);
}

}  // namespace
}  // namespace fleetpmu::telemetry
