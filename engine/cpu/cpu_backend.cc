#include "engine/cpu/cpu_backend.h"

#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <list>
#include <memory>
#include <new>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/status_macros.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "spdlog/spdlog.h"

namespace sparkle {
namespace {

using Tag = dnnl::memory::format_tag;
using Md = dnnl::memory::desc;

constexpr int kMaxThreads = 1024;
constexpr int64_t kMaxWeightCacheBytes = int64_t{1} << 40;
constexpr int64_t kMaxPrimitives = 65536;
// What a cached primitive set holds, as measured on oneDNN 2.6 (brgconv, avx512_core, this
// project's 2-core machine, /proc/self/status VmRSS around the first call): ~1.8 KiB per output
// column Q whatever P, N or C (brgconv keeps per-column tables: 354 MiB at Q = 200001, 4 MiB
// at Q = 1201), plus the JIT code and descriptors of a small primitive.
constexpr int64_t kPrimitiveBytesPerOutputColumn = 2048;
constexpr int64_t kPrimitiveBaseBytes = int64_t{64} << 10;

// CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota (containers
// often get a quota below the visible CPU count, and oversubscribed OpenMP teams crawl).
int AvailableCpus() {
  int cpus = 1;
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cpus = std::max(1, CPU_COUNT(&set));
  std::ifstream cpu_max("/sys/fs/cgroup/cpu.max");
  std::string quota;
  int64_t period = 0;
  if (cpu_max >> quota >> period && quota != "max" && period > 0) {
    const int64_t quota_us = std::atoll(quota.c_str());
    if (quota_us > 0) {
      cpus = static_cast<int>(std::min<int64_t>(cpus, (quota_us + period - 1) / period));
    }
  }
  return std::min(cpus, kMaxThreads);
}

std::string IsaName(dnnl::cpu_isa isa) {
  switch (isa) {
    case dnnl::cpu_isa::sse41:
      return "sse41";
    case dnnl::cpu_isa::avx:
      return "avx";
    case dnnl::cpu_isa::avx2:
      return "avx2";
    case dnnl::cpu_isa::avx2_vnni:
      return "avx2_vnni";
    case dnnl::cpu_isa::avx512_mic:
      return "avx512_mic";
    case dnnl::cpu_isa::avx512_mic_4ops:
      return "avx512_mic_4ops";
    case dnnl::cpu_isa::avx512_core:
      return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni:
      return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16:
      return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx:
      return "avx512_core_amx";
    case dnnl::cpu_isa::all:
      return "all";
  }
  return absl::StrCat("isa_", static_cast<int>(isa));
}

// oneDNN's exception as a status: UNIMPLEMENTED, RESOURCE_EXHAUSTED (out of memory), else
// `otherwise` (INTERNAL while running; INVALID_ARGUMENT while building a descriptor, where
// oneDNN's other refusals are about the geometry, the caller's error).
absl::Status DnnlError(const dnnl::error& e, const Conv2dParams& p,
                       absl::StatusCode otherwise = absl::StatusCode::kInternal) {
  const std::string message = absl::StrCat("oneDNN: ", e.what(), " (", p.ToString(), ")");
  switch (e.status) {
    case dnnl_unimplemented:
      return absl::UnimplementedError(message);
    case dnnl_out_of_memory:
      return absl::ResourceExhaustedError(message);
    default:
      return absl::Status(otherwise, message);
  }
}

// Runs `body` (returning absl::Status or StatusOr) and turns any exception into a status, so
// none crosses the API.
template <typename Body>
auto CatchAll(const Conv2dParams& p, Body body) -> decltype(body()) {
  try {
    return body();
  } catch (const dnnl::error& e) {
    return DnnlError(e, p);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat("out of memory (", p.ToString(), ")"));
  }
}

// OpenMP's team size is a per-thread setting that oneDNN reads when it creates and when it
// executes a primitive; this sets it for the calling thread and restores it on exit.
class ScopedOmpThreads {
 public:
  explicit ScopedOmpThreads(int threads) : saved_(omp_get_max_threads()) {
    omp_set_num_threads(threads);
  }
  ~ScopedOmpThreads() { omp_set_num_threads(saved_); }
  ScopedOmpThreads(const ScopedOmpThreads&) = delete;
  ScopedOmpThreads& operator=(const ScopedOmpThreads&) = delete;

 private:
  int saved_;
};

// A 64-byte-aligned buffer that grows to the largest size requested and never shrinks, so a
// thread's steady-state calls reuse pages that are already mapped.
class ScratchBuffer {
 public:
  void* Get(size_t bytes) {
    if (bytes > size_) {
      data_.reset();
      size_ = 0;  // stays consistent if the allocation below throws
      data_.reset(static_cast<char*>(::operator new(bytes, kAlign)));
      size_ = bytes;
    }
    return data_.get();
  }
  size_t size() const { return size_; }
  void Release() {
    data_.reset();
    size_ = 0;
  }

 private:
  static constexpr std::align_val_t kAlign{64};
  struct Free {
    void operator()(char* data) const { ::operator delete(data, kAlign); }
  };
  std::unique_ptr<char, Free> data_;
  size_t size_ = 0;
};

// The calling thread's temporaries: conv-layout copies of src and dst, reordered weights when
// they are not cached, and the scratchpad every primitive of one call uses in turn. Per thread,
// so concurrent calls (even of one primitive) never share them.
struct ThreadScratch {
  ScratchBuffer src, weights, bias, dst, scratchpad;
  // Frees every buffer when together they hold more than `retain` bytes.
  void Trim(int64_t retain) {
    const size_t held =
        src.size() + weights.size() + bias.size() + dst.size() + scratchpad.size();
    if (held <= static_cast<size_t>(retain)) return;
    src.Release(), weights.Release(), bias.Release(), dst.Release(), scratchpad.Release();
  }
};

ThreadScratch& LocalScratch() {
  thread_local ThreadScratch scratch;
  return scratch;
}

dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// A primitive and the scratchpad it needs; `primitive` is empty when no step is needed.
struct Step {
  dnnl::primitive primitive;
  Md scratchpad;
};

// A reorder from `from` to `to`, or an empty step when the layouts already match.
Step MakeReorder(const dnnl::engine& engine, const Md& from, const Md& to) {
  if (from == to) return {};
  dnnl::reorder::primitive_desc pd(engine, from, engine, to, UserScratchpad());
  return {dnnl::reorder(pd), pd.scratchpad_desc()};
}

// Everything one call of one geometry at one thread count runs. Immutable once built, shared
// by the calls that run it concurrently.
struct PrimitiveSet {
  // The caller's plain layouts, in the caller's datatypes (user_bias and user_residual empty
  // without bias / residual).
  Md user_src, user_weights, user_bias, user_residual, user_dst;
  Md src, weights, bias, dst;  // the layouts and datatypes the convolution chose
  // The residual is placed in `dst` (which the sum post-op reads) by residual_reorder, or, when
  // user_residual == dst, copied.
  Step conv, src_reorder, weights_reorder, bias_reorder, residual_reorder, dst_reorder;
  std::string impl;
  int64_t bytes = 0;  // CpuBackend::PrimitiveBytes of its geometry: its weight in the LRU
};

dnnl::memory::dims Dims(std::initializer_list<int64_t> dims) { return dims; }

dnnl::memory::data_type DnnlType(DataType type) {
  switch (type) {
    case DataType::kFp32:
      return dnnl::memory::data_type::f32;
    case DataType::kBf16:
      return dnnl::memory::data_type::bf16;
    case DataType::kFp16:
      return dnnl::memory::data_type::f16;
  }
  return dnnl::memory::data_type::f32;
}

// Whether oneDNN runs bf16 convolutions with bf16 instructions on this CPU (on plain
// avx512_core it would emulate them, slower than converting to FP32).
bool NativeBf16() {
  const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
  return isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx;
}

// The datatypes of the convolution itself: src/weights, bias, dst. FP32 runs FP32; native BF16
// runs bf16 src/weights/bias (the caller's bias as is; oneDNN accumulates in FP32) into the
// requested output type; everything else is converted to FP32 by the layout reorders.
struct ConvTypes {
  dnnl::memory::data_type src, bias, dst;
};
ConvTypes ConvTypesOf(const Conv2dParams& p) {
  if (p.dtype == DataType::kBf16 && NativeBf16()) {
    return {dnnl::memory::data_type::bf16, dnnl::memory::data_type::bf16,
            DnnlType(p.output_dtype)};
  }
  return {dnnl::memory::data_type::f32, dnnl::memory::data_type::f32,
          dnnl::memory::data_type::f32};
}

// The epilogue as oneDNN post-ops: sum (the residual, already in dst) first, then the
// activation, both with scale 1.
dnnl::post_ops EpiloguePostOps(const Conv2dParams& p) {
  dnnl::post_ops ops;
  if (p.has_residual) ops.append_sum(1.f);
  using Alg = dnnl::algorithm;
  switch (p.activation) {
    case Activation::kNone:
      break;
    case Activation::kRelu:
      ops.append_eltwise(1.f, Alg::eltwise_relu, 0.f, 0.f);
      break;
    case Activation::kRelu6:
      ops.append_eltwise(1.f, Alg::eltwise_clip, 0.f, 6.f);
      break;
    case Activation::kClip:
      ops.append_eltwise(1.f, Alg::eltwise_clip, p.clip_min, p.clip_max);
      break;
    case Activation::kSigmoid:
      ops.append_eltwise(1.f, Alg::eltwise_logistic, 0.f, 0.f);
      break;
    case Activation::kTanh:
      ops.append_eltwise(1.f, Alg::eltwise_tanh, 0.f, 0.f);
      break;
    case Activation::kSilu:
      ops.append_eltwise(1.f, Alg::eltwise_swish, 1.f, 0.f);  // x * sigmoid(1 * x)
      break;
    case Activation::kGeluTanh:
      ops.append_eltwise(1.f, Alg::eltwise_gelu_tanh, 0.f, 0.f);
      break;
  }
  return ops;
}

// oneDNN 2.6's brgconv kernels crash (SIGSEGV in the JIT code, FP32 and BF16 alike) with a sum
// post-op when an output row or column sees nothing but padding: a padding on some side at
// least the dilated kernel's extent (e.g. a 1x1 kernel with any padding, or 3x3 with pad 3).
// Such convolutions with a residual skip brgconv for oneDNN's next implementation
// (cpu_backend_epilogue_test's AllPaddingRowsWithResidual keeps the case covered).
bool BrgconvSumCrashes(const Conv2dParams& p) {
  if (!p.has_residual) return false;
  const int64_t span_h = p.dilation_h * (p.r - 1) + 1, span_w = p.dilation_w * (p.s - 1) + 1;
  return p.pad_top >= span_h || p.pad_bottom >= span_h || p.pad_left >= span_w ||
         p.pad_right >= span_w;
}

// The convolution's attributes: the user-provided scratchpad and the epilogue.
dnnl::primitive_attr ConvAttr(const Conv2dParams& p) {
  dnnl::primitive_attr attr = UserScratchpad();
  attr.set_post_ops(EpiloguePostOps(p));
  return attr;
}

// Whether Winograd may beat the direct algorithm on p: 3x3, stride 1, dense, ungrouped, and
// C, K >= 32. Measured with its reorders to nChw16c (oneDNN 2.6, this project's 2-core AVX-512
// machine) it runs 1.2-1.9x direct from 32 channels; with fewer the transforms cost more than
// they save.
bool WinogradShape(const Conv2dParams& p) {
  return p.r == 3 && p.s == 3 && p.stride_h == 1 && p.stride_w == 1 && p.dilation_h == 1 &&
         p.dilation_w == 1 && p.groups == 1 && p.c >= 32 && p.k >= 32;
}

// The convolutions to try for p, best first (measured as above, user layout in and out):
// - Layouts `any` let oneDNN pick brgconv on NHWC, which for NHWC callers needs no reorders and
//   for NCHW callers beats the plain-NCHW gemm kernels by ~1.6x even with two reorders...
// - ...except for NCHW 1x1 stride-1 unpadded convolutions with >= 64 output pixels per image:
//   these are one sgemm per image in place, 1.2-2x brgconv plus its reorders (smaller images
//   make the sgemm too thin).
struct ConvChoice {
  dnnl::algorithm algorithm;
  Tag layout;  // src and dst
};

std::vector<ConvChoice> ConvChoices(const Conv2dParams& p, bool winograd) {
  std::vector<ConvChoice> choices;
  if (winograd) choices.push_back({dnnl::algorithm::convolution_winograd, Tag::any});
  if (p.dtype == DataType::kFp32 && p.layout == Layout::kNCHW && p.r == 1 && p.s == 1 && p.stride_h == 1 && p.stride_w == 1 &&
      p.pad_top == 0 && p.pad_bottom == 0 && p.pad_left == 0 && p.pad_right == 0 &&
      p.groups == 1 && p.p() * p.q() >= 64) {
    choices.push_back({dnnl::algorithm::convolution_direct, Tag::nchw});
  }
  choices.push_back({dnnl::algorithm::convolution_direct, Tag::any});
  return choices;
}

// The caller's plain layouts of p, in its datatypes; bias and residual empty when absent.
struct UserMds {
  Md src, weights, bias, residual, dst;
};
Tag PlainTag(const Conv2dParams& p) { return p.layout == Layout::kNHWC ? Tag::nhwc : Tag::nchw; }
UserMds UserMdsOf(const Conv2dParams& p) {
  const auto dst_dims = Dims({p.n, p.k, p.p(), p.q()});
  const dnnl::memory::data_type type = DnnlType(p.dtype);
  UserMds mds;
  mds.src = Md(Dims({p.n, p.c, p.h, p.w}), type, PlainTag(p));
  mds.weights = Md(p.groups > 1 ? Dims({p.groups, p.k / p.groups, p.c / p.groups, p.r, p.s})
                                : Dims({p.k, p.c, p.r, p.s}),
                   type, p.groups > 1 ? Tag::goihw : Tag::oihw);
  if (p.has_bias) mds.bias = Md(Dims({p.k}), type, Tag::a);
  if (p.has_residual) mds.residual = Md(dst_dims, type, PlainTag(p));
  mds.dst = Md(dst_dims, DnnlType(p.output_dtype), PlainTag(p));
  return mds;
}

// Bytes a call of `pd` needs besides the caller's tensors: the scratchpad and a buffer per
// operand whose layout or datatype differs from the caller's plain one (the residual needs
// none: it is placed in dst's buffer, the caller's output or dst's own scratch).
int64_t ScratchBytes(const dnnl::convolution_forward::primitive_desc& pd, const UserMds& user) {
  int64_t bytes = static_cast<int64_t>(pd.scratchpad_desc().get_size());
  if (pd.src_desc() != user.src) bytes += static_cast<int64_t>(pd.src_desc().get_size());
  if (pd.weights_desc() != user.weights) {
    bytes += static_cast<int64_t>(pd.weights_desc().get_size());
  }
  if (pd.bias_desc() != user.bias) bytes += static_cast<int64_t>(pd.bias_desc().get_size());
  if (pd.dst_desc() != user.dst) bytes += static_cast<int64_t>(pd.dst_desc().get_size());
  return bytes;
}

// The first of ConvChoices that oneDNN offers on this CPU and whose scratch (ScratchBytes) is
// at most `max_scratch` bytes. Only descriptors are made here, nothing large is allocated...
// unless `conv` is not null: then the primitive is also made into *conv, and an implementation
// whose kernel fails to build is skipped for the next (oneDNN 2.6 offers jit_bf16 on
// avx512_core_bf16 for grouped weights with a logistic or swish post-op, then cannot build it).
// Both happen here because oneDNN's implementation iterator refers to `desc` and `attr`, which
// must outlive its next_impl() calls.
absl::StatusOr<dnnl::convolution_forward::primitive_desc> MakeConvPd(
    const dnnl::engine& engine, const Conv2dParams& p, bool winograd, int64_t max_scratch,
    dnnl::convolution_forward* conv = nullptr) {
  const auto src_dims = Dims({p.n, p.c, p.h, p.w});
  const auto dst_dims = Dims({p.n, p.k, p.p(), p.q()});
  const ConvTypes types = ConvTypesOf(p);
  const Md weights(p.groups > 1 ? Dims({p.groups, p.k / p.groups, p.c / p.groups, p.r, p.s})
                                : Dims({p.k, p.c, p.r, p.s}),
                   types.src, Tag::any);
  const Md bias = p.has_bias ? Md(Dims({p.k}), types.bias, Tag::a) : Md();
  const auto strides = Dims({p.stride_h, p.stride_w});
  const auto dilates = Dims({p.dilation_h - 1, p.dilation_w - 1});  // oneDNN: 0 = dense
  const auto pads_l = Dims({p.pad_top, p.pad_left}), pads_r = Dims({p.pad_bottom, p.pad_right});
  const UserMds user = UserMdsOf(p);
  const dnnl::primitive_attr attr = ConvAttr(p);
  std::vector<ConvChoice> choices = ConvChoices(p, winograd);
  // Plain layouts last: oneDNN's gemm-based kernels, which need no reorder buffers, for when
  // the blocked layouts' buffers (channels padded to 16) exceed the scratch limit.
  choices.push_back({dnnl::algorithm::convolution_direct, PlainTag(p)});
  absl::Status last, built;  // the last refusal of a descriptor, of a primitive
  int64_t smallest = -1;
  for (const ConvChoice& choice : choices) {
    const Md src(src_dims, types.src, choice.layout);
    const Md dst(dst_dims, types.dst, choice.layout);
    try {
      dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_inference, choice.algorithm,
                                           src, weights, bias, dst, strides, dilates, pads_l, pads_r);
      dnnl::convolution_forward::primitive_desc pd(desc, attr, engine);
      do {  // this choice's implementations, best first
        if (BrgconvSumCrashes(p) && absl::StartsWith(pd.impl_info_str(), "brg")) continue;
        const int64_t bytes = ScratchBytes(pd, user);
        if (bytes > max_scratch) {
          if (smallest < 0 || bytes < smallest) smallest = bytes;
          continue;
        }
        if (conv == nullptr) return pd;
        try {
          *conv = dnnl::convolution_forward(pd);
          return pd;
        } catch (const dnnl::error& e) {
          built = DnnlError(e, p);
        }
      } while (pd.next_impl());
    } catch (const dnnl::error& e) {
      last = DnnlError(e, p, absl::StatusCode::kInvalidArgument);
    }
  }
  if (!built.ok()) return built;
  if (smallest >= 0) {
    return absl::ResourceExhaustedError(absl::StrCat(
        p.ToString(), " needs at least ", smallest, " bytes of scratch (oneDNN scratchpad and "
        "layout buffers), above the ", max_scratch, "-byte limit (max_job_scratch_bytes)"));
  }
  return last;
}

absl::StatusOr<PrimitiveSet> MakePrimitiveSet(const dnnl::engine& engine, const Conv2dParams& p,
                                              bool winograd, int64_t max_scratch) {
  dnnl::convolution_forward conv;
  absl::StatusOr<dnnl::convolution_forward::primitive_desc> made =
      MakeConvPd(engine, p, winograd, max_scratch, &conv);
  if (!made.ok()) return made.status();
  const dnnl::convolution_forward::primitive_desc& pd = *made;
  const UserMds user = UserMdsOf(p);
  PrimitiveSet set;
  set.user_src = user.src;
  set.user_weights = user.weights;
  set.user_bias = user.bias;
  set.user_residual = user.residual;
  set.user_dst = user.dst;
  set.src = pd.src_desc();
  set.weights = pd.weights_desc();
  if (p.has_bias) set.bias = pd.bias_desc();
  set.dst = pd.dst_desc();
  set.conv = {conv, pd.scratchpad_desc()};
  set.src_reorder = MakeReorder(engine, set.user_src, set.src);
  set.weights_reorder = MakeReorder(engine, set.user_weights, set.weights);
  if (p.has_bias) set.bias_reorder = MakeReorder(engine, set.user_bias, set.bias);
  if (p.has_residual) set.residual_reorder = MakeReorder(engine, set.user_residual, set.dst);
  set.dst_reorder = MakeReorder(engine, set.dst, set.user_dst);
  set.impl = pd.impl_info_str();
  return set;
}

// A memory over the caller's buffer. oneDNN takes non-const handles but never writes a
// primitive's inputs.
dnnl::memory UserMemory(const Md& md, const dnnl::engine& engine, const void* data) {
  return dnnl::memory(md, engine, const_cast<void*>(data));
}

// Runs one step on `stream` with the calling thread's scratchpad.
void Execute(const Step& step, const dnnl::engine& engine, dnnl::stream& stream,
             std::unordered_map<int, dnnl::memory> args) {
  if (step.scratchpad.get_size() > 0) {
    void* scratchpad = LocalScratch().scratchpad.Get(step.scratchpad.get_size());
    args.emplace(DNNL_ARG_SCRATCHPAD, dnnl::memory(step.scratchpad, engine, scratchpad));
  }
  step.primitive.execute(stream, args);
}

// Reordered weights of one confirmed WeightId (equal ids are equal bytes: the engine proved it,
// engine/core/weight_cache.h), so a lookup compares nothing.
struct CachedWeights {
  WeightId weight_id;
  Md source;  // the caller's plain md (its datatype): a collision across datatypes cannot mix
  Md layout;
  dnnl::memory reordered;
  int64_t bytes;  // the reordered copy
};

// A registered weight's reordered copy, kept in its PrepackedWeights store.
struct PrepackedCpuWeights : PrepackedWeights::Copy {
  PrepackedCpuWeights(Md s, Md l, dnnl::memory r)
      : source(std::move(s)), layout(std::move(l)), reordered(std::move(r)) {}
  Md source;
  Md layout;
  dnnl::memory reordered;
};

}  // namespace

struct CpuBackend::Impl {
  Options options;
  int threads;
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};

  absl::Mutex mu;
  // Most recently used first. Entries are immutable and shared with the calls running them,
  // so eviction never pulls a primitive or weights out from under a running call.
  using PrimitiveLru = std::list<std::pair<std::string, std::shared_ptr<const PrimitiveSet>>>;
  PrimitiveLru primitives ABSL_GUARDED_BY(mu);
  std::unordered_map<std::string, PrimitiveLru::iterator> primitive_index ABSL_GUARDED_BY(mu);
  int64_t primitive_bytes ABSL_GUARDED_BY(mu) = 0;  // sum of the cached sets' `bytes`
  // Keyed by (weight_id, source md, reordered layout): the layout holds the weight dims and the
  // computed datatype, the source md the caller's datatype; batches of any size or thread count
  // whose convolutions pick one layout share one entry.
  using WeightLru = std::list<std::shared_ptr<const CachedWeights>>;
  WeightLru weights ABSL_GUARDED_BY(mu);
  absl::flat_hash_map<WeightId, std::vector<WeightLru::iterator>> weight_index ABSL_GUARDED_BY(mu);
  int64_t weight_bytes ABSL_GUARDED_BY(mu) = 0;  // sum of the entries' bytes

  // Whether calls with weights of an identity may run Winograd on p. Its weight transform
  // costs up to 50x its convolution (28 ms for resnet_3x3_7's weights), so it only pays when
  // the transformed weights are cached: a non-empty weight_id and room for the transform (at
  // most 4x the plain bytes, F(4,3)).
  bool Winograd(const Conv2dParams& p, bool identified) const {
    return options.allow_winograd && identified && WinogradShape(p) &&
           p.dtype == DataType::kFp32 && p.output_dtype == DataType::kFp32 &&
           4 * p.weight_elements() * static_cast<int64_t>(sizeof(float)) <=
               options.weight_cache_bytes;
  }
  // The primitives for p at `threads`, from the cache or built (with no lock held). The
  // caller has set the OpenMP team size to `threads`.
  absl::StatusOr<std::shared_ptr<const PrimitiveSet>> Primitives(const Conv2dParams& p,
                                                                 int threads, bool winograd);
  // The cached reordered weights for (weight_id, source, layout), or null.
  std::shared_ptr<const CachedWeights> FindWeights(const WeightId& weight_id, const Md& source,
                                                   const Md& layout);
  // Inserts `entry`, replacing any entry of the same key and layout, then evicts to the limit.
  void InsertWeights(std::shared_ptr<const CachedWeights> entry);
  // args.weight in set.weights' layout: the caller's own buffer when the layouts match, else
  // from the cache (a non-empty weight_id and room for the entry), else reordered into the calling
  // thread's scratch. `*cached` keeps a cache entry alive while the call uses it.
  dnnl::memory Weights(const PrimitiveSet& set, const Conv2dParams& p, const ConvArgs& args,
                       dnnl::stream& stream, std::shared_ptr<const CachedWeights>* cached);
  // args.weight in set.weights' layout from args.prepacked, made and stored there at first
  // use; null when the store's budget refuses the copy.
  std::shared_ptr<const PrepackedCpuWeights> Prepacked(const PrimitiveSet& set,
                                                       const ConvArgs& args, dnnl::stream& stream);
};

absl::StatusOr<std::shared_ptr<const PrimitiveSet>> CpuBackend::Impl::Primitives(
    const Conv2dParams& p, int threads, bool winograd) {
  std::string key = absl::StrCat(p.ToString(), "_t", threads, winograd ? "_wino" : "");
  {
    absl::MutexLock lock(&mu);
    auto it = primitive_index.find(key);
    if (it != primitive_index.end()) {
      primitives.splice(primitives.begin(), primitives, it->second);
      return it->second->second;
    }
  }
  if (PrimitiveBytes(p) > options.max_job_scratch_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        p.ToString(), ": an output width of ", p.q(), " needs about ", PrimitiveBytes(p),
        " bytes of oneDNN primitive tables (~2 KiB per output column), above the ",
        options.max_job_scratch_bytes, "-byte limit (max_job_scratch_bytes)"));
  }
  absl::StatusOr<PrimitiveSet> made = MakePrimitiveSet(
      engine, p, winograd, options.max_job_scratch_bytes);
  if (!made.ok()) return made.status();
  made->bytes = PrimitiveBytes(p);
  auto set = std::make_shared<const PrimitiveSet>(*std::move(made));
  spdlog::debug("cpu backend: {} at {} threads runs {}", p.ToString(), threads, set->impl);
  absl::MutexLock lock(&mu);
  auto [it, inserted] = primitive_index.try_emplace(key);
  if (!inserted) return it->second->second;  // another thread built it meanwhile
  primitives.emplace_front(std::move(key), set);
  it->second = primitives.begin();
  primitive_bytes += set->bytes;
  // Bounded in count and in bytes; the newest entry stays even when it alone is over the byte
  // budget (it is evicted by the next insertion), so a call's own set is never built twice.
  while (primitives.size() > 1 &&
         (static_cast<int64_t>(primitives.size()) > options.max_primitives ||
          primitive_bytes > options.max_primitive_bytes)) {
    primitive_bytes -= primitives.back().second->bytes;
    primitive_index.erase(primitives.back().first);
    primitives.pop_back();
  }
  return set;
}

std::shared_ptr<const CachedWeights> CpuBackend::Impl::FindWeights(const WeightId& weight_id,
                                                                   const Md& source,
                                                                   const Md& layout) {
  absl::MutexLock lock(&mu);
  auto found = weight_index.find(weight_id);
  if (found == weight_index.end()) return nullptr;
  for (WeightLru::iterator it : found->second) {
    if ((*it)->layout == layout && (*it)->source == source) {
      weights.splice(weights.begin(), weights, it);
      return *it;
    }
  }
  return nullptr;
}

dnnl::memory CpuBackend::Impl::Weights(const PrimitiveSet& set, const Conv2dParams& p,
                                       const ConvArgs& args, dnnl::stream& stream,
                                       std::shared_ptr<const CachedWeights>* cached) {
  const dnnl::memory plain = UserMemory(set.user_weights, engine, args.weight);
  if (!set.weights_reorder.primitive) return plain;
  if (args.prepacked != nullptr) {
    // The store lives as long as the job that holds the registered weight, longer than the call.
    if (auto copy = Prepacked(set, args, stream)) return copy->reordered;
  }
  const int64_t bytes = static_cast<int64_t>(set.weights.get_size());
  const bool cacheable = !args.weight_id.empty() && bytes <= options.weight_cache_bytes;
  if (cacheable) {
    *cached = FindWeights(args.weight_id, set.user_weights, set.weights);
    if (*cached != nullptr) return (*cached)->reordered;
  }
  const dnnl::memory reordered =
      cacheable
          ? dnnl::memory(set.weights, engine)
          : dnnl::memory(set.weights, engine, LocalScratch().weights.Get(set.weights.get_size()));
  Execute(set.weights_reorder, engine, stream, {{DNNL_ARG_FROM, plain}, {DNNL_ARG_TO, reordered}});
  if (cacheable) {
    stream.wait();  // other threads may use the entry as soon as it is inserted
    InsertWeights(std::make_shared<const CachedWeights>(
        CachedWeights{args.weight_id, set.user_weights, set.weights, reordered, bytes}));
  }
  return reordered;
}

std::shared_ptr<const PrepackedCpuWeights> CpuBackend::Impl::Prepacked(const PrimitiveSet& set,
                                                                      const ConvArgs& args,
                                                                      dnnl::stream& stream) {
  const auto match = [&](const PrepackedWeights::Copy& copy) {
    const auto* cpu = dynamic_cast<const PrepackedCpuWeights*>(&copy);
    return cpu != nullptr && cpu->layout == set.weights && cpu->source == set.user_weights;
  };
  if (auto copy = args.prepacked->Find(match)) {
    return std::static_pointer_cast<const PrepackedCpuWeights>(copy);
  }
  const dnnl::memory plain = UserMemory(set.user_weights, engine, args.weight);
  dnnl::memory reordered(set.weights, engine);
  Execute(set.weights_reorder, engine, stream, {{DNNL_ARG_FROM, plain}, {DNNL_ARG_TO, reordered}});
  stream.wait();  // other threads may use the copy as soon as it is stored
  auto copy = args.prepacked->Add(
      match, std::make_shared<const PrepackedCpuWeights>(set.user_weights, set.weights, reordered),
      static_cast<int64_t>(set.weights.get_size()));
  if (copy == nullptr) {
    if (args.prepacked->refused() == 1) {
      spdlog::warn("cpu backend: no room in the weights budget for a {}-byte prepacked copy of "
                   "registered weights; using the weight cache for them",
                   set.weights.get_size());
    }
    return nullptr;
  }
  return std::static_pointer_cast<const PrepackedCpuWeights>(copy);
}

void CpuBackend::Impl::InsertWeights(std::shared_ptr<const CachedWeights> entry) {
  absl::MutexLock lock(&mu);
  std::vector<WeightLru::iterator>& same_id = weight_index[entry->weight_id];
  for (auto it = same_id.begin(); it != same_id.end(); ++it) {
    if ((**it)->layout == entry->layout && (**it)->source == entry->source) {
      weight_bytes -= (**it)->bytes;
      weights.erase(*it);
      same_id.erase(it);
      break;
    }
  }
  weight_bytes += entry->bytes;
  weights.push_front(std::move(entry));
  same_id.push_back(weights.begin());
  while (weight_bytes > options.weight_cache_bytes) {
    const WeightLru::iterator oldest = std::prev(weights.end());
    auto found = weight_index.find((*oldest)->weight_id);
    std::erase(found->second, oldest);
    if (found->second.empty()) weight_index.erase(found);
    weight_bytes -= (*oldest)->bytes;
    weights.erase(oldest);
  }
}

absl::StatusOr<std::unique_ptr<CpuBackend>> CpuBackend::Create(const Options& options) {
  if (options.threads < 0 || options.threads > kMaxThreads) {
    return absl::InvalidArgumentError(
        absl::StrCat("threads must be in [0, ", kMaxThreads, "]; was ", options.threads));
  }
  if (options.weight_cache_bytes < 0 || options.weight_cache_bytes > kMaxWeightCacheBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight_cache_bytes must be in [0, 2^40]; was ", options.weight_cache_bytes));
  }
  if (options.max_primitives < 1 || options.max_primitives > kMaxPrimitives) {
    return absl::InvalidArgumentError(absl::StrCat("max_primitives must be in [1, ", kMaxPrimitives,
                                                   "]; was ", options.max_primitives));
  }
  if (options.max_job_scratch_bytes < (int64_t{1} << 20) ||
      options.max_job_scratch_bytes > (int64_t{1} << 50)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_job_scratch_bytes must be in [1 MiB, 2^50]; was ", options.max_job_scratch_bytes));
  }
  if (options.scratch_retain_bytes < 0 || options.scratch_retain_bytes > (int64_t{1} << 40)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "scratch_retain_bytes must be in [0, 2^40]; was ", options.scratch_retain_bytes));
  }
  if (options.max_primitive_bytes < (int64_t{1} << 20) ||
      options.max_primitive_bytes > (int64_t{1} << 40)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_primitive_bytes must be in [1 MiB, 2^40]; was ", options.max_primitive_bytes));
  }
  // Our LRU is the only primitive cache: oneDNN's own (process-wide, 1024 entries by default)
  // would keep a second reference to the primitives ours evicts, and with them their memory.
  dnnl::set_primitive_cache_capacity(0);
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->threads = options.threads > 0 ? options.threads : AvailableCpus();
  spdlog::debug("cpu backend: oneDNN {}.{}.{} on {}, {} threads", dnnl::version()->major,
                dnnl::version()->minor, dnnl::version()->patch,
                IsaName(dnnl::get_effective_cpu_isa()), impl->threads);
  auto backend = std::unique_ptr<CpuBackend>(new CpuBackend(std::move(impl)));
  spdlog::info("cpu backend datatypes: {}", backend->DescribeDatatypes());
  return backend;
}

CpuBackend::CpuBackend(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CpuBackend::~CpuBackend() = default;

int CpuBackend::threads() const { return impl_->threads; }

std::string CpuBackend::Isa() const { return IsaName(dnnl::get_effective_cpu_isa()); }

CpuBackend::DatatypePath CpuBackend::Path(DataType type) const {
  switch (type) {
    case DataType::kFp32:
      return DatatypePath::kNative;
    case DataType::kBf16:
      return NativeBf16() ? DatatypePath::kNative : DatatypePath::kConvertedToFp32;
    case DataType::kFp16:
      return DatatypePath::kConvertedToFp32;
  }
  return DatatypePath::kConvertedToFp32;
}

std::string CpuBackend::DescribeDatatypes() const {
  const std::string isa = Isa();
  return absl::StrCat(
      "FP32 native; ",
      Path(DataType::kBf16) == DatatypePath::kNative
          ? absl::StrCat("BF16 native (", isa, ")")
          : absl::StrCat("BF16 converted to FP32 (", isa, " has no bf16 instructions)"),
      "; FP16 converted to FP32 (oneDNN ", dnnl::version()->major, ".", dnnl::version()->minor,
      " has no f16 convolution for ", isa, ")");
}

int64_t CpuBackend::PrimitiveBytes(const Conv2dParams& p) {
  return kPrimitiveBaseBytes + kPrimitiveBytesPerOutputColumn * p.q();
}

absl::Status CpuBackend::Supports(const Conv2dParams& p) const {
  SPARKLE_RETURN_IF_ERROR(p.Validate());
  ScopedOmpThreads omp_threads(impl_->threads);
  return CatchAll(p, [&] {
    // Without Winograd: the choices every Winograd call falls back to.
    return MakeConvPd(impl_->engine, p, /*winograd=*/false, impl_->options.max_job_scratch_bytes)
        .status();
  });
}

absl::StatusOr<std::string> CpuBackend::ImplementationName(const Conv2dParams& p, int threads) {
  SPARKLE_RETURN_IF_ERROR(p.Validate());
  if (threads < 1 || threads > impl_->threads) {
    return absl::InvalidArgumentError(
        absl::StrCat("threads must be in [1, ", impl_->threads, "]; was ", threads));
  }
  ScopedOmpThreads omp_threads(threads);
  return CatchAll(p, [&]() -> absl::StatusOr<std::string> {
    // As run for weights with a weight_key, the case a server sees in steady state.
    SPARKLE_ASSIGN_OR_RETURN(auto set,
                             impl_->Primitives(p, threads, impl_->Winograd(p, /*identified=*/true)));
    return set->impl;
  });
}

absl::Status CpuBackend::Run(const Conv2dParams& p, const ConvArgs& args, int threads) {
  SPARKLE_RETURN_IF_ERROR(p.Validate());
  if (threads < 1 || threads > impl_->threads) {
    return absl::InvalidArgumentError(
        absl::StrCat("threads must be in [1, ", impl_->threads, "]; was ", threads));
  }
  if (args.input == nullptr || args.weight == nullptr || args.output == nullptr ||
      (p.has_bias && args.bias == nullptr) || (p.has_residual && args.residual == nullptr)) {
    return absl::InvalidArgumentError(
        absl::StrCat("null input, weight, output, or (with has_bias) bias, or (with has_residual) "
                     "residual for ", p.ToString()));
  }
  ScopedOmpThreads omp_threads(threads);
  absl::Status status = CatchAll(p, [&]() -> absl::Status {
    Impl& impl = *impl_;
    SPARKLE_ASSIGN_OR_RETURN(const std::shared_ptr<const PrimitiveSet> set,
                             impl.Primitives(p, threads, impl.Winograd(p, !args.weight_id.empty())));
    ThreadScratch& scratch = LocalScratch();
    dnnl::stream stream(impl.engine);
    dnnl::memory src = UserMemory(set->user_src, impl.engine, args.input);
    if (set->src_reorder.primitive) {
      dnnl::memory plain = src;
      src = dnnl::memory(set->src, impl.engine, scratch.src.Get(set->src.get_size()));
      Execute(set->src_reorder, impl.engine, stream, {{DNNL_ARG_FROM, plain}, {DNNL_ARG_TO, src}});
    }

    std::shared_ptr<const CachedWeights> cached;  // keeps cached `weights` alive for the call
    const dnnl::memory weights = impl.Weights(*set, p, args, stream, &cached);

    dnnl::memory dst =
        set->dst_reorder.primitive
            ? dnnl::memory(set->dst, impl.engine, scratch.dst.Get(set->dst.get_size()))
            : UserMemory(set->user_dst, impl.engine, args.output);
    if (p.has_residual) {
      // The sum post-op adds what dst holds when the convolution starts.
      if (set->residual_reorder.primitive) {
        Execute(set->residual_reorder, impl.engine, stream,
                {{DNNL_ARG_FROM, UserMemory(set->user_residual, impl.engine, args.residual)},
                 {DNNL_ARG_TO, dst}});
      } else if (dst.get_data_handle() != args.residual) {
        std::memmove(dst.get_data_handle(), args.residual, set->dst.get_size());
      }
    }
    std::unordered_map<int, dnnl::memory> conv_args = {
        {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}};
    if (p.has_bias) {
      dnnl::memory bias = UserMemory(set->user_bias, impl.engine, args.bias);
      if (set->bias_reorder.primitive) {
        dnnl::memory plain = bias;
        bias = dnnl::memory(set->bias, impl.engine, scratch.bias.Get(set->bias.get_size()));
        Execute(set->bias_reorder, impl.engine, stream,
                {{DNNL_ARG_FROM, plain}, {DNNL_ARG_TO, bias}});
      }
      conv_args.emplace(DNNL_ARG_BIAS, bias);
    }
    Execute(set->conv, impl.engine, stream, std::move(conv_args));
    if (set->dst_reorder.primitive) {
      Execute(set->dst_reorder, impl.engine, stream,
              {{DNNL_ARG_FROM, dst},
               {DNNL_ARG_TO, UserMemory(set->user_dst, impl.engine, args.output)}});
    }
    stream.wait();
    return absl::OkStatus();
  });
  LocalScratch().Trim(impl_->options.scratch_retain_bytes);
  return status;
}

}  // namespace sparkle
