// tests/sanitizers/tsan_gomp.cc in the SPARKLE_SANITIZE=thread build: plain data the calling
// thread writes before an OpenMP parallel region, the team writes inside it and the caller reads
// after it raises no TSan report (before tsan_gomp.cc, each case was a reported data race).
#include <omp.h>

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"

namespace {

TEST(TsanGompTest, ParallelRegionForkAndJoinOrderWrites) {
  for (int round = 0; round < 20; ++round) {
    std::vector<int64_t> slots(64, round);  // written here, then by the team
    const int64_t base = round * 1000;      // read by the team
#pragma omp parallel num_threads(4)
    {
      const int t = omp_get_thread_num();
      for (size_t i = t; i < slots.size(); i += omp_get_num_threads()) slots[i] += base + 1;
    }
    for (int64_t v : slots) EXPECT_EQ(v, round + base + 1);
  }
}

TEST(TsanGompTest, ParallelForAndBarrierOrderWrites) {
  std::vector<int64_t> a(256, 1), b(256, 0);
#pragma omp parallel num_threads(4)
  {
#pragma omp for schedule(static)
    for (int i = 0; i < 256; ++i) a[i] = i;
    // (implicit barrier of `omp for`: every a[i] is written before any b[i] reads a[255 - i])
#pragma omp for schedule(static)
    for (int i = 0; i < 256; ++i) b[i] = a[255 - i];
  }
  for (int i = 0; i < 256; ++i) EXPECT_EQ(b[i], 255 - i);
}

}  // namespace
