// hip-on-cpu: the device side of sparkle's HIP-on-CPU emulator (kernels compiled by g++).
//
// A kernel launch runs on its stream's worker thread, block after block. The threads of a block
// run as Boost.Context fibers on that one OS thread: they start one after another on a single
// fiber, and only a thread that calls __syncthreads() gets a fiber (a stack) of its own, so a
// block without __syncthreads never switches context. __syncthreads() suspends the calling
// thread until every thread of the block that has not returned reaches a barrier (threads that
// returned early do not take part, as on current GPUs).
//
// Differences from a GPU, on purpose or by necessity:
//   - __shared__ is plain `static`: one copy per kernel, reused by the blocks that run one
//     after another. Kernels therefore run one at a time in the whole process (a global lock
//     around each launch; copies, events and host functions still run concurrently on their
//     streams). `static thread_local` would put every kernel's tiles into the static TLS block
//     of every thread of the process (0.4 MB with the conv kernels), and libraries that create
//     threads with small stacks (civetweb, under prometheus-cpp) then fail with EINVAL.
//     Like real shared memory it is not re-initialised per block.
//   - Dynamic shared memory must be declared with HIP_DYNAMIC_SHARED(type, name) (a HIP macro
//     that also works on AMD and through the CUDA shim). A literal `extern __shared__ T x[];`
//     fails to compile here with "conflicting specifiers" (extern + static).
//   - Launch with hipLaunchKernelGGL; `<<<...>>>` is not C++.
//   - warpSize is 64 by default (configurable; it converts to int); no warp intrinsics (__shfl*, ballots) exist,
//     so a kernel that needs them does not compile here.
//   - Threads of a block interleave only at __syncthreads, so races between barriers are not
//     found; out-of-bounds accesses inside a kernel are found by ASan, not by the emulator.
#pragma once

#include <hip/hip_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __shared__ static
#define __constant__ static

namespace hipemu::detail {

// Per worker thread: the geometry of the block being run and the running GPU thread's index
// (switched with the fiber). Constant-initialised, so access costs one TLS load.
inline thread_local dim3 t_thread_idx{0, 0, 0};
inline thread_local dim3 t_block_idx{0, 0, 0};
inline thread_local dim3 t_block_dim{1, 1, 1};
inline thread_local dim3 t_grid_dim{1, 1, 1};
inline thread_local int t_warp_size = 64;
inline thread_local unsigned char* t_dynamic_shared = nullptr;

// Suspends the calling GPU thread until the block's other live threads reach a barrier.
// Aborts with a message when called outside a kernel.
void SyncThreads();

// One kernel launch: `body` calls the kernel with the captured arguments.
struct KernelLaunch {
  const char* name;
  dim3 grid;
  dim3 block;
  size_t dynamic_shared_bytes;
  std::function<void()> body;
};
// Validates the geometry, then enqueues onto `stream`. Errors go to hipGetLastError().
void EnqueueLaunch(hipStream_t stream, KernelLaunch launch);

template <typename... Params, typename... Args>
void LaunchKernel(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block,
                  size_t dynamic_shared_bytes, hipStream_t stream, Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args),
                "hipLaunchKernelGGL: the argument count differs from the kernel's parameters");
  // Arguments are converted to the parameter types and copied now, as a GPU launch does.
  std::tuple<std::decay_t<Params>...> captured(
      static_cast<std::decay_t<Params>>(std::forward<Args>(args))...);
  EnqueueLaunch(stream, KernelLaunch{name, grid, block, dynamic_shared_bytes,
                                     [kernel, captured]() { std::apply(kernel, captured); }});
}

template <typename T>
T AtomicAddFloating(T* address, T value) {
  std::atomic_ref<T> ref(*address);
  T old = ref.load(std::memory_order_relaxed);
  while (!ref.compare_exchange_weak(old, old + value, std::memory_order_relaxed)) {
  }
  return old;
}

}  // namespace hipemu::detail

#define threadIdx (::hipemu::detail::t_thread_idx)
#define blockIdx (::hipemu::detail::t_block_idx)
#define blockDim (::hipemu::detail::t_block_dim)
#define gridDim (::hipemu::detail::t_grid_dim)

// warpSize reads the launching device's warp size. An object, not a macro, so that
// hipDeviceProp_t::warpSize still names the field.
struct HipEmuWarpSize {
  operator int() const { return ::hipemu::detail::t_warp_size; }
};
inline constexpr HipEmuWarpSize warpSize{};

#define HIP_DYNAMIC_SHARED(type, var) \
  type* var = reinterpret_cast<type*>(::hipemu::detail::t_dynamic_shared)

#define hipLaunchKernelGGL(kernel, grid, block, shared_bytes, stream, ...)                   \
  ::hipemu::detail::LaunchKernel(#kernel, kernel, dim3(grid), dim3(block), (shared_bytes), \
                                 (stream), ##__VA_ARGS__)

inline void __syncthreads() { ::hipemu::detail::SyncThreads(); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

template <typename T>
inline T __ldg(const T* p) {
  return *p;
}

inline float atomicAdd(float* address, float value) {
  return ::hipemu::detail::AtomicAddFloating(address, value);
}
inline double atomicAdd(double* address, double value) {
  return ::hipemu::detail::AtomicAddFloating(address, value);
}
inline int atomicAdd(int* address, int value) {
  return std::atomic_ref<int>(*address).fetch_add(value, std::memory_order_relaxed);
}
inline unsigned int atomicAdd(unsigned int* address, unsigned int value) {
  return std::atomic_ref<unsigned int>(*address).fetch_add(value, std::memory_order_relaxed);
}
inline unsigned long long atomicAdd(unsigned long long* address, unsigned long long value) {
  return std::atomic_ref<unsigned long long>(*address).fetch_add(value,
                                                                  std::memory_order_relaxed);
}
inline int atomicMax(int* address, int value) {
  std::atomic_ref<int> ref(*address);
  int old = ref.load(std::memory_order_relaxed);
  while (old < value && !ref.compare_exchange_weak(old, value, std::memory_order_relaxed)) {
  }
  return old;
}
inline int atomicMin(int* address, int value) {
  std::atomic_ref<int> ref(*address);
  int old = ref.load(std::memory_order_relaxed);
  while (old > value && !ref.compare_exchange_weak(old, value, std::memory_order_relaxed)) {
  }
  return old;
}
inline int atomicExch(int* address, int value) {
  return std::atomic_ref<int>(*address).exchange(value, std::memory_order_relaxed);
}
inline int atomicCAS(int* address, int compare, int value) {
  std::atomic_ref<int>(*address).compare_exchange_strong(compare, value,
                                                         std::memory_order_relaxed);
  return compare;
}

// Device math that HIP and CUDA provide as global functions.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
