// Host entry points of hip_platform_kernels.hip, for hip_platform_test.cc. Plain C++: the test
// itself is built by the host compiler (clang-15 crashes compiling gtest.h for AMD devices, so
// GPU tests keep gtest out of .hip files).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/conv2d_params.h"

namespace sparkle::testing {

// Devices the HIP runtime reports; UNAVAILABLE with the HIP error name when there is none. In
// the emulator build it first configures the emulator with one device.
absl::StatusOr<int> HipDeviceCountForTest();

// Warp size of device 0 (32 or 64 on real GPUs).
absl::StatusOr<int> HipWarpSize();

// Output height P of `p` for input heights 1..n, computed by a kernel on device 0 that gets `p`
// by value.
absl::StatusOr<std::vector<int64_t>> OutputHeightsOnDevice(const Conv2dParams& p, int n);

}  // namespace sparkle::testing
