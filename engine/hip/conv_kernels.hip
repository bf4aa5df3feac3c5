#include "engine/hip/conv_kernels.h"

#include <hip/hip_runtime.h>

#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace sparkle::hip {

std::string Int32IndexingReason(const Conv2dParams& p) {
  constexpr int64_t kLimit = std::numeric_limits<int32_t>::max();
  if (p.input_elements() > kLimit || p.output_elements() > kLimit ||
      p.weight_elements() > kLimit) {
    return "a tensor has 2^31 elements or more (32-bit kernel indexing)";
  }
  if (p.h + 2 * p.pad_h > kLimit || p.w + 2 * p.pad_w > kLimit) {
    return "padded input extent needs more than 32 bits";
  }
  return "";
}

ConvKernels::ConvKernels(int device, std::string device_name, std::string tuning_cache_dir)
    : device_(device),
      device_name_(std::move(device_name)),
      cache_(device_name_, std::move(tuning_cache_dir)) {
#if defined(SPARKLE_HAVE_CUDNN)
  AppendCudnnImpl(&impls_);
#endif
  AppendDepthwiseImpls(&impls_);
  AppendImplicitGemmImpls(&impls_);
}

ConvImpl* ConvKernels::Find(const std::string& name) const {
  for (const auto& impl : impls_) {
    if (impl->name() == name) return impl.get();
  }
  return nullptr;
}

std::vector<std::string> ConvKernels::ImplementationNames() const {
  std::vector<std::string> names;
  for (const auto& impl : impls_) names.push_back(impl->name());
  return names;
}

std::string ConvKernels::ImplementationSupports(const std::string& name,
                                                const Conv2dParams& p) const {
  const ConvImpl* impl = Find(name);
  if (impl == nullptr) return "unknown implementation " + name;
  absl::Status valid = p.Validate();
  if (!valid.ok()) return std::string(valid.message());
  return impl->Supports(p);
}

std::string ConvKernels::Supports(const Conv2dParams& p) const {
  absl::Status valid = p.Validate();
  if (!valid.ok()) return std::string(valid.message());
  std::string reasons;
  for (const auto& impl : impls_) {
    std::string reason = impl->Supports(p);
    if (reason.empty()) return "";
    if (!reasons.empty()) reasons += "; ";
    reasons += impl->name() + ": " + reason;
  }
  return reasons;
}

bool ConvKernels::ForceImplementation(const std::string& name) {
  ConvImpl* impl = nullptr;
  if (!name.empty()) {
    impl = Find(name);
    if (impl == nullptr) return false;
  }
  std::lock_guard<std::mutex> lock(mu_);
  forced_ = impl;
  return true;
}

void ConvKernels::set_tuning_runs(int runs) {
  std::lock_guard<std::mutex> lock(mu_);
  tuning_runs_ = runs < 1 ? 1 : runs > 100 ? 100 : runs;
}

std::string ConvKernels::Chosen(const Conv2dParams& p) const {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (forced_ != nullptr) return forced_->name();
  }
  return cache_.Lookup(p.ToString()).value_or("");
}

ConvImpl* ConvKernels::Tune(const Conv2dParams& p, const DevConvArgs& a, hipStream_t stream,
                            const std::vector<ConvImpl*>& candidates, double* best_us,
                            hipError_t* error) {
  int runs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    runs = tuning_runs_;
  }
  hipEvent_t start = nullptr, stop = nullptr;
  *error = hipEventCreate(&start);
  if (*error != hipSuccess) return nullptr;
  *error = hipEventCreate(&stop);
  if (*error != hipSuccess) {
    (void)hipEventDestroy(start);
    return nullptr;
  }
  ConvImpl* best = nullptr;
  *best_us = 0;
  hipError_t last_error = hipSuccess;
  for (ConvImpl* impl : candidates) {
    // One warm-up launch (code loading, caches), then `runs` timed ones.
    hipError_t e = impl->Launch(p, a, stream);
    if (e == hipSuccess) e = hipEventRecord(start, stream);
    for (int i = 0; i < runs && e == hipSuccess; ++i) e = impl->Launch(p, a, stream);
    if (e == hipSuccess) e = hipEventRecord(stop, stream);
    if (e == hipSuccess) e = hipEventSynchronize(stop);
    float ms = 0;
    if (e == hipSuccess) e = hipEventElapsedTime(&ms, start, stop);
    if (e != hipSuccess) {
      // A launch failure (too many resources for this device, say) rules this candidate out;
      // a sticky device fault shows again at the real launch.
      last_error = e;
      continue;
    }
    const double us = 1000.0 * ms / runs;
    // Ties keep the earlier one: the list is ordered fastest first by expectation.
    if (best == nullptr || us < *best_us) {
      best = impl;
      *best_us = us;
    }
  }
  (void)hipEventDestroy(start);
  (void)hipEventDestroy(stop);
  if (best == nullptr) *error = last_error;
  return best;
}

hipError_t ConvKernels::Launch(const Conv2dParams& p, const DevConvArgs& a,
                               hipStream_t stream) {
  if (!p.Validate().ok()) return hipErrorInvalidValue;
  ConvImpl* forced;
  {
    std::lock_guard<std::mutex> lock(mu_);
    forced = forced_;
  }
  if (forced != nullptr) {
    if (!forced->Supports(p).empty()) return hipErrorInvalidValue;
    return forced->Launch(p, a, stream);
  }

  const std::string key = p.ToString();
  if (std::optional<std::string> chosen = cache_.Lookup(key)) {
    ConvImpl* impl = Find(*chosen);
    if (impl != nullptr && impl->Supports(p).empty()) return impl->Launch(p, a, stream);
    cache_.Erase(key);  // from another build (cuDNN, an older kernel set): tune again
  }

  std::vector<ConvImpl*> candidates;
  for (const auto& impl : impls_) {
    if (impl->Supports(p).empty()) candidates.push_back(impl.get());
  }
  if (candidates.empty()) return hipErrorInvalidValue;
  ConvImpl* best = candidates.front();
  double best_us = 0;
  if (candidates.size() > 1) {
    hipError_t error = hipSuccess;
    best = Tune(p, a, stream, candidates, &best_us, &error);
    if (best == nullptr) return error;
  }
  // A failed cache write is logged by the cache and only costs a re-tune after a restart.
  cache_.Store(key, best->name(), best_us).IgnoreError();
  return best->Launch(p, a, stream);
}

}  // namespace sparkle::hip
