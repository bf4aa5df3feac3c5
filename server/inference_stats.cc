#include "server/inference_stats.h"

#include <cmath>

#include "absl/time/clock.h"

namespace sparkle {
namespace {

uint64_t Ns(double seconds) { return static_cast<uint64_t>(std::llround(seconds * 1e9)); }

void Add(InferenceStats::Duration* d, double seconds) {
  d->count++;
  d->ns += Ns(seconds);
}

}  // namespace

void InferenceStats::Record(const RequestOutcome& outcome) {
  const StageDurations s = StagesOf(outcome);
  const bool ok = outcome.code == absl::StatusCode::kOk;
  // Time from the engine's timestamps when set, else now (a request that never ran).
  const absl::Time done =
      outcome.timestamps.done != absl::InfinitePast() ? outcome.timestamps.done : absl::Now();
  absl::MutexLock lock(&mu_);
  Snapshot& t = totals_;
  if (done > t.last_inference) t.last_inference = done;
  if (!ok) {
    Add(&t.fail, s.total);
    return;
  }
  Add(&t.success, s.total);
  t.inference_count += static_cast<uint64_t>(outcome.n);
  if (s.has_queue) Add(&t.queue, s.queue);
  if (!s.executed) return;
  const double input = s.on_gpu ? s.h2d : s.batch_formation;
  const double output = s.on_gpu ? s.d2h : s.output;
  Add(&t.compute_input, input);
  Add(&t.compute_infer, s.compute);
  Add(&t.compute_output, output);

  const int64_t batch_n = outcome.timestamps.batch_n;
  if (batch_n <= 0 || outcome.n <= 0) return;
  BatchAccum& b = batches_[batch_n];
  const double n = static_cast<double>(outcome.n);
  b.samples += static_cast<uint64_t>(outcome.n);
  b.input_ns_samples += input * 1e9 * n;
  b.infer_ns_samples += s.compute * 1e9 * n;
  b.output_ns_samples += output * 1e9 * n;
}

void InferenceStats::RecordRefused(absl::Time received) {
  RequestOutcome outcome;
  outcome.code = absl::StatusCode::kUnknown;  // any failure: only ok-or-not matters here
  outcome.received = received;
  outcome.timestamps.done = absl::Now();
  Record(outcome);
}

InferenceStats::Snapshot InferenceStats::Get() const {
  absl::MutexLock lock(&mu_);
  Snapshot out = totals_;
  out.execution_count = 0;
  out.batch_sizes.clear();
  for (const auto& [batch_n, b] : batches_) {
    BatchSize size;
    size.batch_size = batch_n;
    // Whole executions only: a batch whose requests are still completing counts once all have.
    size.executions = b.samples / static_cast<uint64_t>(batch_n);
    if (size.executions == 0) continue;
    const double per_execution = 1.0 / static_cast<double>(batch_n);
    auto duration = [&](double ns_samples) {
      return Duration{size.executions,
                      static_cast<uint64_t>(std::llround(ns_samples * per_execution))};
    };
    size.compute_input = duration(b.input_ns_samples);
    size.compute_infer = duration(b.infer_ns_samples);
    size.compute_output = duration(b.output_ns_samples);
    out.execution_count += size.executions;
    out.batch_sizes.push_back(size);
  }
  return out;
}

}  // namespace sparkle
