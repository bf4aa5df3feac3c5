// The platform layer end to end in every SPARKLE_GPU with HIP (amd, nvidia, emu): a kernel in a
// .hip file (hip_platform_kernels.hip) gets a Conv2dParams by value and computes what the host
// computes. Without a GPU it skips (fails with SPARKLE_REQUIRE_GPU=1); the emulator build
// configures one emulated device.
#include <cstdint>
#include <vector>

#include "engine/core/conv2d_params.h"
#include "gtest/gtest.h"
#include "tests/engine/hip/hip_platform_kernels.h"
#include "tests/testing/gpu_test_env.h"

namespace sparkle::testing {
namespace {

TEST(HipPlatformTest, KernelSeesConv2dParams) {
  absl::StatusOr<int> count = HipDeviceCountForTest();
  if (!count.ok()) SPARKLE_SKIP_OR_FAIL_WITHOUT_GPU(count.status().message());
  absl::StatusOr<int> warp = HipWarpSize();
  ASSERT_TRUE(warp.ok()) << warp.status();
  EXPECT_TRUE(*warp == 32 || *warp == 64) << *warp;

  Conv2dParams p;
  p.r = 3;
  p.stride_h = 2;
  p.SetPad(1, 0);
  p.dilation_h = 2;
  const int n = 300;  // input heights 1..300; those Validate() rejects are not compared
  absl::StatusOr<std::vector<int64_t>> got = OutputHeightsOnDevice(p, n);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), size_t{n});
  int compared = 0;
  for (int i = 0; i < n; ++i) {
    Conv2dParams q = p;
    q.h = i + 1;
    if (!q.Validate().ok()) continue;
    ASSERT_EQ((*got)[i], q.p()) << q.ToString();
    ++compared;
  }
  EXPECT_GT(compared, 290);
}

}  // namespace
}  // namespace sparkle::testing
