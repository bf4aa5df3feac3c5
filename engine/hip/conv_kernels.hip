#include "engine/hip/conv_kernels.h"

#include <hip/hip_runtime.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/hip/device_dtype.h"

namespace sparkle::hip {
namespace {

constexpr int kConvertThreads = 256;
constexpr int64_t kScratchAlign = 256;

int64_t AlignScratch(int64_t x) { return (x + kScratchAlign - 1) / kScratchAlign * kScratchAlign; }

// Grid-stride elementwise conversions (no barrier: one fiber per block in the emulator).
__global__ void __launch_bounds__(kConvertThreads)
    WidenKernel(DataType type, const void* __restrict__ src, float* __restrict__ dst,
                int64_t count) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * kConvertThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kConvertThreads + threadIdx.x; i < count;
       i += step) {
    dst[i] = LoadAsFloat(type, src, i);
  }
}
__global__ void __launch_bounds__(kConvertThreads)
    NarrowKernel(DataType type, const float* __restrict__ src, void* __restrict__ dst,
                 int64_t count) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * kConvertThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kConvertThreads + threadIdx.x; i < count;
       i += step) {
    StoreFromFloat(type, dst, i, src[i]);
  }
}

dim3 ConvertGrid(int64_t count) {
  const int64_t blocks = (count + kConvertThreads - 1) / kConvertThreads;
  return dim3(static_cast<unsigned>(blocks < 4096 ? (blocks < 1 ? 1 : blocks) : 4096));
}

// Where LaunchTyped's FP32 copies lie in the scratch (offsets; bytes 0 = not needed).
struct ScratchLayout {
  int64_t input = 0, residual = 0, output = 0, weight = 0, bias = 0, total = 0;
};
ScratchLayout MakeScratchLayout(const Conv2dParams& p, bool weights_fp32) {
  ScratchLayout l;
  if (p.dtype == DataType::kFp32) return l;  // then the output is FP32 too
  constexpr int64_t f = sizeof(float);
  int64_t at = 0;
  l.input = at;
  at = AlignScratch(at + p.input_elements() * f);
  l.residual = at;
  at = AlignScratch(at + p.residual_elements() * f);
  l.output = at;
  if (p.output_dtype != DataType::kFp32) at = AlignScratch(at + p.output_elements() * f);
  l.weight = at;
  if (!weights_fp32) at = AlignScratch(at + p.weight_elements() * f);
  l.bias = at;
  if (!weights_fp32) at += p.bias_elements() * f;
  l.total = at;
  return l;
}

}  // namespace

int64_t ConvKernels::ScratchBytes(const Conv2dParams& p, bool weights_fp32) {
  return MakeScratchLayout(p, weights_fp32).total;
}

hipError_t ConvKernels::Widen(DataType type, const void* src, float* dst, int64_t count,
                              hipStream_t stream) {
  if (count <= 0) return hipSuccess;
  if (type == DataType::kFp32) {
    return hipMemcpyAsync(dst, src, static_cast<size_t>(count) * sizeof(float),
                          hipMemcpyDeviceToDevice, stream);
  }
  hipLaunchKernelGGL(WidenKernel, ConvertGrid(count), dim3(kConvertThreads), 0, stream, type, src,
                     dst, count);
  return hipGetLastError();
}

hipError_t ConvKernels::Narrow(DataType type, const float* src, void* dst, int64_t count,
                               hipStream_t stream) {
  if (count <= 0) return hipSuccess;
  if (type == DataType::kFp32) {
    return hipMemcpyAsync(dst, src, static_cast<size_t>(count) * sizeof(float),
                          hipMemcpyDeviceToDevice, stream);
  }
  hipLaunchKernelGGL(NarrowKernel, ConvertGrid(count), dim3(kConvertThreads), 0, stream, type,
                     src, dst, count);
  return hipGetLastError();
}

hipError_t ConvKernels::LaunchTyped(const Conv2dParams& p, const DevTensors& t,
                                    hipStream_t stream) {
  if (p.dtype == DataType::kFp32) {  // Launch validates p
    return Launch(p,
                  DevConvArgs{static_cast<const float*>(t.input),
                              static_cast<const float*>(t.weight),
                              static_cast<const float*>(t.bias), static_cast<float*>(t.output),
                              static_cast<const float*>(t.residual)},
                  stream);
  }
  if (!p.Validate().ok()) return hipErrorInvalidValue;
  const ScratchLayout l = MakeScratchLayout(p, t.weights_fp32);
  if (t.scratch == nullptr && l.total > 0) return hipErrorInvalidValue;
  char* scratch = static_cast<char*>(t.scratch);
  auto region = [&](int64_t offset) { return reinterpret_cast<float*>(scratch + offset); };
  DevConvArgs a{region(l.input), static_cast<const float*>(t.weight),
                static_cast<const float*>(t.bias),
                p.output_dtype == DataType::kFp32 ? static_cast<float*>(t.output)
                                                  : region(l.output),
                nullptr};
  hipError_t e = Widen(p.dtype, t.input, region(l.input), p.input_elements(), stream);
  if (e == hipSuccess && p.has_residual) {
    a.residual = region(l.residual);
    e = Widen(p.dtype, t.residual, region(l.residual), p.residual_elements(), stream);
  }
  if (e == hipSuccess && !t.weights_fp32) {
    a.weight = region(l.weight);
    e = Widen(p.dtype, t.weight, region(l.weight), p.weight_elements(), stream);
    if (e == hipSuccess && p.has_bias) {
      a.bias = region(l.bias);
      e = Widen(p.dtype, t.bias, region(l.bias), p.bias_elements(), stream);
    }
  }
  if (!p.has_bias) a.bias = nullptr;
  if (e == hipSuccess) e = Launch(p, a, stream);
  if (e == hipSuccess && p.output_dtype != DataType::kFp32) {
    e = Narrow(p.output_dtype, a.output, t.output, p.output_elements(), stream);
  }
  return e;
}

std::string Int32IndexingReason(const Conv2dParams& p) {
  constexpr int64_t kLimit = std::numeric_limits<int32_t>::max();
  if (p.input_elements() > kLimit || p.output_elements() > kLimit ||
      p.weight_elements() > kLimit) {
    return "a tensor has 2^31 elements or more (32-bit kernel indexing)";
  }
  if (p.h + p.pad_top + p.pad_bottom > kLimit || p.w + p.pad_left + p.pad_right > kLimit) {
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
  // FP32 whatever p.dtype: the candidates differ only in the FP32 kernel (LaunchTyped's
  // conversions are the same for all).
  const size_t sizes[5] = {static_cast<size_t>(p.input_elements()) * sizeof(float),
                           static_cast<size_t>(p.weight_elements()) * sizeof(float),
                           static_cast<size_t>(p.bias_elements()) * sizeof(float),
                           static_cast<size_t>(p.output_elements()) * sizeof(float),
                           static_cast<size_t>(p.residual_elements()) * sizeof(float)};
  void* buffers[5] = {nullptr, nullptr, nullptr, nullptr, nullptr};
  bool ok = true;
  for (int i = 0; i < 5 && ok; ++i) {
    if (sizes[i] == 0) continue;
    ok = hipMalloc(&buffers[i], sizes[i]) == hipSuccess &&
         hipMemsetAsync(buffers[i], 0, sizes[i], *stream) == hipSuccess;
  }
  if (ok) {
    const DevConvArgs args{static_cast<const float*>(buffers[0]),
                           static_cast<const float*>(buffers[1]),
                           p.has_bias ? static_cast<const float*>(buffers[2]) : nullptr,
                           static_cast<float*>(buffers[3]),
                           p.has_residual ? static_cast<const float*>(buffers[4]) : nullptr};
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
