// Batch: jobs of one shape key (same geometry, weights and device request), concatenated along N
// when run. Formed by the scheduler, given a confirmed weight identity by the engine, executed by
// one DeviceExecutor, then every job is completed. Owns its jobs. Lives from formation to
// completion: nothing downstream recomputes its totals.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/time/time.h"
#include "engine/core/conv2d_params.h"
#include "engine/core/job.h"
#include "engine/core/weight_id.h"

namespace sparkle {

struct Batch {
  // >= 1, in service order: the batcher's fair-queueing tag order (for one client, the order
  // they were enqueued), so the job of a client who waited least-served is answered first.
  std::vector<std::unique_ptr<Conv2dJob>> jobs;
  Conv2dParams params;  // the jobs' common geometry, with n = the sum of their n
  absl::Time formed = absl::InfinitePast();
  // Set by the engine before execution: the jobs' shared confirmed weight identity (empty: one
  // job whose weights have none), and whether the CPU runs the batch on one thread (small jobs,
  // side by side) or on the whole pool.
  WeightId weight_id;
  bool one_thread = false;

  // Appends a job (same geometry), keeping params.n the sum.
  void Add(std::unique_ptr<Conv2dJob> job) {
    if (jobs.empty()) {
      params = job->params;
      params.n = 0;
    }
    params.n += job->params.n;
    jobs.push_back(std::move(job));
  }
};

}  // namespace sparkle
