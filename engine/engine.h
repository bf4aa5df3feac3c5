// Engine: the conv2d inference engine, with no knowledge of gRPC, protobuf, metrics or flags.
//
// Submit() validates a job and queues it in the ShapeBatcher; worker threads take batches,
// run them on the CPU backend (oneDNN on an OpenMP pool) and call each job's done exactly once.
// Batches of small jobs run side by side, one OpenMP thread each; a large job uses every thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/core/job.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/scheduler/shape_batcher.h"

namespace sparkle {

// Counters since start, for status reports. A consistent snapshot of monotonic counters.
struct EngineStats {
  int64_t jobs_accepted = 0;
  int64_t jobs_rejected = 0;   // refused by Submit (invalid, too large, queue full, draining)
  int64_t jobs_succeeded = 0;
  int64_t jobs_failed = 0;     // accepted, completed with an error (deadline, cancel, internal)
  int64_t batches = 0;         // executed batches
  int64_t batched_jobs = 0;    // jobs in executed batches (batched_jobs / batches = mean size)
  double gflop = 0;            // useful GFLOP of succeeded jobs
  double busy_seconds = 0;     // summed wall time of executed batches
  QueueSnapshot queue;
};

// True for the RESOURCE_EXHAUSTED that Submit returns when the queue is full (a retryable
// overload), as opposed to a job that can never fit.
bool IsQueueFull(const absl::Status& status);

struct EngineOptions {
  ShapeBatcher::Options batcher;
  CpuBackend::Options cpu;
  // Largest input + weight + bias + output bytes of one job. RESOURCE_EXHAUSTED above it (the
  // message names `max_job_bytes_flag`). Range [1, 2^50].
  int64_t max_job_bytes = int64_t{1} << 30;
  // Weights up to this many bytes are hashed at Submit so that jobs sending the same weights
  // batch together and share the reordered copy. Range [0, 2^40]; 0 disables it.
  int64_t max_hashed_weight_bytes = int64_t{4} << 20;
  // Jobs below this many FLOP are "small": they batch with jobs of the same key, and their
  // batches run on one OpenMP thread each, several side by side. Larger jobs run alone (oneDNN
  // already runs them near peak at their own N; concatenating would add two copies of their
  // tensors) on every thread. In FLOP; range [0, 1e15]. 0: no job is small.
  double small_job_max_flops = 2e7;
  // Names used in error messages so that users learn which flag raises a limit; a library
  // never reads flags itself.
  std::string max_job_bytes_flag = "max_job_bytes";
};

class Engine {
 public:
  // Validates the options (INVALID_ARGUMENT naming the field), creates the backend and starts
  // the worker threads.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineOptions& options);
  // Stops admission, runs every job already accepted to completion, joins the workers.
  ~Engine();

  // Takes the job iff OK (then job->done runs exactly once, later, on an engine thread).
  // Otherwise the job stays with the caller and done is not called: INVALID_ARGUMENT (params,
  // null buffers), RESOURCE_EXHAUSTED (job too large, queue full), DEADLINE_EXCEEDED,
  // UNAVAILABLE (draining). Thread-safe; never blocks on compute.
  absl::Status Submit(std::unique_ptr<Conv2dJob>* job);

  // Stops admission (UNAVAILABLE) and waits until every accepted job has completed or
  // `deadline` passes. OK when all completed, DEADLINE_EXCEEDED (naming how many are still in
  // flight) otherwise; those keep running and complete later. Idempotent.
  absl::Status Drain(absl::Time deadline);

  bool draining() const;
  EngineStats Stats() const;
  const CpuBackend& cpu() const;
  const EngineOptions& options() const;

 private:
  // Implementation details follow; API users need not read.
  struct Impl;
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sparkle
