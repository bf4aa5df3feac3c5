// GpuDevice: one GPU as the engine sees it, behind a plain C++ interface. No HIP type appears
// here: everything outside engine/hip/*.hip (and the files that only the GPU build compiles)
// is built by the host compiler, whatever SPARKLE_GPU says.
//
// Each device owns a triple-buffered executor (pinned staging slots, H2D / compute / D2H
// streams linked by events), the kernels, and the weights it keeps resident per confirmed WeightId.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/core/conv2d_params.h"
#include "engine/core/weight_id.h"

namespace sparkle {

struct GpuOptions {
  // Staging slots per device (the executor's pipeline depth). Range [1, 8]; 3 = triple buffering.
  int slots = 3;
  // Pinned host bytes per slot for input + output staging. A work larger than one slot is run
  // in pieces along N; only one image larger than a slot is RESOURCE_EXHAUSTED. Range
  // [1 MiB, 2^40].
  int64_t slot_bytes = int64_t{256} << 20;
  // Device bytes kept for resident weights (LRU per WeightId; pinned registered weights are not counted here). Range [0, 2^40].
  int64_t weight_cache_bytes = int64_t{1} << 30;
  // Directory where the kernel tuning results are cached across restarts; "" = in memory only.
  std::string tuning_cache_dir;
  // Use at most this many devices; -1 = all. Range [-1, 64].
  int max_devices = -1;
  // Host threads per device copying jobs' inputs into pinned staging and outputs back out (one
  // thread's memcpy is slower than a PCIe 5 link). Range [1, 64].
  int copy_threads = 4;
  // Test/demo only, SPARKLE_GPU=emu builds only (ignored elsewhere): OpenGpuDevices configures
  // the HIP-on-CPU emulator with this many devices of emulated_memory_bytes each (resetting it).
  // -1 = leave the emulator as it is (HIPEMU_DEVICES / HIPEMU_MEMORY_MB in the environment,
  // default 0 devices). Range [-1, 64]; memory range [0, 2^46] bytes.
  int emulated_devices = -1;
  int64_t emulated_memory_bytes = int64_t{1} << 30;
};

struct GpuDeviceInfo {
  int index = 0;                  // ordinal as the platform counts it
  std::string name;               // e.g. "NVIDIA H100 80GB HBM3", "hip-cpu-emulator"
  std::string platform;           // "amd" | "nvidia" | "emu"
  int64_t memory_bytes = 0;       // total device memory
  int64_t memory_used_bytes = 0;  // held by this process (weights, slots)
  int compute_units = 0;
};

// One piece of a batch: a job's own input and output buffers (host memory, plain layout as
// params.layout says), `n` images of the batch's geometry.
// Elements of params.dtype (the output: params.output_dtype), n images each.
struct GpuPart {
  const void* input = nullptr;
  void* output = nullptr;
  int64_t n = 0;
  const void* residual = nullptr;  // when params.has_residual
};

// A batch for the GPU: parts share the geometry (params.n = the sum of their n) and weights.
// A work larger than one staging slot (GpuOptions::slot_bytes) is run in pieces along N, each
// within a slot; `done` still runs once, after the last piece.
struct GpuWork {
  Conv2dParams params;
  std::vector<GpuPart> parts;
  const void* weight = nullptr;  // [K, C/groups, R, S]
  const void* bias = nullptr;    // [K] when params.has_bias
  // Confirmed identity (engine/core/weight_id.h): non-empty ids are kept resident on the device
  // and equal ids are trusted to be equal bytes. Empty: the weights travel with the work.
  WeightId weight_id;
  // Registered weights: kept resident and pinned (never evicted by the LRU of
  // GpuOptions::weight_cache_bytes, not counted in it) until ReleaseWeights(weight_id). Their
  // total is bounded by the weights registry's budget. Requires a kRegistered weight_id.
  bool pin_weights = false;
};

// When the executor passed its fixed points (host clock), for latency histograms.
struct GpuTimings {
  absl::Time h2d_end = absl::InfinitePast();
  absl::Time compute_start = absl::InfinitePast();
  absl::Time compute_end = absl::InfinitePast();
  absl::Time d2h_end = absl::InfinitePast();
};

// Called once per accepted GpuWork on a device thread, after every part's output is written
// (OK) or with the error. INTERNAL means a device fault: the device has latched unhealthy.
using GpuDone = absl::AnyInvocable<void(const absl::Status&, const GpuTimings&) &&>;

class GpuDevice {
 public:
  virtual ~GpuDevice() = default;

  virtual GpuDeviceInfo Info() const = 0;

  // OK when some kernel implementation runs p; otherwise UNIMPLEMENTED with every
  // implementation's reason.
  virtual absl::Status Supports(const Conv2dParams& p) const = 0;

  // Takes `work` and `done` iff OK (they are moved from only then); `done` then runs exactly
  // once, on a device thread. Otherwise both stay with the caller untouched. Blocks while every
  // slot is busy (back-pressure). RESOURCE_EXHAUSTED when the work can never fit (device
  // memory; one image larger than a slot), UNAVAILABLE when the device is latched unhealthy,
  // UNIMPLEMENTED when !Supports(p).
  virtual absl::Status Submit(GpuWork&& work, GpuDone&& done) = 0;

  // Whether weights with this id are on the device now (resident or pinned), so that a work
  // naming it uploads no weights. A hint for the router: it may change right after.
  virtual bool WeightsResident(const WeightId& id) const = 0;

  // Unpins and frees pinned weights (GpuWork::pin_weights) once no accepted work uses them; a
  // no-op for an id that is not pinned. Called when a registration is deleted.
  virtual void ReleaseWeights(const WeightId& id) = 0;

  // Waits until every accepted work has called done.
  virtual void Flush() = 0;

  // False once a sticky device error latched the device unhealthy; never true again.
  virtual bool healthy() const = 0;
  virtual std::string unhealthy_reason() const = 0;
};

// Every usable device (at most options.max_devices). An empty list is the normal no-GPU case,
// and `no_gpu_reason` says why ("built with SPARKLE_GPU=off", "hipGetDeviceCount: no device",
// ...). Never crashes or hangs when the driver or the device is absent; returns in a few ms.
struct GpuDevices {
  std::vector<std::unique_ptr<GpuDevice>> devices;
  std::string no_gpu_reason;
  std::string platform;  // "off" | "amd" | "nvidia" | "emu": what this binary was built for
};
GpuDevices OpenGpuDevices(const GpuOptions& options);

}  // namespace sparkle
