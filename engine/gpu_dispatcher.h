// GpuDispatcher: the engine's side of one GPU. The router hands it batches (never blocking the
// CPU worker that routed them); its own thread checks each job once more for cancellation and
// deadline, turns the batch into a GpuWork (one part per job) and submits it, blocking there
// under the device's back-pressure. The device's done fills each job's ExecTimestamps and
// completes it.
//
// Faults: once the device latches unhealthy (an INTERNAL done, or healthy() false), the error is
// logged once and every batch of it, the failing one included, goes to the CPU (policy
// kRerouteToCpu; results are recomputed from the untouched inputs) or completes UNAVAILABLE
// (kFail). Jobs that named this GPU (`gpu:N`, or `gpu`) never fall back: the failing batch
// completes INTERNAL, later ones UNAVAILABLE. Work the device refuses without a fault
// (RESOURCE_EXHAUSTED, UNIMPLEMENTED) runs on the CPU for `auto` jobs and fails with that
// status for explicit ones.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "base/clock.h"
#include "engine/core/job.h"
#include "engine/hip/gpu_device.h"

namespace sparkle {

// What happens to work of a GPU that latched unhealthy (EngineOptions::on_gpu_fault).
enum class GpuFaultPolicy {
  kRerouteToCpu,  // run it on the CPU pool (jobs that named the GPU still fail)
  kFail,          // complete it UNAVAILABLE
};

// One finished GpuWork, for the engine's counters and the rate estimator.
struct GpuBatchReport {
  int device = 0;
  Conv2dParams params;          // the batch (n = sum of the parts)
  int jobs = 0;
  bool ok = false;
  // When Submit accepted the work; InfinitePast if done ran before that was recorded.
  absl::Time submitted = absl::InfinitePast();
  GpuTimings timings;
  // Nothing else of ours was on the device at Submit: the transfer times are not inflated by
  // waiting behind other works (only then does the estimator learn the transfer rate).
  bool device_idle = false;
  int64_t h2d_bytes = 0;        // inputs, plus weights and bias when they were not resident
  int64_t d2h_bytes = 0;        // outputs
};

class GpuDispatcher {
 public:
  struct Hooks {
    // Completes one job (calls its done). Any thread.
    std::function<void(std::unique_ptr<Conv2dJob>, const absl::Status&)> complete;
    // Runs jobs of one shape key and weights on the CPU pool and completes them. Called on the
    // dispatcher thread.
    std::function<void(std::vector<std::unique_ptr<Conv2dJob>>)> run_on_cpu;
    // After every submitted work, before its jobs complete. Called on a device thread.
    std::function<void(const GpuBatchReport&)> finished;
  };

  // `device` is not owned and must outlive the dispatcher. Starts the thread.
  GpuDispatcher(int index, GpuDevice* device, const GpuOptions& options, GpuFaultPolicy policy,
                Clock* clock, Hooks hooks);
  // Close(), then joins.
  ~GpuDispatcher();

  // Queues one batch (jobs of one shape key with identical weights) whose predicted run time
  // is `predicted_s`. Never blocks on the device. Not after Close (the engine closes its
  // dispatchers only once its workers, the only callers, have stopped).
  void Enqueue(std::vector<std::unique_ptr<Conv2dJob>> jobs, double predicted_s);

  // Finishes every queued batch, waits until the device has called every done, joins the
  // thread. Idempotent.
  void Close();

  // True when work with this weight_key was sent recently enough that the device should still
  // hold it: a FIFO over GpuOptions::weight_cache_bytes that approximates the device's LRU.
  bool WeightsResident(uint64_t weight_key) const;
  int64_t QueuedBatches() const;
  double QueuedSeconds() const;  // predicted seconds of the batches routed here, not finished
  struct Counters {
    int64_t jobs_done = 0;      // completed OK on this device
    int64_t batches_done = 0;   // works the device finished (OK or not)
    double gflop_done = 0;
    double busy_seconds = 0;    // sum of compute_end − compute_start
  };
  Counters counters() const;
  int index() const { return index_; }
  GpuDevice* device() const { return device_; }

 private:
  struct Item {
    std::vector<std::unique_ptr<Conv2dJob>> jobs;
    double predicted_s = 0;
    bool to_cpu = false;  // rerouted after a fault: run on the CPU, not the device
  };

  void Loop();
  // Handles one item on the dispatcher thread.
  void Dispatch(Item item);
  // Jobs of a batch the device did not (or could not) run: CPU or failure, per job and policy.
  void Fallback(std::vector<std::unique_ptr<Conv2dJob>> jobs, const absl::Status& why,
                bool device_fault);
  void NoteUnhealthy(const std::string& reason);
  void NoteWeights(uint64_t key, int64_t bytes);
  void Retire(double predicted_s);  // one batch no longer counts as queued here

  const int index_;
  GpuDevice* const device_;
  const GpuOptions options_;
  const GpuFaultPolicy policy_;
  Clock* const clock_;
  const Hooks hooks_;

  mutable absl::Mutex mu_;
  std::deque<Item> queue_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  int64_t in_device_ ABSL_GUARDED_BY(mu_) = 0;  // works submitted, done not yet returned
  int64_t queued_batches_ ABSL_GUARDED_BY(mu_) = 0;
  double queued_seconds_ ABSL_GUARDED_BY(mu_) = 0;
  bool logged_unhealthy_ ABSL_GUARDED_BY(mu_) = false;
  Counters counters_ ABSL_GUARDED_BY(mu_);
  // Resident-weights mirror: key → bytes, most recent at the back of `weight_order_`.
  absl::flat_hash_map<uint64_t, int64_t> weights_ ABSL_GUARDED_BY(mu_);
  std::deque<uint64_t> weight_order_ ABSL_GUARDED_BY(mu_);
  int64_t weight_bytes_ ABSL_GUARDED_BY(mu_) = 0;

  std::thread thread_;
};

}  // namespace sparkle
