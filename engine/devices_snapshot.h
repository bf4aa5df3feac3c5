// DevicesSnapshot: what Engine::Devices() reports about the execution resources (the CPU pool
// and each GPU) and the router's decisions, for status pages and metrics. Plain values.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sparkle {

struct DeviceSnapshot {
  std::string name;              // "cpu", "gpu:0", ...
  int index = -1;                // GPU ordinal; -1 for the CPU pool
  std::string detail;            // the oneDNN ISA, or the GPU model and platform
  bool healthy = true;
  std::string unhealthy_reason;  // why a GPU latched unhealthy
  int threads = 0;               // CPU worker threads; 0 for a GPU
  int64_t memory_bytes = 0;      // GPU device memory; 0 for the CPU
  int64_t memory_used_bytes = 0;
  int64_t jobs_done = 0;         // jobs completed successfully here
  int64_t batches_done = 0;      // batches executed here (failed ones included)
  double gflop_done = 0;         // useful GFLOP of the successful batches
  double busy_seconds = 0;       // CPU: wall time of batches; GPU: compute-stream time
  int64_t queued_batches = 0;    // routed here and not finished
  double queued_seconds = 0;     // their predicted seconds (the router's "queue ahead")
  int64_t decisions = 0;         // batches the router sent here
  double measured_gflops = 0;    // the router's device-wide compute-rate estimate
  double measured_transfer_gbps = 0;  // GPU: host<->device estimate, GB/s
  double launch_overhead_s = 0;  // GPU: fixed cost per batch the router assumes
};

struct RouterSnapshot {
  std::string policy;            // where "auto" requests go: "auto", "cpu", "gpu", "gpu:N"
  std::string gpu_fault_policy;  // "cpu" (reroute) or "fail"
  int64_t decisions_cpu = 0;     // batches sent to the CPU pool
  int64_t decisions_gpu = 0;     // batches sent to any GPU
  // Smallest batch (MFLOP) of the most recently routed shape class from which the best healthy
  // GPU is predicted to finish first with empty queues; 0 when there is no usable GPU or
  // nothing was routed yet, +inf when the GPU never wins for that class.
  double crossover_mflop = 0;
  std::string crossover_shape;   // that shape class (Conv2dParams::ShapeClass)
  std::string gpu_fallback_reason;  // why no GPU is used ("built with SPARKLE_GPU=off", ...)
  std::string gpu_platform;      // what the binary was built for: off | amd | nvidia | emu
};

struct DevicesSnapshot {
  std::vector<DeviceSnapshot> devices;  // the CPU pool first, then the GPUs by ordinal
  RouterSnapshot router;
};

}  // namespace sparkle
