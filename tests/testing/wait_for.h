// WaitFor: a bounded poll of a condition, for tests that wait for something to happen (a port,
// a counter, a health flip) instead of sleeping a fixed time.
#pragma once

#include <functional>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace sparkle::testing {

// Calls `condition` until it returns true (then true) or `timeout` has passed (then false,
// after one last call). Sleeps `poll` between calls.
inline bool WaitFor(const std::function<bool()>& condition, absl::Duration timeout,
                    absl::Duration poll = absl::Milliseconds(5)) {
  const absl::Time give_up = absl::Now() + timeout;
  while (absl::Now() < give_up) {
    if (condition()) return true;
    absl::SleepFor(poll);
  }
  return condition();
}

}  // namespace sparkle::testing
