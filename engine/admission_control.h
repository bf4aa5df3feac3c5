// AdmissionControl: what a job may cost before anything is allocated for it, and the in-flight
// byte budget. Admit checks the geometry alone (validity; bytes, GFLOP and scratch against the
// per-job limits) and reserves the job's bytes; the Admission it returns gives them back when
// destroyed. Every refusal is RESOURCE_EXHAUSTED naming the option to raise; a full budget is the
// retryable kind (IsQueueFull), a job that can never fit is not.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "engine/core/conv2d_params.h"

namespace sparkle {

class AdmissionControl;

// A job's share of the in-flight budget, held from before its buffers exist until it completes.
// Move-only; gives the bytes back when destroyed. Must not outlive its AdmissionControl.
class Admission {
 public:
  Admission() = default;
  Admission(Admission&& o) noexcept;
  Admission& operator=(Admission&& o) noexcept;
  ~Admission();
  int64_t bytes() const { return bytes_; }
  const AdmissionControl* owner() const { return owner_; }

 private:
  friend class AdmissionControl;
  AdmissionControl* owner_ = nullptr;
  int64_t bytes_ = 0;
};

// Marks a refusal as "busy, retry later" (a full queue or budget) rather than "never".
void MarkQueueFull(absl::Status* status);
bool IsQueueFull(const absl::Status& status);

class AdmissionControl {
 public:
  struct Options {
    // Limits per job (EngineOptions documents them and their ranges; validated there).
    int64_t max_job_bytes = int64_t{1} << 30;
    double max_job_gflop = 500;
    int64_t max_job_scratch_bytes = int64_t{512} << 20;
    int64_t max_inflight_bytes = int64_t{448} << 20;
    int cpu_threads = 1;  // im2col scratch is per thread
  };
  explicit AdmissionControl(const Options& options) : options_(options) {}

  // The per-job limits that need the geometry only.
  absl::Status CheckCost(const Conv2dParams& p) const;
  // CheckCost, then a reservation of p.total_bytes() (queue-full RESOURCE_EXHAUSTED when the
  // budget has no room). Thread-safe.
  absl::StatusOr<Admission> Admit(const Conv2dParams& p);
  int64_t inflight_bytes() const;

 private:
  friend class Admission;
  void Release(int64_t bytes);

  const Options options_;
  mutable absl::Mutex mu_;
  int64_t inflight_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace sparkle
