// CpuExecutor: the CPU pool as a DeviceExecutor. Batches run on the thread that calls Execute
// (an engine worker), through CpuBackend (oneDNN on OpenMP):
//   - one_thread batches (small jobs, concatenated along N into per-thread gather buffers) take
//     one slot of the pool and run on one OpenMP thread, several side by side;
//   - other batches take every slot and run each job on every thread, one at a time, in slices
//     along N of at most Options::slice_flops; between slices the pool is released and waiting
//     one_thread batches go first, so a large job delays a small one by one slice, not by the
//     whole job. A large job waiting for the pool stops new small batches from taking slots
//     (else two workers alternating small batches could starve it).
// ExecuteLater runs a batch on the executor's own fallback thread instead (batches a GPU could
// not run): never on the caller's thread.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "base/clock.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/device_executor.h"

namespace sparkle {

class CpuExecutor final : public DeviceExecutor {
 public:
  struct Options {
    CpuBackend* backend = nullptr;  // not owned, outlives the executor; required
    Clock* clock = Clock::Real();   // not owned; required
    // Largest slice of a whole-pool job run under one hold of the pool, in FLOP: ~60 ms at the
    // ~330 GFLOP/s oneDNN reaches on big layers on the 2-core reference machine, large enough
    // that per-slice overhead is noise. Range [1e6, 1e15].
    double slice_flops = 20e9;
    // Start the fallback thread that ExecuteLater needs (the engine asks for it when it has GPUs).
    bool fallback_thread = false;
  };

  static absl::StatusOr<std::unique_ptr<CpuExecutor>> Create(const Options& options, Hooks hooks);
  ~CpuExecutor() override;  // Close()

  void Execute(std::unique_ptr<Batch> batch, double predicted_s) override;
  // Queues the batch for the fallback thread (Options::fallback_thread) and returns.
  void ExecuteLater(std::unique_ptr<Batch> batch);
  void Close() override;
  DeviceCounters counters() const override;

 private:
  struct Impl;
  explicit CpuExecutor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sparkle
