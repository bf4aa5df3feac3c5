// TestJob: one engine job with its own random buffers, the oracle's expected output, and its
// recorded completion, for tests that drive sparkle::Engine directly.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "engine/core/device_request.h"
#include "engine/core/job.h"
#include "engine/cpu/conv2d_ref.h"
#include "tests/testing/shape_table.h"

namespace sparkle::testing {

struct TestJob {
  Conv2dParams params;
  DeviceRequest device;
  std::vector<float> input, weight, bias, output, expected;
  absl::Notification done;
  absl::Status status;
  ExecTimestamps timestamps;

  // Random input, weights (or a copy of `shared_weight`, so that jobs can share a weight
  // identity) and bias from `seed`; the output starts as -7 so that an unwritten output fails.
  TestJob(const Conv2dParams& p, uint32_t seed, const std::vector<float>* shared_weight = nullptr,
          DeviceRequest d = DeviceRequest::Auto())
      : params(p), device(d) {
    input = RandomFloats(p.input_elements(), seed);
    weight = shared_weight ? *shared_weight : RandomFloats(p.weight_elements(), seed + 1000);
    if (p.has_bias) bias = RandomFloats(p.k, seed + 2000);
    output.assign(p.output_elements(), -7.0f);
    expected.resize(p.output_elements());
    Conv2dRef(p, input.data(), weight.data(), p.has_bias ? bias.data() : nullptr,
              expected.data());
  }
  TestJob(const Conv2dParams& p, uint32_t seed, DeviceRequest d) : TestJob(p, seed, nullptr, d) {}

  // A job over these buffers whose done records the status and timestamps, then notifies.
  std::unique_ptr<Conv2dJob> Make() {
    auto job = std::make_unique<Conv2dJob>();
    job->params = params;
    job->device = device;
    job->input = input.data();
    job->weight = weight.data();
    job->bias = params.has_bias ? bias.data() : nullptr;
    job->output = output.data();
    job->done = [this](const absl::Status& s, const ExecTimestamps& t) {
      status = s;
      timestamps = t;
      done.Notify();
    };
    return job;
  }

  // Relative L2 error of the output against the oracle.
  double Error() const {
    return RelativeL2Error(output.data(), expected.data(), params.output_elements());
  }
};

}  // namespace sparkle::testing
