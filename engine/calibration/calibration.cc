#include "engine/calibration/calibration.h"

#include "engine/calibration/rate_probe.h"
#include "spdlog/spdlog.h"

namespace sparkle {
namespace {

// Start-up defaults when nothing was measured: deliberately optimistic for the GPU, because
// online refinement corrects a rate only on a device that receives work.
constexpr double kDefaultCpuGflops = 50;
constexpr double kDefaultGpuGflops = 5000;
constexpr double kDefaultGpuTransferGbps = 10;

}  // namespace

std::vector<RateEstimator::Seed> Calibrate(const CalibrationOptions& options, CpuBackend& cpu,
                                           const std::vector<GpuDevice*>& gpus) {
  std::vector<RateEstimator::Seed> seeds(1 + gpus.size());
  seeds[0].compute_gflops = options.cpu_gflops > 0 ? options.cpu_gflops : kDefaultCpuGflops;
  if (!gpus.empty() && options.cpu_gflops == 0) {
    absl::StatusOr<double> measured = MeasureCpuGflops(cpu);
    if (measured.ok()) seeds[0].compute_gflops = *measured;
  }
  for (size_t i = 0; i < gpus.size(); ++i) {
    GpuDevice& device = *gpus[i];
    RateEstimator::Seed& seed = seeds[1 + i];
    seed.compute_gflops = options.gpu_gflops > 0 ? options.gpu_gflops : kDefaultGpuGflops;
    seed.transfer_gbps =
        options.gpu_transfer_gbps > 0 ? options.gpu_transfer_gbps : kDefaultGpuTransferGbps;
    seed.launch_overhead_s = options.gpu_launch_overhead_s;
    if (options.gpu_gflops == 0 || options.gpu_transfer_gbps == 0) {
      const RateEstimator::Seed measured = MeasureGpu(device, seed, options.gpu_probe_budget);
      if (options.gpu_gflops == 0) seed.compute_gflops = measured.compute_gflops;
      if (options.gpu_transfer_gbps == 0) seed.transfer_gbps = measured.transfer_gbps;
    }
    const GpuDeviceInfo info = device.Info();
    spdlog::info("engine: gpu:{} {} ({}, {:.1f} GiB, {} CUs): {:.0f} GFLOP/s, {:.1f} GB/s "
                 "host<->device",
                 i, info.name, info.platform, info.memory_bytes / double(1 << 30),
                 info.compute_units, seed.compute_gflops, seed.transfer_gbps);
  }
  return seeds;
}

}  // namespace sparkle
