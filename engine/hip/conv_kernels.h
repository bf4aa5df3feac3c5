// ConvKernels: every conv2d implementation of one device, in one ordered list (fastest first by
// expectation), the tuner that picks one per shape and N bucket, and the cache of choices.
//
// Tuning never blocks a launch: the first launch of a shape whose N bucket (TuningCache::ShapeKey:
// N rounded up to a power of two) has no choice yet runs the default implementation (the first
// of the list that supports it) at once and queues the shape for the tuning thread, which times
// every candidate on its own stream and scratch buffers (zero-filled, allocated per shape and
// freed after) and records the fastest; launches after that use it. The tuning thread shares the
// device with real work, so its timings include that interference.
// HIP-only header: include it from .hip files, or from the .cc tests and benchmarks of a GPU
// build (the host compiler then sees HIP's host API; AMD builds define __HIP_PLATFORM_AMD__ for
// them).
//
// Implementations (docs/gpu.md): cuDNN (NVIDIA builds with cuDNN), depthwise_3x3,
// depthwise_direct, igemm_{1x1,3x3s1,general}_* (five tile configs each, two of them also
// split-K).
#pragma once

#include <hip/hip_runtime.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "engine/core/conv2d_params.h"
#include "engine/hip/conv_impl.h"
#include "engine/hip/tuning_cache.h"

namespace sparkle::hip {

// Device pointers of one convolution in its own datatypes: p.dtype (the output: p.output_dtype).
struct DevTensors {
  const void* input = nullptr;
  const void* weight = nullptr;    // p.dtype, or FP32 when weights_fp32
  const void* bias = nullptr;      // [K] when p.has_bias, same type as weight; else null
  const void* residual = nullptr;  // the output's shape and layout when p.has_residual
  void* output = nullptr;
  bool weights_fp32 = false;  // weight and bias are already FP32 (resident weights, widened once)
  // ScratchBytes(p, weights_fp32) bytes of device memory, 256-byte aligned (null when 0).
  void* scratch = nullptr;
};

class ConvKernels {
 public:
  // device: the ordinal (current when Launch runs); device_name keys the tuning cache;
  // tuning_cache_dir "" = memory only.
  ConvKernels(int device, std::string device_name, std::string tuning_cache_dir);
  // Stops the tuning thread: queued shapes are dropped, the one being tuned stops after its
  // current candidate. Any stream passed to Launch may be destroyed before or after.
  ~ConvKernels();
  ConvKernels(const ConvKernels&) = delete;
  ConvKernels& operator=(const ConvKernels&) = delete;

  // "" when some implementation runs p; else every implementation's reason, joined by "; ".
  // An invalid p gives its validation error.
  std::string Supports(const Conv2dParams& p) const;

  // Enqueues the convolution on `stream` (device pointers; input/output in p.layout, weight
  // [K, C/groups, R, S], bias null or [K] when p.has_bias) with the implementation chosen for
  // p's N bucket, or, before that choice exists, with the default one while the shape is queued
  // for the tuning thread (when more than one implementation supports it; never blocks). A
  // shape whose tuning failed (scratch memory, every candidate failed) keeps the default until
  // a restart. Returns hipErrorInvalidValue when p is invalid or unsupported, else the launch
  // error.
  // The kernels compute on FP32 data: `a` holds FP32 tensors whatever p.dtype says.
  hipError_t Launch(const Conv2dParams& p, const DevConvArgs& a, hipStream_t stream);

  // Launch for tensors in p's datatypes. FP32: Launch itself. BF16/FP16: widening kernels copy
  // input, residual (and weight, bias unless weights_fp32) to FP32 in t.scratch, Launch runs the
  // FP32 kernels with FP32 accumulation, and the output is narrowed to p.output_dtype (when not
  // FP32) from an FP32 copy in the scratch, rounding to nearest even. All on `stream`.
  hipError_t LaunchTyped(const Conv2dParams& p, const DevTensors& t, hipStream_t stream);
  // Device scratch LaunchTyped needs (0 for FP32): FP32 copies of the input and residual, of
  // the output when p.output_dtype is not FP32, and of weight and bias unless weights_fp32.
  // Each region 256-byte aligned. p valid.
  static int64_t ScratchBytes(const Conv2dParams& p, bool weights_fp32);
  // Element conversions on `stream` (count < 2^31): `type` -> FP32, FP32 -> `type` (nearest
  // even). FP32 is a device copy.
  static hipError_t Widen(DataType type, const void* src, float* dst, int64_t count,
                          hipStream_t stream);
  static hipError_t Narrow(DataType type, const float* src, void* dst, int64_t count,
                           hipStream_t stream);

  // Name of the implementation tuned for p's N bucket (or forced); "" before tuning finished.
  std::string Chosen(const Conv2dParams& p) const;
  // Name of the implementation Launch runs for p now: forced, tuned, or the default; "" when
  // none supports p.
  std::string Selected(const Conv2dParams& p) const;

  // --- Tests and benchmarks ---
  // Every implementation's name, in order.
  std::vector<std::string> ImplementationNames() const;
  // "" when the named implementation runs p, else its reason ("unknown implementation" too).
  std::string ImplementationSupports(const std::string& name, const Conv2dParams& p) const;
  // Launch uses this implementation for every shape, bypassing the tuner and its cache
  // (Launch fails with hipErrorInvalidValue for a shape it does not support). "" = tune again.
  // False when no implementation has that name.
  bool ForceImplementation(const std::string& name);
  // Timed launches per implementation when tuning (after one warm-up launch). Range [1, 100];
  // default 3.
  void set_tuning_runs(int runs);
  // Blocks until no shape is queued for tuning or being tuned.
  void WaitForTuning();
  // Shapes (N buckets) this object tuned, successfully or not, since it was built.
  int64_t tunings() const;
  const TuningCache& tuning_cache() const { return cache_; }
  int device() const { return device_; }

 private:
  ConvImpl* Find(const std::string& name) const;
  // The implementations that support p, in list order (the first is the default).
  std::vector<ConvImpl*> Candidates(const Conv2dParams& p) const;
  // Times every candidate on `stream`; the fastest, or null with *error set. Stops early (null)
  // when the object is being destroyed.
  ConvImpl* Tune(const Conv2dParams& p, const DevConvArgs& a, hipStream_t stream,
                 const std::vector<ConvImpl*>& candidates, double* best_us, hipError_t* error);
  // The tuning thread: takes queued shapes, allocates scratch, tunes, records the winner.
  void TuningLoop();
  void TuneOne(const Conv2dParams& p, const std::string& key, hipStream_t* stream);

  const int device_;
  const std::string device_name_;
  ConvImplList impls_;  // fixed after construction
  TuningCache cache_;

  mutable std::mutex mu_;
  std::condition_variable cv_;  // queue_, busy_ or stopping_ changed
  ConvImpl* forced_ = nullptr;  // guarded by mu_
  int tuning_runs_ = 3;         // guarded by mu_
  // Guarded by mu_: shapes waiting for the tuning thread (one p per key), keys queued or tuned
  // (never queued twice), whether a shape is being tuned, tunings finished, stop request.
  std::deque<std::pair<std::string, Conv2dParams>> queue_;
  std::set<std::string> seen_;
  bool busy_ = false;
  int64_t tunings_ = 0;
  bool stopping_ = false;
  std::thread tuning_thread_;  // last member: started in the constructor, joined first
};

}  // namespace sparkle::hip
