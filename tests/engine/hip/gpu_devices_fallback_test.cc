// OpenGpuDevices on a machine without a usable GPU, in every SPARKLE_GPU mode: no device, a
// reason, the platform this binary was built for, and no crash or hang (the emulator starts
// with 0 devices unless HIPEMU_DEVICES says otherwise).
#include <string>

#include "engine/hip/gpu_device.h"
#include "gtest/gtest.h"

namespace sparkle {
namespace {

TEST(GpuDevicesFallbackTest, NoGpuMeansNoDeviceAndAReason) {
  GpuDevices devices = OpenGpuDevices(GpuOptions{});
  EXPECT_EQ(devices.platform, SPARKLE_GPU_PLATFORM);
  if (!devices.devices.empty()) {
    GTEST_SKIP() << "this machine has " << devices.devices.size()
                 << " GPU(s): the no-GPU fallback cannot be observed here";
  }
  EXPECT_FALSE(devices.no_gpu_reason.empty());
  if (std::string(SPARKLE_GPU_PLATFORM) == "off") {
    EXPECT_EQ(devices.no_gpu_reason, "built with SPARKLE_GPU=off");
  }
  // Asking again gives the same answer (no latched error, nothing half-initialised).
  GpuDevices again = OpenGpuDevices(GpuOptions{});
  EXPECT_TRUE(again.devices.empty());
  EXPECT_EQ(again.no_gpu_reason, devices.no_gpu_reason);
}

}  // namespace
}  // namespace sparkle
