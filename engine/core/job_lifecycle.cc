#include "engine/core/job_lifecycle.h"

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

}  // namespace sparkle
