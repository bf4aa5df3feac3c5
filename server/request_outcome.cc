#include "server/request_outcome.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace sparkle {
namespace {

bool Set(absl::Time t) { return t != absl::InfinitePast(); }

// Seconds from a to b when both are set; clamped at 0 (clocks are monotonic per thread, but a
// stage measured on two threads may read a few ns negative).
bool Span(absl::Time a, absl::Time b, double* seconds) {
  if (!Set(a) || !Set(b)) return false;
  *seconds = std::max(0.0, absl::ToDoubleSeconds(b - a));
  return true;
}

}  // namespace

StageDurations StagesOf(const RequestOutcome& outcome) {
  const ExecTimestamps& t = outcome.timestamps;
  StageDurations s;
  s.executed = Set(t.compute_start);
  s.on_gpu = t.device >= 0;
  s.has_queue = Span(t.enqueued, t.batch_formed, &s.queue);
  if (s.executed) {
    s.has_compute = Span(t.compute_start, t.compute_end, &s.compute);
    if (s.on_gpu) {
      s.has_h2d = Span(t.batch_formed, t.h2d_end, &s.h2d);
      s.has_d2h = Span(t.compute_end, t.d2h_end, &s.d2h);
    } else {
      s.has_batch_formation = Span(t.batch_formed, t.compute_start, &s.batch_formation);
      s.has_output = Span(t.compute_end, t.done, &s.output);
    }
  }
  Span(outcome.received, t.done, &s.total);
  return s;
}

std::string DeviceName(int device, bool executed) {
  if (!executed) return "none";
  if (device < 0) return "cpu";
  return absl::StrCat("gpu:", device);
}

}  // namespace sparkle
