// ConvKernels: every conv2d implementation of one device, in one ordered list (fastest first by
// expectation), the tuner that picks one per shape at its first use, and the cache of choices.
// HIP-only header: include it from .hip files, or from the .cc tests and benchmarks of a GPU
// build (the host compiler then sees HIP's host API; AMD builds define __HIP_PLATFORM_AMD__ for
// them).
//
// Implementations (docs/gpu.md): cuDNN (NVIDIA builds with cuDNN), depthwise_3x3,
// depthwise_direct, igemm_{1x1,3x3s1,general}_* (five tile configs each, two of them also
// split-K).
#pragma once

#include <hip/hip_runtime.h>

#include <mutex>
#include <string>
#include <vector>

#include "engine/core/conv2d_params.h"
#include "engine/hip/conv_impl.h"
#include "engine/hip/tuning_cache.h"

namespace sparkle::hip {

class ConvKernels {
 public:
  // device: the ordinal (current when Launch runs); device_name keys the tuning cache;
  // tuning_cache_dir "" = memory only.
  ConvKernels(int device, std::string device_name, std::string tuning_cache_dir);

  // "" when some implementation runs p; else every implementation's reason, joined by "; ".
  // An invalid p gives its validation error.
  std::string Supports(const Conv2dParams& p) const;

  // Enqueues the convolution on `stream` (device pointers; input/output in p.layout, weight
  // [K, C/groups, R, S], bias null or [K] when p.has_bias). At the first use of a shape (p with
  // its batch size) and when more than one implementation supports it, times each of them on
  // `stream` (the output is overwritten by every trial, then by the real launch; this blocks
  // the caller until the trials finish), keeps the fastest in memory and in the cache file.
  // Returns hipErrorInvalidValue when p is invalid or unsupported, else the launch error.
  hipError_t Launch(const Conv2dParams& p, const DevConvArgs& a, hipStream_t stream);

  // Name of the implementation chosen for p ("" before its first use).
  std::string Chosen(const Conv2dParams& p) const;

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
  const TuningCache& tuning_cache() const { return cache_; }
  int device() const { return device_; }

 private:
  ConvImpl* Find(const std::string& name) const;
  // Times every candidate on `stream`; the fastest, or null with *error set.
  ConvImpl* Tune(const Conv2dParams& p, const DevConvArgs& a, hipStream_t stream,
                 const std::vector<ConvImpl*>& candidates, double* best_us, hipError_t* error);

  const int device_;
  const std::string device_name_;
  ConvImplList impls_;  // fixed after construction
  TuningCache cache_;

  mutable std::mutex mu_;
  ConvImpl* forced_ = nullptr;  // guarded by mu_
  int tuning_runs_ = 3;         // guarded by mu_
};

}  // namespace sparkle::hip
