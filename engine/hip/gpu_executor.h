// GpuExecutor: the GpuDevice of one HIP device, a triple-buffered pipeline.
//
// Plain C++ header (no HIP type): the implementation lives in gpu_executor.hip and is compiled by
// the GPU compiler of the build (clang HIP, nvcc through the hip-on-cuda shim, or g++ with the
// hip-on-cpu emulator). docs/gpu.md, "Executor", draws the pipeline.
//
// Pipeline, per device:
//   caller ── Submit ──► slot kFree→kStaging (blocks while no slot is free: back-pressure)
//   staging thread: copies every part's input (and per-batch weights) into the slot's pinned
//     buffer (split across GpuOptions.copy_threads, host_copy_pool.h), enqueues H2D (h2d stream) → event → kernel (compute stream) → event → D2H
//     (d2h stream) → event; slot kStaging→kComputing
//   drain thread: waits for the compute event (kComputing→kDraining) and the D2H event, copies
//     the pinned output into every part's output buffer, calls done, slot kDraining→kFree.
// With three slots the H2D of slot i+1 overlaps the kernel of slot i and the D2H of slot i−1.
//
// Guarantees:
//   - `done` runs exactly once per accepted work, on the drain thread, IN SUBMISSION ORDER
//     (the order in which Submit calls returned OK on this device). It runs before the slot is
//     freed, so at most `slots` works are accepted and not yet done at any time. Keep it short:
//     the next completion waits for it. It must not call Submit or Flush of the same device
//     (they would wait for the drain thread, which is running it).
//   - Resident weights: a work with weight_key != 0 finds its weights (and bias) on the device,
//     uploaded once per key and kept in an LRU bounded by GpuOptions::weight_cache_bytes;
//     entries used by in-flight work are never evicted. weight_key 0, weights larger than the
//     cache, or a cache that cannot make room (device memory) upload the weights per batch into
//     the slot, beside the input.
//   - Slot memory (pinned host and device, same layout: input | weights | bias | output) grows on
//     demand up to GpuOptions::slot_bytes. RESOURCE_EXHAUSTED when a batch needs more than
//     slot_bytes or the device (or pinned host) memory cannot be allocated.
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
  int64_t weight_uploads = 0;         // resident weight entries uploaded (weight_key != 0)
  int64_t weight_hits = 0;            // accepted works that found their weights resident
  int64_t weight_evictions = 0;       // resident entries evicted (LRU or to free device memory)
  int64_t weights_in_slot = 0;        // accepted works whose weights travelled in their slot
  int64_t resident_weight_bytes = 0;  // device bytes held by resident weights now
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
  absl::Status Submit(GpuWork work, GpuDone done) override;
  void Flush() override;
  bool healthy() const override;
  std::string unhealthy_reason() const override;

  GpuExecutorStats Stats() const;

  struct Impl;  // defined in gpu_executor.hip

 private:
  explicit GpuExecutor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sparkle::hip
