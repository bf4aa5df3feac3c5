// Conv2dJob: one conv2d request as the engine sees it. The submitter owns every buffer the
// job points to and keeps them alive until `done` has run; the engine reads input, weight,
// bias and residual (elements of params.dtype) and writes exactly output_elements() elements of
// params.output_dtype to `output`. Buffers are aligned to their element size.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/core/conv2d_params.h"
#include "engine/core/device_request.h"
#include "engine/core/exec_timestamps.h"

namespace sparkle {

class RegisteredWeight;  // engine/registry/registered_weight.h

// Called exactly once per accepted job, on an engine thread, with no engine lock held. OK means
// `output` holds the result; any other status means its contents are unspecified.
using JobDone = absl::AnyInvocable<void(const absl::Status&, const ExecTimestamps&) &&>;

// Set by the submitter (e.g. when the client goes away); read by the engine at batch formation
// and before launch. A job found cancelled completes with CANCELLED.
using CancelFlag = std::shared_ptr<std::atomic<bool>>;

struct Conv2dJob {
  Conv2dParams params;
  const void* input = nullptr;     // params.input_elements()
  const void* weight = nullptr;    // params.weight_elements()
  const void* bias = nullptr;      // params.k elements when params.has_bias, else ignored
  const void* residual = nullptr;  // params.output_elements() when params.has_residual
  void* output = nullptr;          // params.output_elements(), written by the engine

  // Set when the job uses registered weights (engine/registry, WeightRegistry::Acquire): keeps
  // them alive and counted in use while the job is in flight (the engine drops it just before
  // done runs). Engine::Submit takes weight, bias and weight_key from it (the registration's
  // bias, if any, is the job's bias).
  std::shared_ptr<const RegisteredWeight> registered_weight;

  // Batching key, set by Engine::Submit (any value the submitter leaves is replaced): jobs
  // share a queue only when their geometry and weight_key match; 0 means "runs alone". Registered
  // weights: the registration's key. Weights sent with the request: one key meaning "identity
  // to be confirmed", so a worker gives them their confirmed WeightId (core/weight_cache.h) and
  // splits a batch where they differ. Nothing trusts this key as proof of equal weights.
  uint64_t weight_key = 0;
  // False: the job runs in a batch of its own even when others share its key (set by the
  // engine for large jobs that can only run on the CPU, where concatenating gains nothing).
  bool batchable = true;

  // Where the job may run (docs/protocol.md `device`). "auto" takes the engine's device policy at
  // Submit. Jobs with different requests never share a batch.
  DeviceRequest device;

  absl::Time deadline = absl::InfiniteFuture();  // expired jobs complete DEADLINE_EXCEEDED
  int priority = 0;  // Triton semantics: 1 is the highest level, 0 the default (lowest here)
  CancelFlag cancelled;  // optional
  // Who sent the job: the authenticated token name when the server checks tokens, else the
  // peer address. Per-client fair scheduling keys on it; unused otherwise for now.
  std::string client;
  JobDone done;

  ExecTimestamps timestamps;  // filled by the engine

  bool IsCancelled() const { return cancelled && cancelled->load(std::memory_order_relaxed); }
  // Input + weight + bias + output bytes: what the job pins in memory while queued.
  int64_t bytes() const { return params.total_bytes(); }
};

}  // namespace sparkle
