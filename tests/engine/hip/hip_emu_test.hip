// Tests of the HIP-on-CPU emulator (third_party/hip-on-cpu) itself: kernel geometry, shared
// memory and barriers, stream ordering and asynchrony, events across streams, copies, memory
// accounting, sticky faults. Built only with SPARKLE_GPU=emu.
//
// Asynchrony is observed without timing: a host function that blocks on a Gate holds a stream,
// and the test checks what has (not) happened before it opens the gate.
#include <hip/hip_runtime.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <numeric>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "hip_emu_control.h"

namespace {

#define ASSERT_HIP_OK(expr) ASSERT_EQ((expr), hipSuccess) << #expr

// A host function that blocks its stream until Open().
class Gate {
 public:
  static void Wait(void* self) {
    Gate* g = static_cast<Gate*>(self);
    std::unique_lock<std::mutex> lock(g->mu_);
    g->cv_.wait(lock, [g] { return g->open_; });
  }
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

__global__ void WriteGeometry(int* out) {
  const int block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const int thread = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  const int threads = blockDim.x * blockDim.y * blockDim.z;
  int* o = out + 8 * (block * threads + thread);
  o[0] = blockIdx.x;
  o[1] = blockIdx.y;
  o[2] = blockIdx.z;
  o[3] = threadIdx.x;
  o[4] = threadIdx.y;
  o[5] = threadIdx.z;
  o[6] = gridDim.x * 1000 + gridDim.y * 100 + gridDim.z * 10 + blockDim.x;
  o[7] = warpSize;
}

// Tree reduction in shared memory: wrong unless every __syncthreads is a real barrier.
__global__ void BlockSum(const float* __restrict__ in, float* out, int n) {
  __shared__ float partial[256];
  const int t = threadIdx.x;
  const int i = blockIdx.x * blockDim.x + t;
  partial[t] = i < n ? __ldg(in + i) : 0.0f;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (t < stride) partial[t] += partial[t + stride];
    __syncthreads();
  }
  if (t == 0) atomicAdd(out, partial[0]);
}

// Reverses each block's slice through dynamic shared memory.
__global__ void ReverseBlocks(const int* in, int* out) {
  HIP_DYNAMIC_SHARED(int, buf);
  const int t = threadIdx.x, base = blockIdx.x * blockDim.x;
  buf[t] = in[base + t];
  __syncthreads();
  out[base + t] = buf[blockDim.x - 1 - t];
}

// Reverses the first `valid` elements; the other threads return before the barrier, which
// then waits only for the threads still running (as on current GPUs).
__global__ void ReversePrefix(const int* in, int* out, int valid) {
  __shared__ int buf[64];
  const int t = threadIdx.x;
  if (t >= valid) return;
  buf[t] = in[t];
  __syncthreads();
  out[t] = buf[valid - 1 - t];
}

// x = x * 2 + k: the result depends on the order of launches.
__global__ void Step(int* x, int k) {
  if (threadIdx.x == 0 && blockIdx.x == 0) *x = *x * 2 + k;
}

__global__ void Scale(float* p, float f, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) p[i] *= f;
}

__global__ void CopyTimes(const int* in, int* out, int f) { *out = *in * f; }

// A handshake between two streams: `first` (a kernel) announces it runs and waits for
// `second` to answer, `second` waits for the announcement. With bounded waits, *seen ends 1 only
// if both were running at the same time.
bool SpinUntilSet(int* p) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::atomic_ref<int>(*p).load() == 0) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::yield();
  }
  return true;
}
__global__ void HandshakeFirst(int* flags, int* seen) {
  std::atomic_ref<int>(flags[0]).store(1);
  *seen = SpinUntilSet(&flags[1]) ? 1 : 0;
}
// The other side of the handshake, as a host function: kernels run one at a time in the
// emulator (its __shared__ variables are plain statics), so the partner of a running kernel is
// another stream's host function (copies behave the same way).
void HandshakeSecond(void* flags_arg) {
  int* flags = static_cast<int*>(flags_arg);
  if (SpinUntilSet(&flags[0])) std::atomic_ref<int>(flags[1]).store(1);
}

class HipEmuTest : public ::testing::Test {
 protected:
  void Configure(int devices, int64_t memory_bytes = int64_t{64} << 20) {
    hipemu::Config config;
    config.device_count = devices;
    config.memory_bytes = memory_bytes;
    hipemu::Configure(config);
    if (devices > 0) {
      ASSERT_HIP_OK(hipSetDevice(0));
    }
  }
  void SetUp() override { Configure(1); }
  void TearDown() override { hipemu::Configure(hipemu::Config{}); }
};

TEST_F(HipEmuTest, NoDevicesByDefault) {
  Configure(0);
  int n = -1;
  EXPECT_EQ(hipGetDeviceCount(&n), hipErrorNoDevice);
  EXPECT_EQ(n, 0);
  void* p = nullptr;
  EXPECT_EQ(hipMalloc(&p, 16), hipErrorInvalidDevice);
  EXPECT_EQ(hipSetDevice(0), hipErrorInvalidDevice);
  hipStream_t s;
  EXPECT_EQ(hipStreamCreate(&s), hipErrorInvalidDevice);
  EXPECT_EQ(hipGetLastError(), hipErrorInvalidDevice);
  EXPECT_EQ(hipGetLastError(), hipSuccess);  // not sticky
}

TEST_F(HipEmuTest, DevicePropertiesFollowTheConfig) {
  hipemu::Config config;
  config.device_count = 3;
  config.memory_bytes = int64_t{5} << 20;
  config.multiprocessor_count = 7;
  config.warp_size = 32;
  hipemu::Configure(config);
  int n = 0;
  ASSERT_HIP_OK(hipGetDeviceCount(&n));
  EXPECT_EQ(n, 3);
  hipDeviceProp_t prop;
  ASSERT_HIP_OK(hipGetDeviceProperties(&prop, 2));
  EXPECT_STREQ(prop.name, "hip-cpu-emulator");
  EXPECT_EQ(prop.totalGlobalMem, size_t{5} << 20);
  EXPECT_EQ(prop.multiProcessorCount, 7);
  EXPECT_EQ(prop.warpSize, 32);
  EXPECT_EQ(prop.sharedMemPerBlock, size_t{64} << 10);
  EXPECT_EQ(hipGetDeviceProperties(&prop, 3), hipErrorInvalidDevice);
  ASSERT_HIP_OK(hipSetDevice(2));
  int d = -1;
  ASSERT_HIP_OK(hipGetDevice(&d));
  EXPECT_EQ(d, 2);
}

TEST_F(HipEmuTest, LaunchGeometry) {
  const dim3 grid(3, 2, 2), block(4, 3, 2);
  const int total = 12 * 24;
  int* d = nullptr;
  ASSERT_HIP_OK(hipMalloc(&d, total * 8 * sizeof(int)));
  hipLaunchKernelGGL(WriteGeometry, grid, block, 0, 0, d);
  ASSERT_HIP_OK(hipGetLastError());
  std::vector<int> h(total * 8);
  ASSERT_HIP_OK(hipMemcpy(h.data(), d, h.size() * sizeof(int), hipMemcpyDeviceToHost));
  int i = 0;
  for (int bz = 0; bz < 2; ++bz)
    for (int by = 0; by < 2; ++by)
      for (int bx = 0; bx < 3; ++bx)
        for (int tz = 0; tz < 2; ++tz)
          for (int ty = 0; ty < 3; ++ty)
            for (int tx = 0; tx < 4; ++tx, ++i) {
              const std::vector<int> want = {bx, by, bz, tx, ty, tz, 3224, 64};
              ASSERT_EQ(std::vector<int>(h.begin() + 8 * i, h.begin() + 8 * i + 8), want)
                  << "block " << bx << by << bz << " thread " << tx << ty << tz;
            }
  ASSERT_HIP_OK(hipFree(d));
}

TEST_F(HipEmuTest, SharedMemoryReductionWithBarriers) {
  const int n = 10000;  // not a multiple of the block: the last block has early returns
  std::vector<float> h(n);
  std::iota(h.begin(), h.end(), 1.0f);
  float *in = nullptr, *sum = nullptr;
  ASSERT_HIP_OK(hipMalloc(&in, n * sizeof(float)));
  ASSERT_HIP_OK(hipMalloc(&sum, sizeof(float)));
  ASSERT_HIP_OK(hipMemcpy(in, h.data(), n * sizeof(float), hipMemcpyHostToDevice));
  ASSERT_HIP_OK(hipMemset(sum, 0, sizeof(float)));
  hipLaunchKernelGGL(BlockSum, dim3((n + 255) / 256), dim3(256), 0, 0, in, sum, n);
  float got = 0;
  ASSERT_HIP_OK(hipMemcpy(&got, sum, sizeof(float), hipMemcpyDeviceToHost));
  EXPECT_FLOAT_EQ(got, 50005000.0f);
  const hipemu::Counters c = hipemu::GetCounters(0);
  EXPECT_EQ(c.kernel_launches, 1);
  EXPECT_EQ(c.blocks_run, 40);
  // 9 barriers: 1 + log2(256); each switches every thread of the 40 blocks once.
  EXPECT_EQ(c.fiber_switches, 9 * 40 * 256);
  ASSERT_HIP_OK(hipFree(in));
  ASSERT_HIP_OK(hipFree(sum));
}

TEST_F(HipEmuTest, BarrierIgnoresThreadsThatReturned) {
  std::vector<int> h(64);
  std::iota(h.begin(), h.end(), 100);
  int *in = nullptr, *out = nullptr;
  ASSERT_HIP_OK(hipMalloc(&in, 64 * sizeof(int)));
  ASSERT_HIP_OK(hipMalloc(&out, 64 * sizeof(int)));
  ASSERT_HIP_OK(hipMemcpy(in, h.data(), 64 * sizeof(int), hipMemcpyHostToDevice));
  ASSERT_HIP_OK(hipMemset(out, 0xff, 64 * sizeof(int)));
  hipLaunchKernelGGL(ReversePrefix, dim3(1), dim3(64), 0, 0, in, out, 37);
  std::vector<int> got(64);
  ASSERT_HIP_OK(hipMemcpy(got.data(), out, 64 * sizeof(int), hipMemcpyDeviceToHost));
  for (int t = 0; t < 64; ++t) ASSERT_EQ(got[t], t < 37 ? 100 + 36 - t : -1) << t;
  EXPECT_EQ(hipemu::GetCounters(0).fiber_switches, 37);
}

TEST_F(HipEmuTest, KernelWithoutBarriersNeverSwitches) {
  const int n = 1000;
  std::vector<float> h(n, 1.5f);
  float* d = nullptr;
  ASSERT_HIP_OK(hipMalloc(&d, n * sizeof(float)));
  ASSERT_HIP_OK(hipMemcpy(d, h.data(), n * sizeof(float), hipMemcpyHostToDevice));
  hipLaunchKernelGGL(Scale, dim3(4), dim3(256), 0, 0, d, 2.0f, n);
  ASSERT_HIP_OK(hipMemcpy(h.data(), d, n * sizeof(float), hipMemcpyDeviceToHost));
  for (float v : h) ASSERT_EQ(v, 3.0f);
  EXPECT_EQ(hipemu::GetCounters(0).fiber_switches, 0);
  ASSERT_HIP_OK(hipFree(d));
}

TEST_F(HipEmuTest, DynamicSharedMemory) {
  const int threads = 128, blocks = 3, n = threads * blocks;
  std::vector<int> h(n);
  std::iota(h.begin(), h.end(), 0);
  int *in = nullptr, *out = nullptr;
  ASSERT_HIP_OK(hipMalloc(&in, n * sizeof(int)));
  ASSERT_HIP_OK(hipMalloc(&out, n * sizeof(int)));
  ASSERT_HIP_OK(hipMemcpy(in, h.data(), n * sizeof(int), hipMemcpyHostToDevice));
  hipLaunchKernelGGL(ReverseBlocks, dim3(blocks), dim3(threads), threads * sizeof(int), 0, in,
                     out);
  ASSERT_HIP_OK(hipGetLastError());
  std::vector<int> got(n);
  ASSERT_HIP_OK(hipMemcpy(got.data(), out, n * sizeof(int), hipMemcpyDeviceToHost));
  for (int b = 0; b < blocks; ++b) {
    for (int t = 0; t < threads; ++t) ASSERT_EQ(got[b * threads + t], b * threads + threads - 1 - t);
  }
  // More dynamic shared memory than a block has is a launch error, not sticky.
  hipLaunchKernelGGL(ReverseBlocks, dim3(1), dim3(1), size_t{1} << 20, 0, in, out);
  EXPECT_EQ(hipGetLastError(), hipErrorInvalidValue);
  EXPECT_EQ(hipGetLastError(), hipSuccess);
}

TEST_F(HipEmuTest, InvalidLaunchConfigurationIsReportedAndNotSticky) {
  int* x = nullptr;
  ASSERT_HIP_OK(hipMalloc(&x, sizeof(int)));
  hipLaunchKernelGGL(Step, dim3(1), dim3(2048), 0, 0, x, 1);
  EXPECT_EQ(hipPeekAtLastError(), hipErrorInvalidConfiguration);
  EXPECT_EQ(hipGetLastError(), hipErrorInvalidConfiguration);
  EXPECT_EQ(hipGetLastError(), hipSuccess);
  hipLaunchKernelGGL(Step, dim3(0), dim3(1), 0, 0, x, 1);
  EXPECT_EQ(hipGetLastError(), hipErrorInvalidConfiguration);
  EXPECT_EQ(hipemu::GetCounters(0).kernel_launches, 0);
  ASSERT_HIP_OK(hipDeviceSynchronize());
}

TEST_F(HipEmuTest, StreamRunsItsOperationsInOrderAndAsynchronously) {
  hipStream_t s;
  ASSERT_HIP_OK(hipStreamCreate(&s));
  int* x = nullptr;
  ASSERT_HIP_OK(hipMalloc(&x, sizeof(int)));
  int* pinned = nullptr;
  ASSERT_HIP_OK(hipHostMalloc(&pinned, sizeof(int)));
  *pinned = -1;
  Gate gate;
  ASSERT_HIP_OK(hipLaunchHostFunc(s, &Gate::Wait, &gate));
  ASSERT_HIP_OK(hipMemsetAsync(x, 0, sizeof(int), s));
  for (int k = 1; k <= 5; ++k) hipLaunchKernelGGL(Step, dim3(1), dim3(32), 0, s, x, k);
  ASSERT_HIP_OK(hipGetLastError());
  ASSERT_HIP_OK(hipMemcpyAsync(pinned, x, sizeof(int), hipMemcpyDeviceToHost, s));
  // Everything is queued behind the gate: nothing ran yet.
  EXPECT_EQ(hipStreamQuery(s), hipErrorNotReady);
  EXPECT_EQ(*pinned, -1);
  EXPECT_EQ(hipemu::GetCounters(0).kernel_launches, 0);
  gate.Open();
  ASSERT_HIP_OK(hipStreamSynchronize(s));
  EXPECT_EQ(hipStreamQuery(s), hipSuccess);
  EXPECT_EQ(*pinned, ((((0 * 2 + 1) * 2 + 2) * 2 + 3) * 2 + 4) * 2 + 5);
  const hipemu::Counters c = hipemu::GetCounters(0);
  EXPECT_EQ(c.kernel_launches, 5);
  EXPECT_EQ(c.memsets, 1);
  EXPECT_EQ(c.bytes_device_to_host, int64_t{sizeof(int)});
  ASSERT_HIP_OK(hipStreamDestroy(s));
  EXPECT_EQ(hipStreamQuery(s), hipErrorInvalidHandle);
  ASSERT_HIP_OK(hipHostFree(pinned));
  ASSERT_HIP_OK(hipFree(x));
}

TEST_F(HipEmuTest, EventsOrderStreamsAndTime) {
  hipStream_t a, b;
  ASSERT_HIP_OK(hipStreamCreate(&a));
  ASSERT_HIP_OK(hipStreamCreate(&b));
  hipEvent_t start, produced;
  ASSERT_HIP_OK(hipEventCreate(&start));
  ASSERT_HIP_OK(hipEventCreate(&produced));
  int *value = nullptr, *result = nullptr;
  ASSERT_HIP_OK(hipMalloc(&value, sizeof(int)));
  ASSERT_HIP_OK(hipMalloc(&result, sizeof(int)));
  const int seven = 7;
  ASSERT_HIP_OK(hipMemcpy(value, &seven, sizeof(int), hipMemcpyHostToDevice));

  Gate gate;
  ASSERT_HIP_OK(hipEventRecord(start, a));
  ASSERT_HIP_OK(hipLaunchHostFunc(a, &Gate::Wait, &gate));
  hipLaunchKernelGGL(Step, dim3(1), dim3(1), 0, a, value, 1);  // 7 -> 15
  ASSERT_HIP_OK(hipEventRecord(produced, a));
  ASSERT_HIP_OK(hipStreamWaitEvent(b, produced, 0));
  hipLaunchKernelGGL(CopyTimes, dim3(1), dim3(1), 0, b, value, result, 10);
  ASSERT_HIP_OK(hipGetLastError());

  EXPECT_EQ(hipEventQuery(produced), hipErrorNotReady);
  EXPECT_EQ(hipStreamQuery(b), hipErrorNotReady);  // b waits for a's event
  float ms = 0;
  EXPECT_EQ(hipEventElapsedTime(&ms, start, produced), hipErrorNotReady);
  gate.Open();
  ASSERT_HIP_OK(hipStreamSynchronize(b));
  EXPECT_EQ(hipEventQuery(produced), hipSuccess);
  int got = 0;
  ASSERT_HIP_OK(hipMemcpy(&got, result, sizeof(int), hipMemcpyDeviceToHost));
  EXPECT_EQ(got, 150);  // the kernel on b saw a's write
  ASSERT_HIP_OK(hipEventSynchronize(produced));
  ASSERT_HIP_OK(hipEventElapsedTime(&ms, start, produced));
  EXPECT_GE(ms, 0.0f);

  hipEvent_t untimed;
  ASSERT_HIP_OK(hipEventCreateWithFlags(&untimed, hipEventDisableTiming));
  ASSERT_HIP_OK(hipEventRecord(untimed, a));
  ASSERT_HIP_OK(hipEventSynchronize(untimed));
  EXPECT_EQ(hipEventElapsedTime(&ms, start, untimed), hipErrorInvalidHandle);
  for (hipEvent_t e : {start, produced, untimed}) ASSERT_HIP_OK(hipEventDestroy(e));
  EXPECT_EQ(hipEventQuery(start), hipErrorInvalidHandle);
  ASSERT_HIP_OK(hipStreamDestroy(a));
  ASSERT_HIP_OK(hipStreamDestroy(b));
}

TEST_F(HipEmuTest, NullStreamWaitsForBlockingStreamsOnly) {
  hipStream_t blocking, non_blocking;
  ASSERT_HIP_OK(hipStreamCreate(&blocking));
  ASSERT_HIP_OK(hipStreamCreateWithFlags(&non_blocking, hipStreamNonBlocking));
  int* x = nullptr;
  ASSERT_HIP_OK(hipMalloc(&x, sizeof(int)));
  Gate gate_blocking, gate_non_blocking;
  ASSERT_HIP_OK(hipLaunchHostFunc(non_blocking, &Gate::Wait, &gate_non_blocking));
  ASSERT_HIP_OK(hipLaunchHostFunc(blocking, &Gate::Wait, &gate_blocking));
  ASSERT_HIP_OK(hipMemsetAsync(x, 0, sizeof(int), 0));
  EXPECT_EQ(hipStreamQuery(0), hipErrorNotReady);
  gate_blocking.Open();
  ASSERT_HIP_OK(hipStreamSynchronize(0));  // done although the non-blocking stream is held
  EXPECT_EQ(hipStreamQuery(non_blocking), hipErrorNotReady);
  gate_non_blocking.Open();
  ASSERT_HIP_OK(hipDeviceSynchronize());
  EXPECT_EQ(hipStreamQuery(non_blocking), hipSuccess);
  ASSERT_HIP_OK(hipStreamDestroy(blocking));
  ASSERT_HIP_OK(hipStreamDestroy(non_blocking));
}

TEST_F(HipEmuTest, AKernelRunsConcurrentlyWithAnotherStream) {
  hipStream_t a, b;
  ASSERT_HIP_OK(hipStreamCreate(&a));
  ASSERT_HIP_OK(hipStreamCreateWithFlags(&b, hipStreamNonBlocking));
  int *flags = nullptr, *seen = nullptr;
  ASSERT_HIP_OK(hipMalloc(&flags, 2 * sizeof(int)));
  ASSERT_HIP_OK(hipMalloc(&seen, sizeof(int)));
  ASSERT_HIP_OK(hipMemset(flags, 0, 2 * sizeof(int)));
  hipLaunchKernelGGL(HandshakeFirst, dim3(1), dim3(1), 0, a, flags, seen);
  ASSERT_HIP_OK(hipLaunchHostFunc(b, &HandshakeSecond, flags));
  ASSERT_HIP_OK(hipStreamSynchronize(a));
  ASSERT_HIP_OK(hipStreamSynchronize(b));
  int got = 0;
  ASSERT_HIP_OK(hipMemcpy(&got, seen, sizeof(int), hipMemcpyDeviceToHost));
  EXPECT_EQ(got, 1);  // only if the kernel and the host function ran at the same time
  ASSERT_HIP_OK(hipStreamDestroy(a));
  ASSERT_HIP_OK(hipStreamDestroy(b));
}

TEST_F(HipEmuTest, AsyncCopiesAreCheckedAgainstAllocations) {
  hipStream_t s;
  ASSERT_HIP_OK(hipStreamCreate(&s));
  float* dev = nullptr;
  float* host = nullptr;
  ASSERT_HIP_OK(hipMalloc(&dev, 100 * sizeof(float)));
  ASSERT_HIP_OK(hipHostMalloc(&host, 100 * sizeof(float)));
  for (int i = 0; i < 100; ++i) host[i] = static_cast<float>(i);
  Gate gate;
  ASSERT_HIP_OK(hipLaunchHostFunc(s, &Gate::Wait, &gate));
  ASSERT_HIP_OK(hipMemcpyAsync(dev, host, 100 * sizeof(float), hipMemcpyHostToDevice, s));
  hipLaunchKernelGGL(Scale, dim3(1), dim3(128), 0, s, dev, 3.0f, 100);
  ASSERT_HIP_OK(hipMemcpyAsync(host, dev, 100 * sizeof(float), hipMemcpyDeviceToHost, s));
  EXPECT_EQ(host[10], 10.0f);  // not copied back yet
  gate.Open();
  ASSERT_HIP_OK(hipStreamSynchronize(s));
  for (int i = 0; i < 100; ++i) ASSERT_EQ(host[i], 3.0f * i);
  const hipemu::Counters c = hipemu::GetCounters(0);
  EXPECT_EQ(c.bytes_host_to_device, 400);
  EXPECT_EQ(c.bytes_device_to_host, 400);

  // One element past the allocation, swapped directions, unknown pointers: invalid value.
  EXPECT_EQ(hipMemcpyAsync(dev + 1, host, 100 * sizeof(float), hipMemcpyHostToDevice, s),
            hipErrorInvalidValue);
  EXPECT_EQ(hipMemcpyAsync(host, dev, 100 * sizeof(float), hipMemcpyHostToDevice, s),
            hipErrorInvalidValue);
  EXPECT_EQ(hipMemsetAsync(host, 0, 4, s), hipErrorInvalidValue);
  EXPECT_EQ(hipFree(host), hipErrorInvalidValue);
  EXPECT_EQ(hipHostFree(dev), hipErrorInvalidValue);
  // hipMemcpyDefault infers the direction from the pointers.
  ASSERT_HIP_OK(hipMemcpy(dev, host, 4, hipMemcpyDefault));
  EXPECT_EQ(hipemu::GetCounters(0).bytes_host_to_device, 404);
  ASSERT_HIP_OK(hipStreamDestroy(s));
  ASSERT_HIP_OK(hipHostFree(host));
  ASSERT_HIP_OK(hipFree(dev));
}

TEST_F(HipEmuTest, OutOfMemoryAndAccounting) {
  Configure(1, int64_t{1} << 20);
  size_t free_bytes = 0, total = 0;
  ASSERT_HIP_OK(hipMemGetInfo(&free_bytes, &total));
  EXPECT_EQ(total, size_t{1} << 20);
  EXPECT_EQ(free_bytes, size_t{1} << 20);
  void *a = nullptr, *b = nullptr;
  ASSERT_HIP_OK(hipMalloc(&a, 600 << 10));
  EXPECT_EQ(hipMalloc(&b, 600 << 10), hipErrorOutOfMemory);
  EXPECT_EQ(hipGetLastError(), hipErrorOutOfMemory);
  ASSERT_HIP_OK(hipMemGetInfo(&free_bytes, &total));
  EXPECT_EQ(free_bytes, size_t{424} << 10);
  EXPECT_EQ(hipemu::GetCounters(0).memory_used_bytes, 600 << 10);
  ASSERT_HIP_OK(hipFree(a));
  ASSERT_HIP_OK(hipMalloc(&b, 600 << 10));  // fits again
  ASSERT_HIP_OK(hipFree(b));
  EXPECT_EQ(hipemu::GetCounters(0).memory_used_bytes, 0);
}

struct CallbackLog {
  std::mutex mu;
  std::vector<hipError_t> statuses;
};
void RecordStatus(hipStream_t, hipError_t status, void* log) {
  auto* l = static_cast<CallbackLog*>(log);
  std::lock_guard<std::mutex> lock(l->mu);
  l->statuses.push_back(status);
}

TEST_F(HipEmuTest, InjectedFaultIsStickyOnItsDeviceOnly) {
  Configure(2);
  hipemu::InjectLaunchFault(0, 2);
  hipStream_t s;
  ASSERT_HIP_OK(hipStreamCreate(&s));
  int* x = nullptr;
  ASSERT_HIP_OK(hipMalloc(&x, sizeof(int)));
  ASSERT_HIP_OK(hipMemset(x, 0, sizeof(int)));
  CallbackLog log;
  Gate gate;  // holds the stream so that the fault cannot happen before the checks below
  ASSERT_HIP_OK(hipLaunchHostFunc(s, &Gate::Wait, &gate));
  hipLaunchKernelGGL(Step, dim3(1), dim3(1), 0, s, x, 1);  // runs: x = 1
  ASSERT_HIP_OK(hipStreamAddCallback(s, &RecordStatus, &log, 0));
  hipLaunchKernelGGL(Step, dim3(1), dim3(1), 0, s, x, 1);  // faults
  ASSERT_HIP_OK(hipStreamAddCallback(s, &RecordStatus, &log, 0));
  hipLaunchKernelGGL(Step, dim3(1), dim3(1), 0, s, x, 1);  // enqueued, never runs
  ASSERT_HIP_OK(hipGetLastError());  // the fault happens when the kernel runs
  gate.Open();

  EXPECT_EQ(hipStreamSynchronize(s), hipErrorIllegalAddress);
  EXPECT_EQ(log.statuses, (std::vector<hipError_t>{hipSuccess, hipErrorIllegalAddress}));
  EXPECT_EQ(hipemu::GetCounters(0).kernel_launches, 1);
  // Sticky: every later call on device 0 fails the same way, and reading it does not reset it.
  EXPECT_EQ(hipGetLastError(), hipErrorIllegalAddress);
  EXPECT_EQ(hipGetLastError(), hipErrorIllegalAddress);
  EXPECT_EQ(hipDeviceSynchronize(), hipErrorIllegalAddress);
  EXPECT_EQ(hipStreamQuery(s), hipErrorIllegalAddress);
  void* p = nullptr;
  EXPECT_EQ(hipMalloc(&p, 16), hipErrorIllegalAddress);
  int h = 0;
  EXPECT_EQ(hipMemcpy(&h, x, sizeof(int), hipMemcpyDeviceToHost), hipErrorIllegalAddress);
  hipEvent_t e;
  ASSERT_HIP_OK(hipEventCreate(&e));
  EXPECT_EQ(hipEventRecord(e, s), hipErrorIllegalAddress);
  hipStream_t s2;
  EXPECT_EQ(hipStreamCreate(&s2), hipErrorIllegalAddress);

  // Device 1 is healthy.
  ASSERT_HIP_OK(hipSetDevice(1));
  (void)hipGetLastError();  // this thread's last error (700) is reported once more
  ASSERT_HIP_OK(hipGetLastError());
  int* y = nullptr;
  ASSERT_HIP_OK(hipMalloc(&y, sizeof(int)));
  ASSERT_HIP_OK(hipMemset(y, 0, sizeof(int)));
  hipLaunchKernelGGL(Step, dim3(1), dim3(1), 0, 0, y, 4);
  ASSERT_HIP_OK(hipMemcpy(&h, y, sizeof(int), hipMemcpyDeviceToHost));
  EXPECT_EQ(h, 4);
  ASSERT_HIP_OK(hipEventDestroy(e));
  ASSERT_HIP_OK(hipStreamDestroy(s));
}

TEST_F(HipEmuTest, LaunchDelayIsSpentOnTheStream) {
  hipemu::SetLaunchDelay(0, std::chrono::microseconds(2000));
  int* x = nullptr;
  ASSERT_HIP_OK(hipMalloc(&x, sizeof(int)));
  ASSERT_HIP_OK(hipMemset(x, 0, sizeof(int)));
  hipEvent_t start, stop;
  ASSERT_HIP_OK(hipEventCreate(&start));
  ASSERT_HIP_OK(hipEventCreate(&stop));
  ASSERT_HIP_OK(hipEventRecord(start, 0));
  for (int k = 0; k < 3; ++k) hipLaunchKernelGGL(Step, dim3(1), dim3(1), 0, 0, x, 1);
  ASSERT_HIP_OK(hipEventRecord(stop, 0));
  ASSERT_HIP_OK(hipEventSynchronize(stop));
  int h = 0;
  ASSERT_HIP_OK(hipMemcpy(&h, x, sizeof(int), hipMemcpyDeviceToHost));
  EXPECT_EQ(h, 7);
  // A lower bound only (each launch sleeps at least 2 ms between the two events).
  float ms = 0;
  ASSERT_HIP_OK(hipEventElapsedTime(&ms, start, stop));
  EXPECT_GE(ms, 6.0f);
  ASSERT_HIP_OK(hipEventDestroy(start));
  ASSERT_HIP_OK(hipEventDestroy(stop));
}

TEST_F(HipEmuTest, ErrorNamesAndStrings) {
  EXPECT_STREQ(hipGetErrorName(hipErrorIllegalAddress), "hipErrorIllegalAddress");
  EXPECT_STREQ(hipGetErrorName(hipErrorOutOfMemory), "hipErrorOutOfMemory");
  EXPECT_STREQ(hipGetErrorString(hipErrorNoDevice), "no ROCm-capable device is detected");
}

}  // namespace
