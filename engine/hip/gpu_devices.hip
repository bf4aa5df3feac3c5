// OpenGpuDevices for the GPU builds (SPARKLE_GPU=amd|nvidia|emu); gpu_devices_off.cc is the
// SPARKLE_GPU=off one. One GpuExecutor per device the HIP runtime reports.
#include <hip/hip_runtime.h>

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/hip/gpu_device.h"
#include "engine/hip/gpu_executor.h"
#include "engine/hip/gpu_log.h"

#ifdef __HIP_PLATFORM_HIPEMU__
#include "hip_emu_control.h"
#endif

#ifndef SPARKLE_GPU_PLATFORM
#define SPARKLE_GPU_PLATFORM "unknown"
#endif

namespace sparkle {

GpuDevices OpenGpuDevices(const GpuOptions& options) {
  GpuDevices out;
  out.platform = SPARKLE_GPU_PLATFORM;
#ifdef __HIP_PLATFORM_HIPEMU__
  if (options.emulated_devices >= 0) {
    hipemu::Config config = hipemu::CurrentConfig();
    config.device_count = std::min(options.emulated_devices, 64);
    config.memory_bytes = std::max<int64_t>(options.emulated_memory_bytes, 0);
    hipemu::Configure(config);
  }
#endif
  // hip-build.md: with no driver or no device this fails within about a millisecond, and CUDA
  // leaves n untouched on error, hence n = 0 first.
  int n = 0;
  const hipError_t e = hipGetDeviceCount(&n);
  if (e != hipSuccess || n <= 0) {
    (void)hipGetLastError();  // do not leave the error for the next caller
    out.no_gpu_reason = e != hipSuccess
                            ? absl::StrCat("hipGetDeviceCount: ", hipGetErrorName(e))
                            : absl::StrCat("hipGetDeviceCount: ", n, " devices");
    hip::LogGpuInfo(absl::StrCat("GPU (", out.platform, " build): none, ", out.no_gpu_reason));
    return out;
  }
  const int use = options.max_devices < 0 ? n : std::min(n, options.max_devices);
  std::vector<std::string> failures;
  for (int i = 0; i < use; ++i) {
    absl::StatusOr<std::unique_ptr<hip::GpuExecutor>> ex = hip::GpuExecutor::Create(i, options);
    if (!ex.ok()) {
      failures.push_back(std::string(ex.status().message()));
      continue;
    }
    const GpuDeviceInfo info = (*ex)->Info();
    hip::LogGpuInfo(absl::StrCat("GPU ", info.index, ": ", info.name, " (", info.platform, "), ",
                                 info.memory_bytes >> 20, " MiB, ", info.compute_units,
                                 " compute units, ", options.slots, " slots of up to ",
                                 options.slot_bytes >> 20, " MiB"));
    out.devices.push_back(*std::move(ex));
  }
  if (out.devices.empty()) {
    out.no_gpu_reason =
        use == 0 ? absl::StrCat("GpuOptions.max_devices = 0 (", n, " devices present)")
                 : absl::StrCat("no device could be opened: ", absl::StrJoin(failures, "; "));
    hip::LogGpuInfo(absl::StrCat("GPU (", out.platform, " build): none, ", out.no_gpu_reason));
  } else {
    if (!failures.empty()) {
      hip::LogGpuWarning(absl::StrCat("GPU: ", failures.size(), " device(s) could not be opened: ",
                                      absl::StrJoin(failures, "; ")));
    }
    hip::LogGpuInfo(absl::StrCat("GPU (", out.platform, " build): using ",
                                 out.devices.size(), " of ", n, " device(s)"));
  }
  return out;
}

}  // namespace sparkle
