// Speed of the HIP-on-CPU emulator (third_party/hip-on-cpu), by hand: docs/gpu.md.
//
//   hip_emu_bench [runs]     (SPARKLE_GPU=emu builds only; default 5 runs)
//
// 1. Barrier switches per second, side by side in one run: the emulator's Boost.Context fibers
//    (a kernel whose 256 threads hit __syncthreads 200 times per block) against glibc
//    swapcontext doing the same round robin (what the research prototype used). One "switch"
//    = a thread suspends at a barrier and is resumed (two context switches).
// 2. A tiled 3x3 conv kernel (16x16 blocks, haloed input tile and 4-output-channel weight tile
//    in shared memory, two barriers per input channel), N=12 C=8 64x64 -> K=16: the shape the
//    research note timed at 8-9 s with its swapcontext emulator.
// Reports min / median / max over the runs. Times are process CPU time (the host thread sleeps
// while the stream thread runs the kernel), which the load of a shared machine distorts less
// than wall time.
#include <hip/hip_runtime.h>
#include <ucontext.h>

#include <algorithm>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "hip_emu_control.h"

namespace {

// Process CPU time in seconds.
double CpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

constexpr int kBarriers = 200;

__global__ void BarrierLoop(float* out) {
  __shared__ float v[256];
  float acc = 0;
  for (int i = 0; i < kBarriers; ++i) {
    v[threadIdx.x] = acc + i;
    __syncthreads();
    acc += v[(threadIdx.x + 1) % blockDim.x];
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}

// The same round robin with glibc ucontext: `threads` contexts, each suspending kBarriers times.
struct UcontextRoundRobin {
  ucontext_t scheduler;
  std::vector<ucontext_t> threads;
  std::vector<std::vector<char>> stacks;
  int current = 0;
  long switches = 0;
};
UcontextRoundRobin* g_rr = nullptr;

void UcontextThread() {
  for (int i = 0; i < kBarriers; ++i) {
    ++g_rr->switches;
    swapcontext(&g_rr->threads[g_rr->current], &g_rr->scheduler);
  }
}

long RunUcontextBlock(int threads) {
  UcontextRoundRobin rr;
  g_rr = &rr;
  rr.threads.resize(threads);
  rr.stacks.assign(threads, std::vector<char>(64 * 1024));
  for (int t = 0; t < threads; ++t) {
    getcontext(&rr.threads[t]);
    rr.threads[t].uc_stack.ss_sp = rr.stacks[t].data();
    rr.threads[t].uc_stack.ss_size = rr.stacks[t].size();
    rr.threads[t].uc_link = &rr.scheduler;
    makecontext(&rr.threads[t], UcontextThread, 0);
  }
  for (int round = 0; round <= kBarriers; ++round) {
    for (int t = 0; t < threads; ++t) {
      rr.current = t;
      swapcontext(&rr.scheduler, &rr.threads[t]);
    }
  }
  return rr.switches;
}

// NCHW 3x3 conv, stride 1, pad 1. Block (16, 16); grid (W/16, H/16, N * K/4).
constexpr int kTile = 16, kKPerBlock = 4;
__global__ void ConvTiled(const float* in, const float* w, float* out, int c_in, int h, int wd,
                          int k_out) {
  __shared__ float tile[kTile + 2][kTile + 2];
  __shared__ float wt[kKPerBlock][9];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int x = blockIdx.x * kTile + tx, y = blockIdx.y * kTile + ty;
  const int groups = k_out / kKPerBlock;
  const int n = blockIdx.z / groups, k0 = (blockIdx.z % groups) * kKPerBlock;
  float acc[kKPerBlock] = {0, 0, 0, 0};
  for (int c = 0; c < c_in; ++c) {
    const float* plane = in + (static_cast<long>(n) * c_in + c) * h * wd;
    for (int i = ty * kTile + tx; i < (kTile + 2) * (kTile + 2); i += kTile * kTile) {
      const int iy = blockIdx.y * kTile + i / (kTile + 2) - 1;
      const int ix = blockIdx.x * kTile + i % (kTile + 2) - 1;
      tile[i / (kTile + 2)][i % (kTile + 2)] =
          iy >= 0 && iy < h && ix >= 0 && ix < wd ? plane[iy * wd + ix] : 0.0f;
    }
    const int t = ty * kTile + tx;
    if (t < kKPerBlock * 9) wt[t / 9][t % 9] = w[((k0 + t / 9) * c_in + c) * 9 + t % 9];
    __syncthreads();
    for (int kk = 0; kk < kKPerBlock; ++kk) {
      for (int r = 0; r < 3; ++r) {
        for (int s = 0; s < 3; ++s) acc[kk] = fmaf(tile[ty + r][tx + s], wt[kk][r * 3 + s], acc[kk]);
      }
    }
    __syncthreads();
  }
  if (x < wd && y < h) {
    for (int kk = 0; kk < kKPerBlock; ++kk) {
      out[((static_cast<long>(n) * k_out + k0 + kk) * h + y) * wd + x] = acc[kk];
    }
  }
}

void Check(hipError_t e, const char* what) {
  if (e != hipSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, hipGetErrorName(e));
    std::exit(1);
  }
}

struct Stats {
  double min, median, max;
};
Stats Summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v.front(), v[v.size() / 2], v.back()};
}

}  // namespace

int main(int argc, char** argv) {
  const int runs = argc > 1 ? std::max(1, std::atoi(argv[1])) : 5;
  hipemu::Config config;
  config.device_count = 1;
  hipemu::Configure(config);
  Check(hipSetDevice(0), "hipSetDevice");

  // 1. Barrier switches per second.
  const int blocks = 40, threads = 256;
  float* out = nullptr;
  Check(hipMalloc(&out, blocks * threads * sizeof(float)), "hipMalloc");
  std::vector<double> fiber_rate, ucontext_rate, ratio;
  for (int run = 0; run < runs; ++run) {
    const int64_t before = hipemu::GetCounters(0).fiber_switches;
    double t0 = CpuSeconds();
    hipLaunchKernelGGL(BarrierLoop, dim3(blocks), dim3(threads), 0, 0, out);
    Check(hipDeviceSynchronize(), "BarrierLoop");
    const double fiber_s = CpuSeconds() - t0;
    const int64_t fiber_switches = hipemu::GetCounters(0).fiber_switches - before;

    t0 = CpuSeconds();
    long uc_switches = 0;
    for (int b = 0; b < blocks; ++b) uc_switches += RunUcontextBlock(threads);
    const double uc_s = CpuSeconds() - t0;

    fiber_rate.push_back(fiber_switches / fiber_s / 1e6);
    ucontext_rate.push_back(uc_switches / uc_s / 1e6);
    ratio.push_back(fiber_rate.back() / ucontext_rate.back());
  }
  const Stats f = Summarize(fiber_rate), u = Summarize(ucontext_rate), r = Summarize(ratio);
  std::printf("barrier switches, %d runs of %d x %d threads x %d barriers (min / median / max):\n",
              runs, blocks, threads, kBarriers);
  std::printf("  emulator (Boost.Context)  %7.2f / %7.2f / %7.2f M/s\n", f.min, f.median, f.max);
  std::printf("  glibc swapcontext         %7.2f / %7.2f / %7.2f M/s\n", u.min, u.median, u.max);
  std::printf("  ratio emulator/swapcontext %6.1f / %6.1f / %6.1f x\n", r.min, r.median, r.max);
  Check(hipFree(out), "hipFree");

  // 2. The tiled conv kernel.
  const int n = 12, c = 8, h = 64, w = 64, k = 16;
  std::vector<float> hin(static_cast<size_t>(n) * c * h * w), hw(static_cast<size_t>(k) * c * 9);
  for (size_t i = 0; i < hin.size(); ++i) hin[i] = static_cast<float>(i % 17) * 0.25f - 2.0f;
  for (size_t i = 0; i < hw.size(); ++i) hw[i] = static_cast<float>(i % 7) * 0.125f - 0.375f;
  float *din = nullptr, *dw = nullptr, *dout = nullptr;
  Check(hipMalloc(&din, hin.size() * sizeof(float)), "hipMalloc");
  Check(hipMalloc(&dw, hw.size() * sizeof(float)), "hipMalloc");
  Check(hipMalloc(&dout, static_cast<size_t>(n) * k * h * w * sizeof(float)), "hipMalloc");
  Check(hipMemcpy(din, hin.data(), hin.size() * sizeof(float), hipMemcpyHostToDevice), "copy");
  Check(hipMemcpy(dw, hw.data(), hw.size() * sizeof(float), hipMemcpyHostToDevice), "copy");
  std::vector<double> seconds;
  int64_t switches = 0;
  for (int run = 0; run < runs; ++run) {
    const int64_t before = hipemu::GetCounters(0).fiber_switches;
    const double t0 = CpuSeconds();
    hipLaunchKernelGGL(ConvTiled, dim3(w / kTile, h / kTile, n * k / kKPerBlock),
                       dim3(kTile, kTile), 0, 0, din, dw, dout, c, h, w, k);
    Check(hipDeviceSynchronize(), "ConvTiled");
    seconds.push_back(CpuSeconds() - t0);
    switches = hipemu::GetCounters(0).fiber_switches - before;
  }
  // Spot check against a direct CPU computation of a few outputs.
  std::vector<float> hout(static_cast<size_t>(n) * k * h * w);
  Check(hipMemcpy(hout.data(), dout, hout.size() * sizeof(float), hipMemcpyDeviceToHost), "copy");
  double max_err = 0;
  for (int probe = 0; probe < 64; ++probe) {
    const int pn = probe % n, pk = (probe * 5) % k, py = (probe * 13) % h, px = (probe * 29) % w;
    float ref = 0;
    for (int pc = 0; pc < c; ++pc)
      for (int r = 0; r < 3; ++r)
        for (int s = 0; s < 3; ++s) {
          const int iy = py + r - 1, ix = px + s - 1;
          if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
          ref += hin[((static_cast<size_t>(pn) * c + pc) * h + iy) * w + ix] *
                 hw[(static_cast<size_t>(pk) * c + pc) * 9 + r * 3 + s];
        }
    const float got = hout[((static_cast<size_t>(pn) * k + pk) * h + py) * w + px];
    max_err = std::max(max_err, static_cast<double>(std::abs(got - ref)));
  }
  const Stats s = Summarize(seconds);
  std::printf("tiled 3x3 conv N=%d C=%d %dx%d -> K=%d, %lld barrier switches per run:\n", n, c,
              h, w, k, static_cast<long long>(switches));
  std::printf("  %.3f / %.3f / %.3f s CPU (min / median / max of %d), max abs error %.2g\n", s.min,
              s.median, s.max, runs, max_err);
  return max_err < 1e-3 ? 0 : 1;
}
