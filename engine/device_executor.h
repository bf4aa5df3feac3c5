// DeviceExecutor: the engine's one seam to a device kind. The CPU pool (cpu/cpu_executor.h) and
// each GPU (gpu/gpu_dispatcher.h) implement it; the engine routes a batch (router/placement.h)
// and hands it to the chosen executor, which runs it and gives every job back, exactly once,
// through Hooks::complete (on whatever thread finished it: the engine then completes the jobs on
// its CompletionExecutor, never on that thread).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "engine/core/batch.h"
#include "engine/core/conv2d_params.h"
#include "engine/core/job.h"

namespace sparkle {

// Work done by one device since start, and its queue: one struct for every device kind,
// snapshotted (copied under the executor's lock) for status pages and metrics.
struct DeviceCounters {
  int64_t jobs_done = 0;       // jobs completed OK here
  int64_t batches_done = 0;    // batches executed here (failed ones included)
  int64_t batched_jobs = 0;    // jobs in those batches
  double gflop_done = 0;       // useful GFLOP of the successful batches
  double busy_seconds = 0;     // CPU: wall time of batches; GPU: compute-stream time
  int64_t queued_batches = 0;  // routed here and not finished
  double queued_seconds = 0;   // their predicted seconds (the router's "queue ahead")
};

// What one executed batch measured, for the router's rate estimator.
struct ExecutionReport {
  int device = -1;             // -1 the CPU pool, else the GPU ordinal
  Conv2dParams params;         // the batch (n = the sum of its jobs' n)
  bool one_thread = false;     // CPU: the batch ran on one thread
  bool ok = false;
  double compute_seconds = 0;  // 0 when not measured
  // GPU: host<->device bytes and seconds, set only when nothing else of ours was on the device
  // (so the transfer was not slowed by waiting behind other works).
  bool transfer_observed = false;
  double transfer_bytes = 0;
  double transfer_seconds = 0;
};

class DeviceExecutor {
 public:
  struct Hooks {
    // Gives jobs back with their final status (OK: outputs written); each job exactly once.
    // Jobs of one batch may come back in several calls (e.g. some expired before launch).
    // Called on an executor thread, with no executor lock held. Required.
    std::function<void(std::vector<std::unique_ptr<Conv2dJob>>, const absl::Status&)> complete;
    // After every executed batch, before its jobs are given back. Optional.
    std::function<void(const ExecutionReport&)> report;
  };

  virtual ~DeviceExecutor() = default;

  // Takes a batch whose jobs share geometry and confirmed weights. `predicted_s` (the router's
  // predicted run time) counts in queued_seconds until the batch finishes. The CPU runs it on
  // the calling thread before returning; a GPU queues it and returns at once.
  virtual void Execute(std::unique_ptr<Batch> batch, double predicted_s) = 0;

  // Runs every batch already taken to completion and stops. Idempotent; Execute not after it.
  virtual void Close() = 0;

  virtual DeviceCounters counters() const = 0;
};

}  // namespace sparkle
