// CpuBackend: conv2d on the CPU through oneDNN (Debian libdnnl 2.6, OpenMP runtime).
//
// Primitives are created once per (geometry with N, thread count) and cached; weights are
// reordered into oneDNN's preferred layout once per confirmed weight_id and kept (LRU, bounded
// in bytes; equal ids are equal bytes, engine/core/weight_id.h, so nothing is compared), or,
// for registered weights, kept in the caller's PrepackedWeights store (no compare, no eviction);
// temporary buffers (layout reorders, scratchpad) live in per-thread scratch that grows to the
// largest size seen and is reused, so steady-state calls allocate nothing and touch no fresh
// pages; scratch beyond Options::scratch_retain_bytes is freed after the call that needed it.
//
// The epilogue runs inside the convolution as oneDNN post-ops: the residual as a sum post-op
// (the residual is first placed in the convolution's destination, which the sum reads), then the
// activation as an eltwise post-op. Datatypes: FP32 natively; BF16 natively (oneDNN's bf16
// kernels, FP32 accumulation, output BF16 or FP32) where the ISA has bf16 instructions
// (avx512_core_bf16, amx), else converted to FP32; FP16 always converted to FP32 (oneDNN 2.6 has
// no f16 convolution on the CPU): inputs are widened by the layout reorders and the output
// narrowed by the destination reorder, so the arithmetic is FP32's. Path() and
// DescribeDatatypes() say which; Create logs it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/core/conv2d_params.h"
#include "engine/core/prepacked_weights.h"
#include "engine/core/weight_id.h"

namespace sparkle {

// Plain (NCHW or NHWC as params.layout says) tensors of one convolution, elements of
// params.dtype (the output: params.output_dtype).
struct ConvArgs {
  const void* input = nullptr;
  const void* weight = nullptr;    // [K, C/groups, R, S] always
  const void* bias = nullptr;      // [K] when params.has_bias
  const void* residual = nullptr;  // the output's shape and layout, when params.has_residual
  void* output = nullptr;
  // Confirmed identity of `weight` (engine/core/weight_id.h: equal ids are equal bytes); empty =
  // none (weights reordered on every call, nothing cached).
  WeightId weight_id;
  // Optional: the store of `weight`'s prepacked copies, for weights that are immutable while
  // the store lives (registered weights, engine/registry). The reordered copy is kept there, not
  // in the LRU cache: never evicted, and found without comparing the weight bytes. When the
  // store's budget refuses the copy, the call falls back to the LRU cache (needs weight_id).
  PrepackedWeights* prepacked = nullptr;
};

class CpuBackend {
 public:
  struct Options {
    // OpenMP threads one batch may use. 0 = the CPUs this process may run on
    // (sched_getaffinity, also capped by the cgroup cpu.max quota). Range [0, 1024].
    int threads = 0;
    // Use oneDNN's Winograd algorithm for 3×3, stride 1, dilation 1, groups 1, C and K >= 32 when
    // oneDNN offers it on this CPU and the call's weights are cached (a weight_id and room in
    // the weight cache): about 1.5x the direct rate here, reorders included; relative L2 error
    // < 1e-5 on the shape table. Uncached weights run direct: the Winograd weight transform
    // costs up to 50x the convolution. FP32 only (input and output): BF16/FP16 always run
    // direct. With an epilogue only where oneDNN's Winograd kernel takes it as post-ops (2.6 on
    // avx512_core: residual and/or relu; the oracle agrees within the same 1e-5): any other
    // activation makes the call run direct.
    bool allow_winograd = true;
    // Bytes of reordered weights kept across calls (LRU). Range [0, 2^40]; 0 disables the cache.
    int64_t weight_cache_bytes = int64_t{256} << 20;
    // Cached primitive sets (LRU), bounded in count, range [1, 65536], and in bytes as
    // PrimitiveBytes estimates them, range [1 MiB, 2^40]. oneDNN's own primitive cache, which
    // would hold a second reference to evicted primitives, is turned off at Create (it is
    // process-wide).
    int64_t max_primitives = 1024;
    int64_t max_primitive_bytes = int64_t{256} << 20;
    // Largest scratch of one call, in bytes: oneDNN's scratchpad plus the layout-reorder
    // buffers of src, dst and uncached weights. Checked once the primitive descriptor exists,
    // before the primitive or any buffer is made; when oneDNN's preferred (blocked) layouts
    // need more, the next choice (plain layouts) is tried, and with none left the call is
    // RESOURCE_EXHAUSTED naming the option. Range [1 MiB, 2^50]. The engine sets it from its
    // own EngineOptions::max_job_scratch_bytes.
    int64_t max_job_scratch_bytes = int64_t{512} << 20;
    // Per-thread scratch kept across calls so that steady-state calls touch no fresh pages; a
    // call whose scratch grew beyond it frees that thread's scratch when it returns, so the
    // memory of one large call is not kept for good. Bytes per thread, range [0, 2^40].
    int64_t scratch_retain_bytes = int64_t{64} << 20;
  };

  // How the CPU computes a datatype: natively (oneDNN's kernels of that type, FP32
  // accumulation) or converted to FP32 (widened on the way in, narrowed on the way out).
  enum class DatatypePath { kNative, kConvertedToFp32 };

  static absl::StatusOr<std::unique_ptr<CpuBackend>> Create(const Options& options);
  ~CpuBackend();

  // OK, INVALID_ARGUMENT for invalid p, or UNIMPLEMENTED with the reason oneDNN gives for not
  // supporting p.
  absl::Status Supports(const Conv2dParams& p) const;

  // Computes one convolution on the calling thread with `threads` OpenMP threads (1..threads()).
  // Thread-safe: several threads may run at once; no lock is held while computing.
  // INVALID_ARGUMENT for invalid params (or geometry oneDNN refuses as invalid), null pointers
  // or threads out of range; UNIMPLEMENTED if oneDNN cannot run p, RESOURCE_EXHAUSTED when out
  // of memory or above max_job_scratch_bytes, INTERNAL if oneDNN fails.
  absl::Status Run(const Conv2dParams& p, const ConvArgs& args, int threads);

  // The oneDNN implementation chosen for p at `threads` threads when the weights have a
  // weight_id, e.g. "brgconv:avx512_core" or "jit_fp32_wino_2x3:avx512_core" (creates and
  // caches the primitive if needed).
  absl::StatusOr<std::string> ImplementationName(const Conv2dParams& p, int threads);

  // Estimated bytes a cached primitive set for p holds (oneDNN's brgconv keeps tables per
  // output column: ~2 KiB × Q, measured), so that a client cannot fill memory with primitives of
  // absurd widths: the engine bounds it per job like scratch, the cache in total.
  static int64_t PrimitiveBytes(const Conv2dParams& p);

  int threads() const;       // resolved Options::threads
  std::string Isa() const;   // the ISA oneDNN dispatches to, e.g. "avx512_core"

  // How `type` is computed on this CPU: FP32 native; BF16 native where Isa() has bf16
  // (avx512_core_bf16, avx512_core_amx), else converted; FP16 converted.
  DatatypePath Path(DataType type) const;
  // One line for the log and `sparklectl status`, e.g. "FP32 native; BF16 native
  // (avx512_core_bf16); FP16 converted to FP32 (oneDNN 2.6 has no f16 convolution for
  // avx512_core_bf16)".
  std::string DescribeDatatypes() const;

 private:
  // Implementation details follow; API users need not read.
  struct Impl;
  explicit CpuBackend(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sparkle
