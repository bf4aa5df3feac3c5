#include "engine/calibration/rate_probe.h"

#include <memory>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "spdlog/spdlog.h"

namespace sparkle {
namespace {

Conv2dParams Conv(int64_t c, int64_t hw, int64_t k, int64_t r) {
  Conv2dParams p;
  p.c = c;
  p.h = p.w = hw;
  p.k = k;
  p.r = p.s = r;
  p.SetPad(r / 2, r / 2);
  return p;
}

struct Probe {
  absl::Notification done;
  absl::Status status;
  GpuTimings timings;
  absl::Time submitted;
};

// Runs p through the device once; the timings, or an error (also on timeout: the buffers are
// then kept alive by the callback until the device is done with them).
absl::StatusOr<std::shared_ptr<Probe>> RunOnce(GpuDevice& device, const Conv2dParams& p,
                                               absl::Duration budget) {
  struct Buffers {
    std::vector<float> input, weight, output;
  };
  auto buffers = std::make_shared<Buffers>();
  buffers->input.assign(p.input_elements(), 0.5f);
  buffers->weight.assign(p.weight_elements(), 0.25f);
  buffers->output.assign(p.output_elements(), 0.0f);
  GpuWork work;
  work.params = p;
  work.weight = buffers->weight.data();
  work.parts.push_back(GpuPart{buffers->input.data(), buffers->output.data(), p.n});
  auto probe = std::make_shared<Probe>();
  absl::Status s = device.Submit(std::move(work), [probe, buffers](const absl::Status& status,
                                                                   const GpuTimings& t) {
    probe->status = status;
    probe->timings = t;
    probe->done.Notify();
  });
  probe->submitted = absl::Now();
  if (!s.ok()) return s;
  if (!probe->done.WaitForNotificationWithTimeout(budget)) {
    return absl::DeadlineExceededError("probe did not finish in time");
  }
  if (!probe->status.ok()) return probe->status;
  return probe;
}

double Seconds(absl::Time from, absl::Time to) {
  return to > from ? absl::ToDoubleSeconds(to - from) : 0.0;
}

}  // namespace

absl::StatusOr<double> MeasureCpuGflops(CpuBackend& cpu) {
  const Conv2dParams p = Conv(64, 28, 64, 3);
  std::vector<float> input(p.input_elements(), 0.5f), weight(p.weight_elements(), 0.25f),
      output(p.output_elements());
  ConvArgs args;
  args.input = input.data();
  args.weight = weight.data();
  args.output = output.data();
  // The first run creates the primitive; the fastest of the next ones is kept (other
  // processes on a shared machine only ever make a run slower).
  double seconds = 0;
  for (int i = 0; i < 6; ++i) {
    const absl::Time t0 = absl::Now();
    absl::Status s = cpu.Run(p, args, cpu.threads());
    if (!s.ok()) return s;
    const double t = absl::ToDoubleSeconds(absl::Now() - t0);
    if (i == 1 || (i > 1 && t < seconds)) seconds = t;
  }
  if (!(seconds > 0)) return absl::InternalError("cpu probe took no time");
  return p.flops() / seconds * 1e-9;
}

RateEstimator::Seed MeasureGpu(GpuDevice& device, const RateEstimator::Seed& defaults,
                               absl::Duration budget) {
  RateEstimator::Seed seed = defaults;
  const Conv2dParams transfer = Conv(8, 256, 8, 1);  // 2 MiB in, 2 MiB out
  const Conv2dParams small = Conv(16, 16, 16, 3);
  const Conv2dParams big = Conv(64, 32, 64, 3);
  // Sequential, stopping at the first failure (a slow device, e.g. the emulator, then costs
  // one budget at start, not four).
  absl::Status failed;
  absl::StatusOr<std::shared_ptr<Probe>> t = RunOnce(device, transfer, budget);
  if (t.ok()) {
    const GpuTimings& g = (*t)->timings;
    const double s = Seconds((*t)->submitted, g.h2d_end) + Seconds(g.compute_end, g.d2h_end);
    const double bytes = (transfer.input_elements() + transfer.output_elements()) * 4.0;
    if (s > 0) seed.transfer_gbps = bytes / s * 1e-9;
    absl::StatusOr<std::shared_ptr<Probe>> warm = RunOnce(device, big, budget);
    absl::StatusOr<std::shared_ptr<Probe>> a =
        warm.ok() ? RunOnce(device, small, budget) : warm.status();
    absl::StatusOr<std::shared_ptr<Probe>> b = a.ok() ? RunOnce(device, big, budget) : a.status();
    if (b.ok()) {
      const double ta = Seconds((*a)->timings.compute_start, (*a)->timings.compute_end);
      const double tb = Seconds((*b)->timings.compute_start, (*b)->timings.compute_end);
      if (tb > ta) {
        seed.compute_gflops = (big.flops() - small.flops()) / (tb - ta) * 1e-9;
      } else if (tb > 0) {
        seed.compute_gflops = big.flops() / tb * 1e-9;
      }
    } else {
      failed = b.status();
    }
  } else {
    failed = t.status();
  }
  if (!failed.ok()) {
    spdlog::warn("gpu rate probe failed ({}); the router starts from default rates",
                 failed.ToString());
  }
  return seed;
}

}  // namespace sparkle
