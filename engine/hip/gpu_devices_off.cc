// OpenGpuDevices for SPARKLE_GPU=off: this binary holds no GPU code, so there is never a
// device. gpu_devices.hip is the implementation for the amd, nvidia and emu builds.
#include "engine/hip/gpu_device.h"

namespace sparkle {

GpuDevices OpenGpuDevices(const GpuOptions& options) {
  GpuDevices out;
  out.platform = "off";
  out.no_gpu_reason = "built with SPARKLE_GPU=off";
  return out;
}

}  // namespace sparkle
