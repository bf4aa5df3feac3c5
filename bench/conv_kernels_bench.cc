// conv_kernels_bench: every conv implementation of ConvKernels (the hand-written kernels with
// each tile config, and cuDNN when the NVIDIA build has it) timed side by side on the layer
// table, on GPU 0. Each figure is min/median/max over --rounds rounds; in each round every
// implementation runs every layer once (a warm-up launch, then --launches launches between two
// events). The last column is cuDNN's median time over this one's: the H100 bar for the
// hand-written kernels is >= 0.7 on the ResNet layers (docs/gpu.md, "GPU kernels").
//
// In SPARKLE_GPU=emu the kernels run on the CPU emulator and the figures mean nothing.
//   build-kern/bench/conv_kernels_bench --rounds=5 --layers=resnet_3x3_56,resnet_1x1_56
#include <hip/hip_runtime.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "engine/hip/conv_kernels.h"
#include "tests/testing/shape_table.h"

#if defined(__HIP_PLATFORM_HIPEMU__)
#include "hip_emu_control.h"
#endif

ABSL_FLAG(int, rounds, 5, "rounds; each figure is min/median/max over them");
ABSL_FLAG(int, launches, 20, "timed launches per implementation, layer and round");
ABSL_FLAG(std::string, layers, "", "comma-separated layer names (default: the whole layer table)");

namespace {

using sparkle::Conv2dParams;
using sparkle::hip::ConvKernels;
using sparkle::hip::DevConvArgs;

#define CHECK_HIP(expr)                                                                   \
  do {                                                                                    \
    const hipError_t e_ = (expr);                                                         \
    if (e_ != hipSuccess) {                                                               \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, hipGetErrorName(e_)); \
      std::exit(1);                                                                       \
    }                                                                                     \
  } while (0)

float* DeviceRandom(int64_t count, uint32_t seed) {
  const std::vector<float> host = sparkle::testing::RandomFloats(count, seed);
  float* d = nullptr;
  CHECK_HIP(hipMalloc(&d, std::max<int64_t>(1, count) * sizeof(float)));
  if (count > 0) {
    CHECK_HIP(hipMemcpy(d, host.data(), count * sizeof(float), hipMemcpyHostToDevice));
  }
  return d;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
#if defined(__HIP_PLATFORM_HIPEMU__)
  hipemu::Config config;
  config.device_count = 1;
  config.memory_bytes = int64_t{8} << 30;
  hipemu::Configure(config);
  std::printf("SPARKLE_GPU=emu: CPU emulator, the figures mean nothing\n");
#endif
  int count = 0;
  if (hipGetDeviceCount(&count) != hipSuccess || count < 1) {
    std::fprintf(stderr, "no GPU\n");
    return 1;
  }
  CHECK_HIP(hipSetDevice(0));
  hipDeviceProp_t prop;
  CHECK_HIP(hipGetDeviceProperties(&prop, 0));
  std::printf("device 0: %s, %d compute units\n", prop.name, prop.multiProcessorCount);
  hipStream_t stream;
  CHECK_HIP(hipStreamCreate(&stream));
  hipEvent_t start, stop;
  CHECK_HIP(hipEventCreate(&start));
  CHECK_HIP(hipEventCreate(&stop));

  std::vector<sparkle::testing::NamedShape> layers;
  const std::string wanted = absl::GetFlag(FLAGS_layers);
  const std::vector<std::string> names = absl::StrSplit(wanted, ',', absl::SkipEmpty());
  for (const auto& layer : sparkle::testing::LayerTable()) {
    if (names.empty() || std::find(names.begin(), names.end(), layer.name) != names.end()) {
      layers.push_back(layer);
    }
  }
  const int rounds = std::max(1, absl::GetFlag(FLAGS_rounds));
  const int launches = std::max(1, absl::GetFlag(FLAGS_launches));

  ConvKernels kernels(0, prop.name, "");
  // times[layer][implementation]: ms per launch, one per round.
  std::vector<std::map<std::string, std::vector<double>>> times(layers.size());
  std::vector<std::string> tuned(layers.size());
  for (int round = 0; round < rounds; ++round) {
    for (size_t l = 0; l < layers.size(); ++l) {
      const Conv2dParams& p = layers[l].params;
      float* input = DeviceRandom(p.input_elements(), 1);
      float* weight = DeviceRandom(p.weight_elements(), 2);
      float* bias = DeviceRandom(p.k, 3);
      float* output = nullptr;
      CHECK_HIP(hipMalloc(&output, p.output_elements() * sizeof(float)));
      const DevConvArgs args{input, weight, p.has_bias ? bias : nullptr, output};
      if (round == 0) {
        kernels.ForceImplementation("");
        CHECK_HIP(kernels.Launch(p, args, stream));  // queues the shape for tuning
        kernels.WaitForTuning();
        tuned[l] = kernels.Chosen(p);
      }
      for (const std::string& name : kernels.ImplementationNames()) {
        if (!kernels.ImplementationSupports(name, p).empty()) continue;
        kernels.ForceImplementation(name);
        CHECK_HIP(kernels.Launch(p, args, stream));  // warm-up
        CHECK_HIP(hipEventRecord(start, stream));
        for (int i = 0; i < launches; ++i) CHECK_HIP(kernels.Launch(p, args, stream));
        CHECK_HIP(hipEventRecord(stop, stream));
        CHECK_HIP(hipEventSynchronize(stop));
        float ms = 0;
        CHECK_HIP(hipEventElapsedTime(&ms, start, stop));
        times[l][name].push_back(ms / launches);
      }
      CHECK_HIP(hipFree(input));
      CHECK_HIP(hipFree(weight));
      CHECK_HIP(hipFree(bias));
      CHECK_HIP(hipFree(output));
    }
  }

  std::printf("%d rounds x %d launches; ms per launch min/median/max; GFLOP/s at the median; "
              "vs cuDNN = cuDNN median / this median\n",
              rounds, launches);
  for (size_t l = 0; l < layers.size(); ++l) {
    const Conv2dParams& p = layers[l].params;
    std::printf("\n%s  %s  %.1f MFLOP  tuned: %s\n", layers[l].name.c_str(),
                p.ToString().c_str(), p.flops() / 1e6, tuned[l].c_str());
    auto cudnn = times[l].find("cudnn_fp32");
    const double cudnn_ms = cudnn != times[l].end() ? Median(cudnn->second) : 0;
    for (const auto& [name, v] : times[l]) {
      const double med = Median(v);
      std::printf("  %-34s %9.4f %9.4f %9.4f  %8.1f", name.c_str(),
                  *std::min_element(v.begin(), v.end()), med,
                  *std::max_element(v.begin(), v.end()), p.flops() / (med * 1e6));
      if (cudnn_ms > 0) std::printf("  %5.2f", cudnn_ms / med);
      std::printf("\n");
    }
  }
  return 0;
}
