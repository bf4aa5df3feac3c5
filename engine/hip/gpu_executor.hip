// GpuExecutor: see gpu_executor.h for the pipeline and its guarantees.
//
// Synchronisation uses the standard library (std::mutex, std::condition_variable, std::thread)
// rather than absl::Mutex so that this file compiles unchanged with clang HIP, nvcc and g++.
#include "engine/hip/gpu_executor.h"

#include <hip/hip_runtime.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/status_macros.h"
#include "engine/hip/conv_kernels.h"
#include "engine/hip/gpu_log.h"
#include "engine/hip/host_copy_pool.h"

#ifndef SPARKLE_GPU_PLATFORM
#define SPARKLE_GPU_PLATFORM "unknown"
#endif

namespace sparkle::hip {
namespace {

constexpr int64_t kAlign = 256;  // bytes; every buffer inside a slot starts on this boundary
constexpr int64_t kMiB = int64_t{1} << 20;

int64_t AlignUp(int64_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

// Where one batch's buffers lie inside its slot: the same offsets in pinned host memory and in
// device memory, so one H2D copy moves input, residual, weights and bias together. The tensors
// are in the job's datatypes (output: p.output_dtype); the FP32 scratch of ConvKernels::
// LaunchTyped (BF16/FP16 only) follows the output and exists on the device only.
struct SlotLayout {
  int64_t input_bytes = 0;
  int64_t residual_offset = 0, residual_bytes = 0;  // 0 bytes without residual
  int64_t weight_offset = 0, weight_bytes = 0;  // 0 bytes when the weights are resident
  int64_t bias_offset = 0, bias_bytes = 0;      // 0 bytes when resident or without bias
  int64_t output_offset = 0, output_bytes = 0;
  int64_t staged = 0;  // end of the output: the pinned host bytes the slot needs
  int64_t scratch_offset = 0, scratch_bytes = 0;
  int64_t total = 0;  // device bytes
};

SlotLayout LayoutFor(const Conv2dParams& p, bool weights_in_slot) {
  SlotLayout l;
  const int64_t elem = ElementSize(p.dtype);
  l.input_bytes = p.input_elements() * elem;
  l.residual_offset = AlignUp(l.input_bytes);
  l.residual_bytes = p.residual_elements() * elem;
  l.weight_offset = AlignUp(l.residual_offset + l.residual_bytes);
  l.weight_bytes = weights_in_slot ? p.weight_elements() * elem : 0;
  l.bias_offset = AlignUp(l.weight_offset + l.weight_bytes);
  l.bias_bytes = weights_in_slot ? p.bias_elements() * elem : 0;
  l.output_offset = AlignUp(l.bias_offset + l.bias_bytes);
  l.output_bytes = p.output_elements() * ElementSize(p.output_dtype);
  l.staged = l.output_offset + l.output_bytes;
  // Weights in the slot are widened into the scratch; resident ones are FP32 already. (The piece
  // that uploads a resident entry widens into the entry: its scratch has room it does not use.)
  l.scratch_offset = AlignUp(l.staged);
  l.scratch_bytes = ConvKernels::ScratchBytes(p, /*weights_fp32=*/!weights_in_slot);
  l.total = l.scratch_offset + l.scratch_bytes;
  return l;
}

// The largest n (≤ p.n) whose layout fits `slot_bytes`; 0 when not even one image fits.
int64_t MaxImages(const Conv2dParams& p, bool weights_in_slot, int64_t slot_bytes) {
  Conv2dParams one = p;
  one.n = 1;
  // Per image and fixed bytes, FP32 scratch included (BF16/FP16 widen on the device).
  const int64_t widened = p.dtype == DataType::kFp32 ? 0 : int64_t{sizeof(float)};
  const int64_t per_image =
      one.input_image_bytes() + one.residual_image_bytes() + one.output_image_bytes() +
      widened * (one.input_elements() + one.residual_elements() +
                 (p.output_dtype == DataType::kFp32 ? 0 : one.output_elements()));
  const int64_t fixed = weights_in_slot ? (p.weight_elements() + p.bias_elements()) *
                                              (ElementSize(p.dtype) + widened)
                                        : 0;
  // An upper bound (the layout adds alignment on top), then down to what fits.
  int64_t n = slot_bytes > fixed ? std::min(p.n, (slot_bytes - fixed) / per_image) : 0;
  Conv2dParams piece = p;
  for (; n > 0; --n) {
    piece.n = n;
    if (LayoutFor(piece, weights_in_slot).total <= slot_bytes) break;
  }
  return n;
}

// Bytes of a resident weight entry: weights, then bias on the next aligned boundary, in FP32
// whatever the datatype (the form the kernels read: BF16/FP16 weights are widened once, at
// upload).
int64_t ResidentBytes(const Conv2dParams& p) {
  return AlignUp(p.weight_elements() * int64_t{sizeof(float)}) +
         p.bias_elements() * int64_t{sizeof(float)};
}

std::string HipErrorText(hipError_t e) { return hipGetErrorName(e); }

// Runs `call`; on error returns INTERNAL "what: hipErrorX" from the enclosing function.
#define SPARKLE_HIP_RETURN_IF_ERROR(call, what)                                   \
  do {                                                                            \
    hipError_t sparkle_hip_e_ = (call);                                           \
    if (sparkle_hip_e_ != hipSuccess) {                                           \
      return absl::InternalError(absl::StrCat(what, ": ", HipErrorText(sparkle_hip_e_))); \
    }                                                                             \
  } while (0)

}  // namespace

// The slot state machine. Every change goes through Impl::Transition, which asserts it.
//
//        Submit               staging thread         drain thread          drain thread
//   kFree ──────► kStaging ─────────────────► kComputing ─────────► kDraining ─────────► kFree
//                    │   (enqueued H2D,         (compute event      (D2H done, outputs
//                    │    kernel, D2H)           passed)             copied, done called
//                    │                                                after the last piece)
//                    └──► kFree  (Submit refused the work after claiming the slot: no memory)
// One slot holds one piece of a work (the whole work unless it is larger than a slot). A piece
// with piece_error set passes through kComputing and kDraining without being staged.
enum class SlotState { kFree, kStaging, kComputing, kDraining };

const char* SlotStateName(SlotState s) {
  switch (s) {
    case SlotState::kFree: return "free";
    case SlotState::kStaging: return "staging";
    case SlotState::kComputing: return "computing";
    case SlotState::kDraining: return "draining";
  }
  return "?";
}

// std::hash for the resident map (absl::Hash kept out of the files nvcc compiles).
struct WeightIdHash {
  size_t operator()(const WeightId& id) const {
    return std::hash<uint64_t>()(id.hi * 0x9E3779B97F4A7C15ull ^ id.lo ^
                                 static_cast<uint64_t>(id.kind) << 62);
  }
};

// Weights (and bias) of one weight_id, resident on the device.
struct ResidentWeights {
  WeightId id;
  void* device = nullptr;
  int64_t bytes = 0;
  // Some accepted work uploads it (set by Submit, which is serialised: guarded by admission_mu).
  bool upload_assigned = false;
  int in_use = 0;         // accepted works not yet done that use it; never evicted while > 0
  uint64_t last_use = 0;  // LRU clock
  // Pinned (GpuWork::pin_weights): out of the LRU and its budget until ReleaseWeights.
  bool pinned = false;
  // ReleaseWeights came while in use: freed when in_use drops to 0.
  bool release_pending = false;
};

// One accepted GpuWork. It runs as one or more pieces along N (one slot each); the last piece's
// drain calls done with the first error of any piece.
struct WorkGroup {
  GpuWork work;
  GpuDone done;
  ResidentWeights* weights = nullptr;  // in_use taken once for the whole work; null: in slot
  // Guarded by Impl::mu.
  absl::Status first_error;
  GpuTimings timings;  // h2d_end, compute_start of the first piece; the rest of the last
  int pieces_done = 0;
};

struct Slot {
  int index = 0;
  SlotState state = SlotState::kFree;
  char* host = nullptr;  // pinned staging (hipHostMalloc)
  int64_t host_capacity = 0;
  char* device = nullptr;  // device buffer, same layout
  int64_t device_capacity = 0;
  hipEvent_t h2d_done = nullptr;
  hipEvent_t compute_start = nullptr;
  hipEvent_t compute_done = nullptr;
  hipEvent_t d2h_done = nullptr;
  // The piece occupying the slot (valid from acceptance until its drain).
  std::shared_ptr<WorkGroup> group;
  Conv2dParams params;         // the piece's geometry: params.n = the sum of parts' n
  std::vector<GpuPart> parts;  // slices of the work's parts
  bool last_piece = false;     // its drain completes the work
  // Set: the piece could not be admitted (device memory, fault); never staged, fails the work.
  std::optional<absl::Status> piece_error;
  SlotLayout layout;
  ResidentWeights* weights = nullptr;  // null: weights travel in the slot
  bool upload_weights = false;         // this piece uploads `weights` (through the slot)
};

struct GpuExecutor::Impl {
  int device = 0;
  GpuOptions options;
  GpuDeviceInfo info;  // static part; memory_used_bytes filled by Info()
  hipStream_t h2d = nullptr, compute = nullptr, d2h = nullptr;
  std::unique_ptr<ConvKernels> kernels;
  std::unique_ptr<HostCopyPool> copier;  // shared by the staging and drain threads

  std::mutex admission_mu;  // serialises Submit (defines the submission order)

  mutable std::mutex mu;  // everything below
  std::condition_variable cv;  // any change of slots, queues, counters or health
  std::vector<Slot> slots;
  std::deque<int> free_slots, staging_queue, drain_queue;
  bool stopping = false;
  bool is_healthy = true;
  std::string unhealthy_reason;
  std::unordered_map<WeightId, std::unique_ptr<ResidentWeights>, WeightIdHash> resident;
  uint64_t lru_clock = 0;
  int64_t device_bytes_used = 0;
  GpuExecutorStats stats;

  std::thread staging_thread, drain_thread;

  std::string Name() const { return absl::StrCat("GPU ", device, " (", info.name, ")"); }
  // The implementation that runs p now (tuned, or the default while tuning).
  std::string KernelName(const Conv2dParams& p) const { return kernels->Selected(p); }

  // The only place a slot changes state; aborts on an illegal transition (a bug here, not a
  // runtime condition). Keeps the free list, the drain queue and the busy counters in step.
  void Transition(Slot& s, SlotState from, SlotState to) {
    const bool legal = (from == SlotState::kFree && to == SlotState::kStaging) ||
                       (from == SlotState::kStaging && to == SlotState::kComputing) ||
                       (from == SlotState::kStaging && to == SlotState::kFree) ||
                       (from == SlotState::kComputing && to == SlotState::kDraining) ||
                       (from == SlotState::kDraining && to == SlotState::kFree);
    if (!legal || s.state != from) {
      LogGpuCritical(absl::StrCat(Name(), ": slot ", s.index, " illegal transition ",
                                  SlotStateName(from), " -> ", SlotStateName(to), " (state ",
                                  SlotStateName(s.state), ")"));
      std::abort();
    }
    s.state = to;
    if (from == SlotState::kFree) {
      free_slots.erase(std::find(free_slots.begin(), free_slots.end(), s.index));
      ++stats.busy_slots;
      stats.max_busy_slots = std::max(stats.max_busy_slots, stats.busy_slots);
    }
    if (to == SlotState::kComputing) drain_queue.push_back(s.index);
    if (to == SlotState::kFree) {
      free_slots.push_back(s.index);
      --stats.busy_slots;
    }
    cv.notify_all();
  }

  // Marks the device unhealthy for good (first reason wins). Requires mu.
  void LatchLocked(const absl::Status& cause) {
    if (!is_healthy) return;
    is_healthy = false;
    unhealthy_reason = absl::StrCat(Name(), " latched unhealthy at ",
                                    absl::FormatTime(absl::Now(), absl::UTCTimeZone()), ": ",
                                    cause.message());
    LogGpuError(unhealthy_reason);
    cv.notify_all();
  }
  void Latch(const absl::Status& cause) {
    std::lock_guard<std::mutex> lock(mu);
    LatchLocked(cause);
  }

  bool healthy_now() {
    std::lock_guard<std::mutex> lock(mu);
    return is_healthy;
  }

  absl::Status UnavailableLocked() const {
    return absl::UnavailableError(absl::StrCat("GPU unavailable: ", unhealthy_reason));
  }

  // hipMalloc that tells out-of-memory (RESOURCE_EXHAUSTED, not a fault: the error is cleared)
  // from any other error (INTERNAL, a fault).
  absl::Status DeviceAlloc(int64_t bytes, char** out) {
    void* p = nullptr;
    hipError_t e = hipMalloc(&p, static_cast<size_t>(bytes));
    if (e == hipErrorOutOfMemory) {
      (void)hipGetLastError();
      size_t free_b = 0, total_b = 0;
      (void)hipMemGetInfo(&free_b, &total_b);
      (void)hipGetLastError();
      return absl::ResourceExhaustedError(absl::StrCat(
          Name(), ": out of device memory: need ", bytes, " bytes, ", free_b, " of ", total_b,
          " free (hipMalloc: ", HipErrorText(e), ")"));
    }
    if (e != hipSuccess) return absl::InternalError(absl::StrCat("hipMalloc: ", HipErrorText(e)));
    *out = static_cast<char*>(p);
    std::lock_guard<std::mutex> lock(mu);
    device_bytes_used += bytes;
    return absl::OkStatus();
  }
  void DeviceFree(char* p, int64_t bytes) {
    if (p == nullptr) return;
    (void)hipFree(p);
    std::lock_guard<std::mutex> lock(mu);
    device_bytes_used -= bytes;
  }

  // DeviceAlloc; when the device is out of memory, evicts every resident entry no in-flight
  // work uses and tries once more.
  absl::Status DeviceAllocEvicting(int64_t bytes, char** out) {
    const absl::Status st = DeviceAlloc(bytes, out);
    if (!absl::IsResourceExhausted(st)) return st;
    EvictFor(-1);
    const absl::Status again = DeviceAlloc(bytes, out);
    if (!absl::IsResourceExhausted(again)) return again;
    // The tuning thread's scratch buffers may hold the memory for a while: wait for them.
    kernels->WaitForTuning();
    return DeviceAlloc(bytes, out);
  }

  // Evicts least recently used resident entries that no in-flight work uses until `need` more
  // bytes fit in the cache (need < 0: evict every unused entry). Returns whether they fit.
  bool EvictFor(int64_t need) {
    std::vector<std::unique_ptr<ResidentWeights>> victims;
    bool fits;
    {
      std::lock_guard<std::mutex> lock(mu);
      auto over = [&] {
        return need < 0 || stats.resident_weight_bytes + need > options.weight_cache_bytes;
      };
      while (over()) {
        auto lru = resident.end();
        for (auto it = resident.begin(); it != resident.end(); ++it) {
          if (it->second->in_use == 0 && !it->second->pinned &&
              (lru == resident.end() || it->second->last_use < lru->second->last_use)) {
            lru = it;
          }
        }
        if (lru == resident.end()) break;
        stats.resident_weight_bytes -= lru->second->bytes;
        ++stats.weight_evictions;
        victims.push_back(std::move(lru->second));
        resident.erase(lru);
      }
      fits = need >= 0 && stats.resident_weight_bytes + need <= options.weight_cache_bytes;
    }
    for (auto& v : victims) DeviceFree(static_cast<char*>(v->device), v->bytes);
    return fits;
  }

  // The resident entry for `id`, created (not yet uploaded) if missing, with in_use taken;
  // pinned when `pin`. nullptr when it cannot be made resident (the weights then travel in the
  // slot). Pinned entries skip the LRU budget; both give way only to device memory.
  absl::StatusOr<ResidentWeights*> AcquireResident(const WeightId& id, int64_t bytes, bool pin) {
    {
      std::lock_guard<std::mutex> lock(mu);
      auto it = resident.find(id);
      if (it != resident.end()) {
        ResidentWeights* r = it->second.get();
        ++r->in_use;
        r->last_use = ++lru_clock;
        if (pin && !r->pinned) {
          // Pinned from now on: out of the LRU budget (or no longer waiting to be freed).
          if (r->release_pending) {
            r->release_pending = false;
          } else {
            stats.resident_weight_bytes -= r->bytes;
          }
          r->pinned = true;
          stats.pinned_weight_bytes += r->bytes;
        }
        ++stats.weight_hits;
        return r;
      }
    }
    if (!pin && !EvictFor(bytes)) return nullptr;
    char* p = nullptr;
    const absl::Status st = DeviceAllocEvicting(bytes, &p);
    if (absl::IsResourceExhausted(st)) return nullptr;
    if (!st.ok()) return st;
    auto r = std::make_unique<ResidentWeights>();
    r->id = id;
    r->device = p;
    r->bytes = bytes;
    r->in_use = 1;
    r->pinned = pin;
    std::lock_guard<std::mutex> lock(mu);
    r->last_use = ++lru_clock;
    (pin ? stats.pinned_weight_bytes : stats.resident_weight_bytes) += bytes;
    ResidentWeights* raw = r.get();
    resident.emplace(id, std::move(r));
    return raw;
  }

  // Drops one use of r; returns the entry to free (outside mu) when ReleaseWeights is waiting
  // for it. Requires mu.
  std::unique_ptr<ResidentWeights> ReleaseUseLocked(ResidentWeights* r) {
    if (r == nullptr) return nullptr;
    --r->in_use;
    if (r->in_use > 0 || !r->release_pending) return nullptr;
    auto it = resident.find(r->id);
    std::unique_ptr<ResidentWeights> victim = std::move(it->second);
    resident.erase(it);
    ++stats.pinned_releases;
    return victim;
  }
  void FreeResident(std::unique_ptr<ResidentWeights> r) {
    if (r != nullptr) DeviceFree(static_cast<char*>(r->device), r->bytes);
  }

  // Grows the slot's pinned and device buffers to at least l.staged and l.total bytes
  // (≤ slot_bytes; the FP32 scratch is on the device only). The slot is kStaging with no GPU
  // operation outstanding on it, so the old buffers can be freed.
  absl::Status EnsureCapacity(Slot& s, const SlotLayout& l) {
    // Grow geometrically (fewer reallocations as batches grow), never beyond slot_bytes.
    auto grown = [&](int64_t cap, int64_t bytes) {
      return std::min(options.slot_bytes, std::max(bytes, 2 * cap));
    };
    if (s.host_capacity < l.staged) {
      const int64_t want = grown(s.host_capacity, l.staged);
      if (s.host != nullptr) (void)hipHostFree(s.host);
      s.host = nullptr;
      s.host_capacity = 0;
      void* p = nullptr;
      hipError_t e = hipHostMalloc(&p, static_cast<size_t>(want), hipHostMallocDefault);
      if (e == hipErrorOutOfMemory) {
        (void)hipGetLastError();
        return absl::ResourceExhaustedError(
            absl::StrCat(Name(), ": cannot allocate ", want,
                         " bytes of pinned host staging (hipHostMalloc: ", HipErrorText(e), ")"));
      }
      if (e != hipSuccess) {
        return absl::InternalError(absl::StrCat("hipHostMalloc: ", HipErrorText(e)));
      }
      s.host = static_cast<char*>(p);
      s.host_capacity = want;
    }
    if (s.device_capacity < l.total) {
      int64_t want = grown(s.device_capacity, l.total);
      DeviceFree(s.device, s.device_capacity);
      s.device = nullptr;
      s.device_capacity = 0;
      if (const absl::Status st = DeviceAlloc(want, &s.device); !st.ok()) {
        if (!absl::IsResourceExhausted(st)) return st;
        // Exactly what is needed; resident weights nobody uses give way to work that must run.
        want = l.total;
        SPARKLE_RETURN_IF_ERROR(DeviceAllocEvicting(want, &s.device));
      }
      s.device_capacity = want;
    }
    return absl::OkStatus();
  }

  // Copies the inputs into pinned staging and enqueues H2D → kernel → D2H with their events.
  absl::Status Stage(Slot& s) {
    SPARKLE_HIP_RETURN_IF_ERROR(hipSetDevice(device), "hipSetDevice");
    const GpuWork& w = s.group->work;
    const Conv2dParams& params = s.params;
    const SlotLayout& l = s.layout;
    // Parts are concatenated along N, the outermost dimension in both layouts.
    std::vector<HostCopyPool::Copy> copies;
    int64_t off = 0;
    for (const GpuPart& part : s.parts) {
      const int64_t bytes = part.n * params.input_image_bytes();
      copies.push_back({s.host + off, part.input, static_cast<size_t>(bytes)});
      off += bytes;
    }
    // The residual, per part like the input, in its own region.
    if (params.has_residual) {
      off = l.residual_offset;
      for (const GpuPart& part : s.parts) {
        const int64_t bytes = part.n * params.residual_image_bytes();
        copies.push_back({s.host + off, part.residual, static_cast<size_t>(bytes)});
        off += bytes;
      }
    }
    // Weights go through pinned staging too (per batch, or once for a resident upload): no
    // GPU copy ever reads the caller's memory, which may be freed as soon as done has run,
    // even when a fault completes the work without waiting for the device.
    if (s.weights == nullptr || s.upload_weights) {
      copies.push_back({s.host + l.weight_offset, w.weight, static_cast<size_t>(l.weight_bytes)});
      if (l.bias_bytes > 0) {
        copies.push_back({s.host + l.bias_offset, w.bias, static_cast<size_t>(l.bias_bytes)});
      }
    }
    copier->Run(copies);
    const void* dev_weight = s.device + l.weight_offset;
    const void* dev_bias = s.device + l.bias_offset;
    const bool fp32 = params.dtype == DataType::kFp32;
    if (s.weights == nullptr || (s.upload_weights && !fp32)) {
      // Input, residual, weights and bias are contiguous in the slot: one copy.
      SPARKLE_HIP_RETURN_IF_ERROR(
          hipMemcpyAsync(s.device, s.host, static_cast<size_t>(l.output_offset),
                         hipMemcpyHostToDevice, h2d),
          "hipMemcpyAsync(H2D input and weights)");
    } else {
      SPARKLE_HIP_RETURN_IF_ERROR(
          hipMemcpyAsync(s.device, s.host,
                         static_cast<size_t>(l.residual_offset + l.residual_bytes),
                         hipMemcpyHostToDevice, h2d),
          "hipMemcpyAsync(H2D input)");
    }
    if (s.weights != nullptr) {
      char* rw = static_cast<char*>(s.weights->device);
      // ResidentBytes' layout: weights, then bias on the next aligned boundary, FP32.
      const int64_t resident_bias_offset =
          AlignUp(params.weight_elements() * int64_t{sizeof(float)});
      if (s.upload_weights && !fp32) {
        // BF16/FP16: widened once from the slot into the entry, the form the kernels read; on
        // the H2D stream, ordered before every kernel that uses them.
        SPARKLE_HIP_RETURN_IF_ERROR(
            ConvKernels::Widen(params.dtype, s.device + l.weight_offset,
                               reinterpret_cast<float*>(rw), params.weight_elements(), h2d),
            "widen resident weights");
        if (l.bias_bytes > 0) {
          SPARKLE_HIP_RETURN_IF_ERROR(
              ConvKernels::Widen(params.dtype, s.device + l.bias_offset,
                                 reinterpret_cast<float*>(rw + resident_bias_offset),
                                 params.bias_elements(), h2d),
              "widen resident bias");
        }
        std::lock_guard<std::mutex> lock(mu);
        ++stats.weight_uploads;
      } else if (s.upload_weights) {
        // Once per key, on the H2D stream: ordered before every kernel that uses them.
        SPARKLE_HIP_RETURN_IF_ERROR(
            hipMemcpyAsync(rw, s.host + l.weight_offset, static_cast<size_t>(l.weight_bytes),
                           hipMemcpyHostToDevice, h2d),
            "hipMemcpyAsync(H2D resident weights)");
        if (l.bias_bytes > 0) {
          SPARKLE_HIP_RETURN_IF_ERROR(
              hipMemcpyAsync(rw + resident_bias_offset, s.host + l.bias_offset,
                             static_cast<size_t>(l.bias_bytes), hipMemcpyHostToDevice, h2d),
              "hipMemcpyAsync(H2D resident bias)");
        }
        std::lock_guard<std::mutex> lock(mu);
        ++stats.weight_uploads;
      }
      dev_weight = rw;
      dev_bias = rw + resident_bias_offset;
    }
    SPARKLE_HIP_RETURN_IF_ERROR(hipEventRecord(s.h2d_done, h2d), "hipEventRecord(h2d)");
    SPARKLE_HIP_RETURN_IF_ERROR(hipStreamWaitEvent(compute, s.h2d_done, 0),
                                "hipStreamWaitEvent(compute)");
    SPARKLE_HIP_RETURN_IF_ERROR(hipEventRecord(s.compute_start, compute),
                                "hipEventRecord(compute start)");
    DevTensors t;
    t.input = s.device;
    t.residual = params.has_residual ? s.device + l.residual_offset : nullptr;
    t.weight = dev_weight;
    t.bias = params.has_bias ? dev_bias : nullptr;
    t.output = s.device + l.output_offset;
    t.weights_fp32 = s.weights != nullptr;
    t.scratch = l.scratch_bytes > 0 ? s.device + l.scratch_offset : nullptr;
    SPARKLE_HIP_RETURN_IF_ERROR(kernels->LaunchTyped(params, t, compute),
                                absl::StrCat("conv kernel launch ", KernelName(params)));
    SPARKLE_HIP_RETURN_IF_ERROR(hipEventRecord(s.compute_done, compute),
                                "hipEventRecord(compute done)");
    SPARKLE_HIP_RETURN_IF_ERROR(hipStreamWaitEvent(d2h, s.compute_done, 0),
                                "hipStreamWaitEvent(d2h)");
    SPARKLE_HIP_RETURN_IF_ERROR(
        hipMemcpyAsync(s.host + l.output_offset, s.device + l.output_offset,
                       static_cast<size_t>(l.output_bytes), hipMemcpyDeviceToHost, d2h),
        "hipMemcpyAsync(D2H output)");
    SPARKLE_HIP_RETURN_IF_ERROR(hipEventRecord(s.d2h_done, d2h), "hipEventRecord(d2h)");
    return absl::OkStatus();
  }

  void StagingLoop() {
    for (;;) {
      int index;
      bool ok;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return stopping || !staging_queue.empty(); });
        if (staging_queue.empty()) return;  // stopping, nothing left
        index = staging_queue.front();
        staging_queue.pop_front();
        ok = is_healthy;
      }
      Slot& s = slots[index];
      if (ok && !s.piece_error.has_value()) {
        absl::Status st = Stage(s);
        if (!st.ok()) Latch(st);
      }
      // Unhealthy: nothing was enqueued; the drain thread fails the work in order.
      std::lock_guard<std::mutex> lock(mu);
      Transition(s, SlotState::kStaging, SlotState::kComputing);
    }
  }

  // Waits for the slot's D2H, copies the outputs out and fills the timings.
  absl::Status Finish(Slot& s, GpuTimings* t) {
    SPARKLE_HIP_RETURN_IF_ERROR(hipEventSynchronize(s.d2h_done), "hipEventSynchronize(d2h)");
    const absl::Time d2h_seen = absl::Now();
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!is_healthy) return UnavailableLocked();  // latched meanwhile by the staging thread
    }
    std::vector<HostCopyPool::Copy> copies;
    int64_t off = s.layout.output_offset;
    for (const GpuPart& part : s.parts) {
      const int64_t bytes = part.n * s.params.output_image_bytes();
      copies.push_back({part.output, s.host + off, static_cast<size_t>(bytes)});
      off += bytes;
    }
    copier->Run(copies);
    // Event times relative to the D2H end, anchored at the host time we saw it complete.
    auto before_d2h = [&](hipEvent_t e, absl::Time* out) -> absl::Status {
      float ms = 0;
      SPARKLE_HIP_RETURN_IF_ERROR(hipEventElapsedTime(&ms, e, s.d2h_done),
                                  "hipEventElapsedTime");
      *out = d2h_seen - absl::Milliseconds(static_cast<double>(ms));
      return absl::OkStatus();
    };
    t->d2h_end = d2h_seen;
    SPARKLE_RETURN_IF_ERROR(before_d2h(s.h2d_done, &t->h2d_end));
    SPARKLE_RETURN_IF_ERROR(before_d2h(s.compute_start, &t->compute_start));
    SPARKLE_RETURN_IF_ERROR(before_d2h(s.compute_done, &t->compute_end));
    return absl::OkStatus();
  }

  void DrainLoop() {
    (void)hipSetDevice(device);  // an error shows again on the first event call
    for (;;) {
      int index;
      bool ok;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] {
          return !drain_queue.empty() ||
                 (stopping && staging_queue.empty() && stats.busy_slots == 0);
        });
        if (drain_queue.empty()) return;
        index = drain_queue.front();
        drain_queue.pop_front();
        ok = is_healthy;
      }
      Slot& s = slots[index];
      const bool staged = !s.piece_error.has_value();
      if (ok && staged) {
        hipError_t e = hipEventSynchronize(s.compute_done);
        if (e != hipSuccess) {
          Latch(absl::InternalError(
              absl::StrCat("conv kernel ", KernelName(s.params),
                           " (hipEventSynchronize(compute)): ", HipErrorText(e))));
        }
      }
      {
        std::lock_guard<std::mutex> lock(mu);
        Transition(s, SlotState::kComputing, SlotState::kDraining);
        ok = is_healthy;
      }
      GpuTimings timings;
      const absl::Status finished = ok && staged ? Finish(s, &timings) : absl::OkStatus();
      if (!finished.ok() && !absl::IsUnavailable(finished)) Latch(finished);
      WorkGroup& g = *s.group;
      GpuDone done;
      std::optional<absl::Status> last_error;  // set for the last piece: the work's result
      std::unique_ptr<ResidentWeights> freed;
      {
        std::lock_guard<std::mutex> lock(mu);
        // OK only if the device is still healthy now (a fault anywhere fails every queued work).
        // (Statuses are built, not assigned: nvcc warns on Status::operator= as discarded.)
        const absl::Status piece =
            !is_healthy ? absl::InternalError(absl::StrCat("GPU fault: ", unhealthy_reason))
                        : s.piece_error.value_or(absl::OkStatus());
        g.first_error.Update(piece);  // the first error wins
        if (g.pieces_done++ == 0) {
          g.timings.h2d_end = timings.h2d_end;
          g.timings.compute_start = timings.compute_start;
        }
        g.timings.compute_end = timings.compute_end;
        g.timings.d2h_end = timings.d2h_end;
        if (s.last_piece) {
          done = std::move(g.done);
          last_error = g.first_error;
          if (!g.first_error.ok()) g.timings = GpuTimings{};
          freed = ReleaseUseLocked(g.weights);
          g.weights = nullptr;
        }
        s.weights = nullptr;
        s.upload_weights = false;
      }
      FreeResident(std::move(freed));
      const bool last = s.last_piece;
      const GpuTimings work_timings = g.timings;
      // The caller's buffers may be freed once done has run: drop every reference first.
      s.group.reset();
      s.parts.clear();
      s.piece_error.reset();
      s.last_piece = false;
      if (last) std::move(done)(*last_error, work_timings);
      std::lock_guard<std::mutex> lock(mu);
      if (last) ++stats.completed;
      Transition(s, SlotState::kDraining, SlotState::kFree);
    }
  }

  absl::Status CheckWork(const GpuWork& w) const {
    SPARKLE_RETURN_IF_ERROR(w.params.Validate());
    if (w.parts.empty()) return absl::InvalidArgumentError("GpuWork has no parts");
    int64_t n = 0;
    for (const GpuPart& part : w.parts) {
      if (part.input == nullptr || part.output == nullptr || part.n <= 0 ||
          (w.params.has_residual && part.residual == nullptr)) {
        return absl::InvalidArgumentError(
            "GpuWork part with null buffer (input, output, or residual while has_residual) or "
            "n <= 0");
      }
      n += part.n;
    }
    if (n != w.params.n) {
      return absl::InvalidArgumentError(
          absl::StrCat("GpuWork parts hold ", n, " images but params.n is ", w.params.n));
    }
    if (w.weight == nullptr || (w.params.has_bias && w.bias == nullptr)) {
      return absl::InvalidArgumentError("GpuWork without weight (or bias while has_bias)");
    }
    return absl::OkStatus();
  }
};

GpuExecutor::GpuExecutor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

absl::StatusOr<std::unique_ptr<GpuExecutor>> GpuExecutor::Create(int device,
                                                                 const GpuOptions& options) {
  if (options.slots < 1 || options.slots > 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("GpuOptions.slots must be in [1, 8], got ", options.slots));
  }
  if (options.slot_bytes < kMiB || options.slot_bytes > (int64_t{1} << 40)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GpuOptions.slot_bytes must be in [1 MiB, 2^40], got ", options.slot_bytes));
  }
  if (options.copy_threads < 1 || options.copy_threads > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("GpuOptions.copy_threads must be in [1, 64], got ", options.copy_threads));
  }
  if (options.weight_cache_bytes < 0 || options.weight_cache_bytes > (int64_t{1} << 40)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GpuOptions.weight_cache_bytes must be in [0, 2^40], got ", options.weight_cache_bytes));
  }
  auto impl = std::make_unique<Impl>();
  impl->device = device;
  impl->options = options;
  auto fail = [&](const char* what, hipError_t e) {
    (void)hipGetLastError();
    return absl::UnavailableError(
        absl::StrCat("GPU ", device, ": ", what, ": ", HipErrorText(e)));
  };
  hipError_t e = hipSetDevice(device);
  if (e != hipSuccess) return fail("hipSetDevice", e);
  hipDeviceProp_t props;
  e = hipGetDeviceProperties(&props, device);
  if (e != hipSuccess) return fail("hipGetDeviceProperties", e);
  impl->info.index = device;
  impl->info.name = props.name;
  impl->info.platform = SPARKLE_GPU_PLATFORM;
  impl->info.memory_bytes = static_cast<int64_t>(props.totalGlobalMem);
  impl->info.compute_units = props.multiProcessorCount;

  // From here on the destructor releases whatever was created.
  std::unique_ptr<GpuExecutor> ex(new GpuExecutor(std::move(impl)));
  Impl& im = *ex->impl_;
  for (hipStream_t* st : {&im.h2d, &im.compute, &im.d2h}) {
    // Non-blocking: the legacy null stream (used by hipMemcpy elsewhere) never serialises them.
    if ((e = hipStreamCreateWithFlags(st, hipStreamNonBlocking)) != hipSuccess) {
      return fail("hipStreamCreateWithFlags", e);
    }
  }
  im.slots.resize(static_cast<size_t>(options.slots));
  for (int i = 0; i < options.slots; ++i) {
    Slot& s = im.slots[static_cast<size_t>(i)];
    s.index = i;
    // Blocking sync: the drain thread sleeps in hipEventSynchronize instead of spinning on a
    // core the CPU pool needs (a few µs more latency per batch). Timing stays enabled.
    for (hipEvent_t* ev : {&s.h2d_done, &s.compute_start, &s.compute_done, &s.d2h_done}) {
      if ((e = hipEventCreateWithFlags(ev, hipEventBlockingSync)) != hipSuccess) {
        return fail("hipEventCreateWithFlags", e);
      }
    }
    im.free_slots.push_back(i);
  }
  im.kernels = std::make_unique<ConvKernels>(device, im.info.name, options.tuning_cache_dir);
  im.copier = std::make_unique<HostCopyPool>(options.copy_threads);
  im.staging_thread = std::thread([&im] { im.StagingLoop(); });
  im.drain_thread = std::thread([&im] { im.DrainLoop(); });
  return ex;
}

GpuExecutor::~GpuExecutor() {
  Impl& im = *impl_;
  {
    std::unique_lock<std::mutex> lock(im.mu);
    im.cv.wait(lock, [&] { return im.stats.completed == im.stats.accepted; });
    im.stopping = true;
    im.cv.notify_all();
  }
  if (im.staging_thread.joinable()) im.staging_thread.join();
  if (im.drain_thread.joinable()) im.drain_thread.join();
  (void)hipSetDevice(im.device);
  // After a fault, operations enqueued before it may still run on the streams: wait for them
  // (errors ignored) before freeing the memory they use.
  for (hipStream_t st : {im.h2d, im.compute, im.d2h}) {
    if (st != nullptr) (void)hipStreamSynchronize(st);
  }
  for (Slot& s : im.slots) {
    if (s.host != nullptr) (void)hipHostFree(s.host);
    im.DeviceFree(s.device, s.device_capacity);
    for (hipEvent_t ev : {s.h2d_done, s.compute_start, s.compute_done, s.d2h_done}) {
      if (ev != nullptr) (void)hipEventDestroy(ev);
    }
  }
  for (auto& [key, r] : im.resident) im.DeviceFree(static_cast<char*>(r->device), r->bytes);
  im.resident.clear();
  im.kernels.reset();
  for (hipStream_t st : {im.h2d, im.compute, im.d2h}) {
    if (st != nullptr) (void)hipStreamDestroy(st);
  }
  (void)hipGetLastError();
}

GpuDeviceInfo GpuExecutor::Info() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  GpuDeviceInfo info = impl_->info;
  info.memory_used_bytes = impl_->device_bytes_used;
  return info;
}

absl::Status GpuExecutor::Supports(const Conv2dParams& p) const {
  std::string why = impl_->kernels->Supports(p);
  if (why.empty()) return absl::OkStatus();
  return absl::UnimplementedError(absl::StrCat(impl_->Name(), " cannot run ", p.ToString(),
                                               ": ", why));
}

namespace {

// Parts [offset, offset + n) images of `parts` along N, as slices of the callers' buffers.
std::vector<GpuPart> SliceParts(const std::vector<GpuPart>& parts, const Conv2dParams& p,
                                int64_t offset, int64_t n) {
  std::vector<GpuPart> out;
  int64_t start = 0;  // first image of the current part
  for (const GpuPart& part : parts) {
    const int64_t end = start + part.n;
    const int64_t from = std::max(start, offset), to = std::min(end, offset + n);
    if (from < to) {
      const int64_t skip = from - start;
      out.push_back(GpuPart{
          static_cast<const char*>(part.input) + skip * p.input_image_bytes(),
          static_cast<char*>(part.output) + skip * p.output_image_bytes(), to - from,
          p.has_residual ? static_cast<const char*>(part.residual) + skip * p.residual_image_bytes()
                         : nullptr});
    }
    start = end;
    if (start >= offset + n) break;
  }
  return out;
}

}  // namespace

absl::Status GpuExecutor::Submit(GpuWork&& work, GpuDone&& done) {
  Impl& im = *impl_;
  std::lock_guard<std::mutex> admission(im.admission_mu);
  {
    std::lock_guard<std::mutex> lock(im.mu);
    if (!im.is_healthy) return im.UnavailableLocked();
  }
  SPARKLE_RETURN_IF_ERROR(im.CheckWork(work));
  SPARKLE_RETURN_IF_ERROR(Supports(work.params));
  if (work.pin_weights && work.weight_id.kind != WeightId::Kind::kRegistered) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GpuWork.pin_weights needs a registered weight_id, got ", work.weight_id.ToString()));
  }
  const Conv2dParams& p = work.params;
  const int64_t resident_bytes = ResidentBytes(p);
  const bool want_resident =
      !work.weight_id.empty() &&
      (work.pin_weights || resident_bytes <= im.options.weight_cache_bytes);
  auto too_big = [&](bool weights_in_slot) {
    Conv2dParams one = p;
    one.n = 1;
    const SlotLayout l = LayoutFor(one, weights_in_slot);
    return absl::ResourceExhaustedError(absl::StrCat(
        im.Name(), ": one image of ", p.ToString(), " needs ", l.total,
        " bytes of slot staging (input ", l.input_bytes, " + residual ", l.residual_bytes,
        " + weights ", l.weight_bytes + l.bias_bytes, " + output ", l.output_bytes,
        " + FP32 scratch ", l.scratch_bytes,
        "), more than GpuOptions.slot_bytes = ", im.options.slot_bytes));
  };
  if (MaxImages(p, /*weights_in_slot=*/!want_resident, im.options.slot_bytes) == 0) {
    return too_big(!want_resident);
  }

  // Claims a free slot (back-pressure). With `refuse_unhealthy`, UNAVAILABLE once latched;
  // otherwise waits for a slot anyway (the drain thread frees every slot, failing its work).
  auto claim = [&](bool refuse_unhealthy, int* index) -> absl::Status {
    std::unique_lock<std::mutex> lock(im.mu);
    im.cv.wait(lock, [&] {
      return !im.free_slots.empty() || (refuse_unhealthy && !im.is_healthy);
    });
    if (refuse_unhealthy && !im.is_healthy) return im.UnavailableLocked();
    *index = im.free_slots.front();
    im.Transition(im.slots[static_cast<size_t>(*index)], SlotState::kFree, SlotState::kStaging);
    return absl::OkStatus();
  };

  // The first piece: any failure refuses the whole work, which stays with the caller.
  int index;
  SPARKLE_RETURN_IF_ERROR(claim(/*refuse_unhealthy=*/true, &index));
  Slot& first = im.slots[static_cast<size_t>(index)];
  ResidentWeights* weights = nullptr;
  auto refuse = [&](const absl::Status& st) -> absl::Status {
    std::unique_ptr<ResidentWeights> freed;
    bool latched = false;
    {
      std::lock_guard<std::mutex> lock(im.mu);
      freed = im.ReleaseUseLocked(weights);
      im.Transition(first, SlotState::kStaging, SlotState::kFree);
      if (!absl::IsResourceExhausted(st)) {
        im.LatchLocked(st);  // any other HIP error at admission: the device is gone
        latched = true;
      }
    }
    im.FreeResident(std::move(freed));
    if (!latched) return st;
    std::lock_guard<std::mutex> lock(im.mu);
    return im.UnavailableLocked();
  };
  hipError_t e = hipSetDevice(im.device);
  if (e != hipSuccess) return refuse(absl::InternalError("hipSetDevice: " + HipErrorText(e)));
  if (want_resident) {
    absl::StatusOr<ResidentWeights*> r =
        im.AcquireResident(work.weight_id, resident_bytes, work.pin_weights);
    if (!r.ok()) return refuse(r.status());
    weights = *r;
  }
  // The piece that uploads a resident entry carries the weights in its slot once.
  const bool uploads = weights != nullptr && !weights->upload_assigned;
  const bool first_in_slot = weights == nullptr || uploads;
  const int64_t first_n = MaxImages(p, first_in_slot, im.options.slot_bytes);
  if (first_n == 0) return refuse(too_big(first_in_slot));
  Conv2dParams first_params = p;
  first_params.n = first_n;
  const SlotLayout first_layout = LayoutFor(first_params, first_in_slot);
  if (absl::Status st = im.EnsureCapacity(first, first_layout); !st.ok()) {
    return refuse(st);
  }

  // Accepted: from here on every piece goes through a slot and the last one calls done.
  auto group = std::make_shared<WorkGroup>();
  group->work = std::move(work);
  group->done = std::move(done);
  group->weights = weights;
  const Conv2dParams& gp = group->work.params;
  auto enqueue = [&](Slot& s, const Conv2dParams& piece, int64_t offset, const SlotLayout& l,
                     bool upload, const absl::Status& error) {
    std::lock_guard<std::mutex> lock(im.mu);
    s.group = group;
    s.params = piece;
    s.parts = SliceParts(group->work.parts, gp, offset, piece.n);
    s.last_piece = !error.ok() || offset + piece.n == gp.n;
    if (!error.ok()) s.piece_error = std::optional<absl::Status>(error);
    s.layout = l;
    s.weights = weights;
    s.upload_weights = upload;
    ++im.stats.pieces;
    im.staging_queue.push_back(s.index);
    im.cv.notify_all();
  };
  {
    std::lock_guard<std::mutex> lock(im.mu);
    if (uploads) weights->upload_assigned = true;
    if (weights == nullptr) ++im.stats.weights_in_slot;
    ++im.stats.accepted;
  }
  enqueue(first, first_params, 0, first_layout, uploads, absl::OkStatus());

  // Later pieces (a work larger than one slot): the weights are resident by now or travel in
  // every piece's slot.
  const bool in_slot = weights == nullptr;
  const int64_t piece_n = MaxImages(gp, in_slot, im.options.slot_bytes);  // ≥ 1: checked above
  for (int64_t offset = first_n; offset < gp.n;) {
    SPARKLE_RETURN_IF_ERROR(claim(/*refuse_unhealthy=*/false, &index));  // never fails
    Slot& s = im.slots[static_cast<size_t>(index)];
    Conv2dParams piece = gp;
    piece.n = std::min(piece_n, gp.n - offset);
    const SlotLayout l = LayoutFor(piece, in_slot);
    const absl::Status st = [&]() -> absl::Status {
      if (!im.healthy_now()) return absl::OkStatus();  // staged as failed by the pipeline
      const hipError_t set = hipSetDevice(im.device);
      if (set != hipSuccess) return absl::InternalError("hipSetDevice: " + HipErrorText(set));
      return im.EnsureCapacity(s, l);
    }();
    if (!st.ok() && !absl::IsResourceExhausted(st)) im.Latch(st);
    // A failed piece is the work's last: it fails the work once the pieces before it drained.
    enqueue(s, piece, offset, l, /*upload=*/false, st);
    if (!st.ok()) break;
    offset += piece.n;
  }
  return absl::OkStatus();
}

bool GpuExecutor::WeightsResident(const WeightId& id) const {
  if (id.empty()) return false;
  std::lock_guard<std::mutex> lock(impl_->mu);
  auto it = impl_->resident.find(id);
  return it != impl_->resident.end() && it->second->upload_assigned &&
         !it->second->release_pending;
}

void GpuExecutor::ReleaseWeights(const WeightId& id) {
  Impl& im = *impl_;
  std::unique_ptr<ResidentWeights> freed;
  {
    std::lock_guard<std::mutex> lock(im.mu);
    auto it = im.resident.find(id);
    if (it == im.resident.end() || !it->second->pinned) return;
    ResidentWeights& r = *it->second;
    r.pinned = false;
    im.stats.pinned_weight_bytes -= r.bytes;
    if (r.in_use > 0) {
      r.release_pending = true;  // freed by the drain of the last work using it
      return;
    }
    freed = std::move(it->second);
    im.resident.erase(it);
    ++im.stats.pinned_releases;
  }
  im.FreeResident(std::move(freed));
}

void GpuExecutor::WaitForTuning() { impl_->kernels->WaitForTuning(); }

void GpuExecutor::Flush() {
  std::unique_lock<std::mutex> lock(impl_->mu);
  impl_->cv.wait(lock, [&] { return impl_->stats.completed == impl_->stats.accepted; });
}

bool GpuExecutor::healthy() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->is_healthy;
}

std::string GpuExecutor::unhealthy_reason() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->unhealthy_reason;
}

GpuExecutorStats GpuExecutor::Stats() const {
  GpuExecutorStats stats;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    stats = impl_->stats;
  }
  stats.tunings = impl_->kernels->tunings();
  return stats;
}

}  // namespace sparkle::hip
