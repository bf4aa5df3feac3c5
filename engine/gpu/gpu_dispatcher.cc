#include "engine/gpu/gpu_dispatcher.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/core/data_type.h"
#include "engine/core/job_lifecycle.h"
#include "engine/core/prepacked_weights.h"
#include "engine/registry/registered_weight.h"
#include "spdlog/spdlog.h"

namespace sparkle {
namespace {

bool Explicit(const Conv2dJob& job) { return job.device.wants_gpu(); }

// A registered weight's pinned copy on one GPU, kept in the registration's PrepackedWeights:
// its bytes count in the registry's budget while the registration lives, and the device frees
// it when the registration goes (the last job holding it included).
struct PinnedGpuWeights : PrepackedWeights::Copy {
  PinnedGpuWeights(GpuDevice* d, const WeightId& i) : device(d), id(i) {}
  ~PinnedGpuWeights() override { device->ReleaseWeights(id); }
  GpuDevice* const device;
  const WeightId id;
};

// Whether `head`'s registered weights may stay pinned on `device`: a copy is recorded in (or
// already was) the registration's store, within the registry's budget.
bool PinOnDevice(const Conv2dJob& head, const WeightId& id, GpuDevice* device) {
  if (head.registered_weight == nullptr || id.kind != WeightId::Kind::kRegistered) return false;
  PrepackedWeights& store = head.registered_weight->prepacked();
  const auto match = [device](const PrepackedWeights::Copy& copy) {
    const auto* pinned = dynamic_cast<const PinnedGpuWeights*>(&copy);
    return pinned != nullptr && pinned->device == device;
  };
  if (store.Find(match) != nullptr) return true;
  // FP32 whatever the datatype: the device keeps weights widened, the form its kernels read.
  const int64_t bytes = (head.params.weight_elements() + head.params.bias_elements()) * 4;
  return store.Add(match, std::make_shared<PinnedGpuWeights>(device, id), bytes) != nullptr;
}

}  // namespace

absl::StatusOr<std::unique_ptr<GpuDispatcher>> GpuDispatcher::Create(const Options& options,
                                                                    Hooks hooks) {
  if (options.device == nullptr || options.cpu == nullptr || options.clock == nullptr ||
      !hooks.complete) {
    return absl::InvalidArgumentError(
        "GpuDispatcher needs a device, a CPU executor, a clock and a complete hook");
  }
  return std::unique_ptr<GpuDispatcher>(new GpuDispatcher(options, std::move(hooks)));
}

GpuDispatcher::GpuDispatcher(const Options& options, Hooks hooks)
    : options_(options), hooks_(std::move(hooks)), thread_([this] { Loop(); }) {}

GpuDispatcher::~GpuDispatcher() { Close(); }

void GpuDispatcher::Execute(std::unique_ptr<Batch> batch, double predicted_s) {
  absl::MutexLock lock(&mu_);
  counters_.queued_batches++;
  counters_.queued_seconds += predicted_s;
  queue_.push_back(Item{std::move(batch), predicted_s});
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
        return !queue_.empty() || (closed_ && in_flight_.empty());
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
  counters_.queued_batches--;
  counters_.queued_seconds -= predicted_s;
  if (counters_.queued_batches == 0) counters_.queued_seconds = 0;  // no drift from rounding
}

void GpuDispatcher::NoteUnhealthy(const std::string& reason) {
  {
    absl::MutexLock lock(&mu_);
    if (logged_unhealthy_) return;
    logged_unhealthy_ = true;
  }
  spdlog::error("gpu:{} latched unhealthy ({}); its queued work {}", options_.index, reason,
                options_.policy == GpuFaultPolicy::kRerouteToCpu ? "goes to the cpu"
                                                                 : "fails with UNAVAILABLE");
}

void GpuDispatcher::Fallback(std::unique_ptr<Batch> batch, const absl::Status& why,
                             bool device_fault) {
  std::vector<std::unique_ptr<Conv2dJob>> failed;
  auto to_cpu = std::make_unique<Batch>();
  to_cpu->weight_id = batch->weight_id;
  to_cpu->formed = batch->formed;
  for (auto& job : batch->jobs) {
    if (Explicit(*job) || (device_fault && options_.policy == GpuFaultPolicy::kFail)) {
      failed.push_back(std::move(job));
    } else {
      to_cpu->Add(std::move(job));
    }
  }
  if (!failed.empty()) {
    absl::Status status = why;
    if (device_fault && options_.policy == GpuFaultPolicy::kFail &&
        why.code() != absl::StatusCode::kInternal && !Explicit(*failed.front())) {
      status = absl::UnavailableError(absl::StrCat("gpu:", options_.index,
                                                   " is unhealthy and the gpu fault policy is fail: ",
                                                   why.message()));
    }
    hooks_.complete(std::move(failed), status);
  }
  if (!to_cpu->jobs.empty()) {
    // A CPU batch of jobs routed to a GPU: small ones side by side, like the router's own.
    to_cpu->one_thread = batch->one_thread;
    options_.cpu->ExecuteLater(std::move(to_cpu));
  }
}

void GpuDispatcher::Dispatch(Item item) {
  std::unique_ptr<Batch> live = std::move(item.batch);
  RemoveDeadJobs(live.get(), options_.clock->Now(),
                 absl::StrCat("before launch on gpu:", options_.index),
                 [this](std::unique_ptr<Conv2dJob> job, const absl::Status& s) {
                   std::vector<std::unique_ptr<Conv2dJob>> one;
                   one.push_back(std::move(job));
                   hooks_.complete(std::move(one), s);
                 });
  if (live->jobs.empty()) {
    Retire(item.predicted_s);
    return;
  }
  GpuDevice& device = *options_.device;
  if (!device.healthy()) {
    const std::string reason = device.unhealthy_reason();
    NoteUnhealthy(reason);
    Retire(item.predicted_s);
    Fallback(std::move(live),
             absl::UnavailableError(absl::StrCat("gpu:", options_.index, " is unhealthy: ", reason)),
             /*device_fault=*/true);
    return;
  }

  const Conv2dJob& head = *live->jobs.front();
  GpuWork work;
  work.params = live->params;
  work.weight = head.weight;
  work.bias = head.params.has_bias ? head.bias : nullptr;
  work.weight_id = live->weight_id;
  work.pin_weights = PinOnDevice(head, live->weight_id, &device);
  work.parts.reserve(live->jobs.size());
  for (const auto& job : live->jobs) {
    work.parts.push_back(GpuPart{job->input, job->output, job->params.n, job->residual});
  }
  InFlight entry;
  entry.predicted_s = item.predicted_s;
  // Bytes moved, in the datatypes' sizes (the residual travels with the input).
  const int64_t elem = ElementSize(work.params.dtype);
  entry.h2d_bytes = (work.params.input_elements() + work.params.residual_elements()) * elem;
  entry.d2h_bytes = work.params.output_elements() * ElementSize(work.params.output_dtype);
  if (work.weight_id.empty() || !device.WeightsResident(work.weight_id)) {
    entry.h2d_bytes += (work.params.weight_elements() + work.params.bias_elements()) * elem;
  }
  entry.batch = std::move(live);
  uint64_t id;
  {
    absl::MutexLock lock(&mu_);
    id = next_id_++;
    entry.device_idle = in_flight_.empty();
    in_flight_.emplace(id, std::move(entry));
  }
  GpuDone done = [this, id](const absl::Status& status, const GpuTimings& t) {
    Finished(id, status, t);
  };
  const absl::Status submitted = device.Submit(std::move(work), std::move(done));
  std::unique_ptr<Batch> back;
  {
    absl::MutexLock lock(&mu_);
    auto it = in_flight_.find(id);
    if (submitted.ok()) {
      // After Submit returned, so that back-pressure waiting does not count as transfer time.
      // If done already ran, the entry is gone and the transfer is not observed.
      if (it != in_flight_.end()) it->second.submitted = options_.clock->Now();
      return;
    }
    // Refused: the work and done stayed here, unrun; the jobs are still in the entry.
    back = std::move(it->second.batch);
    in_flight_.erase(it);
  }
  Retire(item.predicted_s);
  const bool fault = submitted.code() == absl::StatusCode::kUnavailable || !device.healthy();
  if (fault) NoteUnhealthy(device.unhealthy_reason());
  Fallback(std::move(back), submitted, fault);
}

void GpuDispatcher::Finished(uint64_t id, const absl::Status& status, const GpuTimings& t) {
  InFlight entry;
  {
    absl::MutexLock lock(&mu_);
    auto it = in_flight_.find(id);
    entry = std::move(it->second);
    in_flight_.erase(it);
    DeviceCounters& c = counters_;
    const Batch& b = *entry.batch;
    c.batches_done++;
    c.batched_jobs += static_cast<int64_t>(b.jobs.size());
    if (t.compute_end > t.compute_start) {
      c.busy_seconds += absl::ToDoubleSeconds(t.compute_end - t.compute_start);
    }
    if (status.ok()) {
      c.jobs_done += static_cast<int64_t>(b.jobs.size());
      c.gflop_done += b.params.flops() * 1e-9;
    }
  }
  Batch& batch = *entry.batch;
  if (hooks_.report) {
    ExecutionReport r;
    r.device = options_.index;
    r.params = batch.params;
    r.ok = status.ok();
    if (t.compute_end > t.compute_start) {
      r.compute_seconds = absl::ToDoubleSeconds(t.compute_end - t.compute_start);
    }
    if (status.ok() && entry.submitted != absl::InfinitePast() && entry.device_idle) {
      double transfer_s = 0;
      if (t.h2d_end > entry.submitted) transfer_s += absl::ToDoubleSeconds(t.h2d_end - entry.submitted);
      if (t.d2h_end > t.compute_end) transfer_s += absl::ToDoubleSeconds(t.d2h_end - t.compute_end);
      r.transfer_observed = true;
      r.transfer_bytes = static_cast<double>(entry.h2d_bytes + entry.d2h_bytes);
      r.transfer_seconds = transfer_s;
    }
    hooks_.report(r);
  }
  Retire(entry.predicted_s);
  if (status.ok()) {
    for (auto& job : batch.jobs) {
      ExecTimestamps& ts = job->timestamps;
      ts.h2d_end = t.h2d_end;
      ts.compute_start = t.compute_start;
      ts.compute_end = t.compute_end;
      ts.d2h_end = t.d2h_end;
      ts.device = options_.index;
      ts.batch_jobs = static_cast<int>(batch.jobs.size());
      ts.batch_n = batch.params.n;
    }
    hooks_.complete(std::move(batch.jobs), status);
    return;
  }
  const bool fault = status.code() == absl::StatusCode::kInternal || !options_.device->healthy();
  if (fault) NoteUnhealthy(std::string(status.message()));
  // Rerouted jobs go to the CPU executor's fallback thread, never run on the device's thread.
  Fallback(std::move(entry.batch), status, fault);
}

DeviceCounters GpuDispatcher::counters() const {
  absl::MutexLock lock(&mu_);
  return counters_;
}

}  // namespace sparkle
