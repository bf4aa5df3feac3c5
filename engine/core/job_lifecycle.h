// The one test of whether a queued job is still worth running, applied wherever a job waits:
// in the queue (ShapeBatcher), before a CPU launch (CpuExecutor) and before a GPU submit
// (GpuDispatcher). A job found dead there completes with the status this returns.
#pragma once

#include <memory>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "engine/core/batch.h"
#include "engine/core/job.h"

namespace sparkle {

// OK while the job is live at `now`; CANCELLED "cancelled by the client <where>" once its cancel
// flag is set; DEADLINE_EXCEEDED "deadline expired <where> after <wait> in the engine" once its
// deadline has passed. `where` is e.g. "in the queue", "before launch on cpu".
absl::Status StillWorthRunning(const Conv2dJob& job, absl::Time now, absl::string_view where);

// Takes every job that is no longer worth running out of `batch` (the others keep their order,
// and params.n stays their sum) and hands each to `dead` with its status.
void RemoveDeadJobs(Batch* batch, absl::Time now, absl::string_view where,
                    absl::FunctionRef<void(std::unique_ptr<Conv2dJob>, const absl::Status&)> dead);

}  // namespace sparkle
