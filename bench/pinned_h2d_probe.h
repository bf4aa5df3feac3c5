// PinnedH2dProbe: the reference figure of gpu_stream_bench, host-to-device bandwidth of plain
// pinned copies (hipHostMalloc → hipMalloc, hipMemcpyAsync back to back on one stream, timed
// with events). Plain C++ header; pinned_h2d_probe.hip is compiled for SPARKLE_GPU.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"

namespace sparkle::bench {

// Bytes per second of `copies` pinned H2D copies of `bytes` each on `device` (after one
// warm-up copy). UNAVAILABLE naming the HIP call on any error.
absl::StatusOr<double> PinnedH2dBytesPerSecond(int device, int64_t bytes, int copies);

}  // namespace sparkle::bench
