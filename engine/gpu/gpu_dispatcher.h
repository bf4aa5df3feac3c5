// GpuDispatcher: one GPU as a DeviceExecutor. Execute queues a batch and returns (never blocking
// the worker that routed it); the dispatcher's thread checks each job once more
// (StillWorthRunning), turns the batch into a GpuWork (one part per job) and submits it,
// blocking there under the device's back-pressure. The device's done (on its drain thread)
// updates the counters and gives the jobs back through Hooks::complete; the engine completes
// them elsewhere.
//
// Faults: once the device latches unhealthy (an INTERNAL done, or healthy() false), the error is
// logged once and every batch of it, the failing one included, goes to the CPU (policy
// kRerouteToCpu; results are recomputed from the untouched inputs, on the CPU executor's own
// fallback thread) or completes UNAVAILABLE (kFail). Jobs that named this GPU (`gpu:N`, or `gpu`)
// never fall back: the failing batch completes INTERNAL, later ones UNAVAILABLE. Work the device
// refuses without a fault (RESOURCE_EXHAUSTED, UNIMPLEMENTED) runs on the CPU for `auto` jobs and
// fails with that status for explicit ones.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "base/clock.h"
#include "engine/cpu/cpu_executor.h"
#include "engine/device_executor.h"
#include "engine/hip/gpu_device.h"

namespace sparkle {

// What happens to work of a GPU that latched unhealthy (EngineOptions::on_gpu_fault).
enum class GpuFaultPolicy {
  kRerouteToCpu,  // run it on the CPU pool (jobs that named the GPU still fail)
  kFail,          // complete it UNAVAILABLE
};

class GpuDispatcher final : public DeviceExecutor {
 public:
  struct Options {
    int index = 0;                  // the GPU ordinal, for messages and reports
    GpuDevice* device = nullptr;    // not owned, outlives the dispatcher; required
    CpuExecutor* cpu = nullptr;     // fallback (ExecuteLater); not owned; required
    GpuFaultPolicy policy = GpuFaultPolicy::kRerouteToCpu;
    Clock* clock = Clock::Real();   // not owned; required
  };

  // Starts the thread. INVALID_ARGUMENT when a required pointer or hook is missing.
  static absl::StatusOr<std::unique_ptr<GpuDispatcher>> Create(const Options& options,
                                                              Hooks hooks);
  ~GpuDispatcher() override;  // Close()

  void Execute(std::unique_ptr<Batch> batch, double predicted_s) override;
  // Finishes every queued batch, waits until the device has called every done, joins.
  void Close() override;
  DeviceCounters counters() const override;

  GpuDevice* device() const { return options_.device; }

 private:
  struct Item {
    std::unique_ptr<Batch> batch;
    double predicted_s = 0;
  };
  // A work the device accepted and has not finished.
  struct InFlight {
    std::unique_ptr<Batch> batch;
    double predicted_s = 0;
    absl::Time submitted = absl::InfinitePast();  // set once Submit returned
    bool device_idle = false;  // nothing else of ours was on the device at Submit
    int64_t h2d_bytes = 0;     // inputs, plus weights and bias when they were not resident
    int64_t d2h_bytes = 0;     // outputs
  };

  GpuDispatcher(const Options& options, Hooks hooks);
  void Loop();
  void Dispatch(Item item);
  void Finished(uint64_t id, const absl::Status& status, const GpuTimings& t);
  // Jobs the device did not (or could not) run: CPU or failure, per job and policy.
  void Fallback(std::unique_ptr<Batch> batch, const absl::Status& why, bool device_fault);
  void NoteUnhealthy(const std::string& reason);
  void Retire(double predicted_s);  // one batch no longer counts as queued here

  const Options options_;
  const Hooks hooks_;

  mutable absl::Mutex mu_;
  std::deque<Item> queue_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<uint64_t, InFlight> in_flight_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool logged_unhealthy_ ABSL_GUARDED_BY(mu_) = false;
  DeviceCounters counters_ ABSL_GUARDED_BY(mu_);

  std::thread thread_;
};

}  // namespace sparkle
