#include "engine/router/router.h"

#include <cmath>
#include <limits>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sparkle {
namespace {

using ::testing::HasSubstr;

// A CPU pool at 100 GFLOP/s and GPUs at 10 TFLOP/s behind 10 GB/s links with 20 µs per launch.
DeviceView Cpu(double gflops = 100) {
  DeviceView d;
  d.gpu = -1;
  d.compute_gflops = gflops;
  return d;
}
DeviceView Gpu(int index, double gflops = 10000, double gbps = 10, double launch_s = 20e-6) {
  DeviceView d;
  d.gpu = index;
  d.compute_gflops = gflops;
  d.h2d_gbps = d.d2h_gbps = gbps;
  d.launch_overhead_s = launch_s;
  return d;
}
BatchCost Cost(double flops, int64_t in, int64_t out, int64_t weights = 0) {
  BatchCost c;
  c.flops = flops;
  c.input_bytes = in;
  c.output_bytes = out;
  c.weight_bytes = weights;
  return c;
}
int Chosen(const BatchCost& cost, const DeviceRequest& request,
           const std::vector<DeviceView>& devices) {
  absl::StatusOr<RouteDecision> d = Route(cost, request, devices, "test: no gpu");
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? devices[d->choice].gpu : -99;
}

TEST(PredictSeconds, AddsQueueTransfersComputeAndLaunch) {
  DeviceView g = Gpu(0, 1000, 10, 1e-3);
  g.queue_ahead_s = 0.5;
  // 0.5 queue + 1 ms launch + (1e7 + 1e7 weights) / 1e10 + 1e9 / 1e12 + 2e7 / 1e10
  EXPECT_NEAR(PredictSeconds(Cost(1e9, 10'000'000, 20'000'000, 10'000'000), g),
              0.5 + 1e-3 + 2e-3 + 1e-3 + 2e-3, 1e-12);
  g.weights_resident = true;
  EXPECT_NEAR(PredictSeconds(Cost(1e9, 10'000'000, 20'000'000, 10'000'000), g),
              0.5 + 1e-3 + 1e-3 + 1e-3 + 2e-3, 1e-12);
  // The CPU moves nothing.
  EXPECT_NEAR(PredictSeconds(Cost(1e9, 10'000'000, 20'000'000, 10'000'000), Cpu(100)), 1e-2,
              1e-12);
}

TEST(Route, TableOfDecisions) {
  struct Case {
    const char* name;
    BatchCost cost;
    std::vector<DeviceView> devices;
    int expected;  // -1 cpu, else the GPU
  };
  DeviceView busy_gpu = Gpu(0);
  busy_gpu.queue_ahead_s = 1.0;
  DeviceView busy_cpu = Cpu();
  busy_cpu.queue_ahead_s = 1.0;
  DeviceView sick = Gpu(0);
  sick.healthy = false;
  DeviceView unusable = Gpu(0);
  unusable.usable = false;
  DeviceView resident = Gpu(0);
  resident.weights_resident = true;
  const std::vector<Case> cases = {
      // 1 MFLOP, 16 KB each way: 10 µs on the CPU, > 20 µs launch alone on the GPU.
      {"tiny job stays on the cpu", Cost(1e6, 16 << 10, 16 << 10), {Cpu(), Gpu(0)}, -1},
      // 10 GFLOP: 100 ms on the CPU, ~1.2 ms on the GPU.
      {"big job goes to the gpu", Cost(1e10, 1 << 20, 1 << 20), {Cpu(), Gpu(0)}, 0},
      {"a gpu queue shifts big work to the cpu", Cost(1e10, 1 << 20, 1 << 20),
       {Cpu(), busy_gpu}, -1},
      {"a cpu queue shifts mid-size work to the gpu", Cost(1e7, 1 << 20, 1 << 20),
       {busy_cpu, Gpu(0)}, 0},
      // 100 MFLOP (1 ms on the CPU) but 100 MB each way (20 ms of transfers).
      {"transfer-bound stays on the cpu", Cost(1e8, 100'000'000, 100'000'000), {Cpu(), Gpu(0)},
       -1},
      // 1 GFLOP (10 ms CPU) with 200 MB of weights: 20 ms to upload, 0.1 ms when resident.
      {"weights not resident: cpu", Cost(1e9, 1 << 20, 1 << 20, 200'000'000), {Cpu(), Gpu(0)},
       -1},
      {"weights resident: gpu", Cost(1e9, 1 << 20, 1 << 20, 200'000'000), {Cpu(), resident}, 0},
      {"unhealthy gpu never chosen", Cost(1e10, 1 << 20, 1 << 20), {Cpu(), sick}, -1},
      {"unusable gpu never chosen", Cost(1e10, 1 << 20, 1 << 20), {Cpu(), unusable}, -1},
      {"the faster of two gpus", Cost(1e10, 1 << 20, 1 << 20), {Cpu(), Gpu(0, 5000), Gpu(1)}, 1},
      {"no gpu at all", Cost(1e10, 1 << 20, 1 << 20), {Cpu()}, -1},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(Chosen(c.cost, DeviceRequest::Auto(), c.devices), c.expected) << c.name;
  }
}

TEST(Route, ExplicitRequestsOverrideTheModel) {
  const std::vector<DeviceView> devices = {Cpu(), Gpu(0), Gpu(1, 1000)};
  EXPECT_EQ(Chosen(Cost(1e10, 1 << 20, 1 << 20), DeviceRequest::Cpu(), devices), -1);
  EXPECT_EQ(Chosen(Cost(1e3, 64, 64), DeviceRequest::AnyGpu(), devices), 0);  // best gpu
  EXPECT_EQ(Chosen(Cost(1e3, 64, 64), DeviceRequest::Gpu(1), devices), 1);   // slower, named
  DeviceView sick = Gpu(0);
  sick.healthy = false;
  sick.unhealthy_reason = "hipErrorIllegalAddress";
  // `gpu` takes any healthy GPU, even a slower one.
  EXPECT_EQ(Chosen(Cost(1e3, 64, 64), DeviceRequest::AnyGpu(), {Cpu(), sick, Gpu(1, 1000)}), 1);
}

TEST(Route, AbsentDeviceIsFailedPreconditionNamingTheReason) {
  absl::StatusOr<RouteDecision> d =
      Route(Cost(1e9, 1, 1), DeviceRequest::AnyGpu(), {Cpu()}, "built with SPARKLE_GPU=off");
  ASSERT_EQ(d.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(d.status().message(), HasSubstr("no GPU"));
  EXPECT_THAT(d.status().message(), HasSubstr("built with SPARKLE_GPU=off"));

  d = Route(Cost(1e9, 1, 1), DeviceRequest::Gpu(3), {Cpu(), Gpu(0), Gpu(1)}, "");
  ASSERT_EQ(d.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(d.status().message(), HasSubstr("'gpu:3' does not exist"));
  EXPECT_THAT(d.status().message(), HasSubstr("gpu:0, gpu:1"));

  EXPECT_EQ(CheckDeviceAvailable(DeviceRequest::Gpu(0), {Cpu()}, "x").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(CheckDeviceAvailable(DeviceRequest::Cpu(), {Cpu()}, "x").ok());
  EXPECT_TRUE(CheckDeviceAvailable(DeviceRequest::Auto(), {Cpu()}, "x").ok());
}

TEST(Route, UnhealthyOrUnusableExplicitDevice) {
  DeviceView sick = Gpu(0);
  sick.healthy = false;
  sick.unhealthy_reason = "hipErrorIllegalAddress at 12:00";
  absl::StatusOr<RouteDecision> d =
      Route(Cost(1e9, 1, 1), DeviceRequest::Gpu(0), {Cpu(), sick}, "");
  ASSERT_EQ(d.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(d.status().message(), HasSubstr("hipErrorIllegalAddress"));
  EXPECT_EQ(Route(Cost(1e9, 1, 1), DeviceRequest::AnyGpu(), {Cpu(), sick}, "").status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(CheckDeviceAvailable(DeviceRequest::Gpu(0), {Cpu(), sick}, "").code(),
            absl::StatusCode::kUnavailable);

  DeviceView unusable = Gpu(0);
  unusable.usable = false;
  unusable.unusable_reason = "no kernel for groups=3";
  d = Route(Cost(1e9, 1, 1), DeviceRequest::Gpu(0), {Cpu(), unusable}, "");
  ASSERT_EQ(d.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(d.status().message(), HasSubstr("no kernel for groups=3"));
}

TEST(Route, NoCpuEntryIsAnInternalError) {
  EXPECT_EQ(Route(Cost(1, 1, 1), DeviceRequest::Auto(), {Gpu(0)}, "").status().code(),
            absl::StatusCode::kInternal);
}

// A conv class moving 4 bytes in and out per 1000 FLOP.
constexpr double kIn = 4e-3, kOut = 4e-3;

TEST(CrossoverFlops, AgreesWithRoute) {
  const DeviceView cpu = Cpu(), gpu = Gpu(0);
  const double x = CrossoverFlops(cpu, gpu, kIn, kOut, 1e6);
  ASSERT_TRUE(std::isfinite(x));
  ASSERT_GT(x, 0);
  auto cost = [](double f) {
    return Cost(f, static_cast<int64_t>(f * kIn), static_cast<int64_t>(f * kOut), 1'000'000);
  };
  EXPECT_EQ(Chosen(cost(x * 0.98), DeviceRequest::Auto(), {cpu, gpu}), -1);
  EXPECT_EQ(Chosen(cost(x * 1.02), DeviceRequest::Auto(), {cpu, gpu}), 0);
}

TEST(CrossoverFlops, MonotonicInEveryRate) {
  const DeviceView cpu = Cpu();
  double previous = 0;
  for (double launch : {1e-6, 1e-5, 1e-4, 1e-3}) {  // dearer launches: later crossover
    const double x = CrossoverFlops(cpu, Gpu(0, 10000, 10, launch), kIn, kOut, 0);
    EXPECT_GT(x, previous) << launch;
    previous = x;
  }
  previous = std::numeric_limits<double>::infinity();
  for (double gflops : {500.0, 1000.0, 5000.0, 50000.0}) {  // faster GPU: earlier crossover
    const double x = CrossoverFlops(cpu, Gpu(0, gflops), kIn, kOut, 0);
    EXPECT_LT(x, previous) << gflops;
    previous = x;
  }
  previous = 0;
  for (double cpu_gflops : {10.0, 50.0, 100.0, 200.0}) {  // faster CPU: later crossover
    const double x = CrossoverFlops(Cpu(cpu_gflops), Gpu(0), kIn, kOut, 0);
    EXPECT_GT(x, previous) << cpu_gflops;
    previous = x;
  }
  previous = 0;
  for (double weights : {0.0, 1e6, 1e7, 1e8}) {  // more weights to upload: later crossover
    const double x = CrossoverFlops(cpu, Gpu(0), kIn, kOut, weights);
    EXPECT_GT(x, previous) << weights;
    previous = x;
  }
}

TEST(CrossoverFlops, InfiniteWhenTheGpuNeverWins) {
  // 1 byte each way per FLOP: 0.2 ns of transfers per FLOP vs 0.01 ns of CPU compute.
  EXPECT_EQ(CrossoverFlops(Cpu(), Gpu(0), 1.0, 1.0, 0), std::numeric_limits<double>::infinity());
  // A GPU slower than the CPU.
  EXPECT_EQ(CrossoverFlops(Cpu(100), Gpu(0, 50), 0, 0, 0), std::numeric_limits<double>::infinity());
}

}  // namespace
}  // namespace sparkle
