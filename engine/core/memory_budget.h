// MemoryBudget: a byte limit that several owners draw from (e.g. the weights registry's entries
// and their prepacked copies). Reservations are all-or-nothing; thread-safe and lock-free.
#pragma once

#include <atomic>
#include <cstdint>

namespace sparkle {

class MemoryBudget {
 public:
  // limit_bytes >= 0.
  explicit MemoryBudget(int64_t limit_bytes) : limit_(limit_bytes) {}

  MemoryBudget(const MemoryBudget&) = delete;
  MemoryBudget& operator=(const MemoryBudget&) = delete;

  // Adds `bytes` (>= 0) to what is used iff the sum stays within the limit.
  bool TryReserve(int64_t bytes);
  // Returns bytes earlier reserved.
  void Release(int64_t bytes);

  int64_t used() const { return used_.load(std::memory_order_relaxed); }
  int64_t limit() const { return limit_; }

 private:
  const int64_t limit_;
  std::atomic<int64_t> used_{0};
};

}  // namespace sparkle
