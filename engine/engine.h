// Engine: the conv2d inference engine, with no knowledge of gRPC, protobuf, metrics or flags.
// A facade that wires its parts; each lives in its own file:
//   admission_control.h   per-job cost limits and the in-flight byte budget (Admit)
//   scheduler/            ShapeBatcher: per-shape queues, priority levels, per-client fairness
//   core/weight_cache.h   confirmed weight identity (XXH3-128 + one byte comparison)
//   router/placement.h    CPU or which GPU for each batch (cost model + exploration)
//   calibration/          start-up rates the router begins with
//   cpu/cpu_executor.h    the CPU pool (slots, gather/scatter, slicing of large jobs)
//   gpu/gpu_dispatcher.h  one GPU (submission, faults, fallback to the CPU)
//   core/completion_executor.h  the threads that run jobs' done callbacks
// Submit admits a job and queues it; worker threads take batches, give them a weight identity
// (splitting a batch whose jobs turn out to carry different weights), place them and hand them
// to the chosen DeviceExecutor. Executors give finished jobs back; the engine completes them on
// its CompletionExecutor. Each job's done is called exactly once.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/clock.h"
#include "engine/admission_control.h"
#include "engine/core/completion_executor.h"
#include "engine/core/device_request.h"
#include "engine/core/job.h"
#include "engine/core/weight_cache.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/devices_snapshot.h"
#include "engine/gpu/gpu_dispatcher.h"
#include "engine/hip/gpu_device.h"
#include "engine/calibration/calibration.h"
#include "engine/router/rate_estimator.h"
#include "engine/scheduler/shape_batcher.h"
#include "engine/registry/weight_registry.h"

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
  int64_t inflight_bytes = 0;  // bytes held by admissions now (EngineOptions::max_inflight_bytes)
  QueueSnapshot queue;
};

// IsQueueFull (admission_control.h) tells the retryable RESOURCE_EXHAUSTED of Submit and Admit
// (queue or budget full) from a job that can never fit.

struct EngineOptions {
  // The engine's only time source (tests pass a FakeClock); not owned, must outlive the engine.
  // It replaces batcher.clock.
  Clock* clock = Clock::Real();
  ShapeBatcher::Options batcher;
  CpuBackend::Options cpu;
  // Every limit below is named in the RESOURCE_EXHAUSTED message that it causes, by its field
  // name (sparkled's flag of the same name sets it).
  // Largest input + weight + bias + output bytes of one job. Range [1, 2^50].
  int64_t max_job_bytes = int64_t{1} << 30;
  // Weights sent with a request, up to this many bytes (weight + bias), get a confirmed identity
  // on a worker thread (core/weight_cache.h: one read to hash, one to compare) so that jobs
  // sending the same weights batch together and share reordered or resident copies; larger
  // ones run alone, uncached. Range [0, 2^40]; 0 disables it.
  int64_t max_hashed_weight_bytes = int64_t{4} << 20;
  // The copies kept to confirm identities (LRU); bytes, range [0, 2^40].
  WeightCache::Options weight_cache;
  // Threads that complete jobs (the server serializes and sends replies there). Range [1, 64].
  int completion_threads = 2;
  // Jobs below this many FLOP are "small": on the CPU their batches are concatenated along N
  // and run on one OpenMP thread each, several side by side. Larger jobs run on every thread,
  // one job at a time (oneDNN already runs them near peak at their own N; concatenating would
  // add two copies of their tensors). The rule is the CPU pool's only: batches for a GPU are
  // concatenated whatever their size (launch and transfer per batch are what batching saves
  // there), and large jobs that may only run on the CPU are not batched at all. In FLOP;
  // range [0, 1e15]. 0: no job is small.
  double small_job_max_flops = 2e7;
  // Largest cost of one job in GFLOP (Conv2dParams::flops, the direct algorithm), checked
  // before anything is allocated. Range
  // (0, 1e9]. The default admits every layer of the reference table at N=64 (the largest,
  // vgg_3x3_224, is 237 GFLOP: ~0.7 s at the ~330 GFLOP/s oneDNN reaches on the 2-core
  // reference machine, docs/performance.md); 500 GFLOP is ~1.5 s there.
  double max_job_gflop = 500;
  // Largest scratch one job may make the CPU backend hold besides its own tensors, in bytes:
  // checked at Submit against the padded input (Conv2dParams::padded_input_bytes) and the
  // im2col bound of every thread (Conv2dParams::im2col_bytes × threads), and by the backend
  // against oneDNN's scratchpad + layout-reorder buffers once the primitive descriptor exists,
  // before any buffer is allocated. Also bounds what a primitive may cost to create. Range
  // [1 MiB, 2^50].
  int64_t max_job_scratch_bytes = int64_t{512} << 20;
  // Bytes (Conv2dJob::bytes: input + weight + bias + output) of admitted jobs that have not
  // completed yet, queued and running together. Admission beyond it is the retryable
  // queue-full RESOURCE_EXHAUSTED (IsQueueFull); a job larger than the whole budget is refused
  // for good. Range [1 MiB, 2^50]. The default keeps a
  // daemon with default flags under 1 GiB RSS (docs/operations.md, "Memory bounds").
  // 448 MiB: 32 `large` jobs (12.8 MB in + out) from four connections of 8 streams fit, so
  // such a client is slowed by the stream cap and never refused; one ~256 MiB output at a time.
  int64_t max_inflight_bytes = int64_t{448} << 20;
  // The weights registry (budget, persistence directory), created with the engine.
  WeightRegistry::Options weights;

  // GPUs (engine/hip/gpu_device.h), opened once at Create. None is the normal case: the engine
  // is then CPU-only and says why in Devices().router.gpu_fallback_reason.
  GpuOptions gpu;
  // Where jobs whose own request is "auto" go: auto (the router decides per batch), cpu, gpu
  // (the best healthy GPU) or gpu:N. A GPU policy on a machine without that GPU fails Create
  // with FAILED_PRECONDITION.
  DeviceRequest device_policy;
  // What happens to queued work of a GPU that latched unhealthy (gpu/gpu_dispatcher.h).
  GpuFaultPolicy on_gpu_fault = GpuFaultPolicy::kRerouteToCpu;
  // Router rates (calibration/calibration.h). 0 = measured at Create when a GPU is present
  // (CPU: a short oneDNN run of a representative layer; GPU: a small transfer-bound and a small
  // compute-bound work through the device, defaults if that fails), then refined online from
  // completed batches. GFLOP/s and GB/s (1e9 bytes/s), each in [0, 1e7]; the launch overhead
  // is the fixed cost the router adds to every GPU batch (submit, launch, synchronisation),
  // seconds, [0, 1].
  double cpu_gflops = 0;
  double gpu_gflops = 0;
  double gpu_transfer_gbps = 0;
  double gpu_launch_overhead_s = 30e-6;
  // Online refinement of the rates (EWMA weight, shape classes kept per device).
  RateEstimator::Options rates;
  // Test seam: opens the GPUs. Null = OpenGpuDevices (engine/hip).
  std::function<GpuDevices(const GpuOptions&)> open_gpus;
};

class Engine {
  struct Impl;

 public:
  // A job's share of the in-flight budget (admission_control.h).
  using Admission = sparkle::Admission;

  // Validates the options (INVALID_ARGUMENT naming the field), creates the backend and starts
  // the worker threads.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineOptions& options);
  // Stops admission, runs every job already accepted to completion, joins the workers.
  ~Engine();

  // Takes the job iff OK (then job->done runs exactly once, later, on an engine thread).
  // Otherwise the job stays with the caller and done is not called: INVALID_ARGUMENT (params,
  // null buffers), RESOURCE_EXHAUSTED (job too large or too costly: max_job_bytes,
  // max_job_gflop, max_job_scratch_bytes; queue or in-flight budget full), DEADLINE_EXCEEDED,
  // UNAVAILABLE (draining, or the requested GPU latched unhealthy), FAILED_PRECONDITION (the
  // requested GPU does not exist; the message says why there is none). Thread-safe; never
  // blocks on compute.
  absl::Status Submit(std::unique_ptr<Conv2dJob>* job);

  // Every check of Submit that needs the geometry alone (validity, max_job_bytes,
  // max_job_gflop, max_job_scratch_bytes), then a reservation of params.total_bytes()
  // in the in-flight budget (queue-full RESOURCE_EXHAUSTED when it has no room). A caller that
  // allocates a job's buffers itself (the server's response) admits first, so that no buffer
  // is made for a job that cannot run, then submits with the admission. Thread-safe.
  absl::StatusOr<Admission> Admit(const Conv2dParams& params);
  // Submit of a job admitted by Admit with the same params (INVALID_ARGUMENT otherwise).
  // The caller keeps `admission` alive at least until the job's done has run (the server keeps
  // it until the response is sent, so that the budget covers the response buffer).
  absl::Status Submit(std::unique_ptr<Conv2dJob>* job, const Admission& admission);

  // Stops admission (UNAVAILABLE) and waits until every accepted job has completed or
  // `deadline` passes. OK when all completed, DEADLINE_EXCEEDED (naming how many are still in
  // flight) otherwise; those keep running and complete later. Idempotent.
  absl::Status Drain(absl::Time deadline);

  bool draining() const;
  EngineStats Stats() const;
  // The CPU pool and every GPU (health, memory, work done, queue, measured rates) and the
  // router's decisions and crossover. Cheap: copies counters under short locks.
  DevicesSnapshot Devices() const;
  const CpuBackend& cpu() const;
  // Registered weights; jobs name them through Conv2dJob::registered_weight. Thread-safe.
  WeightRegistry& registry() const;
  const EngineOptions& options() const;

 private:
  // Implementation details follow; API users need not read.
  // `held`, when set, is `admission` itself, owned by the job until it completes.
  absl::Status SubmitAdmitted(std::unique_ptr<Conv2dJob>* job, const Admission& admission,
                              std::unique_ptr<Admission> held);
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sparkle
