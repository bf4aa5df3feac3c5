// The tiled implicit-GEMM conv2d kernels.
//
// Per group, the convolution is a GEMM: rows m = output pixels (n, p, q) of the whole batch,
// columns = the group's output channels, reduction = the group's C/groups·R·S taps. A block
// computes a BM × BN output tile: for each BK slice of the reduction it stages the input taps
// (im2col done on the fly while loading, never materialised) and the weights in shared
// memory, double-buffered so that the global loads of slice t+1 overlap the arithmetic of slice
// t, and each thread accumulates a TM × TN register micro-tile. The store applies the fused
// epilogue (conv_epilogue.h): bias, residual, activation.
//
// Variants, selected by a template parameter so the index math folds to constants:
//   k1x1:   R = S = 1, stride 1, no padding, dilation 1: a plain GEMM, no im2col arithmetic
//   k3x3s1: R = S = 3, stride 1, dilation 1, any padding (per side: the kernels take the
//           top/left pads; P and Q imply the bottom/right ones)
//   kGeneral: any kernel, stride, padding, dilation, groups
// Split-K versions of the small tiles cut the reduction into k_splits ranges, one block each,
// and add their partial sums into the zeroed output with atomicAdd: for layers whose output
// has too few tiles to fill the device (ResNet's 7×7 and 14×14 stages, N=1). Their results
// are not bit-identical from run to run (the order of the float additions varies).
// Both layouts: NCHW loads the input tile along m (pixels are contiguous) and stores the output
// along m; NHWC loads along the reduction (channels are contiguous) and stores along k. Nothing
// assumes a warp size: the block size is (BM/TM)·(BN/TN), a compile-time constant.
#include <hip/hip_runtime.h>

#include <memory>
#include <string>
#include <utility>

#include "engine/hip/conv_epilogue.h"
#include "engine/hip/conv_geometry.h"
#include "engine/hip/conv_impl.h"

namespace sparkle::hip {
namespace {

enum class Variant { k1x1, k3x3s1, kGeneral };

template <int BM_, int BN_, int BK_, int TM_, int TN_>
struct Tile {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, TM = TM_, TN = TN_;
  static constexpr int kThreads = (BM / TM) * (BN / TN);
  static constexpr int kALoads = BM * BK / kThreads;  // input elements each thread stages
  static constexpr int kBLoads = BN * BK / kThreads;  // weight elements each thread stages
  // Shared-memory row padding: no bank conflicts on transposed stores; rows stay 16 B aligned.
  static constexpr int kPad = 4;
  static_assert(BM % TM == 0 && BN % TN == 0, "micro-tile must divide the tile");
  static_assert((BM * BK) % kThreads == 0 && (BN * BK) % kThreads == 0,
                "every thread stages the same number of elements");
};

template <class T, Variant V, bool kNhwc, bool kSplitK>
__global__ void __launch_bounds__(T::kThreads)
    ImplicitGemmConvKernel(ConvGeometry g, int k_splits, const float* __restrict__ input,
                           const float* __restrict__ weight, const float* __restrict__ bias,
                           float* __restrict__ output, ConvEpilogue epilogue) {
  constexpr int BM = T::BM, BN = T::BN, BK = T::BK, TM = T::TM, TN = T::TN;
  constexpr int kThreads = T::kThreads;
  __shared__ float a_tile[2][BK][BM + T::kPad];  // [reduction][pixel]
  __shared__ float b_tile[2][BK][BN + T::kPad];  // [reduction][output channel]

  // Kernel extents: constants for the specialised variants.
  const int R = V == Variant::k1x1 ? 1 : V == Variant::k3x3s1 ? 3 : g.r;
  const int S = V == Variant::k1x1 ? 1 : V == Variant::k3x3s1 ? 3 : g.s;
  const int RS = R * S;
  const int stride_h = V == Variant::kGeneral ? g.stride_h : 1;
  const int stride_w = V == Variant::kGeneral ? g.stride_w : 1;
  const int dil_h = V == Variant::kGeneral ? g.dil_h : 1;
  const int dil_w = V == Variant::kGeneral ? g.dil_w : 1;
  const int pad_h = V == Variant::k1x1 ? 0 : g.pad_h;
  const int pad_w = V == Variant::k1x1 ? 0 : g.pad_w;

  const int tid = static_cast<int>(threadIdx.x);
  const int m0 = static_cast<int>(blockIdx.x) * BM;
  const int n0 = static_cast<int>(blockIdx.y) * BN;  // first output channel within the group
  // blockIdx.z: the group, times k_splits reduction ranges for split-K (k_splits 1 otherwise).
  const int group = static_cast<int>(blockIdx.z) / k_splits;
  const int split = static_cast<int>(blockIdx.z) % k_splits;
  const int all_slices = (g.kred + BK - 1) / BK;
  const int per_split = (all_slices + k_splits - 1) / k_splits;
  const int first_slice = split * per_split;
  const int slices = (all_slices - first_slice < per_split ? all_slices - first_slice : per_split);
  if (slices <= 0) return;  // the whole block: no barrier is skipped by part of it
  const int pq = g.p * g.q;
  const int hw = g.h * g.w;

  // Staging map for the input tile. NCHW: consecutive threads take consecutive pixels (m);
  // NHWC: consecutive threads take consecutive reduction indices (channels).
  int a_m[T::kALoads], a_k[T::kALoads];
  // Per staged pixel: offset of its image's group-channel 0, and the top-left input tap
  // (for k1x1: the pixel's own offset). a_ok: the pixel exists (m < M).
  int a_base[T::kALoads], a_ih0[T::kALoads], a_iw0[T::kALoads];
  bool a_ok[T::kALoads];
#pragma unroll
  for (int i = 0; i < T::kALoads; ++i) {
    const int e = tid + i * kThreads;
    a_m[i] = kNhwc ? e / BK : e % BM;
    a_k[i] = kNhwc ? e % BK : e / BM;
    const int m = m0 + a_m[i];
    a_ok[i] = m < g.m;
    const int mm = a_ok[i] ? m : 0;
    const int img = mm / pq;
    const int rem = mm - img * pq;
    const int op = rem / g.q;
    const int oq = rem - op * g.q;
    a_ih0[i] = op * stride_h - pad_h;
    a_iw0[i] = oq * stride_w - pad_w;
    if (kNhwc) {
      a_base[i] = img * hw * g.c + group * g.cg;
      if (V == Variant::k1x1) a_base[i] += (a_ih0[i] * g.w + a_iw0[i]) * g.c;
    } else {
      a_base[i] = (img * g.c + group * g.cg) * hw;
      if (V == Variant::k1x1) a_base[i] += a_ih0[i] * g.w + a_iw0[i];
    }
  }
  // Staging map for the weight tile: consecutive threads take consecutive reduction indices.
  int b_n[T::kBLoads], b_k[T::kBLoads];
#pragma unroll
  for (int i = 0; i < T::kBLoads; ++i) {
    const int e = tid + i * kThreads;
    b_n[i] = e / BK;
    b_k[i] = e % BK;
  }

  float a_stage[T::kALoads], b_stage[T::kBLoads];

  // Global → registers, for the reduction slice starting at k0. The reduction index kr runs
  // over (c, r, s) in NCHW, matching the weight layout, and over (r, s, c) in NHWC, so that the
  // input loads walk contiguous channels.
  auto load_slice = [&](int k0) {
#pragma unroll
    for (int i = 0; i < T::kALoads; ++i) {
      const int kr = k0 + a_k[i];
      float v = 0.0f;
      if (a_ok[i] && kr < g.kred) {
        if (V == Variant::k1x1) {
          v = input[a_base[i] + (kNhwc ? kr : kr * hw)];
        } else {
          int c, rs;
          if (kNhwc) {
            rs = kr / g.cg;
            c = kr - rs * g.cg;
          } else {
            c = kr / RS;
            rs = kr - c * RS;
          }
          const int r = rs / S;
          const int s = rs - r * S;
          const int ih = a_ih0[i] + r * dil_h;
          const int iw = a_iw0[i] + s * dil_w;
          if (ih >= 0 && ih < g.h && iw >= 0 && iw < g.w) {
            v = input[a_base[i] + (kNhwc ? (ih * g.w + iw) * g.c + c : c * hw + ih * g.w + iw)];
          }
        }
      }
      a_stage[i] = v;
    }
#pragma unroll
    for (int i = 0; i < T::kBLoads; ++i) {
      const int kr = k0 + b_k[i];
      const int oc = n0 + b_n[i];
      float v = 0.0f;
      if (kr < g.kred && oc < g.kg) {
        int widx = kr;  // NCHW order (c, r, s) is the weight's own order
        if (kNhwc && V != Variant::k1x1) {
          const int rs = kr / g.cg;
          const int c = kr - rs * g.cg;
          widx = c * RS + rs;
        }
        v = weight[(group * g.kg + oc) * g.kred + widx];
      }
      b_stage[i] = v;
    }
  };
  auto store_slice = [&](int buf) {
#pragma unroll
    for (int i = 0; i < T::kALoads; ++i) a_tile[buf][a_k[i]][a_m[i]] = a_stage[i];
#pragma unroll
    for (int i = 0; i < T::kBLoads; ++i) b_tile[buf][b_k[i]][b_n[i]] = b_stage[i];
  };

  // Thread → micro-tile: rows tm + i·(BM/TM), columns tn + j·(BN/TN). Consecutive threads
  // take consecutive pixels in NCHW and consecutive channels in NHWC: coalesced stores.
  constexpr int kRowThreads = BM / TM, kColThreads = BN / TN;
  const int tm = kNhwc ? tid / kColThreads : tid % kRowThreads;
  const int tn = kNhwc ? tid % kColThreads : tid / kRowThreads;

  float acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i) {
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = 0.0f;
  }

  load_slice(first_slice * BK);
  store_slice(0);
  __syncthreads();
  for (int t = 0; t < slices; ++t) {
    const int buf = t & 1;
    const bool more = t + 1 < slices;
    if (more) load_slice((first_slice + t + 1) * BK);  // in flight while we compute
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      float a[TM], b[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) a[i] = a_tile[buf][kk][tm + i * kRowThreads];
#pragma unroll
      for (int j = 0; j < TN; ++j) b[j] = b_tile[buf][kk][tn + j * kColThreads];
#pragma unroll
      for (int i = 0; i < TM; ++i) {
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] += a[i] * b[j];
      }
    }
    // The other buffer was last read before the previous barrier: safe to overwrite.
    if (more) store_slice(buf ^ 1);
    __syncthreads();
  }

  // Epilogue: bias, residual and activation (conv_epilogue.h), then the store in the output
  // layout. Split-K: the first range adds bias and residual to its partial sum (activation is
  // refused for split-K: it needs the whole sum).
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int m = m0 + tm + i * kRowThreads;
    if (m >= g.m) continue;
    const int img = m / pq;
    const int rem = m - img * pq;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int oc = n0 + tn + j * kColThreads;
      if (oc >= g.kg) continue;
      const int k = group * g.kg + oc;
      const int oi = kNhwc ? m * g.k + k : (img * g.k + k) * pq + rem;
      const float v = ApplyConvEpilogue(
          epilogue, acc[i][j] + (bias != nullptr && split == 0 ? bias[k] : 0.0f), oi,
          /*with_residual=*/split == 0, /*with_activation=*/!kSplitK);
      float* out = output + oi;
      if (kSplitK) {
        atomicAdd(out, v);
      } else {
        *out = v;
      }
    }
  }
}

template <class T>
std::string TileName() {
  return std::to_string(T::BM) + "x" + std::to_string(T::BN) + "x" + std::to_string(T::BK) +
         "_t" + std::to_string(T::TM) + "x" + std::to_string(T::TN);
}

const char* VariantName(Variant v) {
  switch (v) {
    case Variant::k1x1:
      return "1x1";
    case Variant::k3x3s1:
      return "3x3s1";
    case Variant::kGeneral:
      return "general";
  }
  return "?";
}

// Reduction ranges of the split-K kernels: enough blocks to fill a big GPU (a few per
// compute unit on 100+ units), each range at least kMinSlicesPerSplit slices long. 1 = the
// layer has enough output tiles already.
constexpr int64_t kSplitKTargetBlocks = 512;
constexpr int64_t kMinSlicesPerSplit = 4;
constexpr int64_t kMaxSplits = 64;

template <class T>
int SplitCount(const Conv2dParams& p) {
  const int64_t m = p.n * p.p() * p.q(), kg = p.k / p.groups;
  const int64_t blocks = ((m + T::BM - 1) / T::BM) * ((kg + T::BN - 1) / T::BN) * p.groups;
  const int64_t slices = ((p.c / p.groups) * p.r * p.s + T::BK - 1) / T::BK;
  int64_t splits = (kSplitKTargetBlocks + blocks - 1) / blocks;
  if (splits > slices / kMinSlicesPerSplit) splits = slices / kMinSlicesPerSplit;
  if (splits > kMaxSplits) splits = kMaxSplits;
  return splits < 1 ? 1 : static_cast<int>(splits);
}

template <class T, Variant V, bool kSplitK>
class ImplicitGemmImpl final : public ConvImpl {
 public:
  ImplicitGemmImpl()
      : name_(std::string("igemm_") + VariantName(V) + (kSplitK ? "_splitk_" : "_") +
              TileName<T>()) {}

  const std::string& name() const override { return name_; }

  std::string Supports(const Conv2dParams& p) const override {
    if (V == Variant::k1x1 &&
        !(p.r == 1 && p.s == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_top == 0 &&
          p.pad_bottom == 0 && p.pad_left == 0 && p.pad_right == 0)) {
      return "needs a 1x1 kernel, stride 1, no padding";
    }
    if (V == Variant::k3x3s1 && !(p.r == 3 && p.s == 3 && p.stride_h == 1 && p.stride_w == 1 &&
                                  p.dilation_h == 1 && p.dilation_w == 1)) {
      return "needs a 3x3 kernel, stride 1, dilation 1";
    }
    std::string reason = Int32IndexingReason(p);
    if (!reason.empty()) return reason;
    if (p.groups > 65535) return "more than 65535 groups";
    if ((p.k / p.groups + T::BN - 1) / T::BN > 65535) return "too many output channels per group";
    if (kSplitK) {
      if (p.activation != Activation::kNone) {
        return "activation needs the whole sum (split-K adds partial sums)";
      }
      if (SplitCount<T>(p) < 2) return "enough output tiles without split-K";
      if (p.groups * SplitCount<T>(p) > 65535) return "too many groups for split-K";
    }
    return "";
  }

  hipError_t Launch(const Conv2dParams& p, const DevConvArgs& a, hipStream_t stream) override {
    const ConvGeometry g = MakeConvGeometry(p);
    const int splits = kSplitK ? SplitCount<T>(p) : 1;
    if (kSplitK) {
      // The partial sums are added into a zeroed output.
      const hipError_t e =
          hipMemsetAsync(a.output, 0, p.output_elements() * sizeof(float), stream);
      if (e != hipSuccess) return e;
    }
    const dim3 grid((g.m + T::BM - 1) / T::BM, (g.kg + T::BN - 1) / T::BN, g.groups * splits);
    const dim3 block(T::kThreads);
    const ConvEpilogue epilogue = MakeConvEpilogue(p, a.residual);
    if (p.layout == Layout::kNHWC) {
      hipLaunchKernelGGL((ImplicitGemmConvKernel<T, V, true, kSplitK>), grid, block, 0, stream,
                         g, splits, a.input, a.weight, a.bias, a.output, epilogue);
    } else {
      hipLaunchKernelGGL((ImplicitGemmConvKernel<T, V, false, kSplitK>), grid, block, 0, stream,
                         g, splits, a.input, a.weight, a.bias, a.output, epilogue);
    }
    return hipGetLastError();
  }

 private:
  std::string name_;
};

// The tile configs the tuner chooses among: big tiles for big GEMMs, small ones so that small
// layers (7×7 images, few channels) still fill the device.
using Tile128x128 = Tile<128, 128, 8, 8, 8>;  // 256 threads
using Tile128x64 = Tile<128, 64, 8, 8, 4>;    // 256 threads
using Tile64x128 = Tile<64, 128, 8, 4, 8>;    // 256 threads
using Tile64x64 = Tile<64, 64, 8, 4, 4>;      // 256 threads
using Tile32x32 = Tile<32, 32, 8, 2, 4>;      // 128 threads

template <Variant V>
void AppendVariant(ConvImplList* list) {
  list->push_back(std::make_unique<ImplicitGemmImpl<Tile128x128, V, false>>());
  list->push_back(std::make_unique<ImplicitGemmImpl<Tile128x64, V, false>>());
  list->push_back(std::make_unique<ImplicitGemmImpl<Tile64x128, V, false>>());
  list->push_back(std::make_unique<ImplicitGemmImpl<Tile64x64, V, false>>());
  list->push_back(std::make_unique<ImplicitGemmImpl<Tile32x32, V, false>>());
  list->push_back(std::make_unique<ImplicitGemmImpl<Tile64x64, V, true>>());
  list->push_back(std::make_unique<ImplicitGemmImpl<Tile32x32, V, true>>());
}

}  // namespace

void AppendImplicitGemmImpls(ConvImplList* list) {
  AppendVariant<Variant::k1x1>(list);
  AppendVariant<Variant::k3x3s1>(list);
  AppendVariant<Variant::kGeneral>(list);
}

}  // namespace sparkle::hip
