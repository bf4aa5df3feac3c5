// ExecTimestamps: the fixed points at which the engine records time for one job. The server
// turns the differences into latency figures (queue, batch formation, compute); the engine
// itself never aggregates them.
#pragma once

#include "absl/time/time.h"

namespace sparkle {

struct ExecTimestamps {
  absl::Time enqueued = absl::InfinitePast();       // accepted by Engine::Submit
  absl::Time batch_formed = absl::InfinitePast();   // taken out of its queue into a batch
  absl::Time compute_start = absl::InfinitePast();  // backend started the batch
  absl::Time compute_end = absl::InfinitePast();    // backend finished the batch
  absl::Time h2d_end = absl::InfinitePast();        // GPU only: inputs on the device
  absl::Time d2h_end = absl::InfinitePast();        // GPU only: outputs back in host memory
  absl::Time done = absl::InfinitePast();           // just before the done callback runs
  int batch_jobs = 0;                               // jobs in the executed batch
  int64_t batch_n = 0;                              // N of the executed batch
  int device = -1;                                  // -1: the CPU pool; >= 0: that GPU
  int level = 0;  // priority level the job was queued at (1 = highest); 0: never queued
};

}  // namespace sparkle
