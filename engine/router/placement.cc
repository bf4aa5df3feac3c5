#include "engine/router/placement.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace sparkle {
namespace {

// At most 1 in 65 `auto` batches goes to a device for exploration.
constexpr int64_t kExploreAfter = 64;

struct RateClassKey {
  const Conv2dParams& p;
  bool one_thread;
  template <typename H>
  friend H AbslHashValue(H h, const RateClassKey& key) {
    return H::combine(HashWithoutN(std::move(h), key.p), key.one_thread);
  }
};

}  // namespace

uint64_t RateClass(const Conv2dParams& p, bool one_thread) {
  return absl::HashOf(RateClassKey{p, one_thread});
}

absl::StatusOr<std::unique_ptr<Placement>> Placement::Create(Options options) {
  if (options.cpu == nullptr || options.cpu_threads < 1) {
    return absl::InvalidArgumentError("placement needs the CPU executor and its threads");
  }
  for (const Gpu& g : options.gpus) {
    if (g.device == nullptr || g.executor == nullptr) {
      return absl::InvalidArgumentError("placement: a GPU without device or executor");
    }
  }
  if (options.seeds.size() != 1 + options.gpus.size()) {
    return absl::InvalidArgumentError("placement: one rate seed per device needed");
  }
  SPARKLE_ASSIGN_OR_RETURN(std::unique_ptr<RateEstimator> rates,
                           RateEstimator::Create(options.seeds, options.rates));
  return std::unique_ptr<Placement>(new Placement(std::move(options), std::move(rates)));
}

Placement::Placement(Options options, std::unique_ptr<RateEstimator> rates)
    : options_(std::move(options)),
      rates_(std::move(rates)),
      decisions_(1 + options_.gpus.size(), 0),
      passed_over_(1 + options_.gpus.size(), 0) {}

std::vector<DeviceView> Placement::Views(const Conv2dParams& p, const WeightId& weights,
                                         bool one_thread) const {
  std::vector<DeviceView> views(1 + options_.gpus.size());
  DeviceView& c = views[0];
  const double share = one_thread ? options_.cpu_threads : 1.0;
  c.compute_gflops =
      rates_->ClassGflops(0, RateClass(p, one_thread)).value_or(rates_->DeviceGflops(0)) / share;
  c.queue_ahead_s = options_.cpu->counters().queued_seconds;
  for (size_t i = 0; i < options_.gpus.size(); ++i) {
    const GpuDevice& d = *options_.gpus[i].device;
    DeviceView& g = views[1 + i];
    g.gpu = static_cast<int>(i);
    g.healthy = d.healthy();
    if (!g.healthy) g.unhealthy_reason = d.unhealthy_reason();
    if (absl::Status s = d.Supports(p); !s.ok()) {
      g.usable = false;
      g.unusable_reason = std::string(s.message());
    }
    g.weights_resident = !weights.empty() && d.WeightsResident(weights);
    g.queue_ahead_s = options_.gpus[i].executor->counters().queued_seconds;
    const int slot = 1 + static_cast<int>(i);
    g.compute_gflops =
        rates_->ClassGflops(slot, RateClass(p, false)).value_or(rates_->DeviceGflops(slot));
    g.h2d_gbps = g.d2h_gbps = rates_->TransferGbps(slot);
    g.launch_overhead_s = rates_->LaunchOverheadSeconds(slot);
  }
  return views;
}

absl::StatusOr<Placement::Decision> Placement::Place(const Batch& batch) {
  const DeviceRequest request = batch.jobs.front()->device;
  if (options_.gpus.empty() && !request.wants_gpu()) {
    absl::MutexLock lock(&mu_);
    decisions_[0]++;
    return Decision{};
  }
  const Conv2dParams& p = batch.params;
  BatchCost cost;
  cost.flops = p.flops();
  cost.input_bytes = p.input_elements() * 4;
  cost.weight_bytes = (p.weight_elements() + p.bias_elements()) * 4;
  cost.output_bytes = p.output_elements() * 4;
  const std::vector<DeviceView> views = Views(p, batch.weight_id, batch.one_thread);
  absl::StatusOr<RouteDecision> decision = Route(cost, request, views, options_.no_gpu_reason);
  if (!decision.ok()) return decision.status();
  absl::MutexLock lock(&mu_);
  if (request.is_auto()) {
    for (size_t i = 0; i < views.size(); ++i) {
      const DeviceView& v = views[i];
      const bool usable = v.gpu < 0 || (v.healthy && v.usable);
      if (i != decision->choice && usable && passed_over_[i] >= kExploreAfter) {
        decision = RouteDecision{i, PredictSeconds(cost, v)};
        break;
      }
    }
    for (size_t i = 0; i < views.size(); ++i) {
      passed_over_[i] = i == decision->choice ? 0 : passed_over_[i] + 1;
    }
  }
  const DeviceView& chosen = views[decision->choice];
  decisions_[1 + chosen.gpu]++;
  last_routed_ = p;
  return Decision{chosen.gpu, decision->predicted_s - chosen.queue_ahead_s};
}

absl::Status Placement::CheckDevice(const DeviceRequest& request) const {
  if (!request.wants_gpu()) return absl::OkStatus();
  std::vector<DeviceView> views(1);
  for (size_t i = 0; i < options_.gpus.size(); ++i) {
    const GpuDevice& d = *options_.gpus[i].device;
    DeviceView& g = views.emplace_back();
    g.gpu = static_cast<int>(i);
    g.healthy = d.healthy();
    if (!g.healthy) g.unhealthy_reason = d.unhealthy_reason();
  }
  return CheckDeviceAvailable(request, views, options_.no_gpu_reason);
}

void Placement::Observe(const ExecutionReport& r) {
  if (!r.ok) return;
  const int slot = 1 + r.device;
  const double flops = r.params.flops();
  // Rates are kept in whole-pool units: a one-thread CPU batch counts `threads` times its rate.
  rates_->ObserveCompute(slot, RateClass(r.params, r.one_thread),
                         r.one_thread ? flops * options_.cpu_threads : flops, r.compute_seconds);
  if (r.transfer_observed) rates_->ObserveTransfer(slot, r.transfer_bytes, r.transfer_seconds);
}

Placement::Snapshot Placement::snapshot() const {
  Snapshot s;
  std::optional<Conv2dParams> last;
  {
    absl::MutexLock lock(&mu_);
    s.decisions = decisions_;
    last = last_routed_;
  }
  for (int slot = 0; slot < rates_->slots(); ++slot) {
    s.gflops.push_back(rates_->DeviceGflops(slot));
    s.transfer_gbps.push_back(rates_->TransferGbps(slot));
    s.launch_overhead_s.push_back(rates_->LaunchOverheadSeconds(slot));
  }
  if (!last.has_value()) return s;
  // Crossover of the last routed class against the best healthy GPU (empty queues; weights
  // counted as not resident, the conservative case).
  const Conv2dParams& p = *last;
  const double flops = p.flops();
  const double in = p.input_elements() * 4.0 / flops, out = p.output_elements() * 4.0 / flops;
  const std::vector<DeviceView> views = Views(p, WeightId{}, /*one_thread=*/false);
  double best = std::numeric_limits<double>::infinity();
  bool any = false;
  for (size_t i = 1; i < views.size(); ++i) {
    const DeviceView& g = views[i];
    if (!g.healthy || !g.usable) continue;
    any = true;
    best = std::min(best, CrossoverFlops(views[0], g, in, out,
                                         (p.weight_elements() + p.bias_elements()) * 4.0));
  }
  if (any) {
    s.crossover_mflop = best * 1e-6;
    s.crossover_shape = p.ShapeClass();
  }
  return s;
}

}  // namespace sparkle
