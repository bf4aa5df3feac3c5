// GpuDevice: one GPU as the engine sees it, behind a plain C++ interface. No HIP type appears
// here: everything outside engine/hip/*.hip (and the files that only the GPU build compiles)
// is built by the host compiler, whatever SPARKLE_GPU says.
//
// Each device owns a triple-buffered executor (pinned staging slots, H2D / compute / D2H
// streams linked by events), the kernels, and the weights it keeps resident per weight_key.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/core/conv2d_params.h"

namespace sparkle {

struct GpuOptions {
  // Staging slots per device (the executor's pipeline depth). Range [1, 8]; 3 = triple buffering.
  int slots = 3;
  // Pinned host bytes per slot for input + output staging. A batch larger than one slot is
  // refused with RESOURCE_EXHAUSTED (the engine splits batches below this). Range [1 MiB, 2^40].
  int64_t slot_bytes = int64_t{256} << 20;
  // Device bytes kept for resident weights (LRU per weight_key). Range [0, 2^40].
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
struct GpuPart {
  const float* input = nullptr;
  float* output = nullptr;
  int64_t n = 0;
};

// A batch for the GPU: parts share the geometry (params.n = the sum of their n) and weights.
struct GpuWork {
  Conv2dParams params;
  std::vector<GpuPart> parts;
  const float* weight = nullptr;  // [K, C/groups, R, S]
  const float* bias = nullptr;    // [K] when params.has_bias
  uint64_t weight_key = 0;        // 0: not kept resident
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

  // Takes the work iff OK; `done` then runs exactly once. Blocks while every slot is busy
  // (back-pressure). RESOURCE_EXHAUSTED when the work can never fit (slot or device memory),
  // UNAVAILABLE when the device is latched unhealthy, UNIMPLEMENTED when !Supports(p).
  virtual absl::Status Submit(GpuWork work, GpuDone done) = 0;

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
