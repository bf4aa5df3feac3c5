// HostCopyPool: every byte lands where it should, for sizes around the chunk boundaries, with
// one thread or several, and with several callers at once.
#include "engine/hip/host_copy_pool.h"

#include <cstdint>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace sparkle::hip {
namespace {

std::vector<uint8_t> Pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<uint8_t>(x >> 24);
  }
  return v;
}

// Copies buffers of the given sizes through the pool and checks them byte for byte.
void CheckCopies(HostCopyPool& pool, const std::vector<size_t>& sizes, uint32_t seed) {
  std::vector<std::vector<uint8_t>> src, dst;
  std::vector<HostCopyPool::Copy> copies;
  for (size_t i = 0; i < sizes.size(); ++i) {
    src.push_back(Pattern(sizes[i], seed + static_cast<uint32_t>(i)));
    dst.emplace_back(sizes[i] + 16, 0xAB);  // 16 guard bytes that must stay untouched
  }
  for (size_t i = 0; i < sizes.size(); ++i) {
    copies.push_back({dst[i].data(), src[i].data(), sizes[i]});
  }
  pool.Run(copies);
  for (size_t i = 0; i < sizes.size(); ++i) {
    ASSERT_TRUE(std::equal(src[i].begin(), src[i].end(), dst[i].begin())) << "copy " << i;
    for (size_t g = sizes[i]; g < dst[i].size(); ++g) ASSERT_EQ(dst[i][g], 0xAB) << i;
  }
}

const std::vector<size_t> kSizes = {
    0, 1, 4096, HostCopyPool::kChunkBytes - 1, HostCopyPool::kChunkBytes,
    HostCopyPool::kChunkBytes + 3, 5 * HostCopyPool::kChunkBytes / 2, 7 * HostCopyPool::kChunkBytes + 5};

TEST(HostCopyPoolTest, CopiesEveryByteWithOneThread) {
  HostCopyPool pool(1);
  CheckCopies(pool, kSizes, 1);
}

TEST(HostCopyPoolTest, CopiesEveryByteWithSeveralThreads) {
  HostCopyPool pool(4);
  CheckCopies(pool, kSizes, 2);
  CheckCopies(pool, {3 * HostCopyPool::kChunkBytes + 1}, 3);  // one buffer, split
  CheckCopies(pool, {10}, 4);                                  // small: the caller alone
}

TEST(HostCopyPoolTest, ConcurrentCallersShareTheHelpers) {
  HostCopyPool pool(3);
  std::vector<std::thread> callers;
  for (uint32_t t = 0; t < 4; ++t) {
    callers.emplace_back([&pool, t] {
      for (uint32_t round = 0; round < 5; ++round) CheckCopies(pool, kSizes, 100 * t + round);
    });
  }
  for (auto& c : callers) c.join();
}

}  // namespace
}  // namespace sparkle::hip
