// InferenceStats: Triton-style cumulative statistics of the conv2d model (what
// `ModelStatistics` returns and `sparklectl stats` prints), recorded per completed request from
// the same RequestOutcome as the Prometheus metrics.
//
// Mapping to Triton's InferStatistics (durations summed over requests, in ns):
//   success / fail   received → response ready, by outcome
//   queue            the `queue` stage (ShapeBatcher)
//   compute_input    CPU: batch_formation (worker pickup, input gather); GPU: h2d
//   compute_infer    compute
//   compute_output   CPU: output (scatter of a batch's output); GPU: d2h
// What counts in fail (as Triton: a request that reached the model and did not succeed): a
// request that was read and names conv2d (version empty or 1), then was refused or failed:
// invalid (any parse error but an unknown model or version), over a cost limit or the in-flight
// budget, queue full, draining, deadline expired, cancelled, device or compute error. Its
// duration runs from receipt to the refusal or the engine's done. Not counted anywhere here:
// calls refused before the request is read (authentication, a message above
// --max_message_bytes, bytes that are not a ModelInferRequest) and requests for another
// model or version (NOT_FOUND), which are not this model's (Triton keeps no statistics for them
// either). Prometheus counts every refusal (sparkle_rejected_requests_total, docs/metrics.md).
// Stage statistics count successful requests only. Per batch size (N of the executed batch),
// `executions` counts executed batches: each request of n samples in a batch of N adds n/N of
// an execution, so whole batches give whole counts (see BatchSizes()).
//
// Thread-safe: Record takes one mutex for a handful of additions.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/request_outcome.h"

namespace sparkle {

class InferenceStats {
 public:
  struct Duration {
    uint64_t count = 0;
    uint64_t ns = 0;
  };
  struct BatchSize {
    int64_t batch_size = 0;   // N of the executed batch
    uint64_t executions = 0;  // executed batches of that N (completed ones)
    Duration compute_input, compute_infer, compute_output;  // per execution
  };
  struct Snapshot {
    Duration success, fail, queue, compute_input, compute_infer, compute_output;
    uint64_t inference_count = 0;                   // samples (sum of N) of successful requests
    uint64_t execution_count = 0;                   // executed batches with a successful request
    absl::Time last_inference = absl::UnixEpoch();  // when the last request completed
    std::vector<BatchSize> batch_sizes;             // ascending batch_size
  };

  // A request the engine completed (successfully or not).
  void Record(const RequestOutcome& outcome);
  // A request for this model refused before the engine took it (see "What counts in fail"):
  // counts in fail, `received` to now.
  void RecordRefused(absl::Time received);
  Snapshot Get() const;

 private:
  // Per batch size, summed per request and scaled by n/N at read time.
  struct BatchAccum {
    uint64_t samples = 0;         // sum of request n
    double input_ns_samples = 0;  // sum of duration_ns * n
    double infer_ns_samples = 0;
    double output_ns_samples = 0;
  };

  mutable absl::Mutex mu_;
  Snapshot totals_ ABSL_GUARDED_BY(mu_);  // batch_sizes and execution_count unused here
  std::map<int64_t, BatchAccum> batches_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sparkle
