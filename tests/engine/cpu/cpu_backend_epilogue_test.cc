// CpuBackend on what issue 13 added: per-side and SAME padding, the fused epilogue (residual,
// activations) and the BF16/FP16 datatypes, each against the oracle (Conv2dRef on the same
// rounded inputs, float64 accumulation, output kept in FP32) as a relative L2 error.
//
// Tolerances (relative L2 error; Tolerance() below), with the largest error measured on this
// machine (avx512_core_bf16, oneDNN 2.6.3) over every test here:
//   FP32 in, FP32 out (Winograd included):  1e-5             measured 3.3e-6
//   BF16 in, FP32 out:                      1e-5             measured 5.2e-7 (bf16 products are
//                                                            exact in FP32, FP32 accumulation)
//   FP16 in, FP32 out:                      1e-5             measured 9.5e-7 (widened to FP32)
//   BF16 in, BF16 out:                      2^-8 + 1e-5      measured 1.8e-3
//   FP16 in, FP16 out:                      2^-11 + 1e-5     measured 2.5e-4
// A narrow output's bound is the unit roundoff of its type (2^-8 for BF16's 8 significant
// bits, 2^-11 for FP16's 11: no rounded value is further off, relatively) plus the FP32 bound
// for the arithmetic before the one rounding. The test prints the largest error per datatype
// pair at the end.
//
// Whole shape table for each axis alone (padding variants, activations with and without
// residual, datatypes with and without residual+relu); the cross product of all axes on a
// representative subset. Over the whole table the epilogue's expected values are the oracle's
// output without epilogue, plus the residual, then the oracle's own activation
// (ApplyActivation), in double: one oracle pass per shape and datatype instead of one per
// epilogue (the oracle is ~1.4 GFLOP/s; the difference is the FP32 rounding of the pre-epilogue
// value, ~6e-8 relative). The cross product calls the oracle with every epilogue itself.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "engine/cpu/conv2d_ref.h"
#include "engine/cpu/cpu_backend.h"
#include "gtest/gtest.h"
#include "tests/testing/shape_table.h"
#include "tests/testing/typed_tensor.h"

namespace sparkle {
namespace {

using testing::NamedShape;
using testing::TypedTensor;

constexpr Activation kActivations[] = {Activation::kNone,    Activation::kRelu,
                                       Activation::kRelu6,   Activation::kClip,
                                       Activation::kSigmoid, Activation::kTanh,
                                       Activation::kSilu,    Activation::kGeluTanh};
constexpr float kClipMin = -0.5f, kClipMax = 0.7f;

// The bound on the relative L2 error of a call computing in `type` with output `out`.
double Tolerance(DataType type, DataType out) {
  constexpr double kFp32 = 1e-5;
  if (out == DataType::kFp32) return kFp32;
  return (type == DataType::kBf16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11)) + kFp32;
}

// The largest error seen per category, printed at the end (the figures behind Tolerance).
class ErrorLog : public ::testing::Environment {
 public:
  static ErrorLog* Get() {
    static ErrorLog* const log = new ErrorLog;
    return log;
  }
  void Record(const std::string& category, double error) {
    absl::MutexLock lock(&mu_);
    double& worst = worst_[category];
    worst = std::max(worst, error);
  }
  void TearDown() override {
    absl::MutexLock lock(&mu_);
    for (const auto& [category, worst] : worst_) {
      std::cout << "largest relative L2 error, " << category << ": " << worst << "\n";
    }
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, double> worst_;
};
const auto* const kRegistered = ::testing::AddGlobalTestEnvironment(ErrorLog::Get());

std::string Category(const Conv2dParams& p) {
  return absl::StrCat(DataTypeName(p.dtype), " -> ", DataTypeName(p.output_dtype));
}

// A fresh weight key per problem: equal keys are only ever used for equal weights.
uint64_t NextKey() {
  static std::atomic<uint64_t> next{uint64_t{1} << 40};
  return next++;
}

// Random tensors of p.dtype (rounded from [-1, 1) floats) and the oracle's exact output on them.
// The residual exists even when p has none, for runs that add the epilogue (WithEpilogue).
struct TypedProblem {
  Conv2dParams params;
  TypedTensor input, weight, bias, residual;
  std::vector<float> expected;  // FP32 output, whatever params.output_dtype
  uint64_t key = NextKey();

  TypedProblem(const Conv2dParams& p, uint32_t seed, uint32_t weight_seed = 0)
      : params(p),
        input(TypedTensor::Random(p.dtype, p.input_elements(), seed)),
        weight(TypedTensor::Random(p.dtype, p.weight_elements(),
                                   weight_seed != 0 ? weight_seed : seed + 1)),
        bias(TypedTensor::Random(p.dtype, p.bias_elements(), seed + 2)),
        residual(TypedTensor::Random(p.dtype, p.output_elements(), seed + 3)),
        expected(p.output_elements()) {
    Conv2dParams exact = p;
    exact.output_dtype = DataType::kFp32;
    Conv2dRef(exact, input.data(), weight.data(), bias.data(), expected.data(), residual.data());
  }

  ConvArgs Args(void* output, bool keyed) const {
    return {.input = input.data(),
            .weight = weight.data(),
            .bias = bias.data(),
            .residual = residual.data(),
            .output = output,
            .weight_id = keyed ? WeightId::Content(0, key) : WeightId{}};
  }

  // Runs `run` (these tensors' geometry and dtype; activation and output dtype may differ from
  // params) into a NaN-filled output and returns the relative L2 error against `want`.
  absl::StatusOr<double> RunError(CpuBackend& backend, const Conv2dParams& run,
                                  const std::vector<float>& want, bool keyed, int threads) const {
    TypedTensor output = TypedTensor::Filled(run.output_dtype, run.output_elements(), NAN);
    absl::Status status = backend.Run(run, Args(output.data(), keyed), threads);
    if (!status.ok()) return status;
    const std::vector<float> got = output.ToFloats();
    const double error = testing::RelativeL2Error(got.data(), want.data(), want.size());
    ErrorLog::Get()->Record(Category(run), error);
    return error;
  }
  absl::StatusOr<double> RunError(CpuBackend& backend, bool keyed, int threads) const {
    return RunError(backend, params, expected, keyed, threads);
  }
};

std::unique_ptr<CpuBackend> MakeBackend(CpuBackend::Options options) {
  auto backend = CpuBackend::Create(options);
  EXPECT_TRUE(backend.ok()) << backend.status();
  return std::move(backend).value();
}

// Winograd allowed: keyed FP32 calls of its shapes take it where oneDNN offers it.
CpuBackend& Backend() {
  static CpuBackend* const backend = MakeBackend({.allow_winograd = true}).release();
  return *backend;
}

const NamedShape& Shape(const std::string& name) {
  for (const NamedShape& shape : testing::ShapeTable()) {
    if (shape.name == name) return shape;
  }
  ADD_FAILURE() << "no shape " << name;
  return testing::ShapeTable().front();
}

// The expected output of `run` from `base`, the oracle's output for run's geometry and data
// without any epilogue: + residual (when run has one), then the activation, in double.
std::vector<float> WithEpilogue(const std::vector<float>& base, const TypedTensor& residual,
                                const Conv2dParams& run) {
  const std::vector<float> skip = residual.ToFloats();
  std::vector<float> out(base.size());
  for (size_t i = 0; i < base.size(); ++i) {
    const double v = double{base[i]} + (run.has_residual ? double{skip[i]} : 0.0);
    out[i] = static_cast<float>(ApplyActivation(run.activation, v, run.clip_min, run.clip_max));
  }
  return out;
}

Conv2dParams WithActivation(Conv2dParams p, Activation a) {
  p.activation = a;
  p.clip_min = a == Activation::kClip ? kClipMin : 0.f;
  p.clip_max = a == Activation::kClip ? kClipMax : 0.f;
  return p;
}

// ONNX auto_pad with stride 2 on both axes: output ceil(in / 2); the odd pixel of padding goes
// to the end (SAME_UPPER, TensorFlow's SAME) or the beginning (SAME_LOWER).
Conv2dParams SameStride2(Conv2dParams p, bool upper) {
  p.stride_h = p.stride_w = 2;
  auto split = [upper](int64_t in, int64_t kernel, int64_t dilation, int64_t* begin,
                       int64_t* end) {
    const int64_t out = (in + 1) / 2;
    const int64_t total = std::max<int64_t>(0, (out - 1) * 2 + (kernel - 1) * dilation + 1 - in);
    *begin = upper ? total / 2 : total - total / 2;
    *end = total - *begin;
  };
  split(p.h, p.r, p.dilation_h, &p.pad_top, &p.pad_bottom);
  split(p.w, p.s, p.dilation_w, &p.pad_left, &p.pad_right);
  return p;
}

struct Variant {
  std::string name;
  Conv2dParams params;
};

// The padding variants of p: one more pixel on each side alone, and SAME_UPPER / SAME_LOWER at
// stride 2.
std::vector<Variant> PaddingVariants(const Conv2dParams& p) {
  std::vector<Variant> variants;
  for (int side = 0; side < 4; ++side) {
    Conv2dParams v = p;
    int64_t* pads[] = {&v.pad_top, &v.pad_bottom, &v.pad_left, &v.pad_right};
    ++*pads[side];
    const char* names[] = {"top+1", "bottom+1", "left+1", "right+1"};
    variants.push_back({names[side], v});
  }
  variants.push_back({"SAME_UPPER_s2", SameStride2(p, true)});
  variants.push_back({"SAME_LOWER_s2", SameStride2(p, false)});
  return variants;
}

class PaddingTableTest : public ::testing::TestWithParam<NamedShape> {};

TEST_P(PaddingTableTest, MatchesReference) {
  CpuBackend& backend = Backend();
  for (const Variant& v : PaddingVariants(GetParam().params)) {
    SCOPED_TRACE(::testing::Message() << v.name << ": " << v.params.ToString());
    ASSERT_TRUE(v.params.Validate().ok()) << v.params.Validate();
    if (v.name.starts_with("SAME")) {
      ASSERT_EQ(v.params.p(), (v.params.h + 1) / 2);
      ASSERT_EQ(v.params.q(), (v.params.w + 1) / 2);
    }
    const TypedProblem problem(v.params, 11);
    absl::StatusOr<double> error = problem.RunError(backend, /*keyed=*/true, backend.threads());
    ASSERT_TRUE(error.ok()) << error.status();
    EXPECT_LT(*error, Tolerance(DataType::kFp32, DataType::kFp32));
  }
}

INSTANTIATE_TEST_SUITE_P(CpuBackend, PaddingTableTest, ::testing::ValuesIn(testing::ShapeTable()),
                         [](const auto& info) { return info.param.name; });

// SAME_UPPER on even inputs puts the extra pixel at the bottom/right: the table has such
// shapes, so the asymmetric case is really exercised.
TEST(PaddingVariantsTest, SameUpperPadsTheEndOfEvenInputs) {
  const Conv2dParams p = SameStride2(Shape("resnet_3x3_56").params, /*upper=*/true);
  EXPECT_EQ(p.pad_top, 0);
  EXPECT_EQ(p.pad_bottom, 1);
  EXPECT_EQ(p.pad_left, 0);
  EXPECT_EQ(p.pad_right, 1);
  const Conv2dParams lower = SameStride2(Shape("resnet_3x3_56").params, /*upper=*/false);
  EXPECT_EQ(lower.pad_top, 1);
  EXPECT_EQ(lower.pad_bottom, 0);
}

class EpilogueTableTest : public ::testing::TestWithParam<NamedShape> {};

// Every activation, with and without residual, FP32, Winograd allowed.
TEST_P(EpilogueTableTest, MatchesReference) {
  CpuBackend& backend = Backend();
  const TypedProblem problem(GetParam().params, 21);
  for (bool residual : {false, true}) {
    for (Activation a : kActivations) {
      Conv2dParams run = WithActivation(problem.params, a);
      run.has_residual = residual;
      const std::vector<float> want = WithEpilogue(problem.expected, problem.residual, run);
      auto impl = backend.ImplementationName(run, backend.threads());
      ASSERT_TRUE(impl.ok()) << impl.status();
      SCOPED_TRACE(::testing::Message() << run.ToString() << " on " << *impl);
      absl::StatusOr<double> error =
          problem.RunError(backend, run, want, /*keyed=*/true, backend.threads());
      ASSERT_TRUE(error.ok()) << error.status();
      EXPECT_LT(*error, Tolerance(DataType::kFp32, DataType::kFp32));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(CpuBackend, EpilogueTableTest, ::testing::ValuesIn(testing::ShapeTable()),
                         [](const auto& info) { return info.param.name; });

class DatatypeTableTest : public ::testing::TestWithParam<NamedShape> {};

// BF16 and FP16, output in the input's type and in FP32, with and without residual + relu;
// weights reordered per call and from the cache.
TEST_P(DatatypeTableTest, MatchesReference) {
  CpuBackend& backend = Backend();
  for (DataType type : {DataType::kBf16, DataType::kFp16}) {
    Conv2dParams p = GetParam().params;
    p.dtype = type;
    const TypedProblem problem(p, 31);
    for (bool epilogue : {false, true}) {
      for (DataType out : {type, DataType::kFp32}) {
        Conv2dParams run = p;
        run.has_residual = epilogue;
        run.activation = epilogue ? Activation::kRelu : Activation::kNone;
        run.output_dtype = out;
        const std::vector<float> want = WithEpilogue(problem.expected, problem.residual, run);
        for (bool keyed : {false, true}) {
          SCOPED_TRACE(::testing::Message() << run.ToString() << ", keyed " << keyed);
          absl::StatusOr<double> error =
              problem.RunError(backend, run, want, keyed, backend.threads());
          ASSERT_TRUE(error.ok()) << error.status();
          EXPECT_LT(*error, Tolerance(type, out));
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(CpuBackend, DatatypeTableTest, ::testing::ValuesIn(testing::ShapeTable()),
                         [](const auto& info) { return info.param.name; });

// Every combination of padding x activation x residual x datatype x output datatype on a
// subset that covers both layouts, bias, grouped and depthwise, dilation and a Winograd shape
// (the NCHW 1x1 sgemm path, where dst is the caller's buffer, is FP32-only: the epilogue table
// covers it); tanh on one thread, the rest on all.
class CrossProductTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CrossProductTest, MatchesReference) {
  CpuBackend& backend = Backend();
  const Conv2dParams base = Shape(GetParam()).params;
  const std::vector<Variant> paddings = {
      {"as_is", base}, {"SAME_UPPER_s2", SameStride2(base, true)}};
  for (const Variant& padding : paddings) {
    for (DataType type : {DataType::kFp32, DataType::kBf16, DataType::kFp16}) {
      for (bool residual : {false, true}) {
        for (Activation a : kActivations) {
          Conv2dParams p = WithActivation(padding.params, a);
          p.dtype = type;
          p.has_residual = residual;
          const TypedProblem problem(p, 41);
          for (DataType out : {type, DataType::kFp32}) {
            Conv2dParams run = p;
            run.output_dtype = out;
            const int threads = a == Activation::kTanh ? 1 : backend.threads();
            SCOPED_TRACE(::testing::Message() << padding.name << ": " << run.ToString()
                                              << ", threads " << threads);
            absl::StatusOr<double> error =
                problem.RunError(backend, run, problem.expected, /*keyed=*/true, threads);
            ASSERT_TRUE(error.ok()) << error.status();
            EXPECT_LT(*error, Tolerance(type, out));
            if (type == DataType::kFp32) break;  // out == type
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(CpuBackend, CrossProductTest,
                         ::testing::Values("grouped_g4_bias",
                                           "depthwise_s2_bias", "dilated_d3_bias_nhwc",
                                           "wino_odd_13x9_bias"),
                         [](const auto& info) { return info.param; });

TEST(CpuBackendDatatypesTest, ReportsItsPaths) {
  CpuBackend& backend = Backend();
  const bool bf16_isa = backend.Isa() == "avx512_core_bf16" || backend.Isa() == "avx512_core_amx";
  EXPECT_EQ(backend.Path(DataType::kFp32), CpuBackend::DatatypePath::kNative);
  EXPECT_EQ(backend.Path(DataType::kFp16), CpuBackend::DatatypePath::kConvertedToFp32);
  EXPECT_EQ(backend.Path(DataType::kBf16), bf16_isa ? CpuBackend::DatatypePath::kNative
                                                    : CpuBackend::DatatypePath::kConvertedToFp32);
  const std::string described = backend.DescribeDatatypes();
  EXPECT_NE(described.find("FP16 converted to FP32"), std::string::npos) << described;
  EXPECT_NE(described.find(bf16_isa ? "BF16 native" : "BF16 converted to FP32"),
            std::string::npos)
      << described;
  // The native path runs oneDNN's bf16 kernels, not its reference code.
  Conv2dParams p = Shape("resnet_3x3_14").params;
  p.dtype = p.output_dtype = DataType::kBf16;
  auto impl = backend.ImplementationName(p, 1);
  ASSERT_TRUE(impl.ok()) << impl.status();
  if (bf16_isa) {
    EXPECT_NE(impl->find("bf16"), std::string::npos) << *impl;
    EXPECT_EQ(impl->find("ref"), std::string::npos) << *impl;
  } else {
    EXPECT_EQ(impl->find("bf16"), std::string::npos) << *impl;
  }
}

// Winograd takes the epilogue only as oneDNN's kernel offers it (residual, relu); any other
// activation runs direct. FP32 only.
TEST(CpuBackendDatatypesTest, WinogradRule) {
  CpuBackend& backend = Backend();
  Conv2dParams p = Shape("resnet_3x3_14").params;
  auto plain = backend.ImplementationName(p, 1);
  ASSERT_TRUE(plain.ok()) << plain.status();
  if (plain->find("wino") == std::string::npos) GTEST_SKIP() << "no Winograd here: " << *plain;
  p.has_residual = true;
  p.activation = Activation::kRelu;
  auto relu = backend.ImplementationName(p, 1);
  ASSERT_TRUE(relu.ok()) << relu.status();
  EXPECT_NE(relu->find("wino"), std::string::npos) << *relu;
  p.activation = Activation::kGeluTanh;
  auto gelu = backend.ImplementationName(p, 1);
  ASSERT_TRUE(gelu.ok()) << gelu.status();
  EXPECT_EQ(gelu->find("wino"), std::string::npos) << *gelu;
  p.activation = Activation::kNone;
  p.dtype = DataType::kBf16;
  auto bf16 = backend.ImplementationName(p, 1);
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  EXPECT_EQ(bf16->find("wino"), std::string::npos) << *bf16;
}

// One WeightId shared by FP32, BF16 and FP16 weights of one geometry (different values, so a
// mix-up shows): the cache keeps them apart by their source datatype and reordered layout,
// including FP16, whose reordered layout is FP32's.
TEST(CpuBackendDatatypesTest, CachedWeightsOfDifferentDatatypesNeverMix) {
  const Conv2dParams base = Shape("resnet_3x3_28").params;
  std::vector<std::unique_ptr<TypedProblem>> problems;
  uint32_t seed = 100;
  for (DataType type : {DataType::kFp32, DataType::kBf16, DataType::kFp16}) {
    Conv2dParams p = base;
    p.dtype = p.output_dtype = type;
    problems.push_back(std::make_unique<TypedProblem>(p, 5, seed += 10));
    problems.back()->key = 777;  // the collision under test
  }
  for (bool winograd : {false, true}) {
    auto backend = MakeBackend({.allow_winograd = winograd});
    for (int i : {0, 1, 2, 0, 2, 1, 0}) {
      const TypedProblem& problem = *problems[i];
      SCOPED_TRACE(::testing::Message() << problem.params.ToString() << ", winograd " << winograd);
      absl::StatusOr<double> error = problem.RunError(*backend, /*keyed=*/true, 1);
      ASSERT_TRUE(error.ok()) << error.status();
      EXPECT_LT(*error, Tolerance(problem.params.dtype, problem.params.output_dtype));
    }
  }
}

// The residual may be the output buffer itself (an in-place skip connection), whether dst is
// the caller's buffer (FP32 plain layouts) or oneDNN's own (blocked layouts, other types).
TEST(CpuBackendDatatypesTest, ResidualMayBeTheOutput) {
  CpuBackend& backend = Backend();
  for (const char* name : {"resnet_1x1_56_bias", "small_3x3_nhwc", "odd_sizes_s2_bias"}) {
    for (DataType type : {DataType::kFp32, DataType::kBf16, DataType::kFp16}) {
      Conv2dParams p = Shape(name).params;
      p.dtype = p.output_dtype = type;
      p.has_residual = true;
      p.activation = Activation::kRelu;
      const TypedProblem problem(p, 51);
      TypedTensor inout = problem.residual;
      ConvArgs args = problem.Args(inout.data(), /*keyed=*/true);
      args.residual = inout.data();
      SCOPED_TRACE(p.ToString());
      ASSERT_TRUE(backend.Run(p, args, backend.threads()).ok());
      const std::vector<float> got = inout.ToFloats();
      EXPECT_LT(testing::RelativeL2Error(got.data(), problem.expected.data(), got.size()),
                Tolerance(type, type));
    }
  }
}

// Output rows or columns that see nothing but padding (a side's padding at least the dilated
// kernel's extent), with a residual: oneDNN 2.6's brgconv crashed on them with its sum post-op
// (a SIGSEGV that took the daemon down), so CpuBackend runs them with another implementation.
TEST(CpuBackendDatatypesTest, AllPaddingRowsWithResidual) {
  CpuBackend& backend = Backend();
  for (const int64_t r : {1, 3}) {
    for (int side = 0; side < 4; ++side) {
      for (DataType type : {DataType::kFp32, DataType::kBf16, DataType::kFp16}) {
        Conv2dParams p{.n = 2, .c = 16, .h = 8, .w = 8, .k = 16, .r = r, .s = r, .has_bias = true};
        int64_t* pads[] = {&p.pad_top, &p.pad_bottom, &p.pad_left, &p.pad_right};
        *pads[side] = r;  // one whole output row or column of padding
        p.dtype = p.output_dtype = type;
        p.has_residual = true;
        p.activation = Activation::kRelu;
        ASSERT_TRUE(p.Validate().ok());
        SCOPED_TRACE(p.ToString());
        const TypedProblem problem(p, 61);
        for (const bool keyed : {false, true}) {
          absl::StatusOr<double> error = problem.RunError(backend, keyed, backend.threads());
          ASSERT_TRUE(error.ok()) << error.status();
          EXPECT_LT(*error, Tolerance(type, type));
        }
      }
    }
  }
}

// Random small geometries × epilogues × datatypes × layouts against the oracle: what the shape
// table does not list (odd paddings, all-padding rows, tiny channel counts) must neither crash
// oneDNN nor drift from the oracle. Fixed seed: the same 3000 cases every run.
TEST(CpuBackendDatatypesTest, RandomCasesMatchTheOracle) {
  CpuBackend& backend = Backend();
  std::mt19937 rng(13);
  auto pick = [&rng](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  const Activation activations[] = {Activation::kNone, Activation::kRelu, Activation::kRelu6,
                                    Activation::kClip, Activation::kSigmoid, Activation::kTanh,
                                    Activation::kSilu, Activation::kGeluTanh};
  const DataType types[] = {DataType::kFp32, DataType::kBf16, DataType::kFp16};
  int run = 0;
  while (run < 3000) {
    Conv2dParams p;
    p.groups = pick(1, 3);
    p.n = pick(1, 3), p.c = p.groups * pick(1, 8), p.k = p.groups * pick(1, 8);
    p.h = pick(1, 12), p.w = pick(1, 12), p.r = pick(1, 4), p.s = pick(1, 4);
    p.stride_h = pick(1, 3), p.stride_w = pick(1, 3);
    p.dilation_h = pick(1, 2), p.dilation_w = pick(1, 2);
    p.pad_top = pick(0, 4), p.pad_bottom = pick(0, 4), p.pad_left = pick(0, 4);
    p.pad_right = pick(0, 4);
    p.has_bias = pick(0, 1) == 1, p.has_residual = pick(0, 1) == 1;
    p.layout = pick(0, 1) == 1 ? Layout::kNHWC : Layout::kNCHW;
    p = WithActivation(p, activations[pick(0, 7)]);
    p.dtype = types[pick(0, 2)];
    p.output_dtype = pick(0, 1) == 1 ? DataType::kFp32 : p.dtype;
    if (!p.Validate().ok()) continue;
    ++run;
    SCOPED_TRACE(p.ToString());
    const TypedProblem problem(p, static_cast<uint32_t>(run));
    absl::StatusOr<double> error = problem.RunError(backend, /*keyed=*/run % 2 == 0, 1);
    ASSERT_TRUE(error.ok()) << error.status();
    EXPECT_LT(*error, Tolerance(p.dtype, p.output_dtype));
  }
}

TEST(CpuBackendDatatypesTest, NullResidualIsInvalid) {
  Conv2dParams p = Shape("small_3x3").params;
  p.has_residual = true;
  const TypedProblem problem(p, 61);
  TypedTensor output = TypedTensor::Filled(p.output_dtype, p.output_elements(), 0);
  ConvArgs args = problem.Args(output.data(), false);
  args.residual = nullptr;
  EXPECT_EQ(Backend().Run(p, args, 1).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sparkle
