// The HIP runtime API of the emulator: devices, memory, streams (one worker thread each),
// events, and the test-control API. One mutex guards all state; operations run outside it.

#include <hip/hip_runtime.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "block_runner.h"
#include "hip_emu_control.h"

namespace hipemu::detail {
namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kAlignment = 256;

size_t RoundUp(size_t bytes) { return (bytes + kAlignment - 1) / kAlignment * kAlignment; }

struct Device {
  int index = 0;
  std::atomic<int> sticky{hipSuccess};  // hipError_t latched by a fault
  int64_t used_bytes = 0;
  int64_t launches_enqueued = 0;
  int64_t fault_at = 0;  // launch ordinal that faults; 0 = none
  hipError_t fault_error = hipErrorIllegalAddress;
  std::chrono::microseconds launch_delay{0};
  int busy = 0;  // copies, memsets and kernels running now
  Counters counters;
  std::shared_ptr<ihipStream_t> null_stream;  // created on first use
};

hipError_t Sticky(const Device& d) { return static_cast<hipError_t>(d.sticky.load()); }

}  // namespace
}  // namespace hipemu::detail

using hipemu::detail::Device;

// One operation of a stream. It may run once `deps` (stream, sequence number) have completed.
struct EmuOp {
  uint64_t seq = 0;
  bool work = false;  // a copy, memset or kernel (counted as "busy")
  std::vector<std::pair<std::shared_ptr<ihipStream_t>, uint64_t>> deps;
  std::function<void()> run;
};

struct ihipStream_t {
  std::shared_ptr<Device> device;
  bool is_null = false;
  bool blocking = true;  // synchronises with the null stream
  uint64_t enqueued = 0;   // sequence number of the last operation enqueued
  uint64_t completed = 0;  // ... and of the last one finished
  std::deque<EmuOp> queue;
  bool stop = false;
  std::thread worker;
};

struct ihipEvent_t {
  unsigned flags = 0;
  std::shared_ptr<ihipStream_t> stream;  // of the last record; null = never recorded
  uint64_t seq = 0;
  uint64_t generation = 0;
  bool has_time = false;
  hipemu::detail::Clock::time_point time;
};

namespace hipemu::detail {
namespace {

struct Allocation {
  size_t bytes;
  std::shared_ptr<Device> device;
};

struct State {
  std::mutex mu;
  std::condition_variable cv;  // any operation finished, or was enqueued
  bool configured = false;
  Config config;
  std::vector<std::shared_ptr<Device>> devices;
  std::unordered_map<ihipStream_t*, std::shared_ptr<ihipStream_t>> streams;  // null ones too
  std::unordered_map<ihipEvent_t*, std::shared_ptr<ihipEvent_t>> events;
  std::map<uintptr_t, Allocation> allocations;  // device memory by base address
  std::unordered_map<void*, size_t> host_allocations;
};

// Never destroyed: stream threads may still be blocked in it at exit.
State& S() {
  static State* state = new State;
  return *state;
}

thread_local int t_device = 0;
thread_local hipError_t t_last_error = hipSuccess;

hipError_t Fail(hipError_t e) {
  if (e != hipSuccess) t_last_error = e;
  return e;
}

int64_t EnvInt(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const long long parsed = std::strtoll(v, &end, 10);
  if (*end != '\0' || parsed < 0) {
    std::fprintf(stderr, "hip-on-cpu: ignoring %s=%s (not a non-negative integer)\n", name, v);
    return fallback;
  }
  return parsed;
}

void BuildDevicesLocked(State& s, const Config& config) {
  s.config = config;
  s.configured = true;
  s.devices.clear();
  for (int i = 0; i < config.device_count; ++i) {
    auto d = std::make_shared<Device>();
    d->index = i;
    s.devices.push_back(std::move(d));
  }
}

void EnsureConfiguredLocked(State& s) {
  if (s.configured) return;
  Config config;
  config.device_count = static_cast<int>(std::min<int64_t>(EnvInt("HIPEMU_DEVICES", 0), 64));
  config.memory_bytes = EnvInt("HIPEMU_MEMORY_MB", 1024) << 20;
  BuildDevicesLocked(s, config);
}

// The current device of this host thread, or null (hipErrorInvalidDevice).
std::shared_ptr<Device> CurrentDeviceLocked(State& s) {
  EnsureConfiguredLocked(s);
  if (t_device < 0 || t_device >= static_cast<int>(s.devices.size())) return nullptr;
  return s.devices[t_device];
}

bool DepsMet(const EmuOp& op) {
  for (const auto& [stream, seq] : op.deps) {
    if (stream->completed < seq) return false;
  }
  return true;
}

void WorkerLoop(ihipStream_t* stream) {
  State& s = S();
  std::unique_lock<std::mutex> lock(s.mu);
  for (;;) {
    s.cv.wait(lock, [&] {
      return (stream->stop && stream->queue.empty()) ||
             (!stream->queue.empty() && DepsMet(stream->queue.front()));
    });
    if (stream->queue.empty()) return;  // stopped
    EmuOp op = std::move(stream->queue.front());
    stream->queue.pop_front();
    Device& d = *stream->device;
    if (op.work) {
      ++d.busy;
      d.counters.streams_busy_max = std::max(d.counters.streams_busy_max, d.busy);
    }
    lock.unlock();
    op.run();
    op.run = nullptr;  // destroy captures outside the lock too
    lock.lock();
    if (op.work) --d.busy;
    stream->completed = op.seq;
    s.cv.notify_all();
  }
}

std::shared_ptr<ihipStream_t> NewStreamLocked(const std::shared_ptr<Device>& device, bool is_null,
                                             bool blocking) {
  auto stream = std::make_shared<ihipStream_t>();
  stream->device = device;
  stream->is_null = is_null;
  stream->blocking = blocking;
  stream->worker = std::thread(WorkerLoop, stream.get());
  S().streams[stream.get()] = stream;
  return stream;
}

// Resolves a handle (null = the current device's null stream) or returns an error.
hipError_t ResolveLocked(State& s, hipStream_t handle, std::shared_ptr<ihipStream_t>* out) {
  if (handle == nullptr) {
    std::shared_ptr<Device> d = CurrentDeviceLocked(s);
    if (d == nullptr) return hipErrorInvalidDevice;
    if (d->null_stream == nullptr) d->null_stream = NewStreamLocked(d, true, true);
    *out = d->null_stream;
    return hipSuccess;
  }
  auto it = s.streams.find(handle);
  if (it == s.streams.end()) return hipErrorInvalidHandle;
  *out = it->second;
  return hipSuccess;
}

// Appends `op` to `stream` with the legacy null-stream ordering. Returns its sequence number.
uint64_t EnqueueLocked(State& s, const std::shared_ptr<ihipStream_t>& stream, EmuOp op) {
  op.seq = ++stream->enqueued;
  if (stream->is_null) {
    for (const auto& [raw, other] : s.streams) {
      if (other != stream && other->device == stream->device && other->blocking &&
          other->enqueued > other->completed) {
        op.deps.emplace_back(other, other->enqueued);
      }
    }
  } else if (stream->blocking) {
    const auto& null_stream = stream->device->null_stream;
    if (null_stream != nullptr && null_stream->enqueued > null_stream->completed) {
      op.deps.emplace_back(null_stream, null_stream->enqueued);
    }
  }
  stream->queue.push_back(std::move(op));
  s.cv.notify_all();
  return stream->enqueued;
}

void WaitStreamLocked(State& s, std::unique_lock<std::mutex>& lock, ihipStream_t* stream,
                      uint64_t seq) {
  s.cv.wait(lock, [&] { return stream->completed >= seq; });
}

void WaitDeviceIdleLocked(State& s, std::unique_lock<std::mutex>& lock, const Device* device) {
  std::vector<std::pair<std::shared_ptr<ihipStream_t>, uint64_t>> targets;
  for (const auto& [raw, stream] : s.streams) {
    if (device == nullptr || stream->device.get() == device) {
      targets.emplace_back(stream, stream->enqueued);
    }
  }
  for (const auto& [stream, seq] : targets) WaitStreamLocked(s, lock, stream.get(), seq);
}

// The live allocation holding [p, p + bytes), or null.
const Allocation* FindDeviceRangeLocked(State& s, const void* p, size_t bytes) {
  const auto addr = reinterpret_cast<uintptr_t>(p);
  auto it = s.allocations.upper_bound(addr);
  if (it == s.allocations.begin()) return nullptr;
  --it;
  if (addr - it->first + bytes > it->second.bytes) return nullptr;
  return &it->second;
}

bool IsDevicePointerLocked(State& s, const void* p) {
  return FindDeviceRangeLocked(s, p, 1) != nullptr;
}

hipError_t CheckCopyLocked(State& s, void* dst, const void* src, size_t bytes,
                           hipMemcpyKind* kind) {
  if (bytes == 0) return hipSuccess;
  if (dst == nullptr || src == nullptr) return hipErrorInvalidValue;
  if (*kind == hipMemcpyDefault) {
    const bool d = IsDevicePointerLocked(s, dst), sd = IsDevicePointerLocked(s, src);
    *kind = d ? (sd ? hipMemcpyDeviceToDevice : hipMemcpyHostToDevice)
              : (sd ? hipMemcpyDeviceToHost : hipMemcpyHostToHost);
  }
  const bool dst_device = *kind == hipMemcpyHostToDevice || *kind == hipMemcpyDeviceToDevice;
  const bool src_device = *kind == hipMemcpyDeviceToHost || *kind == hipMemcpyDeviceToDevice;
  if (*kind < hipMemcpyHostToHost || *kind > hipMemcpyDeviceToDevice) {
    return hipErrorInvalidMemcpyDirection;
  }
  // Device sides must lie inside one live allocation; host sides must not be device memory.
  if (dst_device ? FindDeviceRangeLocked(s, dst, bytes) == nullptr
                 : IsDevicePointerLocked(s, dst)) {
    return hipErrorInvalidValue;
  }
  if (src_device ? FindDeviceRangeLocked(s, src, bytes) == nullptr
                 : IsDevicePointerLocked(s, src)) {
    return hipErrorInvalidValue;
  }
  return hipSuccess;
}

hipError_t MemcpyAsyncImpl(void* dst, const void* src, size_t bytes, hipMemcpyKind kind,
                           hipStream_t handle, std::shared_ptr<ihipStream_t>* used,
                           uint64_t* seq) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  std::shared_ptr<ihipStream_t> stream;
  if (hipError_t e = ResolveLocked(s, handle, &stream); e != hipSuccess) return e;
  if (hipError_t e = Sticky(*stream->device); e != hipSuccess) return e;
  if (hipError_t e = CheckCopyLocked(s, dst, src, bytes, &kind); e != hipSuccess) return e;
  EmuOp op;
  op.work = true;
  std::shared_ptr<Device> device = stream->device;
  op.run = [device, dst, src, bytes, kind] {
    if (Sticky(*device) != hipSuccess) return;
    if (bytes > 0) std::memmove(dst, src, bytes);
    std::lock_guard<std::mutex> l(S().mu);
    if (kind == hipMemcpyHostToDevice) device->counters.bytes_host_to_device += bytes;
    if (kind == hipMemcpyDeviceToHost) device->counters.bytes_device_to_host += bytes;
    if (kind == hipMemcpyDeviceToDevice) device->counters.bytes_device_to_device += bytes;
  };
  *seq = EnqueueLocked(s, stream, std::move(op));
  *used = stream;
  return hipSuccess;
}

hipError_t MemsetAsyncImpl(void* dst, int value, size_t bytes, hipStream_t handle,
                           std::shared_ptr<ihipStream_t>* used, uint64_t* seq) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  std::shared_ptr<ihipStream_t> stream;
  if (hipError_t e = ResolveLocked(s, handle, &stream); e != hipSuccess) return e;
  if (hipError_t e = Sticky(*stream->device); e != hipSuccess) return e;
  if (bytes > 0 && FindDeviceRangeLocked(s, dst, bytes) == nullptr) return hipErrorInvalidValue;
  EmuOp op;
  op.work = true;
  std::shared_ptr<Device> device = stream->device;
  op.run = [device, dst, value, bytes] {
    if (Sticky(*device) != hipSuccess) return;
    if (bytes > 0) std::memset(dst, value, bytes);
    std::lock_guard<std::mutex> l(S().mu);
    ++device->counters.memsets;
  };
  *seq = EnqueueLocked(s, stream, std::move(op));
  *used = stream;
  return hipSuccess;
}

// Waits for operation `seq` of `stream`, then reports the device's sticky error.
hipError_t WaitFor(const std::shared_ptr<ihipStream_t>& stream, uint64_t seq) {
  State& s = S();
  std::unique_lock<std::mutex> lock(s.mu);
  WaitStreamLocked(s, lock, stream.get(), seq);
  return Sticky(*stream->device);
}

// Per worker thread: the dynamic shared memory buffer, grown as launches need.
struct FreeDeleter {
  void operator()(unsigned char* p) const { std::free(p); }
};
thread_local std::unique_ptr<unsigned char, FreeDeleter> t_dynamic_buffer;
thread_local size_t t_dynamic_capacity = 0;

// Held while a kernel runs: __shared__ variables are plain statics (see hip_runtime.h).
std::mutex& KernelMutex() {
  static std::mutex mu;
  return mu;
}

void RunLaunch(Device& device, const KernelLaunch& launch, int warp_size, size_t stack_bytes) {
  std::unique_lock<std::mutex> kernel_lock(KernelMutex());
  if (launch.dynamic_shared_bytes > t_dynamic_capacity) {
    t_dynamic_capacity = RoundUp(launch.dynamic_shared_bytes);
    t_dynamic_buffer.reset(
        static_cast<unsigned char*>(std::aligned_alloc(kAlignment, t_dynamic_capacity)));
    if (t_dynamic_buffer == nullptr) {
      std::fprintf(stderr, "hip-on-cpu: cannot allocate %zu bytes of dynamic shared memory\n",
                   t_dynamic_capacity);
      std::abort();
    }
  }
  t_dynamic_shared = launch.dynamic_shared_bytes > 0 ? t_dynamic_buffer.get() : nullptr;
  t_block_dim = launch.block;
  t_grid_dim = launch.grid;
  t_warp_size = warp_size;
  int64_t switches = 0;
  for (uint32_t z = 0; z < launch.grid.z; ++z) {
    for (uint32_t y = 0; y < launch.grid.y; ++y) {
      for (uint32_t x = 0; x < launch.grid.x; ++x) {
        t_block_idx = dim3(x, y, z);
        RunBlock(launch.body, launch.block, stack_bytes, &switches);
      }
    }
  }
  t_dynamic_shared = nullptr;
  kernel_lock.unlock();
  const int64_t blocks = int64_t{launch.grid.x} * launch.grid.y * launch.grid.z;
  std::lock_guard<std::mutex> l(S().mu);
  ++device.counters.kernel_launches;
  device.counters.blocks_run += blocks;
  device.counters.fiber_switches += switches;
}

}  // namespace

void EnqueueLaunch(hipStream_t handle, KernelLaunch launch) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  std::shared_ptr<ihipStream_t> stream;
  if (hipError_t e = ResolveLocked(s, handle, &stream); e != hipSuccess) {
    Fail(e);
    return;
  }
  std::shared_ptr<Device> device = stream->device;
  if (hipError_t e = Sticky(*device); e != hipSuccess) {
    Fail(e);
    return;
  }
  const dim3 g = launch.grid, b = launch.block;
  const uint64_t threads = uint64_t{b.x} * b.y * b.z;
  if (g.x == 0 || g.y == 0 || g.z == 0 || threads == 0 ||
      threads > static_cast<uint64_t>(s.config.max_threads_per_block)) {
    Fail(hipErrorInvalidConfiguration);
    return;
  }
  if (launch.dynamic_shared_bytes > s.config.shared_mem_per_block) {
    Fail(hipErrorInvalidValue);
    return;
  }
  const int64_t ordinal = ++device->launches_enqueued;
  const int warp_size = s.config.warp_size;
  const size_t stack_bytes = s.config.fiber_stack_bytes;
  EmuOp op;
  op.work = true;
  op.run = [device, launch = std::move(launch), ordinal, warp_size, stack_bytes] {
    std::chrono::microseconds delay{0};
    {
      std::lock_guard<std::mutex> l(S().mu);
      if (Sticky(*device) != hipSuccess) return;
      if (device->fault_at == ordinal) {
        device->sticky = device->fault_error;
        S().cv.notify_all();
        return;
      }
      delay = device->launch_delay;
    }
    if (delay.count() > 0) std::this_thread::sleep_for(delay);
    RunLaunch(*device, launch, warp_size, stack_bytes);
  };
  EnqueueLocked(s, stream, std::move(op));
}

}  // namespace hipemu::detail

using namespace hipemu::detail;  // NOLINT: this file implements the HIP C API.

const char* hipGetErrorName(hipError_t error) {
  switch (error) {
    case hipSuccess: return "hipSuccess";
    case hipErrorInvalidValue: return "hipErrorInvalidValue";
    case hipErrorOutOfMemory: return "hipErrorOutOfMemory";
    case hipErrorNotInitialized: return "hipErrorNotInitialized";
    case hipErrorInvalidConfiguration: return "hipErrorInvalidConfiguration";
    case hipErrorInvalidDevicePointer: return "hipErrorInvalidDevicePointer";
    case hipErrorInvalidMemcpyDirection: return "hipErrorInvalidMemcpyDirection";
    case hipErrorNoDevice: return "hipErrorNoDevice";
    case hipErrorInvalidDevice: return "hipErrorInvalidDevice";
    case hipErrorInvalidHandle: return "hipErrorInvalidHandle";
    case hipErrorNotReady: return "hipErrorNotReady";
    case hipErrorIllegalAddress: return "hipErrorIllegalAddress";
    case hipErrorLaunchOutOfResources: return "hipErrorLaunchOutOfResources";
    case hipErrorLaunchFailure: return "hipErrorLaunchFailure";
    case hipErrorNotSupported: return "hipErrorNotSupported";
    case hipErrorUnknown: return "hipErrorUnknown";
  }
  return "hipErrorUnknown";
}

const char* hipGetErrorString(hipError_t error) {
  switch (error) {
    case hipSuccess: return "no error";
    case hipErrorInvalidValue: return "invalid argument";
    case hipErrorOutOfMemory: return "out of memory";
    case hipErrorNotInitialized: return "initialization error";
    case hipErrorInvalidConfiguration: return "invalid configuration argument";
    case hipErrorInvalidDevicePointer: return "invalid device pointer";
    case hipErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case hipErrorNoDevice: return "no ROCm-capable device is detected";
    case hipErrorInvalidDevice: return "invalid device ordinal";
    case hipErrorInvalidHandle: return "invalid resource handle";
    case hipErrorNotReady: return "device not ready";
    case hipErrorIllegalAddress: return "an illegal memory access was encountered";
    case hipErrorLaunchOutOfResources: return "too many resources requested for launch";
    case hipErrorLaunchFailure: return "unspecified launch failure";
    case hipErrorNotSupported: return "operation not supported";
    case hipErrorUnknown: return "unknown error";
  }
  return "unknown error";
}

hipError_t hipGetLastError() {
  {
    State& s = S();
    std::lock_guard<std::mutex> lock(s.mu);
    std::shared_ptr<Device> d = CurrentDeviceLocked(s);
    if (d != nullptr && Sticky(*d) != hipSuccess) return Sticky(*d);  // never resets
  }
  const hipError_t e = t_last_error;
  t_last_error = hipSuccess;
  return e;
}

hipError_t hipPeekAtLastError() {
  {
    State& s = S();
    std::lock_guard<std::mutex> lock(s.mu);
    std::shared_ptr<Device> d = CurrentDeviceLocked(s);
    if (d != nullptr && Sticky(*d) != hipSuccess) return Sticky(*d);
  }
  return t_last_error;
}

hipError_t hipInit(unsigned int flags) {
  if (flags != 0) return Fail(hipErrorInvalidValue);
  int count = 0;
  return hipGetDeviceCount(&count) == hipSuccess ? hipSuccess : Fail(hipErrorInvalidDevice);
}

hipError_t hipRuntimeGetVersion(int* version) {
  if (version == nullptr) return Fail(hipErrorInvalidValue);
  *version = 50200000;  // the HIP API level emulated (5.2)
  return hipSuccess;
}

hipError_t hipGetDeviceCount(int* count) {
  if (count == nullptr) return Fail(hipErrorInvalidValue);
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  EnsureConfiguredLocked(s);
  *count = static_cast<int>(s.devices.size());
  return *count == 0 ? Fail(hipErrorNoDevice) : hipSuccess;
}

hipError_t hipSetDevice(int device) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  EnsureConfiguredLocked(s);
  if (device < 0 || device >= static_cast<int>(s.devices.size())) {
    return Fail(hipErrorInvalidDevice);
  }
  t_device = device;
  return hipSuccess;
}

hipError_t hipGetDevice(int* device) {
  if (device == nullptr) return Fail(hipErrorInvalidValue);
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  if (CurrentDeviceLocked(s) == nullptr) return Fail(hipErrorInvalidDevice);
  *device = t_device;
  return hipSuccess;
}

hipError_t hipGetDeviceProperties(hipDeviceProp_t* prop, int device) {
  if (prop == nullptr) return Fail(hipErrorInvalidValue);
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  EnsureConfiguredLocked(s);
  if (device < 0 || device >= static_cast<int>(s.devices.size())) {
    return Fail(hipErrorInvalidDevice);
  }
  const hipemu::Config& c = s.config;
  *prop = hipDeviceProp_t{};
  std::snprintf(prop->name, sizeof(prop->name), "hip-cpu-emulator");
  prop->totalGlobalMem = static_cast<size_t>(c.memory_bytes);
  prop->sharedMemPerBlock = c.shared_mem_per_block;
  prop->warpSize = c.warp_size;
  prop->maxThreadsPerBlock = c.max_threads_per_block;
  prop->maxThreadsDim[0] = prop->maxThreadsDim[1] = c.max_threads_per_block;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 2147483647;
  prop->maxGridSize[1] = prop->maxGridSize[2] = 65535;
  prop->multiProcessorCount = c.multiprocessor_count;
  prop->major = 1;
  prop->minor = 0;
  return hipSuccess;
}

hipError_t hipDeviceSynchronize() {
  State& s = S();
  std::unique_lock<std::mutex> lock(s.mu);
  std::shared_ptr<Device> d = CurrentDeviceLocked(s);
  if (d == nullptr) return Fail(hipErrorInvalidDevice);
  WaitDeviceIdleLocked(s, lock, d.get());
  return Fail(Sticky(*d));
}

hipError_t hipMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  if (free_bytes == nullptr || total_bytes == nullptr) return Fail(hipErrorInvalidValue);
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  std::shared_ptr<Device> d = CurrentDeviceLocked(s);
  if (d == nullptr) return Fail(hipErrorInvalidDevice);
  if (Sticky(*d) != hipSuccess) return Fail(Sticky(*d));
  *total_bytes = static_cast<size_t>(s.config.memory_bytes);
  *free_bytes = static_cast<size_t>(s.config.memory_bytes - d->used_bytes);
  return hipSuccess;
}

hipError_t hipMalloc(void** ptr, size_t bytes) {
  if (ptr == nullptr) return Fail(hipErrorInvalidValue);
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  std::shared_ptr<Device> d = CurrentDeviceLocked(s);
  if (d == nullptr) return Fail(hipErrorInvalidDevice);
  if (Sticky(*d) != hipSuccess) return Fail(Sticky(*d));
  *ptr = nullptr;
  if (bytes == 0) return hipSuccess;
  const size_t rounded = RoundUp(bytes);
  if (rounded > static_cast<size_t>(s.config.memory_bytes - d->used_bytes)) {
    return Fail(hipErrorOutOfMemory);
  }
  void* p = std::aligned_alloc(kAlignment, rounded);
  if (p == nullptr) return Fail(hipErrorOutOfMemory);
  d->used_bytes += static_cast<int64_t>(rounded);
  d->counters.memory_used_bytes = d->used_bytes;
  s.allocations[reinterpret_cast<uintptr_t>(p)] = Allocation{bytes, d};
  *ptr = p;
  return hipSuccess;
}

hipError_t hipFree(void* ptr) {
  if (ptr == nullptr) return hipSuccess;
  State& s = S();
  std::unique_lock<std::mutex> lock(s.mu);
  auto it = s.allocations.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == s.allocations.end()) return Fail(hipErrorInvalidValue);
  std::shared_ptr<Device> d = it->second.device;
  WaitDeviceIdleLocked(s, lock, d.get());  // hipFree synchronises, as on a GPU
  it = s.allocations.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == s.allocations.end()) return Fail(hipErrorInvalidValue);
  d->used_bytes -= static_cast<int64_t>(RoundUp(it->second.bytes));
  d->counters.memory_used_bytes = d->used_bytes;
  s.allocations.erase(it);
  std::free(ptr);
  return Fail(Sticky(*d));
}

hipError_t hipHostMalloc(void** ptr, size_t bytes, unsigned int flags) {
  if (ptr == nullptr) return Fail(hipErrorInvalidValue);
  *ptr = nullptr;
  if (bytes == 0) return hipSuccess;
  void* p = std::aligned_alloc(kAlignment, RoundUp(bytes));
  if (p == nullptr) return Fail(hipErrorOutOfMemory);
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  s.host_allocations[p] = bytes;
  *ptr = p;
  return hipSuccess;
}

hipError_t hipHostFree(void* ptr) {
  if (ptr == nullptr) return hipSuccess;
  State& s = S();
  std::unique_lock<std::mutex> lock(s.mu);
  if (s.host_allocations.count(ptr) == 0) return Fail(hipErrorInvalidValue);
  WaitDeviceIdleLocked(s, lock, nullptr);  // hipHostFree synchronises, as on a GPU
  s.host_allocations.erase(ptr);
  std::free(ptr);
  return hipSuccess;
}

hipError_t hipMemcpyAsync(void* dst, const void* src, size_t bytes, hipMemcpyKind kind,
                          hipStream_t stream) {
  std::shared_ptr<ihipStream_t> used;
  uint64_t seq = 0;
  return Fail(MemcpyAsyncImpl(dst, src, bytes, kind, stream, &used, &seq));
}

hipError_t hipMemcpy(void* dst, const void* src, size_t bytes, hipMemcpyKind kind) {
  std::shared_ptr<ihipStream_t> used;
  uint64_t seq = 0;
  if (hipError_t e = MemcpyAsyncImpl(dst, src, bytes, kind, nullptr, &used, &seq);
      e != hipSuccess) {
    return Fail(e);
  }
  return Fail(WaitFor(used, seq));
}

hipError_t hipMemsetAsync(void* dst, int value, size_t bytes, hipStream_t stream) {
  std::shared_ptr<ihipStream_t> used;
  uint64_t seq = 0;
  return Fail(MemsetAsyncImpl(dst, value, bytes, stream, &used, &seq));
}

hipError_t hipMemset(void* dst, int value, size_t bytes) {
  std::shared_ptr<ihipStream_t> used;
  uint64_t seq = 0;
  if (hipError_t e = MemsetAsyncImpl(dst, value, bytes, nullptr, &used, &seq); e != hipSuccess) {
    return Fail(e);
  }
  return Fail(WaitFor(used, seq));
}

hipError_t hipStreamCreateWithFlags(hipStream_t* handle, unsigned int flags) {
  if (handle == nullptr || (flags & ~hipStreamNonBlocking) != 0) {
    return Fail(hipErrorInvalidValue);
  }
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  std::shared_ptr<Device> d = CurrentDeviceLocked(s);
  if (d == nullptr) return Fail(hipErrorInvalidDevice);
  if (Sticky(*d) != hipSuccess) return Fail(Sticky(*d));
  *handle = NewStreamLocked(d, false, (flags & hipStreamNonBlocking) == 0).get();
  return hipSuccess;
}

hipError_t hipStreamCreate(hipStream_t* handle) {
  return hipStreamCreateWithFlags(handle, hipStreamDefault);
}

hipError_t hipStreamDestroy(hipStream_t handle) {
  State& s = S();
  std::unique_lock<std::mutex> lock(s.mu);
  auto it = s.streams.find(handle);
  if (handle == nullptr || it == s.streams.end() || it->second->is_null) {
    return Fail(hipErrorInvalidHandle);
  }
  std::shared_ptr<ihipStream_t> stream = it->second;
  s.streams.erase(it);
  // Queued work still runs (as on a GPU); the thread ends when the queue is empty.
  stream->stop = true;
  s.cv.notify_all();
  lock.unlock();
  stream->worker.join();
  return hipSuccess;
}

hipError_t hipStreamSynchronize(hipStream_t handle) {
  State& s = S();
  std::unique_lock<std::mutex> lock(s.mu);
  std::shared_ptr<ihipStream_t> stream;
  if (hipError_t e = ResolveLocked(s, handle, &stream); e != hipSuccess) return Fail(e);
  WaitStreamLocked(s, lock, stream.get(), stream->enqueued);
  return Fail(Sticky(*stream->device));
}

hipError_t hipStreamQuery(hipStream_t handle) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  std::shared_ptr<ihipStream_t> stream;
  if (hipError_t e = ResolveLocked(s, handle, &stream); e != hipSuccess) return Fail(e);
  if (Sticky(*stream->device) != hipSuccess) return Fail(Sticky(*stream->device));
  return stream->completed == stream->enqueued ? hipSuccess : hipErrorNotReady;
}

hipError_t hipStreamWaitEvent(hipStream_t handle, hipEvent_t event, unsigned int flags) {
  if (flags != 0) return Fail(hipErrorInvalidValue);
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  std::shared_ptr<ihipStream_t> stream;
  if (hipError_t e = ResolveLocked(s, handle, &stream); e != hipSuccess) return Fail(e);
  auto ev = s.events.find(event);
  if (ev == s.events.end()) return Fail(hipErrorInvalidHandle);
  if (Sticky(*stream->device) != hipSuccess) return Fail(Sticky(*stream->device));
  if (ev->second->stream == nullptr) return hipSuccess;  // never recorded: nothing to wait for
  EmuOp op;
  op.deps.emplace_back(ev->second->stream, ev->second->seq);
  op.run = [] {};
  EnqueueLocked(s, stream, std::move(op));
  return hipSuccess;
}

hipError_t hipStreamAddCallback(hipStream_t handle, hipStreamCallback_t callback,
                                void* user_data, unsigned int flags) {
  if (callback == nullptr || flags != 0) return Fail(hipErrorInvalidValue);
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  std::shared_ptr<ihipStream_t> stream;
  if (hipError_t e = ResolveLocked(s, handle, &stream); e != hipSuccess) return Fail(e);
  if (Sticky(*stream->device) != hipSuccess) return Fail(Sticky(*stream->device));
  EmuOp op;
  std::shared_ptr<Device> device = stream->device;
  op.run = [device, handle, callback, user_data] {
    callback(handle, Sticky(*device), user_data);
  };
  EnqueueLocked(s, stream, std::move(op));
  return hipSuccess;
}

hipError_t hipLaunchHostFunc(hipStream_t handle, hipHostFn_t fn, void* user_data) {
  if (fn == nullptr) return Fail(hipErrorInvalidValue);
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  std::shared_ptr<ihipStream_t> stream;
  if (hipError_t e = ResolveLocked(s, handle, &stream); e != hipSuccess) return Fail(e);
  if (Sticky(*stream->device) != hipSuccess) return Fail(Sticky(*stream->device));
  EmuOp op;
  op.run = [fn, user_data] { fn(user_data); };
  EnqueueLocked(s, stream, std::move(op));
  return hipSuccess;
}

hipError_t hipEventCreateWithFlags(hipEvent_t* event, unsigned int flags) {
  if (event == nullptr ||
      (flags & ~(hipEventBlockingSync | hipEventDisableTiming)) != 0) {
    return Fail(hipErrorInvalidValue);
  }
  auto e = std::make_shared<ihipEvent_t>();
  e->flags = flags;
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  s.events[e.get()] = e;
  *event = e.get();
  return hipSuccess;
}

hipError_t hipEventCreate(hipEvent_t* event) {
  return hipEventCreateWithFlags(event, hipEventDefault);
}

hipError_t hipEventDestroy(hipEvent_t event) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.events.erase(event) == 0) return Fail(hipErrorInvalidHandle);
  return hipSuccess;
}

hipError_t hipEventRecord(hipEvent_t event, hipStream_t handle) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  auto ev = s.events.find(event);
  if (ev == s.events.end()) return Fail(hipErrorInvalidHandle);
  std::shared_ptr<ihipStream_t> stream;
  if (hipError_t e = ResolveLocked(s, handle, &stream); e != hipSuccess) return Fail(e);
  if (Sticky(*stream->device) != hipSuccess) return Fail(Sticky(*stream->device));
  std::shared_ptr<ihipEvent_t> e = ev->second;
  const uint64_t generation = ++e->generation;
  e->has_time = false;
  EmuOp op;
  op.run = [e, generation] {
    const Clock::time_point now = Clock::now();
    std::lock_guard<std::mutex> l(S().mu);
    if (e->generation == generation) {
      e->time = now;
      e->has_time = true;
    }
  };
  e->seq = EnqueueLocked(s, stream, std::move(op));
  e->stream = stream;
  return hipSuccess;
}

hipError_t hipEventSynchronize(hipEvent_t event) {
  State& s = S();
  std::unique_lock<std::mutex> lock(s.mu);
  auto ev = s.events.find(event);
  if (ev == s.events.end()) return Fail(hipErrorInvalidHandle);
  std::shared_ptr<ihipEvent_t> e = ev->second;
  if (e->stream == nullptr) return hipSuccess;
  WaitStreamLocked(s, lock, e->stream.get(), e->seq);
  return Fail(Sticky(*e->stream->device));
}

hipError_t hipEventQuery(hipEvent_t event) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  auto ev = s.events.find(event);
  if (ev == s.events.end()) return Fail(hipErrorInvalidHandle);
  const ihipEvent_t& e = *ev->second;
  if (e.stream == nullptr) return hipSuccess;
  if (Sticky(*e.stream->device) != hipSuccess) return Fail(Sticky(*e.stream->device));
  return e.stream->completed >= e.seq ? hipSuccess : hipErrorNotReady;
}

hipError_t hipEventElapsedTime(float* ms, hipEvent_t start, hipEvent_t stop) {
  if (ms == nullptr) return Fail(hipErrorInvalidValue);
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  auto a = s.events.find(start), b = s.events.find(stop);
  if (a == s.events.end() || b == s.events.end()) return Fail(hipErrorInvalidHandle);
  const ihipEvent_t &e0 = *a->second, &e1 = *b->second;
  if (((e0.flags | e1.flags) & hipEventDisableTiming) != 0 || e0.stream == nullptr ||
      e1.stream == nullptr) {
    return Fail(hipErrorInvalidHandle);
  }
  for (const ihipEvent_t* e : {&e0, &e1}) {
    if (Sticky(*e->stream->device) != hipSuccess) return Fail(Sticky(*e->stream->device));
  }
  if (e0.stream->completed < e0.seq || e1.stream->completed < e1.seq || !e0.has_time ||
      !e1.has_time) {
    return Fail(hipErrorNotReady);
  }
  *ms = std::chrono::duration<float, std::milli>(e1.time - e0.time).count();
  return hipSuccess;
}

namespace hipemu {

void Configure(const Config& config) {
  if (config.device_count < 0 || config.device_count > 64 || config.memory_bytes < 0 ||
      (config.warp_size != 32 && config.warp_size != 64) || config.multiprocessor_count < 1 ||
      config.max_threads_per_block < 1 || config.max_threads_per_block > 1024 ||
      config.fiber_stack_bytes < 16 * 1024 || config.fiber_stack_bytes > (size_t{64} << 20)) {
    std::fprintf(stderr, "hip-on-cpu: Configure: a field is out of its documented range\n");
    std::abort();
  }
  State& s = S();
  std::unique_lock<std::mutex> lock(s.mu);
  WaitDeviceIdleLocked(s, lock, nullptr);
  std::vector<std::shared_ptr<ihipStream_t>> streams;
  for (auto& [raw, stream] : s.streams) {
    stream->stop = true;
    streams.push_back(stream);
  }
  s.streams.clear();
  s.events.clear();
  for (auto& [addr, allocation] : s.allocations) std::free(reinterpret_cast<void*>(addr));
  s.allocations.clear();
  s.cv.notify_all();
  lock.unlock();
  for (auto& stream : streams) stream->worker.join();
  lock.lock();
  for (auto& d : s.devices) d->null_stream = nullptr;
  BuildDevicesLocked(s, config);
  t_last_error = hipSuccess;
}

Config CurrentConfig() {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  EnsureConfiguredLocked(s);
  return s.config;
}

namespace {
std::shared_ptr<Device> DeviceOrDie(State& s, int device) {
  EnsureConfiguredLocked(s);
  if (device < 0 || device >= static_cast<int>(s.devices.size())) {
    std::fprintf(stderr, "hip-on-cpu: control call for device %d, but %zu are configured\n",
                 device, s.devices.size());
    std::abort();
  }
  return s.devices[device];
}
}  // namespace

void InjectLaunchFault(int device, int64_t nth, hipError_t error) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  std::shared_ptr<Device> d = DeviceOrDie(s, device);
  d->fault_at = nth > 0 ? d->launches_enqueued + nth : 0;
  d->fault_error = error;
}

void SetLaunchDelay(int device, std::chrono::microseconds delay) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  DeviceOrDie(s, device)->launch_delay = delay;
}

Counters GetCounters(int device) {
  State& s = S();
  std::lock_guard<std::mutex> lock(s.mu);
  return DeviceOrDie(s, device)->counters;
}

}  // namespace hipemu
