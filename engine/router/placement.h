// Placement: where each batch runs. Builds the router's view of every device (the CPU pool and
// each GPU: health, whether it can run the batch, resident weights, queue ahead, measured rates),
// asks the cost model (router.h) and adds exploration: a usable device that `auto` has passed
// over kExploreAfter batches in a row gets the next one, so that its rates stay current (a rate
// is only refined on a device that receives work). Keeps the decision counters and learns rates
// from ExecutionReports. Knows no backend: devices are seen through DeviceExecutor counters and
// the GpuDevice interface.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "engine/core/batch.h"
#include "engine/core/device_request.h"
#include "engine/device_executor.h"
#include "engine/hip/gpu_device.h"
#include "engine/router/rate_estimator.h"
#include "engine/router/router.h"

namespace sparkle {

class Placement {
 public:
  struct Gpu {
    GpuDevice* device = nullptr;             // not owned
    const DeviceExecutor* executor = nullptr;  // its dispatcher, for the queue ahead; not owned
  };
  struct Options {
    // Where `auto` requests go (EngineOptions::device_policy).
    DeviceRequest policy;
    int cpu_threads = 1;               // the CPU pool's threads (one_thread batches use one)
    const DeviceExecutor* cpu = nullptr;  // not owned; required
    std::vector<Gpu> gpus;             // by ordinal
    std::string no_gpu_reason;         // why `gpus` is empty, for error messages
    // Seeds for slot 0 (the CPU) and 1 + i (GPU i), and the refinement settings.
    std::vector<RateEstimator::Seed> seeds;
    RateEstimator::Options rates;
  };

  // INVALID_ARGUMENT when a required field is missing, the seeds do not match the devices, or
  // the rate options are out of range.
  static absl::StatusOr<std::unique_ptr<Placement>> Create(Options options);

  struct Decision {
    int gpu = -1;             // -1: the CPU pool
    double predicted_s = 0;   // predicted run time (without the queue ahead)
  };
  // The device for `batch` (its jobs' common DeviceRequest, "auto" already resolved to the
  // policy by Submit). Errors as Route (router.h): the batch's jobs complete with them.
  absl::StatusOr<Decision> Place(const Batch& batch);

  // The admission check of an explicit GPU request: FAILED_PRECONDITION (absent), UNAVAILABLE
  // (latched unhealthy). OK for auto and cpu.
  absl::Status CheckDevice(const DeviceRequest& request) const;

  // Refines the rates from one executed batch.
  void Observe(const ExecutionReport& report);

  // Decisions so far ([0] the CPU, [1 + i] GPU i), the measured rates, and the crossover of the
  // most recently routed shape class against the best healthy GPU.
  struct Snapshot {
    std::vector<int64_t> decisions;
    std::vector<double> gflops, transfer_gbps, launch_overhead_s;  // per slot
    double crossover_mflop = 0;
    std::string crossover_shape;
  };
  Snapshot snapshot() const;

  const RateEstimator& rates() const { return *rates_; }

 private:
  Placement(Options options, std::unique_ptr<RateEstimator> rates);
  std::vector<DeviceView> Views(const Conv2dParams& p, const WeightId& weights,
                                bool one_thread) const;

  const Options options_;
  const std::unique_ptr<RateEstimator> rates_;
  mutable absl::Mutex mu_;
  std::vector<int64_t> decisions_ ABSL_GUARDED_BY(mu_);    // [0] the CPU, [1 + i] GPU i
  std::vector<int64_t> passed_over_ ABSL_GUARDED_BY(mu_);  // consecutive `auto` misses
  std::optional<Conv2dParams> last_routed_ ABSL_GUARDED_BY(mu_);
};

// The rate estimator's shape class: the geometry without N, and whether the batch runs on one
// CPU thread (side by side) or on the whole pool.
uint64_t RateClass(const Conv2dParams& p, bool one_thread);

}  // namespace sparkle
