// Start-up rate measurements that seed the RateEstimator, run once at Engine::Create and only
// when a GPU is present (a CPU-only engine has nothing to decide).
#pragma once

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/hip/gpu_device.h"
#include "engine/router/rate_estimator.h"

namespace sparkle {

// GFLOP/s of the CPU pool on a representative layer (1x64x28x28, K=64, 3x3, pad 1: 58 MFLOP)
// on every thread: one warm-up run, then the fastest of five. A few ms.
absl::StatusOr<double> MeasureCpuGflops(CpuBackend& cpu);

// One GPU through its GpuDevice: a transfer-bound work (1x1 conv over 2 MiB in and out) gives
// the host<->device rate; two convs of different size (1.2 and 75 MFLOP, after one warm-up)
// give the compute rate as the slope (ΔFLOP / Δcompute time), so launch latency does not
// count as slowness. Each work waits at most `budget`; the probe stops at the first failure
// (timeout or error), and a rate it could not measure keeps its value from `defaults`.
RateEstimator::Seed MeasureGpu(GpuDevice& device, const RateEstimator::Seed& defaults,
                               absl::Duration budget);

}  // namespace sparkle
