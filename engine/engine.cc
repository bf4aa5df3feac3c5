#include "engine/engine.h"

#include <utility>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "base/status_macros.h"
#include "engine/calibration/calibration.h"
#include "engine/cpu/cpu_executor.h"
#include "engine/registry/registered_weight.h"
#include "engine/router/placement.h"
#include "spdlog/spdlog.h"

namespace sparkle {
namespace {

// Conv2dJob::weight_key of jobs whose weights came with the request and are small enough to
// identify: they share a queue per geometry, and a worker gives them their confirmed identity
// (splitting the batch where weights differ). Registered weights have even keys (registry).
constexpr uint64_t kUnconfirmedWeightKey = 1;

// Each option of the engine's own is checked here, once; the parts check theirs in Create.
absl::Status ValidateOptions(const EngineOptions& o) {
  if (o.clock == nullptr) return absl::InvalidArgumentError("clock must not be null");
  if (o.max_job_bytes < 1 || o.max_job_bytes > (int64_t{1} << 50)) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_job_bytes must be in [1, 2^50]; was ", o.max_job_bytes));
  }
  if (!(o.max_job_gflop > 0 && o.max_job_gflop <= 1e9)) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_job_gflop must be in (0, 1e9]; was ", o.max_job_gflop));
  }
  for (const auto& [name, value] :
       {std::pair<const char*, int64_t>{"max_job_scratch_bytes", o.max_job_scratch_bytes},
        {"max_inflight_bytes", o.max_inflight_bytes}}) {
    if (value < (int64_t{1} << 20) || value > (int64_t{1} << 50)) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " must be in [1 MiB, 2^50]; was ", value));
    }
  }
  if (o.max_hashed_weight_bytes < 0 || o.max_hashed_weight_bytes > (int64_t{1} << 40)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_hashed_weight_bytes must be in [0, 2^40]; was ", o.max_hashed_weight_bytes));
  }
  if (!(o.small_job_max_flops >= 0 && o.small_job_max_flops <= 1e15)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "small_job_max_flops must be in [0, 1e15]; was ", o.small_job_max_flops));
  }
  for (const auto& [name, value] : {std::pair<const char*, double>{"cpu_gflops", o.cpu_gflops},
                                    {"gpu_gflops", o.gpu_gflops},
                                    {"gpu_transfer_gbps", o.gpu_transfer_gbps}}) {
    if (!(value >= 0 && value <= 1e7)) {
      return absl::InvalidArgumentError(absl::StrCat(name, " must be in [0, 1e7]; was ", value));
    }
  }
  if (!(o.gpu_launch_overhead_s >= 0 && o.gpu_launch_overhead_s <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("gpu_launch_overhead_s must be in [0, 1]; was ",
                                                   o.gpu_launch_overhead_s));
  }
  return absl::OkStatus();
}

const char* FaultPolicyName(GpuFaultPolicy p) {
  return p == GpuFaultPolicy::kFail ? "fail" : "cpu";
}

void AddCounters(const DeviceCounters& c, EngineStats* stats) {
  stats->batches += c.batches_done;
  stats->batched_jobs += c.batched_jobs;
  stats->gflop += c.gflop_done;
  stats->busy_seconds += c.busy_seconds;
}

}  // namespace

struct Engine::Impl {
  EngineOptions options;
  // The devices outlive everything that may refer to them: the executors, and the registry,
  // whose registrations release their pinned GPU copies when they go.
  GpuDevices gpus;
  std::unique_ptr<WeightRegistry> registry;
  std::unique_ptr<CpuBackend> cpu;
  std::unique_ptr<AdmissionControl> admission;
  std::unique_ptr<WeightCache> weight_cache;
  std::unique_ptr<CompletionExecutor> completions;
  std::unique_ptr<ShapeBatcher> batcher;
  std::unique_ptr<CpuExecutor> cpu_executor;
  std::vector<std::unique_ptr<GpuDispatcher>> gpu_executors;  // by ordinal
  std::unique_ptr<Placement> placement;
  std::vector<std::thread> workers;

  mutable absl::Mutex mu;
  // Accepted jobs whose done has not yet returned. Drain waits for it to reach 0.
  int64_t in_flight ABSL_GUARDED_BY(mu) = 0;
  bool draining ABSL_GUARDED_BY(mu) = false;  // monotonic: false → true once
  EngineStats stats ABSL_GUARDED_BY(mu);       // the job counters; batch figures are devices'

  void WorkerLoop() {
    while (std::unique_ptr<Batch> batch = batcher->NextBatch()) {
      for (std::unique_ptr<Batch>& part : Identify(std::move(batch))) Dispatch(std::move(part));
    }
  }

  // The confirmed identity of one job's weights.
  WeightId IdentityOf(const Conv2dJob& job) const {
    if (job.registered_weight != nullptr) return WeightId::Registered(job.weight_key);
    if (job.weight_key != kUnconfirmedWeightKey) return {};
    const int64_t element = ElementSize(job.params.dtype);
    return weight_cache->Identify(
        job.params.dtype,
        absl::MakeConstSpan(static_cast<const char*>(job.weight),
                            job.params.weight_elements() * element),
        job.params.has_bias
            ? absl::MakeConstSpan(static_cast<const char*>(job.bias), job.params.k * element)
            : absl::Span<const char>());
  }

  // Gives the batch's jobs their weight identity and splits it where weights differ: jobs of one
  // part share confirmed weights; a job without identity is a part of its own.
  std::vector<std::unique_ptr<Batch>> Identify(std::unique_ptr<Batch> batch) {
    std::vector<std::unique_ptr<Batch>> parts;
    const bool one_thread = batch->jobs.front()->params.flops() < options.small_job_max_flops;
    for (std::unique_ptr<Conv2dJob>& job : batch->jobs) {
      const WeightId id = IdentityOf(*job);
      Batch* part = nullptr;
      if (!id.empty()) {
        for (auto& p : parts) {
          if (p->weight_id == id) part = p.get();
        }
      }
      if (part == nullptr) {
        part = parts.emplace_back(std::make_unique<Batch>()).get();
        part->weight_id = id;
        part->one_thread = one_thread;
        part->formed = batch->formed;
      }
      part->Add(std::move(job));
    }
    return parts;
  }

  void Dispatch(std::unique_ptr<Batch> batch) {
    absl::StatusOr<Placement::Decision> where = placement->Place(*batch);
    if (!where.ok()) {
      Complete(std::move(batch->jobs), where.status());
    } else if (where->gpu < 0) {
      cpu_executor->Execute(std::move(batch), where->predicted_s);
    } else {
      gpu_executors[where->gpu]->Execute(std::move(batch), where->predicted_s);
    }
  }

  // Completes jobs on the completion executor (each job's done exactly once: the wrapper
  // installed by Submit counts and retires it).
  void Complete(std::vector<std::unique_ptr<Conv2dJob>> jobs, const absl::Status& status) {
    completions->Post([this, jobs = std::move(jobs), status]() mutable {
      const absl::Time now = options.clock->Now();
      for (auto& job : jobs) {
        job->timestamps.done = now;
        // Registered weights stop counting as in use before the submitter hears of the result.
        job->registered_weight.reset();
        std::move(job->done)(status, job->timestamps);
      }
    });
  }

  DeviceExecutor::Hooks MakeHooks() {
    DeviceExecutor::Hooks hooks;
    hooks.complete = [this](std::vector<std::unique_ptr<Conv2dJob>> jobs, const absl::Status& s) {
      Complete(std::move(jobs), s);
    };
    hooks.report = [this](const ExecutionReport& r) { placement->Observe(r); };
    return hooks;
  }

  // Opens the GPUs (or learns why there are none), measures the start-up rates, starts the
  // executors and the placement. FAILED_PRECONDITION when the device policy names an absent GPU.
  absl::Status OpenDevices() {
    const absl::Time t0 = absl::Now();
    gpus = options.open_gpus ? options.open_gpus(options.gpu) : OpenGpuDevices(options.gpu);
    if (gpus.devices.empty()) {
      if (gpus.no_gpu_reason.empty()) gpus.no_gpu_reason = "no GPU found";
      spdlog::info("engine: no GPU ({}; checked in {}): every batch runs on the cpu",
                   gpus.no_gpu_reason, absl::FormatDuration(absl::Now() - t0));
    }
    CpuExecutor::Options cpu_options;
    cpu_options.backend = cpu.get();
    cpu_options.clock = options.clock;
    cpu_options.fallback_thread = !gpus.devices.empty();
    SPARKLE_ASSIGN_OR_RETURN(cpu_executor, CpuExecutor::Create(cpu_options, MakeHooks()));
    std::vector<GpuDevice*> devices;
    for (size_t i = 0; i < gpus.devices.size(); ++i) {
      devices.push_back(gpus.devices[i].get());
      GpuDispatcher::Options g;
      g.index = static_cast<int>(i);
      g.device = gpus.devices[i].get();
      g.cpu = cpu_executor.get();
      g.policy = options.on_gpu_fault;
      g.clock = options.clock;
      SPARKLE_ASSIGN_OR_RETURN(gpu_executors.emplace_back(), GpuDispatcher::Create(g, MakeHooks()));
    }
    CalibrationOptions calibration;
    calibration.cpu_gflops = options.cpu_gflops;
    calibration.gpu_gflops = options.gpu_gflops;
    calibration.gpu_transfer_gbps = options.gpu_transfer_gbps;
    calibration.gpu_launch_overhead_s = options.gpu_launch_overhead_s;
    Placement::Options p;
    p.policy = options.device_policy;
    p.cpu_threads = cpu->threads();
    p.cpu = cpu_executor.get();
    for (size_t i = 0; i < gpus.devices.size(); ++i) {
      p.gpus.push_back({gpus.devices[i].get(), gpu_executors[i].get()});
    }
    p.no_gpu_reason = gpus.no_gpu_reason;
    p.seeds = Calibrate(calibration, *cpu, devices);
    p.rates = options.rates;
    SPARKLE_ASSIGN_OR_RETURN(placement, Placement::Create(std::move(p)));
    if (!gpus.devices.empty()) {
      spdlog::info("engine: router policy {}, cpu {:.0f} GFLOP/s, on gpu fault: {}",
                   options.device_policy.ToString(), placement->rates().DeviceGflops(0),
                   FaultPolicyName(options.on_gpu_fault));
    }
    return placement->CheckDevice(options.device_policy);
  }

  // Stops the parts in dependency order: no batch is formed, routed, run or completed after the
  // part it needs has gone.
  void Stop() {
    if (batcher != nullptr) batcher->Close();
    for (std::thread& t : workers) t.join();
    workers.clear();
    // After the workers (the last to route); a GPU's fallback hands work to the CPU executor.
    for (auto& g : gpu_executors) g->Close();
    if (cpu_executor != nullptr) cpu_executor->Close();
    completions.reset();  // runs every completion posted
    batcher.reset();      // completes anything left queued (none after Close + workers)
  }
};

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options) {
  SPARKLE_RETURN_IF_ERROR(ValidateOptions(options));
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  Impl& im = *impl;
  CpuBackend::Options cpu = options.cpu;  // the engine's scratch limit is the backend's
  cpu.max_job_scratch_bytes = options.max_job_scratch_bytes;
  SPARKLE_ASSIGN_OR_RETURN(im.cpu, CpuBackend::Create(cpu));
  im.admission = std::make_unique<AdmissionControl>(AdmissionControl::Options{
      options.max_job_bytes, options.max_job_gflop, options.max_job_scratch_bytes,
      options.max_inflight_bytes, im.cpu->threads()});
  SPARKLE_ASSIGN_OR_RETURN(im.weight_cache, WeightCache::Create(options.weight_cache));
  SPARKLE_ASSIGN_OR_RETURN(im.completions,
                           CompletionExecutor::Create({.threads = options.completion_threads}));
  ShapeBatcher::Options batcher = options.batcher;
  batcher.clock = options.clock;
  SPARKLE_ASSIGN_OR_RETURN(im.batcher, ShapeBatcher::Create(batcher));
  SPARKLE_ASSIGN_OR_RETURN(im.registry, WeightRegistry::Create(options.weights));
  if (absl::Status s = im.OpenDevices(); !s.ok()) {
    im.Stop();
    return s;
  }
  // One worker per CPU thread: that many small batches can run side by side. Workers also
  // route; with GPUs, one more per GPU, so that batches bound for a GPU are still routed while
  // every CPU thread is busy computing (sparkle_bench router).
  const int workers = im.cpu->threads() + static_cast<int>(im.gpu_executors.size());
  for (int i = 0; i < workers; ++i) {
    im.workers.emplace_back([raw = impl.get()] { raw->WorkerLoop(); });
  }
  spdlog::info("engine: {} worker(s), oneDNN isa {} ({}), {} completion thread(s), jobs below "
               "{:.0f} MFLOP run side by side on the cpu",
               workers, im.cpu->Isa(), im.cpu->DescribeDatatypes(), options.completion_threads,
               options.small_job_max_flops * 1e-6);
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Engine::~Engine() { impl_->Stop(); }

absl::StatusOr<Engine::Admission> Engine::Admit(const Conv2dParams& params) {
  absl::StatusOr<Admission> admission = impl_->admission->Admit(params);
  if (!admission.ok()) {
    absl::MutexLock lock(&impl_->mu);
    impl_->stats.jobs_rejected++;
  }
  return admission;
}

absl::Status Engine::Submit(std::unique_ptr<Conv2dJob>* job_ptr) {
  absl::StatusOr<Admission> admission = Admit((*job_ptr)->params);
  if (!admission.ok()) return admission.status();
  // Held by the job's done wrapper until the job completes.
  auto held = std::make_unique<Admission>(std::move(*admission));
  const Admission& ref = *held;
  return SubmitAdmitted(job_ptr, ref, std::move(held));
}

absl::Status Engine::Submit(std::unique_ptr<Conv2dJob>* job_ptr, const Admission& admission) {
  return SubmitAdmitted(job_ptr, admission, nullptr);
}

absl::Status Engine::SubmitAdmitted(std::unique_ptr<Conv2dJob>* job_ptr,
                                    const Admission& admission,
                                    std::unique_ptr<Admission> held) {
  Impl& im = *impl_;
  Conv2dJob& job = **job_ptr;
  absl::Status status;
  if (admission.owner() != im.admission.get() || admission.bytes() < job.params.total_bytes()) {
    status = absl::InvalidArgumentError(absl::StrCat(
        "job of ", job.params.total_bytes(), " bytes submitted with an admission of ",
        admission.bytes(), " bytes from ",
        admission.owner() == im.admission.get() ? "this" : "another", " engine"));
  }
  if (status.ok() && job.registered_weight != nullptr) status = BindRegisteredWeight(&job);
  if (status.ok() && (job.input == nullptr || job.weight == nullptr || job.output == nullptr ||
                      (job.params.has_bias && job.bias == nullptr))) {
    status = absl::InvalidArgumentError("job has a null input, weight, bias or output buffer");
  }
  if (status.ok() && !job.done) status = absl::InvalidArgumentError("job has no done callback");
  const DeviceRequest device = job.device.is_auto() ? im.options.device_policy : job.device;
  if (status.ok()) status = im.placement->CheckDevice(device);
  if (!status.ok()) {
    absl::MutexLock lock(&im.mu);
    im.stats.jobs_rejected++;
    return status;
  }
  job.device = device;
  // The batching key: registered weights have theirs (BindRegisteredWeight); weights sent with
  // the request get an identity on a worker, off this (the server's) thread.
  if (job.registered_weight == nullptr) {
    const int64_t weight_bytes = (job.params.weight_elements() + job.params.bias_elements()) * 4;
    job.weight_key = weight_bytes <= im.options.max_hashed_weight_bytes ? kUnconfirmedWeightKey : 0;
  }
  // Large jobs gain nothing from batching on the CPU; a GPU gains whatever their size.
  job.batchable = job.params.flops() < im.options.small_job_max_flops ||
                  (!im.gpu_executors.empty() && device.kind != DeviceRequest::Kind::kCpu);
  {
    // Counted before Enqueue so that a worker finishing the job at once cannot drive the
    // in-flight count below zero; rolled back if the batcher refuses it.
    absl::MutexLock lock(&im.mu);
    im.in_flight++;
  }
  // Every completion path (executors, and the batcher dropping expired or cancelled jobs) goes
  // through job.done, so the wrapper is where a job stops being in flight.
  // Shared with this frame so that a refused job gets its own done back.
  auto user_done = std::make_shared<JobDone>(std::move(job.done));
  job.done = [impl = impl_.get(), user_done,
              held = std::move(held)](const absl::Status& s, const ExecTimestamps& t) mutable {
    {
      absl::MutexLock lock(&impl->mu);
      (s.ok() ? impl->stats.jobs_succeeded : impl->stats.jobs_failed)++;
    }
    // The engine's own admission (Submit without one) ends with the job: returned before done
    // runs, so that a caller who has seen done also sees the budget back.
    held.reset();
    std::move(*user_done)(s, t);
    absl::MutexLock lock(&impl->mu);
    impl->in_flight--;
  };
  status = im.batcher->Enqueue(job_ptr);
  absl::MutexLock lock(&im.mu);
  if (status.ok()) {
    im.stats.jobs_accepted++;
    return status;
  }
  // Retryable only if the job could ever fit: one larger than the whole queue cannot.
  if (status.code() == absl::StatusCode::kResourceExhausted &&
      job.bytes() <= im.options.batcher.max_queued_bytes) {
    MarkQueueFull(&status);
  }
  // The job stays with the caller as it came: its own done back (the wrapper, and with it an
  // admission of the engine's own, released).
  job.done = std::move(*user_done);
  im.in_flight--;
  im.stats.jobs_rejected++;
  return status;
}

absl::Status Engine::Drain(absl::Time deadline) {
  {
    absl::MutexLock lock(&impl_->mu);
    impl_->draining = true;
  }
  impl_->batcher->Close();
  absl::MutexLock lock(&impl_->mu);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(impl_->mu) { return impl_->in_flight == 0; };
  impl_->mu.AwaitWithDeadline(absl::Condition(&idle), deadline);
  if (impl_->in_flight == 0) return absl::OkStatus();
  return absl::DeadlineExceededError(
      absl::StrCat("drain deadline passed with ", impl_->in_flight, " job(s) still in flight"));
}

bool Engine::draining() const {
  absl::MutexLock lock(&impl_->mu);
  return impl_->draining;
}

EngineStats Engine::Stats() const {
  EngineStats stats;
  {
    absl::MutexLock lock(&impl_->mu);
    stats = impl_->stats;
  }
  stats.inflight_bytes = impl_->admission->inflight_bytes();
  AddCounters(impl_->cpu_executor->counters(), &stats);
  for (const auto& g : impl_->gpu_executors) AddCounters(g->counters(), &stats);
  stats.queue = impl_->batcher->Snapshot();
  return stats;
}

DevicesSnapshot Engine::Devices() const {
  const Impl& im = *impl_;
  const Placement::Snapshot placed = im.placement->snapshot();
  DevicesSnapshot out;
  auto fill = [&](DeviceSnapshot& d, const DeviceCounters& c, int slot) {
    d.jobs_done = c.jobs_done;
    d.batches_done = c.batches_done;
    d.gflop_done = c.gflop_done;
    d.busy_seconds = c.busy_seconds;
    d.queued_batches = c.queued_batches;
    d.queued_seconds = c.queued_seconds;
    d.decisions = placed.decisions[slot];
    d.measured_gflops = placed.gflops[slot];
  };
  DeviceSnapshot& c = out.devices.emplace_back();
  c.name = "cpu";
  c.detail = absl::StrCat("oneDNN ", im.cpu->Isa(), "; ", im.cpu->DescribeDatatypes());
  c.threads = im.cpu->threads();
  fill(c, im.cpu_executor->counters(), 0);
  RouterSnapshot& r = out.router;
  r.policy = im.options.device_policy.ToString();
  r.gpu_fault_policy = FaultPolicyName(im.options.on_gpu_fault);
  r.decisions_cpu = placed.decisions[0];
  r.gpu_fallback_reason = im.gpus.no_gpu_reason;
  r.gpu_platform = im.gpus.platform;
  r.crossover_mflop = placed.crossover_mflop;
  r.crossover_shape = placed.crossover_shape;
  for (size_t i = 0; i < im.gpu_executors.size(); ++i) {
    const GpuDevice& device = *im.gpus.devices[i];
    const GpuDeviceInfo info = device.Info();
    const int slot = 1 + static_cast<int>(i);
    DeviceSnapshot& g = out.devices.emplace_back();
    g.name = absl::StrCat("gpu:", i);
    g.index = static_cast<int>(i);
    g.detail = absl::StrCat(info.name, " (", info.platform, ", ", info.compute_units, " CUs)");
    g.healthy = device.healthy();
    if (!g.healthy) g.unhealthy_reason = device.unhealthy_reason();
    g.memory_bytes = info.memory_bytes;
    g.memory_used_bytes = info.memory_used_bytes;
    fill(g, im.gpu_executors[i]->counters(), slot);
    g.measured_transfer_gbps = placed.transfer_gbps[slot];
    g.launch_overhead_s = placed.launch_overhead_s[slot];
    r.decisions_gpu += placed.decisions[slot];
  }
  return out;
}

const CpuBackend& Engine::cpu() const { return *impl_->cpu; }
WeightRegistry& Engine::registry() const { return *impl_->registry; }
const EngineOptions& Engine::options() const { return impl_->options; }

}  // namespace sparkle
