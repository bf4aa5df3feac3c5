#include "engine/cpu/cpu_executor.h"

#include <algorithm>
#include <cstring>
#include <deque>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "engine/core/job_lifecycle.h"
#include "engine/registry/registered_weight.h"
#include "spdlog/spdlog.h"

namespace sparkle {
namespace {

// Growable per-thread buffers for concatenating a batch along N. They keep their pages, so
// steady-state batches touch no fresh memory.
// Float-typed so that every element type is aligned; sized in bytes.
struct GatherScratch {
  std::vector<float> input, residual, output;
  static void* Reserve(std::vector<float>* v, int64_t bytes) {
    const size_t floats = static_cast<size_t>((bytes + 3) / 4);
    if (v->size() < floats) v->resize(floats);
    return v->data();
  }
};

// Concatenates `bytes_per_image` × job n bytes of each job's `member` tensor into `dst`.
void Gather(const std::vector<std::unique_ptr<Conv2dJob>>& jobs, const void* Conv2dJob::*member,
            int64_t bytes_per_image, void* dst) {
  char* at = static_cast<char*>(dst);
  for (const auto& job : jobs) {
    const int64_t bytes = job->params.n * bytes_per_image;
    std::memcpy(at, job.get()->*member, static_cast<size_t>(bytes));
    at += bytes;
  }
}
thread_local GatherScratch gather_scratch;

}  // namespace

struct CpuExecutor::Impl {
  Options options;
  Hooks hooks;
  int threads = 1;

  mutable absl::Mutex mu;
  // Pool slots: `threads` in all; a one_thread batch holds one, a whole-pool slice all of them.
  int free_slots ABSL_GUARDED_BY(mu) = 0;
  int small_waiting ABSL_GUARDED_BY(mu) = 0;  // one_thread batches waiting for a slot
  int large_waiting ABSL_GUARDED_BY(mu) = 0;  // whole-pool slices waiting for the pool
  DeviceCounters counters ABSL_GUARDED_BY(mu);
  std::deque<std::unique_ptr<Batch>> later ABSL_GUARDED_BY(mu);  // for the fallback thread
  bool closed ABSL_GUARDED_BY(mu) = false;
  std::thread fallback;

  void AcquireOne() {
    absl::MutexLock lock(&mu);
    small_waiting++;
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      return free_slots > 0 && large_waiting == 0;
    };
    mu.Await(absl::Condition(&ready));
    small_waiting--;
    free_slots--;
  }
  void ReleaseOne() {
    absl::MutexLock lock(&mu);
    free_slots++;
  }
  // `yield`: between two slices, first let the small batches already waiting take their
  // slots (bounded, so that the large job still progresses under a stream of small ones).
  void AcquireAll(bool yield) {
    absl::MutexLock lock(&mu);
    if (yield) {
      auto none_waiting = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return small_waiting == 0; };
      mu.AwaitWithTimeout(absl::Condition(&none_waiting), absl::Milliseconds(20));
    }
    large_waiting++;
    auto all_free = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return free_slots == threads; };
    mu.Await(absl::Condition(&all_free));
    large_waiting--;
    free_slots = 0;
  }
  void ReleaseAll() {
    absl::MutexLock lock(&mu);
    free_slots = threads;
  }

  // One whole-pool job in slices along N.
  absl::Status RunSliced(const Conv2dParams& params, const ConvArgs& args, bool* yielded) {
    const double per_image = params.flops() / static_cast<double>(params.n);
    const int64_t slice_n = std::clamp<int64_t>(
        static_cast<int64_t>(options.slice_flops / std::max(per_image, 1.0)), 1, params.n);
    for (int64_t done_n = 0; done_n < params.n; done_n += slice_n) {
      Conv2dParams slice = params;
      slice.n = std::min(slice_n, params.n - done_n);
      ConvArgs slice_args = args;
      slice_args.input = static_cast<const char*>(args.input) + done_n * params.input_image_bytes();
      slice_args.output = static_cast<char*>(args.output) + done_n * params.output_image_bytes();
      if (params.has_residual) {
        slice_args.residual =
            static_cast<const char*>(args.residual) + done_n * params.residual_image_bytes();
      }
      AcquireAll(*yielded);
      *yielded = true;
      absl::Status s = options.backend->Run(slice, slice_args, threads);
      ReleaseAll();
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }

  // Runs the live jobs of `batch` (dead ones are given back first) and gives them back.
  void Run(std::unique_ptr<Batch> batch, double predicted_s) {
    const bool one_thread = batch->one_thread;
    // Pool-seconds: a one-thread batch occupies 1/threads of the pool while it runs.
    const double queued = one_thread ? predicted_s / threads : predicted_s;
    if (predicted_s > 0) {
      absl::MutexLock lock(&mu);
      counters.queued_batches++;
      counters.queued_seconds += queued;
    }
    if (one_thread) AcquireOne();
    // The one lifecycle check, once the job is about to get the CPU.
    const absl::Time now = options.clock->Now();
    RemoveDeadJobs(batch.get(), now, "before launch on cpu",
                   [this](std::unique_ptr<Conv2dJob> job, const absl::Status& s) {
                     std::vector<std::unique_ptr<Conv2dJob>> one;
                     one.push_back(std::move(job));
                     hooks.complete(std::move(one), s);
                   });
    std::vector<std::unique_ptr<Conv2dJob>>& live = batch->jobs;
    const Conv2dParams& params = batch->params;
    absl::Status status;
    absl::Time start = now, end = now;
    if (!live.empty()) {
      const Conv2dJob& head = *live.front();
      ConvArgs args;
      args.weight = head.weight;
      args.bias = head.bias;
      args.weight_id = batch->weight_id;
      if (head.registered_weight != nullptr) args.prepacked = &head.registered_weight->prepacked();
      start = options.clock->Now();
      if (one_thread) {
        const bool gather = live.size() > 1;
        if (gather) {
          // N is the outermost dimension in both layouts: each job is one contiguous slice.
          GatherScratch& scratch = gather_scratch;
          void* input = GatherScratch::Reserve(&scratch.input, params.n * params.input_image_bytes());
          Gather(live, &Conv2dJob::input, params.input_image_bytes(), input);
          args.input = input;
          if (params.has_residual) {
            void* residual = GatherScratch::Reserve(&scratch.residual,
                                                    params.n * params.residual_image_bytes());
            Gather(live, &Conv2dJob::residual, params.residual_image_bytes(), residual);
            args.residual = residual;
          }
          args.output =
              GatherScratch::Reserve(&scratch.output, params.n * params.output_image_bytes());
        } else {
          args.input = head.input;
          args.residual = head.residual;
          args.output = head.output;
        }
        status = options.backend->Run(params, args, 1);
        if (gather && status.ok()) {
          const char* src = static_cast<const char*>(args.output);
          for (const auto& job : live) {
            const int64_t bytes = job->params.n * params.output_image_bytes();
            std::memcpy(job->output, src, static_cast<size_t>(bytes));
            src += bytes;
          }
        }
      } else {
        // Whole-pool jobs are not concatenated (two more copies of large tensors would cost
        // more than batching saves): each runs at its own N, one after another.
        bool yielded = false;
        for (const auto& job : live) {
          ConvArgs job_args = args;
          job_args.input = job->input;
          job_args.residual = job->residual;
          job_args.output = job->output;
          status = RunSliced(job->params, job_args, &yielded);
          if (!status.ok()) break;
        }
      }
      end = options.clock->Now();
    }
    if (one_thread) ReleaseOne();
    if (!status.ok()) {
      spdlog::error("batch {} ({} jobs) failed on cpu: {}", params.ToString(), live.size(),
                    status.ToString());
    }
    const double seconds = absl::ToDoubleSeconds(end - start);
    {
      absl::MutexLock lock(&mu);
      DeviceCounters& c = counters;
      if (!live.empty()) {
        c.batches_done++;
        c.batched_jobs += static_cast<int64_t>(live.size());
        c.busy_seconds += seconds;
        if (status.ok()) {
          c.jobs_done += static_cast<int64_t>(live.size());
          c.gflop_done += params.flops() * 1e-9;
        }
      }
      if (predicted_s > 0) {
        c.queued_batches--;
        c.queued_seconds = c.queued_batches == 0 ? 0 : c.queued_seconds - queued;
      }
    }
    if (live.empty()) return;
    if (hooks.report) {
      ExecutionReport r;
      r.device = -1;
      r.params = params;
      r.one_thread = one_thread;
      r.ok = status.ok();
      r.compute_seconds = seconds;
      hooks.report(r);
    }
    for (auto& job : live) {
      ExecTimestamps& ts = job->timestamps;
      ts.compute_start = start;
      ts.compute_end = end;
      ts.batch_jobs = static_cast<int>(live.size());
      ts.batch_n = params.n;
      ts.device = -1;
    }
    hooks.complete(std::move(live), status);
  }

  void FallbackLoop() {
    for (;;) {
      std::unique_ptr<Batch> batch;
      {
        absl::MutexLock lock(&mu);
        auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return !later.empty() || closed; };
        mu.Await(absl::Condition(&ready));
        if (later.empty()) return;
        batch = std::move(later.front());
        later.pop_front();
      }
      Run(std::move(batch), 0);
    }
  }
};

absl::StatusOr<std::unique_ptr<CpuExecutor>> CpuExecutor::Create(const Options& options,
                                                                 Hooks hooks) {
  if (options.backend == nullptr || options.clock == nullptr || !hooks.complete) {
    return absl::InvalidArgumentError("CpuExecutor needs a backend, a clock and a complete hook");
  }
  if (!(options.slice_flops >= 1e6 && options.slice_flops <= 1e15)) {
    return absl::InvalidArgumentError(
        absl::StrCat("slice_flops must be in [1e6, 1e15]; was ", options.slice_flops));
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->hooks = std::move(hooks);
  impl->threads = options.backend->threads();
  impl->free_slots = impl->threads;
  if (options.fallback_thread) {
    impl->fallback = std::thread([raw = impl.get()] { raw->FallbackLoop(); });
  }
  return std::unique_ptr<CpuExecutor>(new CpuExecutor(std::move(impl)));
}

CpuExecutor::CpuExecutor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CpuExecutor::~CpuExecutor() { Close(); }

void CpuExecutor::Execute(std::unique_ptr<Batch> batch, double predicted_s) {
  impl_->Run(std::move(batch), predicted_s);
}

void CpuExecutor::ExecuteLater(std::unique_ptr<Batch> batch) {
  absl::MutexLock lock(&impl_->mu);
  impl_->later.push_back(std::move(batch));
}

void CpuExecutor::Close() {
  {
    absl::MutexLock lock(&impl_->mu);
    impl_->closed = true;
  }
  if (impl_->fallback.joinable()) impl_->fallback.join();
}

DeviceCounters CpuExecutor::counters() const {
  absl::MutexLock lock(&impl_->mu);
  return impl_->counters;
}

}  // namespace sparkle
