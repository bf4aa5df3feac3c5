// InProcessOneDnn: the baseline a user would write without sparkled: oneDNN called in-process on
// plain NCHW tensors, the primitive created once, weights reordered once, src/dst reorders
// timed (they are part of the job). Deliberately independent of engine/cpu so that the daemon
// is not measured against itself.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/core/conv2d_params.h"

namespace sparkle::bench {

class InProcessOneDnn {
 public:
  // winograd: ask for oneDNN's Winograd algorithm (falls back to direct when unavailable;
  // algorithm() tells which one was created).
  InProcessOneDnn(const Conv2dParams& p, const std::vector<float>& weight, bool winograd);
  ~InProcessOneDnn();
  // One convolution, NCHW in and out.
  void Run(const float* input, float* output);
  const std::string& algorithm() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sparkle::bench
