#include "engine/engine.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/hash/hash.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "base/status_macros.h"
#include "engine/router/rate_probe.h"
#include "engine/router/router.h"
#include "spdlog/spdlog.h"

namespace sparkle {
namespace {

absl::string_view Bytes(const float* data, int64_t count) {
  return absl::string_view(reinterpret_cast<const char*>(data),
                           static_cast<size_t>(count) * sizeof(float));
}

// Nonzero identity of the weight (and bias) bytes; 0 is reserved for "no identity".
uint64_t WeightKey(const Conv2dJob& job) {
  size_t h = absl::Hash<absl::string_view>()(Bytes(job.weight, job.params.weight_elements()));
  if (job.params.has_bias) {
    h = absl::HashOf(h, Bytes(job.bias, job.params.k));
  }
  return static_cast<uint64_t>(h) | 1;
}

// True when b's weights and bias are byte-for-byte a's. Jobs of one batch share one weight
// tensor; a weight_key collision must never run a job with another job's weights.
bool SameWeights(const Conv2dJob& a, const Conv2dJob& b) {
  const int64_t wn = a.params.weight_elements();
  if (a.weight != b.weight && std::memcmp(a.weight, b.weight, wn * sizeof(float)) != 0) {
    return false;
  }
  return !a.params.has_bias || a.bias == b.bias ||
         std::memcmp(a.bias, b.bias, a.params.k * sizeof(float)) == 0;
}

// Growable per-thread buffers for concatenating a batch along N. They keep their pages, so
// steady-state batches touch no fresh memory.
struct GatherScratch {
  std::vector<float> input;
  std::vector<float> output;
};
thread_local GatherScratch gather_scratch;

// Marks a Submit error as "queue full" (see IsQueueFull).
constexpr char kQueueFullPayload[] = "type.sparkle/queue_full";

absl::Status ValidateOptions(const EngineOptions& o) {
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
  if (!(o.rates.alpha > 0 && o.rates.alpha <= 1) || o.rates.max_classes < 1 ||
      o.rates.max_classes > (1 << 20)) {
    return absl::InvalidArgumentError(
        "rates.alpha must be in (0, 1], rates.max_classes in [1, 2^20]");
  }
  if (o.gpu.emulated_devices < -1 || o.gpu.emulated_devices > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("gpu.emulated_devices must be in [-1, 64]; was ", o.gpu.emulated_devices));
  }
  if (o.gpu.slots < 1 || o.gpu.slots > 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("gpu.slots must be in [1, 8]; was ", o.gpu.slots));
  }
  if (o.gpu.slot_bytes < (int64_t{1} << 20) || o.gpu.slot_bytes > (int64_t{1} << 40)) {
    return absl::InvalidArgumentError(
        absl::StrCat("gpu.slot_bytes must be in [1 MiB, 2^40]; was ", o.gpu.slot_bytes));
  }
  return absl::OkStatus();
}

// Start-up defaults when nothing was measured: deliberately optimistic for the GPU, because
// online refinement corrects a rate only on a device that receives work.
constexpr double kDefaultCpuGflops = 50;
constexpr double kDefaultGpuGflops = 5000;
constexpr double kDefaultGpuTransferGbps = 10;
// Largest slice of a large job run under one exclusive hold of the CPU pool (Impl::RunSliced):
// ~60 ms at the ~330 GFLOP/s oneDNN reaches on big layers on the 2-core reference machine,
// large enough that per-slice overhead (primitive lookup, a slice of the reorders) is noise.
constexpr double kSliceFlops = 20e9;
// See Impl::Place: at most 1 in 65 `auto` batches goes to a device for exploration.
constexpr int64_t kExploreAfter = 64;

// The rate estimator's shape class: the geometry without N, and whether the batch runs on one
// thread (side by side) or on the whole pool.
uint64_t RateClass(const Conv2dParams& p, bool one_thread) {
  return absl::HashOf(p.c, p.h, p.w, p.k, p.r, p.s, p.stride_h, p.stride_w, p.pad_h, p.pad_w,
                      p.dilation_h, p.dilation_w, p.groups, p.has_bias, p.layout, one_thread);
}

const char* FaultPolicyName(GpuFaultPolicy p) {
  return p == GpuFaultPolicy::kFail ? "fail" : "cpu";
}

}  // namespace

struct Engine::Impl {
  EngineOptions options;
  std::unique_ptr<CpuBackend> cpu;
  std::unique_ptr<ShapeBatcher> batcher;
  std::vector<std::thread> workers;
  std::unique_ptr<WeightRegistry> registry;

  // Small batches hold it shared (several run side by side, one OpenMP thread each); large
  // batches hold it exclusively and use every thread. Never held across a done callback.
  absl::Mutex pool_mu;

  mutable absl::Mutex mu;
  // Accepted jobs whose done has not yet returned. Drain waits for it to reach 0.
  int64_t in_flight ABSL_GUARDED_BY(mu) = 0;
  // Bytes held by live Admissions (max_inflight_bytes).
  int64_t inflight_bytes ABSL_GUARDED_BY(mu) = 0;
  // Small batches waiting for pool_mu; a sliced large job lets them in between its slices.
  int64_t small_waiting ABSL_GUARDED_BY(mu) = 0;
  bool draining ABSL_GUARDED_BY(mu) = false;  // monotonic: false → true once
  EngineStats stats ABSL_GUARDED_BY(mu);

  // Routing (engine/router). `gpus` is declared before `dispatchers` so that the devices
  // outlive them. Without GPUs every batch runs on the CPU as it always did.
  GpuDevices gpus;
  std::unique_ptr<RateEstimator> rates;  // slot 0 the CPU pool, slot 1 + i GPU i
  std::vector<std::unique_ptr<GpuDispatcher>> dispatchers;
  struct CpuCounters {
    int64_t jobs_done = 0;
    int64_t batches_done = 0;
    double gflop_done = 0;
    double busy_seconds = 0;
    int64_t queued_batches = 0;
    double queued_seconds = 0;  // pool-seconds: a one-thread batch counts 1/threads of its time
  };
  CpuCounters cpu_counters ABSL_GUARDED_BY(mu);
  std::vector<int64_t> decisions ABSL_GUARDED_BY(mu);  // [0] the CPU, [1 + i] GPU i
  // Consecutive `auto` batches that did not go to each device (same indexing).
  std::vector<int64_t> passed_over ABSL_GUARDED_BY(mu);
  // The most recently routed batch, for the crossover in Devices().
  std::optional<Conv2dParams> last_routed ABSL_GUARDED_BY(mu);

  // The per-job limits that need the geometry only: RESOURCE_EXHAUSTED naming the flag.
  absl::Status CheckCost(const Conv2dParams& p) const {
    SPARKLE_RETURN_IF_ERROR(p.Validate());
    const EngineOptions& o = options;
    if (p.total_bytes() > o.max_job_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "job needs ", p.total_bytes(), " bytes (input + weight + bias + output, FP32), above "
          "the ", o.max_job_bytes, "-byte limit (raise it with --", o.max_job_bytes_flag, ")"));
    }
    if (p.flops() > o.max_job_gflop * 1e9) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "job needs ", p.flops() * 1e-9, " GFLOP, above the ", o.max_job_gflop,
          "-GFLOP limit per request (raise it with --", o.max_job_gflop_flag, ")"));
    }
    const int64_t limit = o.max_job_scratch_bytes;
    // The padding alone (what a padded copy of the input adds to it): a few bytes of request
    // can ask for gigabytes of it.
    const int64_t padding_bytes = p.padded_input_bytes() - p.input_elements() * 4;
    if (padding_bytes > limit) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "job's padding adds ", padding_bytes, " bytes to its input (N*C*(H+2*pad_h)*(W+2*pad_w)"
          " - N*C*H*W floats), above the ", limit, "-byte scratch limit (raise it with --",
          o.max_job_scratch_bytes_flag, ")"));
    }
    if (p.im2col_bytes() > limit / cpu->threads()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "job's im2col scratch (C/groups)*R*S*P*Q is ", p.im2col_bytes(), " bytes per thread (",
          cpu->threads(), " threads), above the ", limit, "-byte scratch limit (raise it with --",
          o.max_job_scratch_bytes_flag, ")"));
    }
    if (CpuBackend::PrimitiveBytes(p) > limit) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "job's output width Q = ", p.q(), " needs about ", CpuBackend::PrimitiveBytes(p),
          " bytes of oneDNN primitive tables (~2 KiB per output column), above the ", limit,
          "-byte scratch limit (raise it with --", o.max_job_scratch_bytes_flag, ")"));
    }
    if (p.total_bytes() > o.max_inflight_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "job needs ", p.total_bytes(), " bytes, more than the whole ", o.max_inflight_bytes,
          "-byte budget of jobs in flight (raise it with --", o.max_inflight_bytes_flag, ")"));
    }
    return absl::OkStatus();
  }

  void WorkerLoop() {
    while (std::unique_ptr<Batch> batch = batcher->NextBatch()) {
      RunBatch(std::move(batch->jobs));
    }
  }

  // Runs jobs that share a shape key: drops those cancelled or expired since batch formation,
  // splits off any whose weights differ from the first job's, then executes and completes them.
  void RunBatch(std::vector<std::unique_ptr<Conv2dJob>> jobs) {
    const absl::Time now = options.batcher.clock->Now();
    std::vector<std::unique_ptr<Conv2dJob>> runnable, later;
    runnable.reserve(jobs.size());
    for (auto& job : jobs) {
      if (job->IsCancelled()) {
        Complete(std::move(job), absl::CancelledError("cancelled by the client before launch"));
      } else if (job->deadline <= now) {
        Complete(std::move(job), absl::DeadlineExceededError(absl::StrCat(
                                     "deadline expired before launch, after ",
                                     absl::FormatDuration(now - job->timestamps.enqueued),
                                     " in the engine")));
      } else if (!runnable.empty() && !SameWeights(*runnable.front(), *job)) {
        later.push_back(std::move(job));
      } else {
        runnable.push_back(std::move(job));
      }
    }
    if (!runnable.empty()) Place(runnable);
    for (auto& job : later) {
      std::vector<std::unique_ptr<Conv2dJob>> alone;
      alone.push_back(std::move(job));
      Place(alone);
    }
  }

  // The router's view of the CPU pool and every GPU for batch `p` (n = the batch's N).
  std::vector<DeviceView> Views(const Conv2dParams& p, uint64_t weight_key,
                                bool one_thread) const {
    std::vector<DeviceView> views(1 + dispatchers.size());
    DeviceView& c = views[0];
    const double share = one_thread ? cpu->threads() : 1.0;
    c.compute_gflops =
        rates->ClassGflops(0, RateClass(p, one_thread)).value_or(rates->DeviceGflops(0)) / share;
    {
      absl::MutexLock lock(&mu);
      c.queue_ahead_s = cpu_counters.queued_seconds;
    }
    const int64_t io_bytes = (p.input_elements() + p.output_elements()) * 4;
    for (size_t i = 0; i < dispatchers.size(); ++i) {
      const GpuDispatcher& d = *dispatchers[i];
      DeviceView& g = views[1 + i];
      g.gpu = static_cast<int>(i);
      g.healthy = d.device()->healthy();
      if (!g.healthy) g.unhealthy_reason = d.device()->unhealthy_reason();
      if (absl::Status s = d.device()->Supports(p); !s.ok()) {
        g.usable = false;
        g.unusable_reason = std::string(s.message());
      } else if (io_bytes > options.gpu.slot_bytes) {
        g.usable = false;
        g.unusable_reason = absl::StrCat("the batch's ", io_bytes, " input + output bytes exceed ",
                                         "a staging slot (", options.gpu.slot_bytes, " bytes)");
      }
      g.weights_resident = weight_key != 0 && d.WeightsResident(weight_key);
      g.queue_ahead_s = d.QueuedSeconds();
      const int slot = 1 + static_cast<int>(i);
      g.compute_gflops = rates->ClassGflops(slot, RateClass(p, false))
                             .value_or(rates->DeviceGflops(slot));
      g.h2d_gbps = g.d2h_gbps = rates->TransferGbps(slot);
      g.launch_overhead_s = rates->LaunchOverheadSeconds(slot);
    }
    return views;
  }

  // Routes jobs of one shape key with identical weights and runs them there (CPU: on this
  // thread; GPU: handed to its dispatcher).
  void Place(std::vector<std::unique_ptr<Conv2dJob>>& jobs) {
    const DeviceRequest request = jobs.front()->device;
    if (dispatchers.empty() && !request.wants_gpu()) {
      {
        absl::MutexLock lock(&mu);
        decisions[0]++;
      }
      Execute(jobs, 0);
      return;
    }
    Conv2dParams p = jobs.front()->params;
    p.n = 0;
    for (const auto& job : jobs) p.n += job->params.n;
    BatchCost cost;
    cost.flops = p.flops();
    cost.input_bytes = p.input_elements() * 4;
    cost.weight_bytes = (p.weight_elements() + p.bias_elements()) * 4;
    cost.output_bytes = p.output_elements() * 4;
    const std::vector<DeviceView> views =
        Views(p, jobs.front()->weight_key, jobs.front()->batchable);
    absl::StatusOr<RouteDecision> decision = Route(cost, request, views, gpus.no_gpu_reason);
    if (!decision.ok()) {
      for (auto& job : jobs) Complete(std::move(job), decision.status());
      return;
    }
    {
      absl::MutexLock lock(&mu);
      if (request.is_auto()) {
        // Exploration: a usable device that `auto` has passed over kExploreAfter times in a row
        // gets this batch, so that its rates stay current (a rate is only refined on a device
        // that receives work; a wrong one would otherwise never be corrected).
        for (size_t i = 0; i < views.size(); ++i) {
          const DeviceView& v = views[i];
          const bool usable = v.gpu < 0 || (v.healthy && v.usable);
          if (i != decision->choice && usable && passed_over[i] >= kExploreAfter) {
            decision = RouteDecision{i, PredictSeconds(cost, v)};
            break;
          }
        }
        for (size_t i = 0; i < views.size(); ++i) {
          passed_over[i] = i == decision->choice ? 0 : passed_over[i] + 1;
        }
      }
      decisions[1 + views[decision->choice].gpu]++;
      last_routed = p;
    }
    const int gpu = views[decision->choice].gpu;
    if (gpu < 0) {
      Execute(jobs, decision->predicted_s - views[decision->choice].queue_ahead_s);
    } else {
      dispatchers[gpu]->Enqueue(std::move(jobs),
                                decision->predicted_s - views[decision->choice].queue_ahead_s);
    }
  }

  // Runs jobs of one shape key with identical weights on the CPU pool and completes them.
  // `predicted_s`: the router's predicted run time, counted as CPU queue while it runs.
  void Execute(std::vector<std::unique_ptr<Conv2dJob>>& jobs, double predicted_s) {
    Conv2dParams params = jobs.front()->params;
    params.n = 0;
    for (const auto& job : jobs) params.n += job->params.n;

    ConvArgs args;
    args.weight = jobs.front()->weight;
    args.bias = jobs.front()->bias;
    args.weight_key = jobs.front()->weight_key;
    if (jobs.front()->registered_weight != nullptr) {
      args.prepacked = &jobs.front()->registered_weight->prepacked();
    }
    const bool gather = jobs.size() > 1;
    if (gather) {
      // N is the outermost dimension in both layouts, so each job is one contiguous slice.
      GatherScratch& scratch = gather_scratch;
      scratch.input.resize(std::max<size_t>(scratch.input.size(), params.input_elements()));
      scratch.output.resize(std::max<size_t>(scratch.output.size(), params.output_elements()));
      float* dst = scratch.input.data();
      for (const auto& job : jobs) {
        const int64_t count = job->params.input_elements();
        std::memcpy(dst, job->input, count * sizeof(float));
        dst += count;
      }
      args.input = scratch.input.data();
      args.output = scratch.output.data();
    } else {
      args.input = jobs.front()->input;
      args.output = jobs.front()->output;
    }

    const double flops = params.flops();
    // Measured here (sparkle_bench engine_batching): oneDNN runs a small job at N=1 on one
    // thread near that thread's peak, so batches of small jobs gain nothing from a second
    // thread and would only stall the other worker.
    const bool side_by_side = jobs.front()->batchable;
    const double queued = side_by_side ? predicted_s / cpu->threads() : predicted_s;
    if (predicted_s > 0) {
      absl::MutexLock lock(&mu);
      cpu_counters.queued_batches++;
      cpu_counters.queued_seconds += queued;
    }
    const absl::Time start = options.batcher.clock->Now();
    absl::Status status;
    if (side_by_side) {
      {
        absl::MutexLock lock(&mu);
        small_waiting++;
      }
      absl::ReaderMutexLock lock(&pool_mu);
      {
        absl::MutexLock lock(&mu);
        small_waiting--;
      }
      status = cpu->Run(params, args, 1);
    } else {
      status = RunSliced(params, args);
    }
    const absl::Time end = options.batcher.clock->Now();

    if (gather && status.ok()) {
      const float* src = args.output;
      for (const auto& job : jobs) {
        const int64_t count = job->params.output_elements();
        std::memcpy(job->output, src, count * sizeof(float));
        src += count;
      }
    }
    if (!status.ok()) {
      spdlog::error("batch {} ({} jobs) failed on cpu: {}", params.ToString(), jobs.size(),
                    status.ToString());
    }
    {
      absl::MutexLock lock(&mu);
      stats.batches++;
      stats.batched_jobs += static_cast<int64_t>(jobs.size());
      stats.busy_seconds += absl::ToDoubleSeconds(end - start);
      if (status.ok()) stats.gflop += flops * 1e-9;
      CpuCounters& c = cpu_counters;
      c.batches_done++;
      c.busy_seconds += absl::ToDoubleSeconds(end - start);
      if (status.ok()) {
        c.jobs_done += static_cast<int64_t>(jobs.size());
        c.gflop_done += flops * 1e-9;
      }
      if (predicted_s > 0) {
        c.queued_batches--;
        c.queued_seconds = c.queued_batches == 0 ? 0 : c.queued_seconds - queued;
      }
    }
    if (status.ok()) {
      // Rates are kept in whole-pool units: a one-thread batch counts `threads` times its rate.
      rates->ObserveCompute(0, RateClass(params, side_by_side),
                            side_by_side ? flops * cpu->threads() : flops,
                            absl::ToDoubleSeconds(end - start));
    }
    for (auto& job : jobs) {
      job->timestamps.compute_start = start;
      job->timestamps.compute_end = end;
      job->timestamps.batch_jobs = static_cast<int>(jobs.size());
      job->timestamps.batch_n = params.n;
      job->timestamps.device = -1;
      Complete(std::move(job), status);
    }
  }

  // A large job on every thread, in slices along N of at most kSliceFlops each (a whole image
  // when one image is more): the pool is released between slices and small batches waiting
  // for it (small_waiting) run first, so a large job delays a small one by one slice, not
  // by the whole job. absl::Mutex is not FIFO: a thread that unlocks and locks again at once
  // usually wins over the readers it woke, hence the wait for them below (bounded, so the
  // large job still progresses under a stream of small ones).
  absl::Status RunSliced(const Conv2dParams& params, const ConvArgs& args) {
    const double per_image = params.flops() / static_cast<double>(params.n);
    const int64_t slice_n = std::clamp<int64_t>(
        static_cast<int64_t>(kSliceFlops / std::max(per_image, 1.0)), 1, params.n);
    const int64_t in_per_image = params.input_elements() / params.n;
    const int64_t out_per_image = params.output_elements() / params.n;
    for (int64_t done_n = 0; done_n < params.n; done_n += slice_n) {
      if (done_n > 0) {
        absl::MutexLock lock(&mu);
        auto none_waiting = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu) { return small_waiting == 0; };
        mu.AwaitWithTimeout(absl::Condition(&none_waiting), absl::Milliseconds(20));
      }
      Conv2dParams slice = params;
      slice.n = std::min(slice_n, params.n - done_n);
      ConvArgs slice_args = args;
      slice_args.input = args.input + done_n * in_per_image;
      slice_args.output = args.output + done_n * out_per_image;
      absl::WriterMutexLock lock(&pool_mu);
      SPARKLE_RETURN_IF_ERROR(cpu->Run(slice, slice_args, cpu->threads()));
    }
    return absl::OkStatus();
  }

  // Opens the GPUs (or learns why there are none), seeds the rates, starts one dispatcher per
  // GPU. FAILED_PRECONDITION when the device policy names a GPU that is absent.
  absl::Status OpenGpus() {
    const absl::Time t0 = absl::Now();
    gpus = options.open_gpus ? options.open_gpus(options.gpu) : OpenGpuDevices(options.gpu);
    const absl::Duration took = absl::Now() - t0;
    decisions.assign(1 + gpus.devices.size(), 0);
    passed_over.assign(1 + gpus.devices.size(), 0);
    std::vector<RateEstimator::Seed> seeds(1 + gpus.devices.size());
    seeds[0].compute_gflops = options.cpu_gflops > 0 ? options.cpu_gflops : kDefaultCpuGflops;
    if (gpus.devices.empty()) {
      if (gpus.no_gpu_reason.empty()) gpus.no_gpu_reason = "no GPU found";
      spdlog::info("engine: no GPU ({}; checked in {}): every batch runs on the cpu",
                   gpus.no_gpu_reason, absl::FormatDuration(took));
    } else if (options.cpu_gflops == 0) {
      absl::StatusOr<double> measured = MeasureCpuGflops(*cpu);
      if (measured.ok()) seeds[0].compute_gflops = *measured;
    }
    for (size_t i = 0; i < gpus.devices.size(); ++i) {
      GpuDevice& device = *gpus.devices[i];
      RateEstimator::Seed& seed = seeds[1 + i];
      seed.compute_gflops = options.gpu_gflops > 0 ? options.gpu_gflops : kDefaultGpuGflops;
      seed.transfer_gbps =
          options.gpu_transfer_gbps > 0 ? options.gpu_transfer_gbps : kDefaultGpuTransferGbps;
      seed.launch_overhead_s = options.gpu_launch_overhead_s;
      if (options.gpu_gflops == 0 || options.gpu_transfer_gbps == 0) {
        const RateEstimator::Seed measured = MeasureGpu(device, seed, absl::Seconds(2));
        if (options.gpu_gflops == 0) seed.compute_gflops = measured.compute_gflops;
        if (options.gpu_transfer_gbps == 0) seed.transfer_gbps = measured.transfer_gbps;
      }
      const GpuDeviceInfo info = device.Info();
      spdlog::info("engine: gpu:{} {} ({}, {:.1f} GiB, {} CUs): {:.0f} GFLOP/s, {:.1f} GB/s "
                   "host<->device",
                   i, info.name, info.platform, info.memory_bytes / double(1 << 30),
                   info.compute_units, seed.compute_gflops, seed.transfer_gbps);
    }
    rates = std::make_unique<RateEstimator>(seeds, options.rates);
    if (!gpus.devices.empty()) {
      spdlog::info("engine: router policy {}, cpu {:.0f} GFLOP/s, on gpu fault: {}",
                   options.device_policy.ToString(), seeds[0].compute_gflops,
                   FaultPolicyName(options.on_gpu_fault));
    }
    if (options.device_policy.wants_gpu()) {
      SPARKLE_RETURN_IF_ERROR(CheckDevice(options.device_policy));
    }
    for (size_t i = 0; i < gpus.devices.size(); ++i) {
      GpuDispatcher::Hooks hooks;
      hooks.complete = [this](std::unique_ptr<Conv2dJob> job, const absl::Status& s) {
        Complete(std::move(job), s);
      };
      hooks.run_on_cpu = [this](std::vector<std::unique_ptr<Conv2dJob>> jobs) {
        Execute(jobs, 0);
      };
      hooks.finished = [this](const GpuBatchReport& r) { GpuFinished(r); };
      dispatchers.push_back(std::make_unique<GpuDispatcher>(
          static_cast<int>(i), gpus.devices[i].get(), options.gpu, options.on_gpu_fault,
          options.batcher.clock, std::move(hooks)));
    }
    return absl::OkStatus();
  }

  // Admission check of an explicit GPU request: FAILED_PRECONDITION (absent), UNAVAILABLE
  // (latched unhealthy).
  absl::Status CheckDevice(const DeviceRequest& request) const {
    std::vector<DeviceView> views(1);
    for (size_t i = 0; i < gpus.devices.size(); ++i) {
      DeviceView& g = views.emplace_back();
      g.gpu = static_cast<int>(i);
      g.healthy = gpus.devices[i]->healthy();
      if (!g.healthy) g.unhealthy_reason = gpus.devices[i]->unhealthy_reason();
    }
    return CheckDeviceAvailable(request, views, gpus.no_gpu_reason);
  }

  // A GPU work finished: engine counters and the rate estimator.
  void GpuFinished(const GpuBatchReport& r) {
    const GpuTimings& t = r.timings;
    const double compute_s = t.compute_end > t.compute_start
                                 ? absl::ToDoubleSeconds(t.compute_end - t.compute_start)
                                 : 0;
    {
      absl::MutexLock lock(&mu);
      stats.batches++;
      stats.batched_jobs += r.jobs;
      stats.busy_seconds += compute_s;
      if (r.ok) stats.gflop += r.params.flops() * 1e-9;
    }
    if (!r.ok) return;
    const int slot = 1 + r.device;
    rates->ObserveCompute(slot, RateClass(r.params, false), r.params.flops(), compute_s);
    if (r.submitted == absl::InfinitePast() || !r.device_idle) return;
    double transfer_s = 0;
    if (t.h2d_end > r.submitted) transfer_s += absl::ToDoubleSeconds(t.h2d_end - r.submitted);
    if (t.d2h_end > t.compute_end) transfer_s += absl::ToDoubleSeconds(t.d2h_end - t.compute_end);
    rates->ObserveTransfer(slot, static_cast<double>(r.h2d_bytes + r.d2h_bytes), transfer_s);
  }

  // Calls done exactly once (the wrapper installed by Submit then retires the job).
  void Complete(std::unique_ptr<Conv2dJob> job, const absl::Status& status) {
    job->timestamps.done = options.batcher.clock->Now();
    // Registered weights stop counting as in use before the submitter hears of the result.
    job->registered_weight.reset();
    std::move(job->done)(status, job->timestamps);
  }

  // Bookkeeping around a job's done, whoever completes it (a worker, or the batcher dropping
  // an expired or cancelled job): counted before done runs, so that a caller who has seen done
  // also sees the count; out of flight only after done returned, so that Drain covers it.
  void Count(const absl::Status& status) {
    absl::MutexLock lock(&mu);
    (status.ok() ? stats.jobs_succeeded : stats.jobs_failed)++;
  }
  void Retire() {
    absl::MutexLock lock(&mu);
    in_flight--;
  }
};

bool IsQueueFull(const absl::Status& status) {
  return status.GetPayload(kQueueFullPayload).has_value();
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options) {
  SPARKLE_RETURN_IF_ERROR(ValidateOptions(options));
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  CpuBackend::Options cpu = options.cpu;  // the engine's scratch limit is the backend's
  cpu.max_scratch_bytes = options.max_job_scratch_bytes;
  cpu.max_scratch_bytes_flag = options.max_job_scratch_bytes_flag;
  SPARKLE_ASSIGN_OR_RETURN(impl->cpu, CpuBackend::Create(cpu));
  SPARKLE_ASSIGN_OR_RETURN(impl->batcher, ShapeBatcher::Create(options.batcher));
  SPARKLE_ASSIGN_OR_RETURN(impl->registry, WeightRegistry::Create(options.weights));
  SPARKLE_RETURN_IF_ERROR(impl->OpenGpus());
  // One worker per CPU thread: that many small batches can run side by side. Workers also
  // route; with GPUs, one more per GPU, so that batches bound for a GPU are still routed while
  // every CPU thread is busy computing (sparkle_bench router).
  const int workers = impl->cpu->threads() + static_cast<int>(impl->dispatchers.size());
  for (int i = 0; i < workers; ++i) {
    impl->workers.emplace_back([raw = impl.get()] { raw->WorkerLoop(); });
  }
  spdlog::info("engine: {} cpu worker(s), oneDNN isa {}, jobs below {:.0f} MFLOP batch and run "
               "side by side",
               workers, impl->cpu->Isa(), options.small_job_max_flops * 1e-6);
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Engine::~Engine() {
  impl_->batcher->Close();
  for (std::thread& t : impl_->workers) t.join();
  // After the workers (the last to route), before the batcher and the counters go away.
  for (auto& d : impl_->dispatchers) d->Close();
  impl_->batcher.reset();  // while the counters its completions touch are still alive
}

Engine::Admission::Admission(Admission&& o) noexcept
    : impl_(std::exchange(o.impl_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}

Engine::Admission& Engine::Admission::operator=(Admission&& o) noexcept {
  if (this != &o) {
    Admission old(std::move(*this));
    impl_ = std::exchange(o.impl_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

Engine::Admission::~Admission() {
  if (impl_ == nullptr) return;
  absl::MutexLock lock(&impl_->mu);
  impl_->inflight_bytes -= bytes_;
}

absl::StatusOr<Engine::Admission> Engine::Admit(const Conv2dParams& params) {
  absl::Status status = impl_->CheckCost(params);
  absl::MutexLock lock(&impl_->mu);
  if (status.ok()) {
    const int64_t bytes = params.total_bytes();
    if (impl_->inflight_bytes + bytes <= impl_->options.max_inflight_bytes) {
      impl_->inflight_bytes += bytes;
      Admission admission;
      admission.impl_ = impl_.get();
      admission.bytes_ = bytes;
      return admission;
    }
    status = absl::ResourceExhaustedError(absl::StrCat(
        "busy: ", impl_->inflight_bytes, " bytes of admitted jobs in flight plus this job's ",
        bytes, " exceed the ", impl_->options.max_inflight_bytes,
        "-byte budget (--", impl_->options.max_inflight_bytes_flag, "); retry later"));
    status.SetPayload(kQueueFullPayload, absl::Cord("1"));
  }
  impl_->stats.jobs_rejected++;
  return status;
}

absl::Status Engine::Submit(std::unique_ptr<Conv2dJob>* job_ptr) {
  absl::StatusOr<Admission> admission = Admit((*job_ptr)->params);
  if (!admission.ok()) return admission.status();
  // Held by the job's done wrapper until the job completes.
  auto held = std::make_shared<Admission>(std::move(*admission));
  return SubmitAdmitted(job_ptr, *held, held);
}

absl::Status Engine::Submit(std::unique_ptr<Conv2dJob>* job_ptr, const Admission& admission) {
  return SubmitAdmitted(job_ptr, admission, nullptr);
}

absl::Status Engine::SubmitAdmitted(std::unique_ptr<Conv2dJob>* job_ptr,
                                    const Admission& admission,
                                    std::shared_ptr<Admission> held) {
  Conv2dJob& job = **job_ptr;
  absl::Status status;
  if (admission.impl_ != impl_.get() || admission.bytes_ < job.params.total_bytes()) {
    status = absl::InvalidArgumentError(absl::StrCat(
        "job of ", job.params.total_bytes(), " bytes submitted with an admission of ",
        admission.bytes_, " bytes from ", admission.impl_ == impl_.get() ? "this" : "another",
        " engine"));
  }
  if (status.ok() && job.registered_weight != nullptr) status = BindRegisteredWeight(&job);
  if (status.ok() && (job.input == nullptr || job.weight == nullptr || job.output == nullptr ||
                      (job.params.has_bias && job.bias == nullptr))) {
    status = absl::InvalidArgumentError("job has a null input, weight, bias or output buffer");
  }
  if (status.ok() && !job.done) status = absl::InvalidArgumentError("job has no done callback");
  if (status.ok() && job.weight_key == 0 &&
      job.params.weight_elements() * 4 <= impl_->options.max_hashed_weight_bytes) {
    job.weight_key = WeightKey(job);
  }
  if (!status.ok()) {
    absl::MutexLock lock(&impl_->mu);
    impl_->stats.jobs_rejected++;
    return status;
  }
  const DeviceRequest device = job.device.is_auto() ? impl_->options.device_policy : job.device;
  if (status.ok() && device.wants_gpu()) status = impl_->CheckDevice(device);
  if (!status.ok()) {
    absl::MutexLock lock(&impl_->mu);
    impl_->stats.jobs_rejected++;
    return status;
  }
  job.device = device;
  job.batchable = job.params.flops() < impl_->options.small_job_max_flops;
  {
    // Counted before Enqueue so that a worker finishing the job at once cannot drive the
    // in-flight count below zero; rolled back if the batcher refuses it.
    absl::MutexLock lock(&impl_->mu);
    impl_->in_flight++;
  }
  // Every completion path (workers, and the batcher dropping expired or cancelled jobs) goes
  // through job.done, so the wrapper is where a job stops being in flight.
  auto user_done = std::make_shared<JobDone>(std::move(job.done));
  job.done = [impl = impl_.get(), user_done, held](const absl::Status& s,
                                                   const ExecTimestamps& t) mutable {
    impl->Count(s);
    // The engine's own admission (Submit without one) ends with the job: returned before done
    // runs, so that a caller who has seen done also sees the budget back.
    held.reset();
    std::move (*user_done)(s, t);
    impl->Retire();
  };
  status = impl_->batcher->Enqueue(job_ptr);
  absl::MutexLock lock(&impl_->mu);
  if (status.ok()) {
    impl_->stats.jobs_accepted++;
  } else {
    // Retryable only if the job could ever fit: one larger than the whole queue cannot.
    if (status.code() == absl::StatusCode::kResourceExhausted &&
        job.bytes() <= impl_->options.batcher.max_queued_bytes) {
      status.SetPayload(kQueueFullPayload, absl::Cord("1"));
    }
    job.done = std::move(*user_done);  // the job stays with the caller, as it came
    impl_->in_flight--;
    impl_->stats.jobs_rejected++;
  }
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
    stats.inflight_bytes = impl_->inflight_bytes;
  }
  stats.queue = impl_->batcher->Snapshot();
  return stats;
}

DevicesSnapshot Engine::Devices() const {
  const Impl& im = *impl_;
  DevicesSnapshot out;
  Impl::CpuCounters cpu;
  std::vector<int64_t> decisions;
  std::optional<Conv2dParams> last;
  {
    absl::MutexLock lock(&im.mu);
    cpu = im.cpu_counters;
    decisions = im.decisions;
    last = im.last_routed;
  }
  DeviceSnapshot& c = out.devices.emplace_back();
  c.name = "cpu";
  c.detail = absl::StrCat("oneDNN ", im.cpu->Isa());
  c.threads = im.cpu->threads();
  c.jobs_done = cpu.jobs_done;
  c.batches_done = cpu.batches_done;
  c.gflop_done = cpu.gflop_done;
  c.busy_seconds = cpu.busy_seconds;
  c.queued_batches = cpu.queued_batches;
  c.queued_seconds = cpu.queued_seconds;
  c.decisions = decisions[0];
  c.measured_gflops = im.rates->DeviceGflops(0);
  RouterSnapshot& r = out.router;
  r.policy = im.options.device_policy.ToString();
  r.gpu_fault_policy = FaultPolicyName(im.options.on_gpu_fault);
  r.decisions_cpu = decisions[0];
  r.gpu_fallback_reason = im.gpus.no_gpu_reason;
  r.gpu_platform = im.gpus.platform;
  for (size_t i = 0; i < im.dispatchers.size(); ++i) {
    const GpuDispatcher& d = *im.dispatchers[i];
    const GpuDeviceInfo info = d.device()->Info();
    const GpuDispatcher::Counters counters = d.counters();
    const int slot = 1 + static_cast<int>(i);
    DeviceSnapshot& g = out.devices.emplace_back();
    g.name = absl::StrCat("gpu:", i);
    g.index = static_cast<int>(i);
    g.detail = absl::StrCat(info.name, " (", info.platform, ", ", info.compute_units, " CUs)");
    g.healthy = d.device()->healthy();
    if (!g.healthy) g.unhealthy_reason = d.device()->unhealthy_reason();
    g.memory_bytes = info.memory_bytes;
    g.memory_used_bytes = info.memory_used_bytes;
    g.jobs_done = counters.jobs_done;
    g.batches_done = counters.batches_done;
    g.gflop_done = counters.gflop_done;
    g.busy_seconds = counters.busy_seconds;
    g.queued_batches = d.QueuedBatches();
    g.queued_seconds = d.QueuedSeconds();
    g.decisions = decisions[slot];
    g.measured_gflops = im.rates->DeviceGflops(slot);
    g.measured_transfer_gbps = im.rates->TransferGbps(slot);
    g.launch_overhead_s = im.rates->LaunchOverheadSeconds(slot);
    r.decisions_gpu += decisions[slot];
  }
  if (last.has_value()) {
    // Crossover of the last routed class against the best healthy GPU (empty queues; weights
    // counted as not resident, the conservative case).
    const Conv2dParams& p = *last;
    const double flops = p.flops();
    const double in = p.input_elements() * 4.0 / flops, out_b = p.output_elements() * 4.0 / flops;
    const std::vector<DeviceView> views =
        im.Views(p, /*weight_key=*/0, /*one_thread=*/false);
    double best = std::numeric_limits<double>::infinity();
    bool any = false;
    for (size_t i = 1; i < views.size(); ++i) {
      DeviceView g = views[i];
      if (!g.healthy || !g.usable) continue;
      any = true;
      DeviceView cpu_view = views[0];
      best = std::min(best, CrossoverFlops(cpu_view, g, in, out_b,
                                           (p.weight_elements() + p.bias_elements()) * 4.0));
    }
    if (any) {
      r.crossover_mflop = best * 1e-6;
      r.crossover_shape = p.ShapeClass();
    }
  }
  return out;
}

const CpuBackend& Engine::cpu() const { return *impl_->cpu; }
WeightRegistry& Engine::registry() const { return *impl_->registry; }
const EngineOptions& Engine::options() const { return impl_->options; }

}  // namespace sparkle
