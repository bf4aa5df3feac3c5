// Clock: the engine's only source of time, injected through options so that tests can use a
// FakeClock (tests/testing/fake_clock.h) that moves only when told to.
#pragma once

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace sparkle {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
  // The process-wide real clock (absl::Now). Never null, never destroyed.
  static Clock* Real();
};

}  // namespace sparkle
