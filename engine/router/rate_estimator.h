// RateEstimator: the router's measured rates, refined online from completed batches.
//
// Per device (slot 0 = the CPU pool, slot 1 + i = GPU i): a compute rate per shape class and a
// device-wide compute rate (both exponentially weighted moving averages of observed GFLOP/s,
// the device-wide one seeded by a start-up measurement), and for GPUs one host<->device
// transfer rate. Memory is bounded: at most `max_classes` shape classes per device, the least
// recently observed one evicted first. The first observation of a class is not used: that
// batch pays one-time costs (primitive creation, kernel tuning) that later ones do not; the
// class's average then starts from the device-wide one. A shape class is any 64-bit key the
// caller chooses (the engine hashes the geometry without N and the thread mode). Thread-safe.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace sparkle {

class RateEstimator {
 public:
  struct Options {
    // Weight of a new observation in each average. Range (0, 1]; 1 keeps only the latest.
    double alpha = 0.2;
    // Shape classes remembered per device. Range [1, 1 << 20].
    int max_classes = 256;
  };
  // Start-up values of one device: GFLOP/s, GB/s (1e9 bytes/s; 0 for the CPU), seconds.
  struct Seed {
    double compute_gflops = 1;
    double transfer_gbps = 0;
    double launch_overhead_s = 0;
  };

  // `seeds[slot]` for every device slot. INVALID_ARGUMENT naming the field when an option or a
  // seed is out of range (rates in [0, 1e7], overhead in [0, 1] s).
  static absl::StatusOr<std::unique_ptr<RateEstimator>> Create(std::vector<Seed> seeds,
                                                               const Options& options);
  // As Create, for options known to be valid (tests).
  RateEstimator(std::vector<Seed> seeds, const Options& options);

  // One completed batch: `flops` computed in `seconds` (> 0, else ignored) on `slot`. The
  // first batch of a class only registers the class.
  void ObserveCompute(int slot, uint64_t shape_class, double flops, double seconds);
  // `bytes` moved between host and device in `seconds` (> 0, else ignored).
  void ObserveTransfer(int slot, double bytes, double seconds);

  // The class's average, or nullopt when the class was never observed (or was evicted).
  std::optional<double> ClassGflops(int slot, uint64_t shape_class) const;
  // The device-wide average (the seed until something is observed).
  double DeviceGflops(int slot) const;
  double TransferGbps(int slot) const;
  double LaunchOverheadSeconds(int slot) const;
  int64_t Observations(int slot) const;  // compute observations used
  int Classes(int slot) const;
  int slots() const { return static_cast<int>(devices_.size()); }

 private:
  struct ClassRate {
    double gflops = 0;
    int64_t samples = 0;  // observations used (the first one of a class is not)
    std::list<uint64_t>::iterator lru;  // position in Device::order
  };
  struct Device {
    Seed rates;
    int64_t observations = 0;
    absl::flat_hash_map<uint64_t, ClassRate> classes;
    std::list<uint64_t> order;  // most recently observed first
  };

  const Options options_;
  mutable absl::Mutex mu_;
  std::vector<Device> devices_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sparkle
