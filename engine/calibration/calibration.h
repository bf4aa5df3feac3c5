// Start-up calibration: the rates the router starts from, one RateEstimator::Seed per device
// (slot 0 the CPU pool, 1 + i GPU i). A rate given in the options is used as is; a rate left 0
// is measured (rate_probe.h) when there is a GPU to decide for, else a default is used. Runs
// once, at Engine::Create; the estimator refines every rate online afterwards.
#pragma once

#include <vector>

#include "absl/time/time.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/hip/gpu_device.h"
#include "engine/router/rate_estimator.h"

namespace sparkle {

struct CalibrationOptions {
  // GFLOP/s and GB/s (1e9 bytes/s); 0 = measure. Ranges as EngineOptions documents them.
  double cpu_gflops = 0;
  double gpu_gflops = 0;
  double gpu_transfer_gbps = 0;
  double gpu_launch_overhead_s = 30e-6;  // seconds per GPU batch, not measured
  absl::Duration gpu_probe_budget = absl::Seconds(2);  // per probe work
};

std::vector<RateEstimator::Seed> Calibrate(const CalibrationOptions& options, CpuBackend& cpu,
                                           const std::vector<GpuDevice*>& gpus);

}  // namespace sparkle
