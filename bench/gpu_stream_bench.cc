// gpu_stream_bench: does the executor's pipeline keep the host-to-device link busy?
//
// Side by side in one process, for --runs rounds:
//   pinned  plain pinned H2D copies of one batch's input size, back to back (the link's figure)
//   exec    GpuExecutor on a transfer-bound stream: a tiny conv (1×1, K=1) on a big input
//           (--batch_mib per batch, in --parts pageable host buffers like the engine's jobs),
//           --batches works submitted back to back; input bytes / wall time, which includes the
//           copies into pinned staging, the kernels, the D2H and the copies out.
// Reports min/median/max GB/s of each and of exec/pinned (the bar: >= 0.8).
//
// Run by hand on a GPU machine (never a timed test):
//   build/bench/gpu_stream_bench --runs=5
// It also runs in SPARKLE_GPU=emu builds, where the figures are meaningless (it says so).
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "bench/spread.h"
#include "bench/pinned_h2d_probe.h"
#include "engine/hip/gpu_device.h"
#include "engine/hip/gpu_executor.h"

#ifdef SPARKLE_GPU_EMU
constexpr int kDefaultBatchMib = 32, kDefaultBatches = 3, kDefaultRuns = 3;
#else
constexpr int kDefaultBatchMib = 64, kDefaultBatches = 40, kDefaultRuns = 5;
#endif

ABSL_FLAG(int, device, 0, "GPU ordinal");
ABSL_FLAG(int, batch_mib, kDefaultBatchMib, "input MiB per batch (a multiple of 8)");
ABSL_FLAG(int, parts, 4, "host buffers (jobs) per batch; divides batch_mib / 8");
ABSL_FLAG(int, batches, kDefaultBatches, "batches per run");
ABSL_FLAG(int, runs, kDefaultRuns, "runs; figures are min/median/max over them");
ABSL_FLAG(int, slots, 3, "executor slots");
ABSL_FLAG(int, emulated_devices, 1, "SPARKLE_GPU=emu only: emulated devices to configure");

namespace sparkle::bench {
namespace {

// The transfer-bound shape: [n, 32, 256, 256] → 1×1 conv → [n, 1, 256, 256]; 8 MiB of input
// and 256 KiB of output per image.
Conv2dParams TinyConvBigInput(int64_t n) {
  Conv2dParams p;
  p.n = n;
  p.c = 32;
  p.h = p.w = 256;
  p.k = 1;
  p.r = p.s = 1;
  return p;
}

// Runs `batches` works through the executor; input bytes per second.
absl::StatusOr<double> ExecutorBytesPerSecond(GpuDevice& dev, const Conv2dParams& p, int parts,
                                              int batches, int slots,
                                              const std::vector<std::vector<float>>& inputs,
                                              std::vector<std::vector<std::vector<float>>>& outs,
                                              const std::vector<float>& weight) {
  const int64_t part_n = p.n / parts;
  absl::Mutex mu;
  absl::Status first_error;
  const absl::Time start = absl::Now();
  for (int b = 0; b < batches; ++b) {
    GpuWork w;
    w.params = p;
    // Output sets rotate over slots + 1, so no two works in flight share one.
    auto& out = outs[static_cast<size_t>(b % (slots + 1))];
    for (int i = 0; i < parts; ++i) {
      w.parts.push_back(GpuPart{inputs[static_cast<size_t>(i)].data(),
                                out[static_cast<size_t>(i)].data(), part_n});
    }
    w.weight = weight.data();
    w.weight_id = WeightId::Content(0, 1);  // resident after the warm-up
    absl::Status st = dev.Submit(std::move(w), [&](const absl::Status& s, const GpuTimings&) {
      absl::MutexLock lock(&mu);
      if (!s.ok() && first_error.ok()) first_error = s;
    });
    if (!st.ok()) return st;
  }
  dev.Flush();
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  absl::MutexLock lock(&mu);
  if (!first_error.ok()) return first_error;
  return static_cast<double>(p.input_elements()) * sizeof(float) * batches / seconds;
}

int Main() {
  const int device = absl::GetFlag(FLAGS_device);
  const int parts = absl::GetFlag(FLAGS_parts);
  const int batches = absl::GetFlag(FLAGS_batches);
  const int runs = absl::GetFlag(FLAGS_runs);
  const int64_t images = absl::GetFlag(FLAGS_batch_mib) / 8;
  if (images < 1 || parts < 1 || images % parts != 0 || batches < 1 || runs < 1) {
    std::fprintf(stderr, "need batch_mib a multiple of 8, parts dividing batch_mib/8, "
                         "batches >= 1, runs >= 1\n");
    return 2;
  }
  const Conv2dParams p = TinyConvBigInput(images);
  GpuOptions options;
  options.slots = absl::GetFlag(FLAGS_slots);
  options.slot_bytes = (p.input_elements() + p.output_elements()) * 4 + (int64_t{1} << 20);
  options.max_devices = device + 1;
  options.emulated_devices = absl::GetFlag(FLAGS_emulated_devices);
  options.emulated_memory_bytes = int64_t{4} << 30;
  GpuDevices devices = OpenGpuDevices(options);
  std::printf("gpu_stream_bench: platform %s\n", devices.platform.c_str());
  if (devices.platform == "emu") {
    std::printf("NOTE: SPARKLE_GPU=emu: the HIP-on-CPU emulator runs this. The figures measure "
                "host memcpy and threads, not a GPU: they are MEANINGLESS and only show that the "
                "benchmark works.\n");
  }
  if (static_cast<int>(devices.devices.size()) <= device) {
    std::printf("no GPU %d: %s\n", device, devices.no_gpu_reason.c_str());
    return 1;
  }
  GpuDevice& dev = *devices.devices[static_cast<size_t>(device)];
  const GpuDeviceInfo info = dev.Info();
  std::printf("device %d: %s, %lld MiB; shape %s; %lld MiB input per batch in %d parts, %d "
              "batches per run, %d slots\n",
              device, info.name.c_str(), static_cast<long long>(info.memory_bytes >> 20),
              p.ToString().c_str(), static_cast<long long>(p.input_elements() * 4 >> 20), parts,
              batches, options.slots);

  const int64_t part_n = p.n / parts;
  Conv2dParams part = p;
  part.n = part_n;
  std::vector<std::vector<float>> inputs(static_cast<size_t>(parts));
  for (auto& in : inputs) in.assign(static_cast<size_t>(part.input_elements()), 0.5f);
  std::vector<std::vector<std::vector<float>>> outs(static_cast<size_t>(options.slots + 1));
  for (auto& set : outs) {
    set.resize(static_cast<size_t>(parts));
    for (auto& o : set) o.assign(static_cast<size_t>(part.output_elements()), 0.0f);
  }
  std::vector<float> weight(static_cast<size_t>(p.weight_elements()), 0.25f);

  // Warm-up: the first use of the shape tunes the kernels and grows the slots.
  absl::StatusOr<double> warm =
      ExecutorBytesPerSecond(dev, p, parts, options.slots, options.slots, inputs, outs, weight);
  if (!warm.ok()) {
    std::printf("executor failed: %s\n", warm.status().ToString().c_str());
    return 1;
  }
  // Tuning runs on its own thread: let it finish so that it does not share the measured runs.
  if (auto* executor = dynamic_cast<hip::GpuExecutor*>(&dev)) executor->WaitForTuning();
  std::vector<double> pinned, exec, ratio;
  for (int r = 0; r < runs; ++r) {
    absl::StatusOr<double> a = PinnedH2dBytesPerSecond(device, p.input_elements() * 4, batches);
    absl::StatusOr<double> b =
        ExecutorBytesPerSecond(dev, p, parts, batches, options.slots, inputs, outs, weight);
    if (!a.ok() || !b.ok()) {
      std::printf("run %d failed: %s\n", r,
                  (!a.ok() ? a.status() : b.status()).ToString().c_str());
      return 1;
    }
    pinned.push_back(*a / 1e9);
    exec.push_back(*b / 1e9);
    ratio.push_back(*b / *a);
    std::printf("run %d: pinned H2D %.2f GB/s, executor %.2f GB/s, ratio %.3f\n", r, *a / 1e9,
                *b / 1e9, *b / *a);
  }
  std::printf("min / median / max over %d runs:\n", runs);
  std::printf("  pinned H2D alone     %s GB/s\n", Fmt(Summarize(pinned), "%.2f").c_str());
  std::printf("  executor, input      %s GB/s\n", Fmt(Summarize(exec), "%.2f").c_str());
  std::printf("  executor / pinned    %s   (bar: >= 0.8)\n", Fmt(Summarize(ratio), "%.3f").c_str());
  if (devices.platform == "emu") std::printf("(emulator: meaningless figures, see above)\n");
  return 0;
}

}  // namespace
}  // namespace sparkle::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return sparkle::bench::Main();
}
