#include "engine/router/rate_estimator.h"

#include "absl/strings/str_cat.h"

#include <utility>

namespace sparkle {
namespace {

double Blend(double old_value, double sample, double alpha) {
  return old_value + alpha * (sample - old_value);
}

}  // namespace

absl::StatusOr<std::unique_ptr<RateEstimator>> RateEstimator::Create(std::vector<Seed> seeds,
                                                                      const Options& options) {
  if (!(options.alpha > 0 && options.alpha <= 1) || options.max_classes < 1 ||
      options.max_classes > (1 << 20)) {
    return absl::InvalidArgumentError(
        "rates.alpha must be in (0, 1], rates.max_classes in [1, 2^20]");
  }
  for (const Seed& s : seeds) {
    if (!(s.compute_gflops > 0 && s.compute_gflops <= 1e7) ||
        !(s.transfer_gbps >= 0 && s.transfer_gbps <= 1e7) ||
        !(s.launch_overhead_s >= 0 && s.launch_overhead_s <= 1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "rate seed out of range: ", s.compute_gflops, " GFLOP/s (0, 1e7], ", s.transfer_gbps,
          " GB/s [0, 1e7], ", s.launch_overhead_s, " s launch overhead [0, 1]"));
    }
  }
  return std::make_unique<RateEstimator>(std::move(seeds), options);
}

RateEstimator::RateEstimator(std::vector<Seed> seeds, const Options& options)
    : options_(options), devices_(seeds.size()) {
  for (size_t i = 0; i < seeds.size(); ++i) devices_[i].rates = seeds[i];
}

void RateEstimator::ObserveCompute(int slot, uint64_t shape_class, double flops,
                                   double seconds) {
  if (!(seconds > 0) || !(flops > 0)) return;
  const double gflops = flops / seconds * 1e-9;
  absl::MutexLock lock(&mu_);
  Device& d = devices_[slot];
  auto it = d.classes.find(shape_class);
  if (it == d.classes.end()) {
    // The first batch of a class pays one-time costs (oneDNN primitive creation, GPU kernel
    // tuning): it only registers the class.
    if (static_cast<int>(d.classes.size()) >= options_.max_classes) {
      d.classes.erase(d.order.back());
      d.order.pop_back();
    }
    d.order.push_front(shape_class);
    d.classes.emplace(shape_class, ClassRate{0, 0, d.order.begin()});
    return;
  }
  ClassRate& c = it->second;
  d.order.splice(d.order.begin(), d.order, c.lru);
  // A class starts from the device-wide rate, so that one unlucky sample (a preempted run)
  // moves it by alpha, not all the way.
  c.gflops = Blend(c.samples == 0 ? d.rates.compute_gflops : c.gflops, gflops, options_.alpha);
  c.samples++;
  d.rates.compute_gflops = Blend(d.rates.compute_gflops, gflops, options_.alpha);
  d.observations++;
}

void RateEstimator::ObserveTransfer(int slot, double bytes, double seconds) {
  if (!(seconds > 0) || !(bytes > 0)) return;
  absl::MutexLock lock(&mu_);
  Seed& r = devices_[slot].rates;
  r.transfer_gbps = Blend(r.transfer_gbps, bytes / seconds * 1e-9, options_.alpha);
}

std::optional<double> RateEstimator::ClassGflops(int slot, uint64_t shape_class) const {
  absl::MutexLock lock(&mu_);
  const Device& d = devices_[slot];
  auto it = d.classes.find(shape_class);
  if (it == d.classes.end() || it->second.samples == 0) return std::nullopt;
  return it->second.gflops;
}

double RateEstimator::DeviceGflops(int slot) const {
  absl::MutexLock lock(&mu_);
  return devices_[slot].rates.compute_gflops;
}

double RateEstimator::TransferGbps(int slot) const {
  absl::MutexLock lock(&mu_);
  return devices_[slot].rates.transfer_gbps;
}

double RateEstimator::LaunchOverheadSeconds(int slot) const {
  absl::MutexLock lock(&mu_);
  return devices_[slot].rates.launch_overhead_s;
}

int64_t RateEstimator::Observations(int slot) const {
  absl::MutexLock lock(&mu_);
  return devices_[slot].observations;
}

int RateEstimator::Classes(int slot) const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(devices_[slot].classes.size());
}

}  // namespace sparkle
