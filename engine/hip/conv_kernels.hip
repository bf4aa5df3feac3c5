#include "engine/hip/conv_kernels.h"

#include <hip/hip_runtime.h>

#include <cstdint>
#include <limits>
#include <optional>
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
  tuning_thread_ = std::thread([this] { TuningLoop(); });
}

ConvKernels::~ConvKernels() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    queue_.clear();
  }
  cv_.notify_all();
  if (tuning_thread_.joinable()) tuning_thread_.join();
}

std::vector<ConvImpl*> ConvKernels::Candidates(const Conv2dParams& p) const {
  std::vector<ConvImpl*> candidates;
  for (const auto& impl : impls_) {
    if (impl->Supports(p).empty()) candidates.push_back(impl.get());
  }
  return candidates;
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
  return cache_.Lookup(TuningCache::ShapeKey(p)).value_or("");
}

std::string ConvKernels::Selected(const Conv2dParams& p) const {
  if (!p.Validate().ok()) return "";
  std::string chosen = Chosen(p);
  if (!chosen.empty()) {
    const ConvImpl* impl = Find(chosen);
    if (impl != nullptr && impl->Supports(p).empty()) return chosen;
  }
  const std::vector<ConvImpl*> candidates = Candidates(p);
  return candidates.empty() ? "" : candidates.front()->name();
}

void ConvKernels::WaitForTuning() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return stopping_ || (queue_.empty() && !busy_); });
}

int64_t ConvKernels::tunings() const {
  std::lock_guard<std::mutex> lock(mu_);
  return tunings_;
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
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) {
        best = nullptr;
        break;
      }
    }
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

  const std::string key = TuningCache::ShapeKey(p);
  std::optional<std::string> chosen = cache_.Lookup(key);
  ConvImpl* tuned = chosen ? Find(*chosen) : nullptr;
  if (tuned != nullptr && tuned->Supports(p).empty()) return tuned->Launch(p, a, stream);
  const std::vector<ConvImpl*> candidates = Candidates(p);
  if (candidates.empty()) return hipErrorInvalidValue;
  // Chosen for another N of the bucket, which this N cannot run (32-bit indexing limits): the
  // default, without tuning the bucket again.
  if (tuned != nullptr) return candidates.front()->Launch(p, a, stream);
  if (chosen) {
    // From another build (cuDNN, an older kernel set): tune again.
    cache_.Erase(key);
    std::lock_guard<std::mutex> lock(mu_);
    seen_.erase(key);
  }

  if (candidates.size() == 1) {
    // Nothing to choose from. A failed cache write is logged by the cache and only costs this
    // line again after a restart.
    cache_.Store(key, candidates.front()->name(), 0).IgnoreError();
  } else {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_ && seen_.insert(key).second) {
      queue_.emplace_back(key, p);
      cv_.notify_all();
    }
  }
  return candidates.front()->Launch(p, a, stream);
}

void ConvKernels::TuningLoop() {
  hipStream_t stream = nullptr;  // created at the first shape, on this thread's device
  for (;;) {
    std::pair<std::string, Conv2dParams> item;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) break;
      item = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    TuneOne(item.second, item.first, &stream);
    {
      std::lock_guard<std::mutex> lock(mu_);
      busy_ = false;
      ++tunings_;
    }
    cv_.notify_all();
  }
  if (stream != nullptr) {
    (void)hipStreamSynchronize(stream);
    (void)hipStreamDestroy(stream);
  }
  cv_.notify_all();
}

void ConvKernels::TuneOne(const Conv2dParams& p, const std::string& key, hipStream_t* stream) {
  if (hipSetDevice(device_) != hipSuccess) {
    (void)hipGetLastError();
    return;
  }
  if (*stream == nullptr && hipStreamCreateWithFlags(stream, hipStreamNonBlocking) != hipSuccess) {
    *stream = nullptr;
    (void)hipGetLastError();
    return;
  }
  const std::vector<ConvImpl*> candidates = Candidates(p);
  if (candidates.size() < 2) return;
  // Scratch tensors of the shape, zero-filled (the values do not change the timings).
  const size_t sizes[4] = {static_cast<size_t>(p.input_elements()) * sizeof(float),
                           static_cast<size_t>(p.weight_elements()) * sizeof(float),
                           static_cast<size_t>(p.bias_elements()) * sizeof(float),
                           static_cast<size_t>(p.output_elements()) * sizeof(float)};
  void* buffers[4] = {nullptr, nullptr, nullptr, nullptr};
  bool ok = true;
  for (int i = 0; i < 4 && ok; ++i) {
    if (sizes[i] == 0) continue;
    ok = hipMalloc(&buffers[i], sizes[i]) == hipSuccess &&
         hipMemsetAsync(buffers[i], 0, sizes[i], *stream) == hipSuccess;
  }
  if (ok) {
    const DevConvArgs args{static_cast<const float*>(buffers[0]),
                           static_cast<const float*>(buffers[1]),
                           p.has_bias ? static_cast<const float*>(buffers[2]) : nullptr,
                           static_cast<float*>(buffers[3])};
    double best_us = 0;
    hipError_t error = hipSuccess;
    ConvImpl* best = Tune(p, args, *stream, candidates, &best_us, &error);
    // A failed cache write is logged by the cache and only costs a re-tune after a restart.
    if (best != nullptr) cache_.Store(key, best->name(), best_us).IgnoreError();
  }
  // Out of scratch memory or every candidate failed: the default stays until a restart (the
  // key stays in seen_). A sticky device fault shows again at the next real launch.
  (void)hipStreamSynchronize(*stream);
  for (void* b : buffers) {
    if (b != nullptr) (void)hipFree(b);
  }
  (void)hipGetLastError();
}

}  // namespace sparkle::hip
