// sparkle_bench router: one mixed stream of conv jobs through an in-process Engine with a fake
// GPU (tests/testing/fake_gpu_device.h: it sleeps for a modelled time and computes nothing),
// under the three device policies (all-CPU, all-GPU, auto) in the same run, several rounds.
#pragma once

namespace sparkle::bench {

struct RouterBenchOptions {
  int rounds = 3;
  int threads = 2;            // CPU compute threads
  int jobs = 2000;            // jobs in the stream (the same sequence for every policy)
  int in_flight = 8;          // jobs outstanding at once (closed loop)
  // The fake GPU's compute rate: ~10x what oneDNN reaches on this 2-vCPU VM for the big
  // layers (~300 GFLOP/s, docs/performance.md). Fixed rather than measured at start: a probe
  // on a loaded machine made it anything from 3 to 3000.
  double gpu_gflops = 3000;
  double gpu_gbps = 12;       // its host<->device rate, each direction (pinned PCIe 3 x16)
  double gpu_launch_s = 50e-6;   // its fixed cost per batch
};

// Prints per-round jobs/s and the min/median/max summary; returns a process exit code.
int RouterBench(const RouterBenchOptions& options);

}  // namespace sparkle::bench
