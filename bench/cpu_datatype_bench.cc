// cpu_datatype_bench: CpuBackend in-process, FP32 vs BF16 (input, weights, bias and output BF16)
// on the layer table's layers of >= 100 MFLOP, and the fused epilogue's cost on resnet_3x3_56
// (relu(conv + bias + residual) vs conv + bias alone, FP32). Issue 13's bar: BF16/FP32 >= 1.6
// in GFLOP/s where oneDNN's ISA has bf16 (docs/performance.md).
//
// Per layer the variants run in alternating rounds (A B C A B C ...), each round repeating the
// call on all of the pool's threads for at least --round_seconds; weights have a WeightId, so
// they are reordered once and cached, as in the daemon's steady state. Variants: FP32 as the
// daemon runs it (Winograd allowed: 3x3 stride-1 layers take it), FP32 direct (Winograd off),
// BF16. Prints min/median/max GFLOP/s per variant, the BF16/FP32 ratios of medians, and
// oneDNN's implementation of each.
//
// Usage: cpu_datatype_bench [--rounds=7] [--round_seconds=0.3] [--threads=0] [--layers=a,b]
//        [--epilogue=false]
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/time/clock.h"
#include "bench/spread.h"
#include "engine/cpu/cpu_backend.h"
#include "tests/testing/shape_table.h"
#include "tests/testing/typed_tensor.h"

ABSL_FLAG(int, rounds, 7, "Rounds per variant (alternating), >= 1.");
ABSL_FLAG(double, round_seconds, 0.3, "Least duration of one round, seconds, > 0.");
ABSL_FLAG(int, threads, 0, "CpuBackend threads; 0 = every CPU this process may use.");
ABSL_FLAG(std::vector<std::string>, layers, {},
          "Layer-table names to run (comma-separated); empty = every layer of >= 100 MFLOP.");
ABSL_FLAG(bool, epilogue, true, "Also measure the fused epilogue on resnet_3x3_56.");

namespace sparkle::bench {
namespace {

using testing::TypedTensor;

double CpuSeconds() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// One variant of one layer: its tensors and the figures of its rounds.
struct Variant {
  CpuBackend* backend;
  Conv2dParams params;
  TypedTensor input, weight, bias, residual, output;
  WeightId weight_id;
  std::vector<double> gflops, wall_ms, cpu_ms;

  Variant(CpuBackend* b, const Conv2dParams& p, uint64_t key)
      : backend(b),
        params(p),
        input(TypedTensor::Random(p.dtype, p.input_elements(), 1)),
        weight(TypedTensor::Random(p.dtype, p.weight_elements(), 2)),
        bias(TypedTensor::Random(p.dtype, p.bias_elements(), 3)),
        residual(TypedTensor::Random(p.dtype, p.residual_elements(), 4)),
        output(TypedTensor::Filled(p.output_dtype, p.output_elements(), 0)),
        weight_id(WeightId::Content(0x5eed, key)) {}

  bool RunOnce() {
    const ConvArgs args{.input = input.data(),
                        .weight = weight.data(),
                        .bias = bias.data(),
                        .residual = residual.data(),
                        .output = output.data(),
                        .weight_id = weight_id};
    absl::Status s = backend->Run(params, args, backend->threads());
    if (!s.ok()) std::fprintf(stderr, "%s: %s\n", params.ToString().c_str(), s.ToString().c_str());
    return s.ok();
  }
  // One round: calls until round_seconds have passed.
  bool Round(double round_seconds) {
    int calls = 0;
    const double cpu0 = CpuSeconds();
    const absl::Time t0 = absl::Now();
    double elapsed = 0;
    do {
      if (!RunOnce()) return false;
      ++calls;
      elapsed = absl::ToDoubleSeconds(absl::Now() - t0);
    } while (elapsed < round_seconds);
    const double cpu = CpuSeconds() - cpu0;
    gflops.push_back(params.flops() * calls / elapsed / 1e9);
    wall_ms.push_back(1e3 * elapsed / calls);
    cpu_ms.push_back(1e3 * cpu / calls);
    return true;
  }
};

// Alternating rounds of the variants (a warm-up call each first: primitives built, weights
// cached).
bool Alternate(const std::vector<Variant*>& variants, int rounds, double round_seconds) {
  for (Variant* v : variants) {
    if (!v->RunOnce()) return false;
  }
  for (int r = 0; r < rounds; ++r) {
    for (Variant* v : variants) {
      if (!v->Round(round_seconds)) return false;
    }
  }
  return true;
}

std::string Impl(const Variant& v) {
  auto impl = v.backend->ImplementationName(v.params, v.backend->threads());
  return impl.ok() ? *impl : impl.status().ToString();
}

int Main(int rounds, double round_seconds, int threads, const std::vector<std::string>& layers,
         bool epilogue) {
  auto made = CpuBackend::Create({.threads = threads});
  auto direct = CpuBackend::Create({.threads = threads, .allow_winograd = false});
  if (!made.ok() || !direct.ok()) {
    std::fprintf(stderr, "%s\n", (made.ok() ? direct : made).status().ToString().c_str());
    return 1;
  }
  CpuBackend& backend = **made;
  const bool native = backend.Path(DataType::kBf16) == CpuBackend::DatatypePath::kNative;
  std::printf("oneDNN ISA %s, %d threads, %d rounds of >= %.2f s per variant\n",
              backend.Isa().c_str(), backend.threads(), rounds, round_seconds);
  std::printf("datatypes: %s\n\n", backend.DescribeDatatypes().c_str());
  std::printf("GFLOP/s min/median/max; ratios: BF16 median / FP32 median (daemon's FP32, "
              "FP32 direct)\n");
  std::printf("%-18s %6s  %-20s %-20s %-20s %-11s  %s\n", "layer", "MFLOP", "FP32 (daemon)",
              "FP32 direct", "BF16", "ratios", "implementations (FP32 | direct | BF16)");
  uint64_t key = 1;
  for (const testing::NamedShape& layer : testing::LayerTable()) {
    if (layers.empty() ? layer.params.flops() < 100e6
                       : std::find(layers.begin(), layers.end(), layer.name) == layers.end()) {
      continue;
    }
    Conv2dParams bf16 = layer.params;
    bf16.dtype = bf16.output_dtype = DataType::kBf16;
    Variant a(&backend, layer.params, key++), d(direct->get(), layer.params, key++),
        b(&backend, bf16, key++);
    if (!Alternate({&a, &d, &b}, rounds, round_seconds)) return 1;
    const Spread fa = Summarize(a.gflops), fd = Summarize(d.gflops), fb = Summarize(b.gflops);
    const std::string ratios =
        native ? absl::StrFormat("%.2f %.2f", fb.median / fa.median, fb.median / fd.median)
               : std::string("n/a");
    std::printf("%-18s %6.0f  %-20s %-20s %-20s %-11s  %s | %s | %s\n", layer.name.c_str(),
                layer.params.flops() / 1e6, Fmt(fa).c_str(), Fmt(fd).c_str(), Fmt(fb).c_str(),
                ratios.c_str(), Impl(a).c_str(), Impl(d).c_str(), Impl(b).c_str());
    std::fflush(stdout);
  }
  if (!native) {
    std::printf("\nno ratio: %s has no bf16 instructions, BF16 is converted to FP32 here\n",
                backend.Isa().c_str());
  }

  // The epilogue's cost: resnet_3x3_56 with bias, conv alone vs relu(conv + bias + residual).
  for (const testing::NamedShape& layer : testing::LayerTable()) {
    if (!epilogue || layer.name != "resnet_3x3_56") continue;
    Conv2dParams plain = layer.params;
    plain.has_bias = true;
    Conv2dParams fused = plain;
    fused.has_residual = true;
    fused.activation = Activation::kRelu;
    Variant a(&backend, plain, key++), b(&backend, fused, key++);
    if (!Alternate({&a, &b}, rounds, round_seconds)) return 1;
    std::printf("\nresnet_3x3_56 + bias, FP32, %d threads: per call min/median/max\n",
                backend.threads());
    std::printf("  %-34s wall %s ms  CPU %s ms  %s GFLOP/s  (%s)\n", "conv + bias",
                Fmt(Summarize(a.wall_ms), "%.3f").c_str(), Fmt(Summarize(a.cpu_ms), "%.3f").c_str(),
                Fmt(Summarize(a.gflops)).c_str(), Impl(a).c_str());
    std::printf("  %-34s wall %s ms  CPU %s ms  %s GFLOP/s  (%s)\n",
                "relu(conv + bias + residual)", Fmt(Summarize(b.wall_ms), "%.3f").c_str(),
                Fmt(Summarize(b.cpu_ms), "%.3f").c_str(), Fmt(Summarize(b.gflops)).c_str(),
                Impl(b).c_str());
    std::printf("  fused / alone, median CPU time: %.3f\n",
                Summarize(b.cpu_ms).median / Summarize(a.cpu_ms).median);
  }
  return 0;
}

}  // namespace
}  // namespace sparkle::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int rounds = absl::GetFlag(FLAGS_rounds);
  const double round_seconds = absl::GetFlag(FLAGS_round_seconds);
  if (rounds < 1 || !(round_seconds > 0)) {
    std::fprintf(stderr, "--rounds must be >= 1 and --round_seconds > 0\n");
    return 2;
  }
  return sparkle::bench::Main(rounds, round_seconds, absl::GetFlag(FLAGS_threads),
                              absl::GetFlag(FLAGS_layers), absl::GetFlag(FLAGS_epilogue));
}
