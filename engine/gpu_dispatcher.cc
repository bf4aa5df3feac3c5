#include "engine/gpu_dispatcher.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace sparkle {
namespace {

constexpr char kCancelledBeforeLaunch[] = "cancelled by the client before launch";

bool Explicit(const Conv2dJob& job) { return job.device.wants_gpu(); }

}  // namespace

GpuDispatcher::GpuDispatcher(int index, GpuDevice* device, const GpuOptions& options,
                             GpuFaultPolicy policy, Clock* clock, Hooks hooks)
    : index_(index),
      device_(device),
      options_(options),
      policy_(policy),
      clock_(clock),
      hooks_(std::move(hooks)),
      thread_([this] { Loop(); }) {}

GpuDispatcher::~GpuDispatcher() { Close(); }

void GpuDispatcher::Enqueue(std::vector<std::unique_ptr<Conv2dJob>> jobs, double predicted_s) {
  absl::MutexLock lock(&mu_);
  queued_batches_++;
  queued_seconds_ += predicted_s;
  queue_.push_back(Item{std::move(jobs), predicted_s, false});
}

void GpuDispatcher::Close() {
  {
    absl::MutexLock lock(&mu_);
    closed_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void GpuDispatcher::Loop() {
  for (;;) {
    Item item;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !queue_.empty() || (closed_ && in_device_ == 0);
      };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // closed, and the device has called every done
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    Dispatch(std::move(item));
  }
}

void GpuDispatcher::Retire(double predicted_s) {
  absl::MutexLock lock(&mu_);
  queued_batches_--;
  queued_seconds_ -= predicted_s;
  if (queued_batches_ == 0) queued_seconds_ = 0;  // no drift from rounding
}

void GpuDispatcher::NoteUnhealthy(const std::string& reason) {
  {
    absl::MutexLock lock(&mu_);
    if (logged_unhealthy_) return;
    logged_unhealthy_ = true;
  }
  spdlog::error("gpu:{} latched unhealthy ({}); its queued work {}", index_, reason,
                policy_ == GpuFaultPolicy::kRerouteToCpu ? "goes to the cpu"
                                                         : "fails with UNAVAILABLE");
}

void GpuDispatcher::Fallback(std::vector<std::unique_ptr<Conv2dJob>> jobs,
                             const absl::Status& why, bool device_fault) {
  std::vector<std::unique_ptr<Conv2dJob>> to_cpu;
  for (auto& job : jobs) {
    if (Explicit(*job)) {
      hooks_.complete(std::move(job), why);
    } else if (device_fault && policy_ == GpuFaultPolicy::kFail) {
      hooks_.complete(std::move(job),
                      why.code() == absl::StatusCode::kInternal
                          ? why
                          : absl::UnavailableError(absl::StrCat(
                                "gpu:", index_, " is unhealthy and --gpu_fault_policy=fail: ",
                                why.message())));
    } else {
      to_cpu.push_back(std::move(job));
    }
  }
  if (!to_cpu.empty()) hooks_.run_on_cpu(std::move(to_cpu));
}

void GpuDispatcher::Dispatch(Item item) {
  std::vector<std::unique_ptr<Conv2dJob>> live;
  const absl::Time now = clock_->Now();
  if (item.to_cpu) {
    // Rerouted after a fault (no longer counted as queued here); RunBatch-like checks first.
    for (auto& job : item.jobs) {
      if (job->IsCancelled()) {
        hooks_.complete(std::move(job), absl::CancelledError(kCancelledBeforeLaunch));
      } else {
        live.push_back(std::move(job));
      }
    }
    if (!live.empty()) hooks_.run_on_cpu(std::move(live));
    return;
  }
  for (auto& job : item.jobs) {
    if (job->IsCancelled()) {
      hooks_.complete(std::move(job), absl::CancelledError(kCancelledBeforeLaunch));
    } else if (job->deadline <= now) {
      hooks_.complete(std::move(job),
                      absl::DeadlineExceededError(absl::StrCat(
                          "deadline expired before launch on gpu:", index_, ", after ",
                          absl::FormatDuration(now - job->timestamps.enqueued), " in the engine")));
    } else {
      live.push_back(std::move(job));
    }
  }
  if (live.empty()) {
    Retire(item.predicted_s);
    return;
  }
  if (!device_->healthy()) {
    const std::string reason = device_->unhealthy_reason();
    NoteUnhealthy(reason);
    Retire(item.predicted_s);
    Fallback(std::move(live),
             absl::UnavailableError(absl::StrCat("gpu:", index_, " is unhealthy: ", reason)),
             /*device_fault=*/true);
    return;
  }

  const Conv2dJob& head = *live.front();
  GpuWork work;
  work.params = head.params;
  work.params.n = 0;
  work.weight = head.weight;
  work.bias = head.params.has_bias ? head.bias : nullptr;
  work.weight_key = head.weight_key;
  work.parts.reserve(live.size());
  for (const auto& job : live) {
    work.parts.push_back(GpuPart{job->input, job->output, job->params.n});
    work.params.n += job->params.n;
  }
  GpuBatchReport report;
  report.device = index_;
  report.params = work.params;
  report.jobs = static_cast<int>(live.size());
  report.h2d_bytes = work.params.input_elements() * 4;
  report.d2h_bytes = work.params.output_elements() * 4;
  const int64_t weight_bytes = (work.params.weight_elements() + work.params.bias_elements()) * 4;
  if (work.weight_key == 0 || !WeightsResident(work.weight_key)) report.h2d_bytes += weight_bytes;
  const uint64_t weight_key = work.weight_key;

  // The jobs travel with the callback; if Submit refuses the work, it is destroyed unrun and
  // they come back through `holder`.
  auto holder = std::make_shared<std::vector<std::unique_ptr<Conv2dJob>>>(std::move(live));
  {
    absl::MutexLock lock(&mu_);
    report.device_idle = in_device_ == 0;
    in_device_++;
  }
  struct Shared {
    GpuBatchReport report;
    bool called = false;  // done has started (guarded by mu_)
  };
  auto shared = std::make_shared<Shared>();
  shared->report = std::move(report);
  const double predicted_s = item.predicted_s;
  absl::Status submitted = device_->Submit(
      std::move(work), [this, holder, shared, predicted_s](const absl::Status& status,
                                                           const GpuTimings& t) mutable {
        GpuBatchReport r;
        {
          absl::MutexLock lock(&mu_);
          shared->called = true;
          r = shared->report;
          r.ok = status.ok();
          r.timings = t;
          counters_.batches_done++;
          if (t.compute_end > t.compute_start) {
            counters_.busy_seconds += absl::ToDoubleSeconds(t.compute_end - t.compute_start);
          }
          if (status.ok()) {
            counters_.jobs_done += r.jobs;
            counters_.gflop_done += r.params.flops() * 1e-9;
          }
        }
        hooks_.finished(r);
        Retire(predicted_s);
        if (status.ok()) {
          for (auto& job : *holder) {
            ExecTimestamps& ts = job->timestamps;
            ts.h2d_end = t.h2d_end;
            ts.compute_start = t.compute_start;
            ts.compute_end = t.compute_end;
            ts.d2h_end = t.d2h_end;
            ts.device = index_;
            ts.batch_jobs = r.jobs;
            ts.batch_n = r.params.n;
            hooks_.complete(std::move(job), status);
          }
        } else {
          const bool fault = status.code() == absl::StatusCode::kInternal || !device_->healthy();
          if (fault) NoteUnhealthy(std::string(status.message()));
          // Reroutes run on the dispatcher thread, never on the device's own thread.
          std::vector<std::unique_ptr<Conv2dJob>> back;
          for (auto& job : *holder) {
            if (Explicit(*job) || (fault && policy_ == GpuFaultPolicy::kFail)) {
              hooks_.complete(std::move(job), status);
            } else {
              back.push_back(std::move(job));
            }
          }
          if (!back.empty()) {
            absl::MutexLock lock(&mu_);
            queue_.push_back(Item{std::move(back), 0, true});
          }
        }
        absl::MutexLock lock(&mu_);
        in_device_--;
      });
  if (submitted.ok()) {
    // After Submit returned, so that back-pressure waiting does not count as transfer time.
    // If done already ran, the report keeps InfinitePast and the transfer is not observed.
    {
      absl::MutexLock lock(&mu_);
      if (!shared->called) shared->report.submitted = clock_->Now();
    }
    if (weight_key != 0) NoteWeights(weight_key, weight_bytes);
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    in_device_--;
  }
  Retire(predicted_s);
  const bool fault = submitted.code() == absl::StatusCode::kUnavailable || !device_->healthy();
  if (fault) NoteUnhealthy(device_->unhealthy_reason());
  Fallback(std::move(*holder), submitted, fault);
}

void GpuDispatcher::NoteWeights(uint64_t key, int64_t bytes) {
  absl::MutexLock lock(&mu_);
  if (weights_.contains(key) || bytes > options_.weight_cache_bytes) return;
  weights_[key] = bytes;
  weight_order_.push_back(key);
  weight_bytes_ += bytes;
  while (weight_bytes_ > options_.weight_cache_bytes) {
    const uint64_t old = weight_order_.front();
    weight_order_.pop_front();
    weight_bytes_ -= weights_[old];
    weights_.erase(old);
  }
}

bool GpuDispatcher::WeightsResident(uint64_t weight_key) const {
  absl::MutexLock lock(&mu_);
  return weights_.contains(weight_key);
}

int64_t GpuDispatcher::QueuedBatches() const {
  absl::MutexLock lock(&mu_);
  return queued_batches_;
}

double GpuDispatcher::QueuedSeconds() const {
  absl::MutexLock lock(&mu_);
  return queued_seconds_;
}

GpuDispatcher::Counters GpuDispatcher::counters() const {
  absl::MutexLock lock(&mu_);
  return counters_;
}

}  // namespace sparkle
