// Batch: jobs of one shape key (same geometry and weight_key), concatenated along N when run.
// Formed by the scheduler, executed once, then every job's done is called. Owns its jobs.
#pragma once

#include <memory>
#include <vector>

#include "absl/time/time.h"
#include "engine/core/conv2d_params.h"
#include "engine/core/job.h"

namespace sparkle {

struct Batch {
  std::vector<std::unique_ptr<Conv2dJob>> jobs;  // >= 1, in the order they were enqueued
  Conv2dParams params;  // the jobs' common geometry, with n = the sum of their n
  absl::Time formed = absl::InfinitePast();
};

}  // namespace sparkle
