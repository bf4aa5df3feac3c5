#include "engine/core/job_lifecycle.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace sparkle {

absl::Status StillWorthRunning(const Conv2dJob& job, absl::Time now, absl::string_view where) {
  if (job.IsCancelled()) return absl::CancelledError(absl::StrCat("cancelled by the client ", where));
  if (job.deadline <= now) {
    return absl::DeadlineExceededError(
        absl::StrCat("deadline expired ", where, " after ",
                     absl::FormatDuration(now - job.timestamps.enqueued), " in the engine"));
  }
  return absl::OkStatus();
}

void RemoveDeadJobs(Batch* batch, absl::Time now, absl::string_view where,
                    absl::FunctionRef<void(std::unique_ptr<Conv2dJob>, const absl::Status&)> dead) {
  std::vector<std::unique_ptr<Conv2dJob>> jobs = std::move(batch->jobs);
  batch->jobs.clear();
  for (auto& job : jobs) {
    absl::Status s = StillWorthRunning(*job, now, where);
    if (s.ok()) {
      batch->Add(std::move(job));
    } else {
      dead(std::move(job), s);
    }
  }
}

}  // namespace sparkle
