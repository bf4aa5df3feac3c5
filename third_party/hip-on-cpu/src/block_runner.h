// BlockRunner: runs the threads of one kernel block on the calling OS thread, as
// Boost.Context fibers that switch only at __syncthreads().
#pragma once

#include <hip/hip_runtime.h>

#include <cstddef>
#include <cstdint>
#include <functional>

namespace hipemu::detail {

// Runs every thread of one block of `body` (t_block_idx, t_block_dim and the other per-launch
// thread-locals must already be set). Threads start in order on one fiber; a thread that calls
// __syncthreads() keeps that fiber and the next thread starts on a new one, so a block without
// barriers makes exactly one fiber and two switches. Adds the barrier switches to *switches.
// `stack_bytes` is the usable stack of each fiber (a guard page is added below it).
void RunBlock(const std::function<void()>& body, dim3 block_dim, size_t stack_bytes,
              int64_t* switches);

}  // namespace hipemu::detail
