// Router: the CPU/GPU cost model. Pure functions of their arguments (no clock, no state), so
// that every decision can be tested on a table of rates.
//
// For one batch and one device the predicted completion time is
//
//   CPU:  queue_ahead + flops / compute_rate
//   GPU:  queue_ahead + launch_overhead + h2d_bytes / h2d_rate + flops / compute_rate
//                     + d2h_bytes / d2h_rate
//
// where h2d_bytes counts the weights (and bias) only when they are not already resident on
// that GPU. The router picks the earliest predicted completion among the devices the request
// allows (DeviceRequest): `auto` any usable device, `cpu` the CPU, `gpu` the best usable GPU,
// `gpu:N` that GPU. An explicit device is never silently replaced (docs/protocol.md): an absent one
// is FAILED_PRECONDITION, an unhealthy one UNAVAILABLE.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/device_request.h"

namespace sparkle {

// The work of one batch, as the cost model sees it.
struct BatchCost {
  double flops = 0;            // useful FLOP (Conv2dParams::flops of the batch), >= 0
  int64_t input_bytes = 0;     // host → device bytes of the inputs, >= 0
  int64_t weight_bytes = 0;    // host → device bytes of weight + bias when not resident, >= 0
  int64_t output_bytes = 0;    // device → host bytes of the outputs, >= 0
};

// One execution resource at decision time.
struct DeviceView {
  int gpu = -1;                   // -1: the CPU pool; >= 0: that GPU's ordinal
  bool healthy = true;            // false: latched unhealthy, never chosen
  std::string unhealthy_reason;   // for the UNAVAILABLE message
  // False when the device cannot take this batch at all (unsupported geometry, batch larger
  // than a staging slot): not a candidate for `auto`; an explicit request gets `unusable_reason`.
  bool usable = true;
  std::string unusable_reason;
  bool weights_resident = false;  // GPU: the batch's weights are already on the device
  double queue_ahead_s = 0;       // predicted seconds of work routed here and not finished
  double compute_gflops = 1;      // measured rate for this shape class (or the device default), > 0
  double h2d_gbps = 0;            // GPU: host → device GB/s (1e9 bytes/s), > 0
  double d2h_gbps = 0;            // GPU: device → host GB/s, > 0
  double launch_overhead_s = 0;   // GPU: fixed cost per batch (submit, launch, sync), >= 0
};

// Seconds from now until the batch would complete on `device` (see the header comment).
double PredictSeconds(const BatchCost& cost, const DeviceView& device);

struct RouteDecision {
  size_t choice = 0;         // index into the `devices` argument of Route
  double predicted_s = 0;    // PredictSeconds for that device
};

// Picks the device for one batch. `devices` holds the CPU pool (gpu == -1) and every GPU the
// engine opened, in any order. `no_gpu_reason` explains an empty GPU list in error messages.
// Errors: FAILED_PRECONDITION when the request names a GPU that does not exist (or any GPU
// when there is none), or when the named device cannot run this batch; UNAVAILABLE when every
// GPU the request allows is latched unhealthy; INTERNAL when `devices` has no CPU entry.
// Ties go to the earlier entry.
absl::StatusOr<RouteDecision> Route(const BatchCost& cost, const DeviceRequest& request,
                                    const std::vector<DeviceView>& devices,
                                    const std::string& no_gpu_reason);

// Admission check for a request before any batch exists: the same errors as Route for absent
// or unhealthy devices (`usable` is not looked at). OK for auto and cpu.
absl::Status CheckDeviceAvailable(const DeviceRequest& request,
                                  const std::vector<DeviceView>& devices,
                                  const std::string& no_gpu_reason);

// The smallest batch, in FLOP, from which `gpu` is predicted to finish before `cpu` with
// empty queues, for a shape class that moves `in_per_flop` input bytes and `out_per_flop`
// output bytes per FLOP, plus `fixed_bytes` of weights once per batch (0 when resident). The
// batch grows along N, so FLOP and input/output bytes grow together:
//   gpu wins  ⇔  L + fixed/H + F·(1/Rg + in/H + out/D) < F/Rc
//             ⇔  F > (L + fixed/H) / (1/Rc − 1/Rg − in/H − out/D)
// (L launch overhead, H and D the H2D and D2H rates, Rc and Rg the compute rates). +infinity
// when the GPU never wins (the denominator is <= 0), 0 when it always does.
double CrossoverFlops(const DeviceView& cpu, const DeviceView& gpu, double in_per_flop,
                      double out_per_flop, double fixed_bytes);

}  // namespace sparkle
