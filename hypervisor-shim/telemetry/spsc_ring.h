// SpscRing<T>: a bounded, lock-free queue between exactly one producer thread and exactly one
// consumer thread (DESIGN.md "Never block the guest").
//
// Contract:
//   * TryPush (producer only) never blocks and never allocates: when the ring is full it leaves
//     the value alone, counts the drop and returns false. The caller decides what a drop means
//     (the telemetry code reports it as a TelemetryDrops stage).
//   * TryPop (consumer only) never blocks: an empty ring gives std::nullopt.
//   * Items come out exactly once, in the order they went in.
//   * size_approx() and dropped() may be read from any thread; size_approx() is exact only on
//     the consumer side between its own pops (the producer may add concurrently).
//   * The producer and the consumer may be the same thread (the interval reporter uses one ring
//     that its own simulation thread fills and drains).
//
// Storage: `capacity` slots of T allocated once, at construction. T must be default-
// constructible and move-assignable; a popped slot is reset to T() so that the ring does not keep
// the popped value's resources alive.
#ifndef FLEETPMU_HYPERVISOR_SHIM_TELEMETRY_SPSC_RING_H_
#define FLEETPMU_HYPERVISOR_SHIM_TELEMETRY_SPSC_RING_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>

namespace fleetpmu::telemetry {

template <typename T>
class SpscRing {
 public:
  // `capacity` >= 1 items (0 is treated as 1).
  explicit SpscRing(size_t capacity)
      : capacity_(capacity == 0 ? 1 : capacity), slots_(std::make_unique<T[]>(capacity_)) {}
  SpscRing(const SpscRing&) = delete;
  SpscRing& operator=(const SpscRing&) = delete;

  // Producer. Moves `value` into the ring, or, when the ring is full, leaves `value` untouched,
  // counts one drop and returns false.
  bool TryPush(T&& value) {
    const uint64_t tail = tail_.load(std::memory_order_relaxed);
    if (tail - producer_head_cache_ >= capacity_) {
      producer_head_cache_ = head_.load(std::memory_order_acquire);
      if (tail - producer_head_cache_ >= capacity_) {
        // Only the producer writes dropped_: a relaxed read-modify-write is enough.
        dropped_.store(dropped_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        return false;
      }
    }
    slots_[tail % capacity_] = std::move(value);
    tail_.store(tail + 1, std::memory_order_release);  // publishes the slot to the consumer
    return true;
  }

  // Consumer. The oldest item, or nullopt when the ring is empty.
  std::optional<T> TryPop() {
    const uint64_t head = head_.load(std::memory_order_relaxed);
    if (head == consumer_tail_cache_) {
      consumer_tail_cache_ = tail_.load(std::memory_order_acquire);
      if (head == consumer_tail_cache_) return std::nullopt;
    }
    T& slot = slots_[head % capacity_];
    std::optional<T> out(std::move(slot));
    slot = T();
    head_.store(head + 1, std::memory_order_release);  // hands the slot back to the producer
    return out;
  }

  size_t capacity() const { return capacity_; }
  // Items in the ring now, as far as the calling thread can tell.
  size_t size_approx() const {
    const uint64_t head = head_.load(std::memory_order_acquire);
    const uint64_t tail = tail_.load(std::memory_order_acquire);
    return tail >= head ? static_cast<size_t>(tail - head) : 0;
  }
  // Pushes refused because the ring was full, since construction.
  uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }

 private:
  // The producer's and the consumer's indices live on separate cache lines, each next to the
  // side's cached copy of the other index, so that the two threads do not share a line in the
  // common case.
  static constexpr size_t kCacheLine = 64;

  const size_t capacity_;
  const std::unique_ptr<T[]> slots_;
  alignas(kCacheLine) std::atomic<uint64_t> tail_{0};  // next slot to fill; written by producer
  uint64_t producer_head_cache_ = 0;                   // producer's last view of head_
  std::atomic<uint64_t> dropped_{0};                   // written by producer
  alignas(kCacheLine) std::atomic<uint64_t> head_{0};  // next slot to empty; written by consumer
  uint64_t consumer_tail_cache_ = 0;                   // consumer's last view of tail_
};

}  // namespace fleetpmu::telemetry

#endif  // FLEETPMU_HYPERVISOR_SHIM_TELEMETRY_SPSC_RING_H_
