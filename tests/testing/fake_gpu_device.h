// FakeGpuDevice: a deterministic GpuDevice for engine, router and bench tests, no GPU needed.
//
// One worker thread runs accepted works in submission order; Submit blocks while `slots` works
// are accepted and not finished (back-pressure). Each work is computed with Conv2dRef (or not at
// all with compute = false, for benchmarks that only need the timing) and reports GpuTimings
// from a model, not from the wall clock:
//   h2d = launch_overhead + h2d_bytes / transfer_gbps,  compute = flops / gflops,
//   d2h = output_bytes / transfer_gbps
// (h2d_bytes counts the weights only when they were not resident at Submit) so that the
// router's estimator learns exactly the configured rates. Resident weights follow the
// GpuDevice contract simply: a non-empty weight_id is resident from its first accepted work on
// (an LRU of weight_cache_entries ids; pinned ids stay outside it until ReleaseWeights, which
// here drops them at once). A work larger than slot_bytes is run whole (as if in pieces): only
// one image larger than a slot is RESOURCE_EXHAUSTED. With sleep = true the
// worker also waits that long (a GPU that takes real time, for benchmarks) on a timeline of
// its own, so that sleeps overshooting on a loaded machine do not add up. Faults and delays
// are injectable; everything is thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "engine/hip/gpu_device.h"

namespace sparkle::testing {

class FakeGpuDevice final : public GpuDevice {
 public:
  struct Options {
    std::string name = "fake-gpu";
    int slots = 3;
    double gflops = 1000;          // modelled compute rate
    double transfer_gbps = 10;     // modelled host<->device rate, each direction
    double launch_overhead_s = 20e-6;
    bool compute = true;           // write the real result (Conv2dRef)
    bool sleep = false;            // also take the modelled time, in real time
    int64_t slot_bytes = int64_t{256} << 20;  // input + output bytes of one image, at most
    int weight_cache_entries = 16;            // unpinned resident weight ids kept (LRU)
    // Geometries it refuses (UNIMPLEMENTED); null = supports everything.
    std::function<bool(const Conv2dParams&)> unsupported;
  };

  explicit FakeGpuDevice(Options options);
  ~FakeGpuDevice() override;  // finishes every accepted work

  GpuDeviceInfo Info() const override;
  absl::Status Supports(const Conv2dParams& p) const override;
  absl::Status Submit(GpuWork&& work, GpuDone&& done) override;
  bool WeightsResident(const WeightId& id) const override;
  void ReleaseWeights(const WeightId& id) override;
  void Flush() override;
  bool healthy() const override;
  std::string unhealthy_reason() const override;

  // Fault injection: the work accepted as number `k` (0-based, counted from the device's
  // creation) fails with INTERNAL and latches the device unhealthy; every later accepted
  // work also fails INTERNAL, later Submits get UNAVAILABLE.
  void FailWork(int64_t k);
  // While paused the worker starts no work (accepted works wait; Submit still blocks when all
  // slots are taken). For tests that need work queued on the device.
  void Pause();
  void Resume();

  int64_t works_done() const;   // works finished OK
  int64_t works_failed() const;
  int64_t parts_done() const;   // parts of OK works
  int max_in_flight() const;    // the most works ever accepted and unfinished at once
  int64_t weight_uploads() const;  // accepted works whose weights were not resident

 private:
  struct Pending {
    GpuWork work;
    GpuDone done;
    int64_t number = 0;
    bool upload_weights = true;  // the weights were not resident at Submit
  };
  void Loop();
  void Run(Pending& p);

  const Options options_;
  mutable absl::Mutex mu_;
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int max_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t accepted_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t fail_at_ ABSL_GUARDED_BY(mu_) = -1;
  bool healthy_ ABSL_GUARDED_BY(mu_) = true;
  std::string reason_ ABSL_GUARDED_BY(mu_);
  bool paused_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int64_t works_done_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t works_failed_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t parts_done_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t weight_uploads_ ABSL_GUARDED_BY(mu_) = 0;
  std::list<WeightId> lru_ ABSL_GUARDED_BY(mu_);  // unpinned resident ids, most recent first
  std::vector<WeightId> pinned_ ABSL_GUARDED_BY(mu_);  // few: registered weights
  absl::Time timeline_ = absl::InfinitePast();  // modelled end of the last work (worker only)
  std::thread thread_;
};

}  // namespace sparkle::testing
