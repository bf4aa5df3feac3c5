#include "bench/router_bench.h"

#include <algorithm>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "bench/spread.h"
#include "absl/time/clock.h"
#include "engine/engine.h"
#include "tests/testing/fake_gpu_device.h"
#include "spdlog/spdlog.h"
#include "tests/testing/shape_table.h"

namespace sparkle::bench {
namespace {

struct Layer {
  const char* name;
  Conv2dParams params;
  int weight_per_mille;  // share of the stream
};

Conv2dParams Conv(int64_t c, int64_t hw, int64_t k, int64_t r) {
  Conv2dParams p;
  p.c = c, p.h = p.w = hw, p.k = k, p.r = p.s = r, p.SetPad(r / 2, r / 2);
  return p;
}

// Small, medium and large layers; by count mostly small, by FLOP mostly large.
std::vector<Layer> Layers() {
  return {{"tiny 1x16x32x32 K16 3x3 (4.7 MFLOP)", Conv(16, 32, 16, 3), 500},
          {"mid 1x64x28x28 K64 3x3 (58 MFLOP)", Conv(64, 28, 64, 3), 300},
          {"big 1x256x14x14 K256 3x3 (231 MFLOP)", Conv(256, 14, 256, 3), 150},
          {"io-bound 1x64x112x112 K64 1x1 (103 MFLOP, 6.4 MB)", Conv(64, 112, 64, 1), 50}};
}

struct Buffers {
  std::vector<float> input, weight, output;
};

// Runs `stream` (layer indices) through a new engine with `policy`; jobs per second, and how
// many batches went to the GPU.
double RunStream(const RouterBenchOptions& o, const std::vector<int>& stream,
                 std::vector<Buffers>& layers_data, const DeviceRequest& policy,
                 double gpu_gflops, int64_t* gpu_batches, int64_t* cpu_batches) {
  EngineOptions options;
  options.cpu.threads = o.threads;
  options.device_policy = policy;
  options.open_gpus = [&](const GpuOptions&) {
    testing::FakeGpuDevice::Options f;
    f.name = "fake-gpu (sleeps for its modelled time)";
    f.compute = false;
    f.sleep = true;
    f.gflops = gpu_gflops;
    f.transfer_gbps = o.gpu_gbps;
    f.launch_overhead_s = o.gpu_launch_s;
    GpuDevices out;
    out.platform = "emu";
    out.devices.push_back(std::make_unique<testing::FakeGpuDevice>(f));
    return out;
  };
  options.gpu_launch_overhead_s = o.gpu_launch_s;
  auto engine = Engine::Create(options);
  if (!engine.ok()) {
    std::fprintf(stderr, "%s\n", engine.status().ToString().c_str());
    std::exit(1);
  }
  const std::vector<Layer> layers = Layers();
  std::vector<std::vector<float>> outputs(o.in_flight);
  absl::Mutex mu;
  size_t next = 0;
  int outstanding = 0;
  int64_t failed = 0;
  std::function<void(int)> submit = [&](int slot) {
    size_t index;
    {
      absl::MutexLock lock(&mu);
      if (next >= stream.size()) {
        outstanding--;
        return;
      }
      index = next++;
    }
    const int l = stream[index];
    const Conv2dParams& p = layers[l].params;
    outputs[slot].resize(std::max<size_t>(outputs[slot].size(), p.output_elements()));
    auto job = std::make_unique<Conv2dJob>();
    job->params = p;
    job->input = layers_data[l].input.data();
    job->weight = layers_data[l].weight.data();
    job->output = outputs[slot].data();
    job->done = [&, slot](const absl::Status& s, const ExecTimestamps&) {
      if (!s.ok()) {
        absl::MutexLock lock(&mu);
        failed++;
      }
      submit(slot);
    };
    if (!(*engine)->Submit(&job).ok()) std::exit(1);
  };
  const absl::Time start = absl::Now();
  {
    absl::MutexLock lock(&mu);
    outstanding = o.in_flight;
  }
  for (int i = 0; i < o.in_flight; ++i) submit(i);
  {
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(+[](int* n) { return *n == 0; }, &outstanding));
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (failed > 0) {
    std::fprintf(stderr, "%lld jobs failed\n", static_cast<long long>(failed));
    std::exit(1);
  }
  const DevicesSnapshot d = (*engine)->Devices();
  *cpu_batches = d.router.decisions_cpu;
  *gpu_batches = d.router.decisions_gpu;
  return static_cast<double>(stream.size()) / seconds;
}

}  // namespace

int RouterBench(const RouterBenchOptions& o) {
  spdlog::set_level(spdlog::level::warn);  // one engine per policy and round: no start-up lines
  const std::vector<Layer> layers = Layers();
  std::vector<Buffers> data(layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    const Conv2dParams& p = layers[i].params;
    data[i].input = testing::RandomFloats(p.input_elements(), 1 + i);
    data[i].weight = testing::RandomFloats(p.weight_elements(), 100 + i);
  }
  std::mt19937 rng(42);
  std::vector<int> stream;
  for (int i = 0; i < o.jobs; ++i) {
    int pick = static_cast<int>(rng() % 1000), l = 0;
    while (pick >= layers[l].weight_per_mille) pick -= layers[l++].weight_per_mille;
    stream.push_back(l);
  }
  const double gpu_gflops = o.gpu_gflops;
  std::printf("router bench: %d jobs (%d in flight, same sequence for each policy), %d cpu "
              "threads; fake GPU %.0f GFLOP/s, %.1f GB/s each way, %.0f us per batch\n",
              o.jobs, o.in_flight, o.threads, gpu_gflops, o.gpu_gbps, o.gpu_launch_s * 1e6);
  for (const Layer& l : layers) std::printf("  %4.1f%%  %s\n", l.weight_per_mille / 10.0, l.name);
  const DeviceRequest policies[] = {DeviceRequest::Cpu(), DeviceRequest::AnyGpu(),
                                    DeviceRequest::Auto()};
  std::vector<double> rate[3], vs_best;
  for (int round = 0; round < o.rounds; ++round) {
    std::printf("round %d:", round);
    for (int i = 0; i < 3; ++i) {
      // Rotate the order so that no policy always runs first.
      const int k = (i + round) % 3;
      int64_t gpu = 0, cpu = 0;
      rate[k].push_back(RunStream(o, stream, data, policies[k], gpu_gflops, &gpu, &cpu));
      std::printf("  %s %.1f jobs/s (batches cpu %lld, gpu %lld)", policies[k].ToString().c_str(),
                  rate[k].back(), static_cast<long long>(cpu), static_cast<long long>(gpu));
      std::fflush(stdout);
    }
    vs_best.push_back(rate[2].back() / std::max(rate[0].back(), rate[1].back()));
    std::printf("  auto/best %.2f\n", vs_best.back());
  }
  std::printf("jobs/s min/median/max: cpu %s, gpu %s, auto %s; auto / best of the two %s\n",
              Fmt(Summarize(rate[0]), "%.1f").c_str(), Fmt(Summarize(rate[1]), "%.1f").c_str(),
              Fmt(Summarize(rate[2]), "%.1f").c_str(), Fmt(Summarize(vs_best), "%.2f").c_str());
  return 0;
}

}  // namespace sparkle::bench
