#include "engine/engine.h"

#include <algorithm>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>

#include "absl/hash/hash.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "engine/core/status_macros.h"
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
  if (o.max_hashed_weight_bytes < 0 || o.max_hashed_weight_bytes > (int64_t{1} << 40)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_hashed_weight_bytes must be in [0, 2^40]; was ", o.max_hashed_weight_bytes));
  }
  if (!(o.small_job_max_flops >= 0 && o.small_job_max_flops <= 1e15)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "small_job_max_flops must be in [0, 1e15]; was ", o.small_job_max_flops));
  }
  return absl::OkStatus();
}

}  // namespace

struct Engine::Impl {
  EngineOptions options;
  std::unique_ptr<CpuBackend> cpu;
  std::unique_ptr<ShapeBatcher> batcher;
  std::vector<std::thread> workers;

  // Small batches hold it shared (several run side by side, one OpenMP thread each); large
  // batches hold it exclusively and use every thread. Never held across a done callback.
  absl::Mutex pool_mu;

  mutable absl::Mutex mu;
  // Accepted jobs whose done has not yet returned. Drain waits for it to reach 0.
  int64_t in_flight ABSL_GUARDED_BY(mu) = 0;
  bool draining ABSL_GUARDED_BY(mu) = false;  // monotonic: false → true once
  EngineStats stats ABSL_GUARDED_BY(mu);

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
    if (!runnable.empty()) Execute(runnable);
    for (auto& job : later) {
      std::vector<std::unique_ptr<Conv2dJob>> alone;
      alone.push_back(std::move(job));
      Execute(alone);
    }
  }

  void Execute(std::vector<std::unique_ptr<Conv2dJob>>& jobs) {
    Conv2dParams params = jobs.front()->params;
    params.n = 0;
    for (const auto& job : jobs) params.n += job->params.n;

    ConvArgs args;
    args.weight = jobs.front()->weight;
    args.bias = jobs.front()->bias;
    args.weight_key = jobs.front()->weight_key;
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
    const absl::Time start = options.batcher.clock->Now();
    absl::Status status;
    if (side_by_side) {
      absl::ReaderMutexLock lock(&pool_mu);
      status = cpu->Run(params, args, 1);
    } else {
      absl::WriterMutexLock lock(&pool_mu);
      status = cpu->Run(params, args, cpu->threads());
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
    }
    for (auto& job : jobs) {
      job->timestamps.compute_start = start;
      job->timestamps.compute_end = end;
      job->timestamps.batch_jobs = static_cast<int>(jobs.size());
      job->timestamps.batch_n = params.n;
      Complete(std::move(job), status);
    }
  }

  // Calls done exactly once (the wrapper installed by Submit then retires the job).
  void Complete(std::unique_ptr<Conv2dJob> job, const absl::Status& status) {
    job->timestamps.done = options.batcher.clock->Now();
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
  SPARKLE_ASSIGN_OR_RETURN(impl->cpu, CpuBackend::Create(options.cpu));
  SPARKLE_ASSIGN_OR_RETURN(impl->batcher, ShapeBatcher::Create(options.batcher));
  // One worker per CPU thread: that many small batches can run side by side.
  const int workers = impl->cpu->threads();
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
  impl_->batcher.reset();  // while the counters its completions touch are still alive
}

absl::Status Engine::Submit(std::unique_ptr<Conv2dJob>* job_ptr) {
  Conv2dJob& job = **job_ptr;
  absl::Status status = job.params.Validate();
  if (status.ok() && (job.input == nullptr || job.weight == nullptr || job.output == nullptr ||
                      (job.params.has_bias && job.bias == nullptr))) {
    status = absl::InvalidArgumentError("job has a null input, weight, bias or output buffer");
  }
  if (status.ok() && job.bytes() > impl_->options.max_job_bytes) {
    status = absl::ResourceExhaustedError(absl::StrCat(
        "job needs ", job.bytes(), " bytes (input + weight + bias + output, FP32), above the ",
        impl_->options.max_job_bytes, "-byte limit (raise it with --",
        impl_->options.max_job_bytes_flag, ")"));
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
  job.done = [impl = impl_.get(), user_done](const absl::Status& s,
                                             const ExecTimestamps& t) mutable {
    impl->Count(s);
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
  }
  stats.queue = impl_->batcher->Snapshot();
  return stats;
}

const CpuBackend& Engine::cpu() const { return *impl_->cpu; }
const EngineOptions& Engine::options() const { return impl_->options; }

}  // namespace sparkle
