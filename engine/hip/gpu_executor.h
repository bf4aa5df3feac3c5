// GpuExecutor: the GpuDevice of one HIP device, a triple-buffered pipeline.
//
// Plain C++ header (no HIP type): the implementation lives in gpu_executor.hip and is compiled by
// the GPU compiler of the build (clang HIP, nvcc through the hip-on-cuda shim, or g++ with the
// hip-on-cpu emulator). docs/gpu.md, "Executor", draws the pipeline.
//
// Pipeline, per device:
//   caller ── Submit ──► slot kFree→kStaging (blocks while no slot is free: back-pressure); a
//     work larger than one slot is cut along N into pieces that each fit one, and Submit claims
//     a slot per piece in turn (returning once the last piece is queued)
//   staging thread: copies every part's input (and per-batch weights) into the slot's pinned
//     buffer (split across GpuOptions.copy_threads, host_copy_pool.h), enqueues H2D (h2d stream) → event → kernel (compute stream) → event → D2H
//     (d2h stream) → event; slot kStaging→kComputing
//   drain thread: waits for the compute event (kComputing→kDraining) and the D2H event, copies
//     the pinned output into every part's output buffer, calls done, slot kDraining→kFree.
// With three slots the H2D of slot i+1 overlaps the kernel of slot i and the D2H of slot i−1.
//
// Guarantees:
//   - `done` runs exactly once per accepted work, on the drain thread, IN SUBMISSION ORDER
//     (the order in which Submit calls returned OK on this device), after the work's last piece
//     with the first error of any piece (timings: h2d_end and compute_start of the first piece,
//     compute_end and d2h_end of the last). It runs before the slot is freed, so at most
//     `slots` works are accepted and not yet done at any time. Keep it short:
//     the next completion waits for it. It must not call Submit or Flush of the same device
//     (they would wait for the drain thread, which is running it).
//   - Submit takes `work` and `done` only when it returns OK; refused, both stay with the caller
//     untouched (done not run). Every check (validity, support, health, one image fitting a
//     slot, the first piece's memory) happens before the first piece is accepted. A later piece
//     that cannot get its slot memory (device out of memory) or meets a fault is the work's
//     last: done then gets that error once the pieces before it drained.
//   - Resident weights: a work with a non-empty weight_id finds its weights (and bias) on the
//     device, uploaded once per id and kept in an LRU bounded by GpuOptions::weight_cache_bytes;
//     entries used by in-flight work are never evicted. An empty weight_id, weights larger than
//     the cache, or a cache that cannot make room (device memory) upload the weights per piece
//     into the slot, beside the input. Resident entries are FP32 (BF16/FP16 weights are widened
//     once at upload). WeightsResident(id) answers from this map.
//   - Pinned weights (GpuWork::pin_weights, registered ids only, INVALID_ARGUMENT otherwise):
//     resident like the others but out of the LRU (not counted in weight_cache_bytes, never
//     evicted, not even for device memory) until ReleaseWeights(id), which frees them at once,
//     or when the last accepted work using them completes.
//   - Slot memory (pinned host and device, same layout: input | residual | weights | bias |
//     output, in the job's datatypes, then on the device only the FP32 scratch of BF16/FP16
//     jobs, ConvKernels::ScratchBytes) grows on demand up to GpuOptions::slot_bytes (scratch
//     included). RESOURCE_EXHAUSTED when one image (with the weights,
//     when they travel in the slot) needs more than slot_bytes, or the first piece's device (or
//     pinned host) memory cannot be allocated.
//   - Kernel tuning (conv_kernels.h) runs on the kernels' own thread: a shape whose N bucket is
//     not tuned yet runs the default implementation at once. Its scratch memory is not counted
//     in Info().memory_used_bytes; an allocation that fails while it is held waits for tuning
//     to finish and tries once more.
//   - Device faults: any HIP error once a work is accepted (launch failure, illegal address,
//     failed copy or event) latches the device unhealthy forever; the failing work and every
//     work queued behind it complete with INTERNAL naming the device and the error; Submit then
//     answers UNAVAILABLE. The executor cannot tell a sticky error from a transient one on every
//     vendor, so it treats them all as sticky. Out-of-memory at admission is not a fault.
//   - The destructor waits for every accepted work to complete (or fail) first.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/hip/gpu_device.h"

namespace sparkle::hip {

// Counters of one executor, for tests and status pages.
struct GpuExecutorStats {
  int busy_slots = 0;                 // slots not kFree right now
  int max_busy_slots = 0;             // the most busy slots ever seen at once (≤ slots)
  int64_t accepted = 0;               // works Submit accepted
  int64_t completed = 0;              // works whose done has returned
  int64_t pieces = 0;                 // slots used by accepted works (> accepted: split works)
  int64_t weight_uploads = 0;         // resident weight entries uploaded (non-empty weight_id)
  int64_t weight_hits = 0;            // accepted works that found their weights resident
  int64_t weight_evictions = 0;       // resident entries evicted (LRU or to free device memory)
  int64_t weights_in_slot = 0;        // accepted works whose weights travelled in their slots
  int64_t resident_weight_bytes = 0;  // device bytes held by LRU resident weights now
  int64_t pinned_weight_bytes = 0;    // device bytes held by pinned weights now (not in the LRU)
  int64_t pinned_releases = 0;        // pinned entries freed after ReleaseWeights
  int64_t tunings = 0;                // shapes (N buckets) the kernel tuner finished
};

class GpuExecutor final : public GpuDevice {
 public:
  // Opens HIP device `device` (an ordinal below hipGetDeviceCount): streams, events, kernels.
  // options must be in the ranges gpu_device.h documents (INVALID_ARGUMENT otherwise); any HIP
  // error is UNAVAILABLE naming the call and the error. Starts the two pipeline threads.
  static absl::StatusOr<std::unique_ptr<GpuExecutor>> Create(int device,
                                                              const GpuOptions& options);
  ~GpuExecutor() override;

  GpuExecutor(const GpuExecutor&) = delete;
  GpuExecutor& operator=(const GpuExecutor&) = delete;

  GpuDeviceInfo Info() const override;
  absl::Status Supports(const Conv2dParams& p) const override;
  absl::Status Submit(GpuWork&& work, GpuDone&& done) override;
  bool WeightsResident(const WeightId& id) const override;
  void ReleaseWeights(const WeightId& id) override;
  void Flush() override;
  bool healthy() const override;
  std::string unhealthy_reason() const override;

  GpuExecutorStats Stats() const;
  // Tests and benchmarks: blocks until the kernel tuner has no shape queued or running.
  void WaitForTuning();

  struct Impl;  // defined in gpu_executor.hip

 private:
  explicit GpuExecutor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sparkle::hip
