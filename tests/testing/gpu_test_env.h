// What a GPU test does when the machine has no GPU: skip with a visible reason, or fail when the
// environment says a GPU is expected (SPARKLE_REQUIRE_GPU=1, e.g. CI on a GPU machine), so that
// a broken driver or a CPU-only build can never pass as "all GPU tests skipped".
//
//   if (devices.devices.empty()) SPARKLE_SKIP_OR_FAIL_WITHOUT_GPU(devices.no_gpu_reason);
#pragma once

#include <cstdlib>
#include <cstring>

#include "gtest/gtest.h"

namespace sparkle::testing {

// True when SPARKLE_REQUIRE_GPU=1 is in the environment.
inline bool GpuRequired() {
  const char* v = std::getenv("SPARKLE_REQUIRE_GPU");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

}  // namespace sparkle::testing

// Ends the current test: FAIL() when a GPU is required, GTEST_SKIP() otherwise; both print
// `reason`. A macro because both return from the test body.
#define SPARKLE_SKIP_OR_FAIL_WITHOUT_GPU(reason)                                   \
  do {                                                                             \
    if (::sparkle::testing::GpuRequired()) {                                       \
      FAIL() << "SPARKLE_REQUIRE_GPU=1 but there is no usable GPU: " << (reason);  \
    } else {                                                                       \
      GTEST_SKIP() << "no GPU, skipping (SPARKLE_REQUIRE_GPU=1 makes this a failure): " \
                   << (reason);                                                    \
    }                                                                              \
  } while (0)
