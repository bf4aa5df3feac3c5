// Test control of sparkle's HIP-on-CPU emulator (sparkle_hip_emu): how many devices exist and
// how big they are, fault injection, launch delay, counters. Thread-safe. Only tests and
// benchmarks built with SPARKLE_GPU=emu include this header.
//
// Until Configure() is called the emulator reads HIPEMU_DEVICES (default 0) and
// HIPEMU_MEMORY_MB (default 1024) from the environment on first use, so a binary built for the
// emulator behaves like a machine without a GPU unless a test or the environment asks for one.
#pragma once

#include <hip/hip_runtime_api.h>

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace hipemu {

struct Config {
  // Number of emulated devices. Range [0, 64]; 0 = hipGetDeviceCount fails with
  // hipErrorNoDevice.
  int device_count = 0;
  // Device memory per device in bytes (hipMalloc fails with hipErrorOutOfMemory beyond it).
  // Range [0, 2^46].
  int64_t memory_bytes = int64_t{1} << 30;
  // hipDeviceProp_t fields. warp_size is 64 by default to flush out warp-32 assumptions.
  int multiprocessor_count = 4;   // range [1, 1024]
  int warp_size = 64;             // 32 or 64
  size_t shared_mem_per_block = 64 * 1024;  // bytes, limit of dynamic shared memory
  int max_threads_per_block = 1024;         // range [1, 1024]
  // Stack of each GPU-thread fiber, bytes (with a guard page below). Range [16 KiB, 64 MiB].
  size_t fiber_stack_bytes = 256 * 1024;
};

// Replaces the device table. Waits for every stream to go idle first, then destroys every
// stream, event-less state and allocation of the previous configuration (their handles become
// invalid), clears sticky errors, faults, delays and counters. Call it between tests.
void Configure(const Config& config);
Config CurrentConfig();

// The `nth` kernel launch enqueued on `device` from now on (1 = the next one) fails when it
// would run: the kernel does not run and `error` latches on the device, sticky: every later call
// on that device (synchronize, query, copy, malloc, launch) returns it, like a GPU after an
// illegal memory access. Configure() clears it.
void InjectLaunchFault(int device, int64_t nth, hipError_t error = hipErrorIllegalAddress);

// Every kernel launch on `device` sleeps `delay` before it runs (makes queues and back-pressure
// observable). Range [0, 10 s]; 0 = none.
void SetLaunchDelay(int device, std::chrono::microseconds delay);

struct Counters {
  int64_t kernel_launches = 0;     // kernels that ran (faulted or skipped ones excluded)
  int64_t blocks_run = 0;
  int64_t fiber_switches = 0;      // context switches made by __syncthreads
  int64_t bytes_host_to_device = 0;
  int64_t bytes_device_to_host = 0;
  int64_t bytes_device_to_device = 0;
  int64_t memsets = 0;
  int64_t memory_used_bytes = 0;   // hipMalloc'd and not yet freed
  int streams_busy_max = 0;        // most operations running at once on the device's streams
};
Counters GetCounters(int device);

}  // namespace hipemu
