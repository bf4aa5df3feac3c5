// A kernel and its host launcher through the platform layer, one source for every SPARKLE_GPU
// with HIP: absl, Conv2dParams and gpu_device.h compile here under clang-15 HIP, nvcc and g++.
#include <hip/hip_runtime.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/hip/gpu_device.h"
#include "tests/engine/hip/hip_platform_kernels.h"
#ifdef __HIP_PLATFORM_HIPEMU__
#include "hip_emu_control.h"
#endif

namespace sparkle::testing {
namespace {

absl::Status HipOk(hipError_t e, const char* what) {
  if (e == hipSuccess) return absl::OkStatus();
  (void)hipGetLastError();
  return absl::InternalError(absl::StrCat(what, ": ", hipGetErrorName(e)));
}

// out[i] = output height P of `p` with input height i + 1.
__global__ void OutputHeights(Conv2dParams p, int n, int64_t* out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int64_t h = i + 1;
  out[i] = (h + p.pad_top + p.pad_bottom - p.dilation_h * (p.r - 1) - 1) / p.stride_h + 1;
}

}  // namespace

absl::StatusOr<int> HipDeviceCountForTest() {
#ifdef __HIP_PLATFORM_HIPEMU__
  hipemu::Config config;
  config.device_count = 1;
  hipemu::Configure(config);
#endif
  int count = 0;
  const hipError_t e = hipGetDeviceCount(&count);
  if (e != hipSuccess || count <= 0) {
    (void)hipGetLastError();
    return absl::UnavailableError(absl::StrCat("hipGetDeviceCount: ", hipGetErrorName(e)));
  }
  return count;
}

absl::StatusOr<int> HipWarpSize() {
  hipDeviceProp_t prop;
  if (absl::Status s = HipOk(hipGetDeviceProperties(&prop, 0), "hipGetDeviceProperties");
      !s.ok()) {
    return s;
  }
  return prop.warpSize;
}

absl::StatusOr<std::vector<int64_t>> OutputHeightsOnDevice(const Conv2dParams& p, int n) {
  int64_t* d = nullptr;
  if (absl::Status s = HipOk(hipMalloc(&d, n * sizeof(int64_t)), "hipMalloc"); !s.ok()) return s;
  hipLaunchKernelGGL(OutputHeights, dim3((n + 127) / 128), dim3(128), 0, 0, p, n, d);
  std::vector<int64_t> out(n);
  absl::Status s = HipOk(hipGetLastError(), "launch");
  if (s.ok()) {
    s = HipOk(hipMemcpy(out.data(), d, n * sizeof(int64_t), hipMemcpyDeviceToHost), "copy");
  }
  (void)hipFree(d);
  if (!s.ok()) return s;
  return out;
}

}  // namespace sparkle::testing
