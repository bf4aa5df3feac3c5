// See pinned_h2d_probe.h.
#include "bench/pinned_h2d_probe.h"

#include <hip/hip_runtime.h>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace sparkle::bench {
namespace {

// Frees whatever was allocated, on every path.
struct ProbeResources {
  void* host = nullptr;
  void* dev = nullptr;
  hipStream_t stream = nullptr;
  hipEvent_t start = nullptr, stop = nullptr;
  ~ProbeResources() {
    if (stream != nullptr) (void)hipStreamSynchronize(stream);
    if (start != nullptr) (void)hipEventDestroy(start);
    if (stop != nullptr) (void)hipEventDestroy(stop);
    if (stream != nullptr) (void)hipStreamDestroy(stream);
    if (dev != nullptr) (void)hipFree(dev);
    if (host != nullptr) (void)hipHostFree(host);
  }
};

}  // namespace

absl::StatusOr<double> PinnedH2dBytesPerSecond(int device, int64_t bytes, int copies) {
  ProbeResources r;
  auto check = [](hipError_t e, const char* what) {
    return e == hipSuccess ? absl::OkStatus()
                           : absl::UnavailableError(absl::StrCat(what, ": ", hipGetErrorName(e)));
  };
  const size_t n = static_cast<size_t>(bytes);
  SPARKLE_RETURN_IF_ERROR(check(hipSetDevice(device), "hipSetDevice"));
  SPARKLE_RETURN_IF_ERROR(check(hipHostMalloc(&r.host, n, hipHostMallocDefault), "hipHostMalloc"));
  SPARKLE_RETURN_IF_ERROR(check(hipMalloc(&r.dev, n), "hipMalloc"));
  SPARKLE_RETURN_IF_ERROR(
      check(hipStreamCreateWithFlags(&r.stream, hipStreamNonBlocking), "hipStreamCreate"));
  SPARKLE_RETURN_IF_ERROR(check(hipEventCreate(&r.start), "hipEventCreate"));
  SPARKLE_RETURN_IF_ERROR(check(hipEventCreate(&r.stop), "hipEventCreate"));
  // Touch the pinned pages once so that the first copy does not pay for faults.
  for (size_t i = 0; i < n; i += 4096) static_cast<char*>(r.host)[i] = 1;
  SPARKLE_RETURN_IF_ERROR(
      check(hipMemcpyAsync(r.dev, r.host, n, hipMemcpyHostToDevice, r.stream), "warm-up"));
  SPARKLE_RETURN_IF_ERROR(check(hipEventRecord(r.start, r.stream), "hipEventRecord"));
  for (int i = 0; i < copies; ++i) {
    SPARKLE_RETURN_IF_ERROR(check(
        hipMemcpyAsync(r.dev, r.host, n, hipMemcpyHostToDevice, r.stream), "hipMemcpyAsync"));
  }
  SPARKLE_RETURN_IF_ERROR(check(hipEventRecord(r.stop, r.stream), "hipEventRecord"));
  SPARKLE_RETURN_IF_ERROR(check(hipEventSynchronize(r.stop), "hipEventSynchronize"));
  float ms = 0;
  SPARKLE_RETURN_IF_ERROR(check(hipEventElapsedTime(&ms, r.start, r.stop), "hipEventElapsedTime"));
  if (ms <= 0) return absl::UnavailableError("hipEventElapsedTime: no time passed");
  return static_cast<double>(bytes) * copies / (static_cast<double>(ms) * 1e-3);
}

}  // namespace sparkle::bench
