// RequestOutcome: what the server knows about one finished ModelInfer call, recorded by
// InferenceStats (Triton statistics) and ServerMetrics (Prometheus) from the same place, so
// that the two agree. StageDurations splits the engine's timestamps into the stages both report.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/core/exec_timestamps.h"

namespace sparkle {

// One accepted request, completed by the engine (successfully or not).
struct RequestOutcome {
  absl::StatusCode code = absl::StatusCode::kOk;
  ExecTimestamps timestamps;   // from the engine's done callback
  absl::Time received;         // ModelInfer entered the server (before parsing)
  int64_t n = 0;               // N (batch dimension) of the request
  int64_t response_bytes = 0;  // output tensor bytes sent back (0 unless OK)
};

// The stages of one request, in seconds, derived from consecutive timestamps. A stage that did
// not happen (a job dropped from the queue never computes; CPU jobs have no copies to and from
// a device) has `has_<stage>` false. Every present value is >= 0.
//
//   queue            enqueued → batch_formed       waiting in the ShapeBatcher
//   batch_formation  batch_formed → compute_start  CPU: waiting for a worker, gathering inputs
//   h2d              batch_formed → h2d_end        GPU: staging slot and copy to the device
//   compute          compute_start → compute_end   the convolution
//   d2h              compute_end → d2h_end         GPU: copy back to host memory
//   output           compute_end → done            CPU: scattering a batch's output
//   total            received → done               end to end inside the server
struct StageDurations {
  bool executed = false;  // the job ran on a device (compute_start was set)
  bool on_gpu = false;
  bool has_queue = false, has_batch_formation = false, has_h2d = false, has_compute = false,
       has_d2h = false, has_output = false;
  double queue = 0, batch_formation = 0, h2d = 0, compute = 0, d2h = 0, output = 0;
  double total = 0;
};

StageDurations StagesOf(const RequestOutcome& outcome);

// "cpu" for the CPU pool, "gpu:N" for a GPU, "none" when the job never reached a device: the
// same names as sparkle.v1.DeviceStatus.name.
std::string DeviceName(int device, bool executed);

}  // namespace sparkle
