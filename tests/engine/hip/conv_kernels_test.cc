// ConvKernels against the oracle (Conv2dRef) on the shared shape table: every implementation
// and tile config forced on every shape it supports, both layouts, bias on and off; the tuned
// path; Supports() reasons; the tuning cache across instances. Built in the GPU modes; in
// SPARKLE_GPU=emu the kernels run on the CPU emulator (timing there is meaningless, the logic
// is not).
#include "engine/hip/conv_kernels.h"

#include <hip/hip_runtime.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <ostream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "engine/core/activation.h"
#include "engine/core/data_type.h"
#include "engine/cpu/conv2d_ref.h"
#include "gtest/gtest.h"
#include "tests/testing/gpu_test_env.h"
#include "tests/testing/shape_table.h"

#if defined(__HIP_PLATFORM_HIPEMU__)
#include "engine/hip/device_dtype.h"
#include "hip_emu_control.h"
#endif

namespace sparkle::testing {
// How gtest prints a shape parameter (ctest's test names): its name and geometry.
void PrintTo(const NamedShape& shape, std::ostream* os) {
  *os << shape.name << " " << shape.params.ToString();
}
}  // namespace sparkle::testing

namespace sparkle::hip {
namespace {

namespace fs = std::filesystem;
using ::sparkle::testing::NamedShape;

constexpr double kMaxRelativeError = 1e-5;
// Relative L2 error bounds of an output rounded to BF16 / FP16 (inputs in the same datatype, the
// oracle on the same rounded inputs; FP32 accumulation). An FP32 output of BF16/FP16 inputs is
// held to kMaxRelativeError. Measured maxima on the test table: docs/gpu.md.
constexpr double kMaxRelativeErrorBf16Output = 1e-3;
constexpr double kMaxRelativeErrorFp16Output = 2e-4;

double ToleranceFor(const Conv2dParams& p) {
  switch (p.output_dtype) {
    case DataType::kBf16:
      return kMaxRelativeErrorBf16Output;
    case DataType::kFp16:
      return kMaxRelativeErrorFp16Output;
    case DataType::kFp32:
      break;
  }
  return kMaxRelativeError;
}

#define HIP_ASSERT_OK(expr)                                                   \
  do {                                                                        \
    const hipError_t hip_assert_e_ = (expr);                                  \
    ASSERT_EQ(hip_assert_e_, hipSuccess) << #expr << ": "                     \
                                         << hipGetErrorName(hip_assert_e_);   \
  } while (0)

// The shapes the kernels are checked on: the shared table, with the biggest layers reduced where
// the CPU emulator would take too long (every implementation runs every shape it supports,
// ~10 per shape, and the implicit GEMM pays for the whole C·R·S of a grouped layer per group).
// First the spatial size is halved (down to 8), then, for the ResNet 7×7 layers, the channels.
// Kernel, stride, padding, dilation, groups and layout stay, so every shape class is still
// covered; a real GPU runs the full table, and so does the emulator with
// SPARKLE_EMU_FULL_TABLE=1 (minutes instead of seconds).
std::vector<NamedShape> GpuShapeTable() {
  std::vector<NamedShape> shapes = ::sparkle::testing::ShapeTable();
#if defined(__HIP_PLATFORM_HIPEMU__)
  const char* full = std::getenv("SPARKLE_EMU_FULL_TABLE");
  if (full != nullptr && std::string(full) == "1") return shapes;
  constexpr double kMaxDenseMacs = 8e6;
  auto dense_macs = [](const Conv2dParams& p) {
    return static_cast<double>(p.n) * p.k * p.p() * p.q() * p.c * p.r * p.s;
  };
  for (NamedShape& shape : shapes) {
    Conv2dParams& p = shape.params;
    bool reduced = false;
    while (dense_macs(p) > kMaxDenseMacs) {
      Conv2dParams smaller = p;
      if (p.h > 8 && p.w > 8) {
        smaller.h = std::max<int64_t>(8, p.h / 2);
        smaller.w = std::max<int64_t>(8, p.w / 2);
      } else if (p.groups == 1 && p.c % 2 == 0 && p.k % 2 == 0) {
        smaller.c = p.c / 2;
        smaller.k = p.k / 2;
      } else {
        break;
      }
      if (!smaller.Validate().ok()) break;
      p = smaller;
      reduced = true;
    }
    if (reduced) shape.name += "_emu_reduced";
  }
#endif
  return shapes;
}

// The same shape in the other layout with the bias flipped.
NamedShape Mirror(NamedShape shape) {
  shape.params.layout =
      shape.params.layout == Layout::kNCHW ? Layout::kNHWC : Layout::kNCHW;
  shape.params.has_bias = !shape.params.has_bias;
  shape.name += "_mirror";
  return shape;
}

std::vector<NamedShape> TestShapes() {
  std::vector<NamedShape> shapes;
  for (const NamedShape& shape : GpuShapeTable()) {
    shapes.push_back(shape);
    shapes.push_back(Mirror(shape));
  }
  return shapes;
}

// A device buffer freed at scope exit.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() {
    if (ptr_ != nullptr) (void)hipFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  hipError_t Upload(const std::vector<float>& host) {
    hipError_t e = hipMalloc(&ptr_, std::max<size_t>(1, host.size()) * sizeof(float));
    if (e != hipSuccess || host.empty()) return e;
    return hipMemcpy(ptr_, host.data(), host.size() * sizeof(float), hipMemcpyHostToDevice);
  }
  // Filled with NaN (all bits set), so a skipped output element cannot pass.
  hipError_t AllocateNaN(size_t count) {
    hipError_t e = hipMalloc(&ptr_, count * sizeof(float));
    if (e != hipSuccess) return e;
    return hipMemset(ptr_, 0xff, count * sizeof(float));
  }
  float* get() const { return ptr_; }

 private:
  float* ptr_ = nullptr;
};

class ConvKernelsTest : public ::testing::Test {
 protected:
  void SetUp() override {
#if defined(__HIP_PLATFORM_HIPEMU__)
    hipemu::Config config;
    config.device_count = 1;
    config.memory_bytes = int64_t{4} << 30;
    hipemu::Configure(config);
#endif
    int count = 0;
    const hipError_t e = hipGetDeviceCount(&count);
    if (e != hipSuccess || count <= 0) {
      SPARKLE_SKIP_OR_FAIL_WITHOUT_GPU(std::string("hipGetDeviceCount: ") + hipGetErrorName(e));
    }
    HIP_ASSERT_OK(hipSetDevice(0));
    HIP_ASSERT_OK(hipStreamCreate(&stream_));
  }
  void TearDown() override {
    if (stream_ != nullptr) (void)hipStreamDestroy(stream_);
  }

  // One convolution's random data, its expected output (Conv2dRef) and device buffers,
  // prepared once and run through any number of implementations.
  struct Problem {
    Conv2dParams p;
    std::vector<float> expected;
    DeviceBuffer input, weight, bias, output;
  };
  void Prepare(const Conv2dParams& p, Problem* problem) {
    problem->p = p;
    const std::vector<float> input = ::sparkle::testing::RandomFloats(p.input_elements(), 1);
    const std::vector<float> weight = ::sparkle::testing::RandomFloats(p.weight_elements(), 2);
    const std::vector<float> bias = ::sparkle::testing::RandomFloats(p.bias_elements(), 3);
    problem->expected.resize(p.output_elements());
    Conv2dRef(p, input.data(), weight.data(), p.has_bias ? bias.data() : nullptr,
              problem->expected.data());
    HIP_ASSERT_OK(problem->input.Upload(input));
    HIP_ASSERT_OK(problem->weight.Upload(weight));
    HIP_ASSERT_OK(problem->bias.Upload(bias));
    HIP_ASSERT_OK(problem->output.AllocateNaN(problem->expected.size()));
  }

  // Runs the problem through `kernels` (the output is NaN-filled first); on return *error is
  // the relative L2 error against Conv2dRef.
  void RunAndCompare(ConvKernels& kernels, const Problem& problem, double* error) {
    *error = std::numeric_limits<double>::infinity();
    const Conv2dParams& p = problem.p;
    const size_t count = problem.expected.size();
    HIP_ASSERT_OK(hipMemset(problem.output.get(), 0xff, count * sizeof(float)));
    const DevConvArgs args{problem.input.get(), problem.weight.get(),
                           p.has_bias ? problem.bias.get() : nullptr, problem.output.get()};
    HIP_ASSERT_OK(kernels.Launch(p, args, stream_));
    HIP_ASSERT_OK(hipStreamSynchronize(stream_));
    std::vector<float> actual(count);
    HIP_ASSERT_OK(hipMemcpy(actual.data(), problem.output.get(), count * sizeof(float),
                            hipMemcpyDeviceToHost));
    *error = ::sparkle::testing::RelativeL2Error(actual.data(), problem.expected.data(),
                                                   static_cast<int64_t>(count));
  }
  void RunAndCompare(ConvKernels& kernels, const Conv2dParams& p, double* error) {
    Problem problem;
    ASSERT_NO_FATAL_FAILURE(Prepare(p, &problem));
    RunAndCompare(kernels, problem, error);
  }

  hipStream_t stream_ = nullptr;
};

class ConvKernelsShapeTest : public ConvKernelsTest,
                             public ::testing::WithParamInterface<NamedShape> {};

// Every implementation and tile config, forced, on every shape it supports.
TEST_P(ConvKernelsShapeTest, EveryImplementationMatchesTheReference) {
  const Conv2dParams& p = GetParam().params;
  ASSERT_TRUE(p.Validate().ok()) << p.Validate();
  ConvKernels kernels(0, "test-device", "");
  ASSERT_EQ(kernels.Supports(p), "");
  Problem problem;
  ASSERT_NO_FATAL_FAILURE(Prepare(p, &problem));
  int ran = 0;
  for (const std::string& name : kernels.ImplementationNames()) {
    if (!kernels.ImplementationSupports(name, p).empty()) continue;
    SCOPED_TRACE(name);
    ASSERT_TRUE(kernels.ForceImplementation(name));
    EXPECT_EQ(kernels.Chosen(p), name);
    double error;
    ASSERT_NO_FATAL_FAILURE(RunAndCompare(kernels, problem, &error));
    EXPECT_LT(error, kMaxRelativeError) << p.ToString();
    ++ran;
  }
  EXPECT_GE(ran, 1);
}

INSTANTIATE_TEST_SUITE_P(ShapeTable, ConvKernelsShapeTest, ::testing::ValuesIn(TestShapes()),
                         [](const ::testing::TestParamInfo<NamedShape>& info) {
                           return info.param.name;
                         });

// The tuned path (no implementation forced) on one shape of each class: the choice is one of the
// implementations that support the shape, and its result is right.
TEST_F(ConvKernelsTest, TheTunedChoiceMatchesTheReference) {
  const std::vector<std::string> names = {
      "small_3x3_nhwc",        "pointwise_b3_9x8_bias", "depthwise_s2_bias",
      "grouped_g4_bias_nhwc",  "odd_sizes_s2_bias",     "image_1x1_kernel_3x3_pad_1",
      "wino_odd_13x9_bias_nhwc"};
  int checked = 0;
  for (const NamedShape& shape : ::sparkle::testing::ShapeTable()) {
    if (std::find(names.begin(), names.end(), shape.name) == names.end()) continue;
    SCOPED_TRACE(shape.name);
    const Conv2dParams& p = shape.params;
    ConvKernels kernels(0, "test-device", "");
    kernels.set_tuning_runs(1);
    EXPECT_EQ(kernels.Chosen(p), "");
    // The first launch runs the default implementation at once; tuning runs on its own thread.
    const std::string default_impl = kernels.Selected(p);
    ASSERT_NE(default_impl, "");
    double error;
    ASSERT_NO_FATAL_FAILURE(RunAndCompare(kernels, p, &error));
    EXPECT_LT(error, kMaxRelativeError) << "default: " << default_impl;
    kernels.WaitForTuning();
    ASSERT_NE(kernels.Chosen(p), "");
    EXPECT_EQ(kernels.Selected(p), kernels.Chosen(p));
    EXPECT_EQ(kernels.ImplementationSupports(kernels.Chosen(p), p), "");
    ASSERT_NO_FATAL_FAILURE(RunAndCompare(kernels, p, &error));
    EXPECT_LT(error, kMaxRelativeError) << "tuned: " << kernels.Chosen(p);
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(names.size()));
}

// Two threads, each with its own stream, tuning and launching through one ConvKernels (and so
// one cache file): every result is right and each shape ends up with one choice on disk.
TEST_F(ConvKernelsTest, ConcurrentLaunchesShareOneCache) {
  const fs::path dir = fs::temp_directory_path() / ("conv_kernels_test_mt_" +
                                                    std::to_string(getpid()));
  fs::remove_all(dir);
  ConvKernels kernels(0, "test device", dir.string());
  kernels.set_tuning_runs(1);
  std::vector<Conv2dParams> shapes;
  for (const NamedShape& shape : ::sparkle::testing::ShapeTable()) {
    if (shape.params.flops() < 2e6) shapes.push_back(shape.params);
  }
  ASSERT_GE(shapes.size(), 4u);
  auto worker = [&](int first, std::vector<double>* errors) {
    hipStream_t stream = nullptr;
    if (hipStreamCreate(&stream) != hipSuccess) return;
    for (size_t i = 0; i < shapes.size(); ++i) {
      const Conv2dParams& p = shapes[(first + i) % shapes.size()];
      const std::vector<float> input = ::sparkle::testing::RandomFloats(p.input_elements(), 1);
      const std::vector<float> weight = ::sparkle::testing::RandomFloats(p.weight_elements(), 2);
      const std::vector<float> bias = ::sparkle::testing::RandomFloats(p.bias_elements(), 3);
      std::vector<float> expected(p.output_elements()), actual(p.output_elements());
      Conv2dRef(p, input.data(), weight.data(), p.has_bias ? bias.data() : nullptr,
                expected.data());
      DeviceBuffer d_input, d_weight, d_bias, d_output;
      double error = std::numeric_limits<double>::infinity();
      if (d_input.Upload(input) == hipSuccess && d_weight.Upload(weight) == hipSuccess &&
          d_bias.Upload(bias) == hipSuccess && d_output.AllocateNaN(actual.size()) == hipSuccess &&
          kernels.Launch(p,
                         {d_input.get(), d_weight.get(), p.has_bias ? d_bias.get() : nullptr,
                          d_output.get()},
                         stream) == hipSuccess &&
          hipStreamSynchronize(stream) == hipSuccess &&
          hipMemcpy(actual.data(), d_output.get(), actual.size() * sizeof(float),
                    hipMemcpyDeviceToHost) == hipSuccess) {
        error = ::sparkle::testing::RelativeL2Error(actual.data(), expected.data(),
                                                      static_cast<int64_t>(actual.size()));
      }
      errors->push_back(error);
    }
    (void)hipStreamDestroy(stream);
  };
  std::vector<double> errors_a, errors_b;
  std::thread a(worker, 0, &errors_a);
  std::thread b(worker, static_cast<int>(shapes.size() / 2), &errors_b);
  a.join();
  b.join();
  kernels.WaitForTuning();
  ASSERT_EQ(errors_a.size(), shapes.size());
  ASSERT_EQ(errors_b.size(), shapes.size());
  for (size_t i = 0; i < shapes.size(); ++i) {
    EXPECT_LT(errors_a[i], kMaxRelativeError) << i;
    EXPECT_LT(errors_b[i], kMaxRelativeError) << i;
  }
  ConvKernels reloaded(0, "test device", dir.string());
  EXPECT_TRUE(reloaded.tuning_cache().load_status().ok());
  for (const Conv2dParams& p : shapes) {
    EXPECT_EQ(reloaded.Chosen(p), kernels.Chosen(p)) << p.ToString();
    EXPECT_NE(reloaded.Chosen(p), "") << p.ToString();
  }
  fs::remove_all(dir);
}

// Each implementation meets at least one shape of the table in each layout, so none of them
// goes unchecked by the test above.
TEST_F(ConvKernelsTest, TheTableCoversEveryImplementationInBothLayouts) {
  ConvKernels kernels(0, "test-device", "");
  for (const std::string& name : kernels.ImplementationNames()) {
    if (name.rfind("cudnn", 0) == 0) continue;  // supports every shape the kernels do
    for (Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
      int shapes = 0;
      for (const NamedShape& shape : TestShapes()) {
        if (shape.params.layout == layout &&
            kernels.ImplementationSupports(name, shape.params).empty()) {
          ++shapes;
        }
      }
      EXPECT_GE(shapes, 2) << name << " " << LayoutName(layout);
    }
  }
}

TEST_F(ConvKernelsTest, SupportsExplainsEveryRefusal) {
  ConvKernels kernels(0, "test-device", "");
  // 2^32 input elements: beyond the kernels' 32-bit indexing.
  Conv2dParams huge{.n = 1, .c = 65536, .h = 65536, .w = 1, .k = 1};
  ASSERT_TRUE(huge.Validate().ok());
  const std::string reasons = kernels.Supports(huge);
  for (const std::string& name : kernels.ImplementationNames()) {
    EXPECT_NE(reasons.find(name + ": "), std::string::npos) << name << " in " << reasons;
  }
  EXPECT_NE(reasons.find("2^31"), std::string::npos) << reasons;
  EXPECT_NE(reasons.find("needs groups == C"), std::string::npos) << reasons;

  Conv2dParams invalid{.c = 3, .k = 4, .groups = 2};
  EXPECT_NE(kernels.Supports(invalid).find("groups"), std::string::npos);

  // Per implementation.
  Conv2dParams conv3x3{.c = 8, .h = 8, .w = 8, .k = 8, .r = 3, .s = 3};
  EXPECT_EQ(kernels.ImplementationSupports("igemm_3x3s1_64x64x8_t4x4", conv3x3), "");
  EXPECT_EQ(kernels.ImplementationSupports("igemm_general_64x64x8_t4x4", conv3x3), "");
  EXPECT_NE(kernels.ImplementationSupports("igemm_1x1_64x64x8_t4x4", conv3x3)
                .find("1x1 kernel"),
            std::string::npos);
  EXPECT_NE(kernels.ImplementationSupports("depthwise_3x3", conv3x3).find("groups == C"),
            std::string::npos);
  Conv2dParams strided = conv3x3;
  strided.stride_h = 2;
  EXPECT_NE(kernels.ImplementationSupports("igemm_3x3s1_64x64x8_t4x4", strided).find("stride"),
            std::string::npos);
  EXPECT_NE(kernels.ImplementationSupports("no_such_kernel", conv3x3).find("unknown"),
            std::string::npos);
  EXPECT_FALSE(kernels.ForceImplementation("no_such_kernel"));

  // A forced implementation refuses a shape it does not support (nothing is launched).
  ASSERT_TRUE(kernels.ForceImplementation("depthwise_3x3"));
  const DevConvArgs none{nullptr, nullptr, nullptr, nullptr};
  EXPECT_EQ(kernels.Launch(conv3x3, none, stream_), hipErrorInvalidValue);
  ASSERT_TRUE(kernels.ForceImplementation(""));
  EXPECT_EQ(kernels.Launch(huge, none, stream_), hipErrorInvalidValue);
  EXPECT_EQ(kernels.Launch(invalid, none, stream_), hipErrorInvalidValue);
}

class ConvKernelsCacheTest : public ConvKernelsTest {
 protected:
  void SetUp() override {
    ConvKernelsTest::SetUp();
    dir_ = fs::temp_directory_path() /
           ("conv_kernels_test_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override {
    fs::remove_all(dir_);
    ConvKernelsTest::TearDown();
  }
  std::string FileText() {
    std::ifstream in(dir_ / TuningCache::FileName(kDevice));
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  static constexpr char kDevice[] = "test device";
  // Small, and supported by ten implementations (3x3s1 and general tiles).
  const Conv2dParams p_{.n = 1, .c = 16, .h = 12, .w = 12, .k = 16, .r = 3, .s = 3,
                        .pad_top = 1, .pad_bottom = 1, .pad_left = 1, .pad_right = 1, .has_bias = true};
  fs::path dir_;
};

TEST_F(ConvKernelsCacheTest, TheChoiceIsWrittenAndReloadedByANewInstance) {
  std::string chosen;
  {
    ConvKernels kernels(0, kDevice, dir_.string());
    kernels.set_tuning_runs(1);
    EXPECT_EQ(kernels.Chosen(p_), "");
    double error;
    ASSERT_NO_FATAL_FAILURE(RunAndCompare(kernels, p_, &error));
    EXPECT_LT(error, kMaxRelativeError);
    kernels.WaitForTuning();
    EXPECT_EQ(kernels.tunings(), 1);
    chosen = kernels.Chosen(p_);
    ASSERT_NE(chosen, "");
    EXPECT_EQ(kernels.ImplementationSupports(chosen, p_), "");
  }
  const std::string text = FileText();
  EXPECT_EQ(text.rfind("sparkle-conv-tuning 2\ndevice test device\n" + chosen + "\t", 0), 0u)
      << text;
  EXPECT_NE(text.find("\t" + TuningCache::ShapeKey(p_) + "\n"), std::string::npos) << text;

  ConvKernels reloaded(0, kDevice, dir_.string());
  EXPECT_TRUE(reloaded.tuning_cache().load_status().ok());
  EXPECT_EQ(reloaded.Chosen(p_), chosen);  // before any launch
#if defined(__HIP_PLATFORM_HIPEMU__)
  const int64_t launches_before = hipemu::GetCounters(0).kernel_launches;
#endif
  double error;
  ASSERT_NO_FATAL_FAILURE(RunAndCompare(reloaded, p_, &error));
  EXPECT_LT(error, kMaxRelativeError);
#if defined(__HIP_PLATFORM_HIPEMU__)
  // One launch: the reloaded choice was used, nothing was tuned again.
  EXPECT_EQ(hipemu::GetCounters(0).kernel_launches - launches_before, 1);
#endif
  reloaded.WaitForTuning();
  EXPECT_EQ(reloaded.tunings(), 0);

  // Another device model does not see this device's choices.
  ConvKernels other(0, "another device", dir_.string());
  EXPECT_EQ(other.Chosen(p_), "");
}

TEST_F(ConvKernelsCacheTest, ACorruptFileIsIgnoredAndReplaced) {
  fs::create_directories(dir_);
  std::ofstream(dir_ / TuningCache::FileName(kDevice)) << "\x7f" "ELF garbage\n\n\t\t\n";
  ConvKernels kernels(0, kDevice, dir_.string());
  EXPECT_FALSE(kernels.tuning_cache().load_status().ok());
  EXPECT_EQ(kernels.Chosen(p_), "");
  kernels.set_tuning_runs(1);
  double error;
  ASSERT_NO_FATAL_FAILURE(RunAndCompare(kernels, p_, &error));
  EXPECT_LT(error, kMaxRelativeError);
  kernels.WaitForTuning();
  ASSERT_NE(kernels.Chosen(p_), "");

  ConvKernels reloaded(0, kDevice, dir_.string());
  EXPECT_TRUE(reloaded.tuning_cache().load_status().ok());
  EXPECT_EQ(reloaded.Chosen(p_), kernels.Chosen(p_));
}

TEST_F(ConvKernelsCacheTest, AnEntryNamingAnUnknownImplementationIsTunedAgain) {
  fs::create_directories(dir_);
  std::ofstream(dir_ / TuningCache::FileName(kDevice))
      << "sparkle-conv-tuning 2\ndevice " << kDevice << "\nkernel_of_another_build\t1\t"
      << TuningCache::ShapeKey(p_) << "\n";
  ConvKernels kernels(0, kDevice, dir_.string());
  kernels.set_tuning_runs(1);
  EXPECT_EQ(kernels.Chosen(p_), "kernel_of_another_build");
  double error;
  ASSERT_NO_FATAL_FAILURE(RunAndCompare(kernels, p_, &error));
  EXPECT_LT(error, kMaxRelativeError);
  kernels.WaitForTuning();
  EXPECT_EQ(kernels.tunings(), 1);
  EXPECT_EQ(kernels.ImplementationSupports(kernels.Chosen(p_), p_), "");
}

// Two batch sizes of one N bucket share one tuning; the next bucket tunes again. Launches never
// wait for tuning: every result is right, from the default or the tuned implementation.
TEST_F(ConvKernelsCacheTest, OneTuningPerNBucket) {
  ConvKernels kernels(0, kDevice, dir_.string());
  kernels.set_tuning_runs(1);
  for (int64_t n : {3, 4, 3, 5, 8}) {
    Conv2dParams p = p_;
    p.n = n;
    double error;
    ASSERT_NO_FATAL_FAILURE(RunAndCompare(kernels, p, &error));
    EXPECT_LT(error, kMaxRelativeError) << "n " << n << " ran " << kernels.Selected(p);
    kernels.WaitForTuning();
  }
  EXPECT_EQ(kernels.tunings(), 2);  // buckets 4 and 8
  Conv2dParams three = p_, four = p_;
  three.n = 3;
  four.n = 4;
  EXPECT_NE(kernels.Chosen(three), "");
  EXPECT_EQ(kernels.Chosen(three), kernels.Chosen(four));
  EXPECT_EQ(kernels.tuning_cache().size(), 2u);
}


// ---- Asymmetric/SAME padding, the fused epilogue and the BF16/FP16 datatypes ----

// `count` random values in [-1, 1) rounded to `type` (its bytes).
std::vector<char> TypedRandom(DataType type, int64_t count, uint32_t seed) {
  const std::vector<float> f = ::sparkle::testing::RandomFloats(count, seed);
  std::vector<char> bytes(static_cast<size_t>(std::max<int64_t>(1, count * ElementSize(type))));
  NarrowFromFloat(type, f.data(), bytes.data(), count);
  return bytes;
}

// ONNX auto_pad SAME_UPPER (upper: the extra pad at the bottom/right) or SAME_LOWER, stride 2.
void SameStride2(Conv2dParams* p, bool upper) {
  p->stride_h = p->stride_w = 2;
  auto pads = [&](int64_t in, int64_t k, int64_t dil, int64_t* lo, int64_t* hi) {
    const int64_t out = (in + 1) / 2;
    const int64_t total = std::max<int64_t>(0, (out - 1) * 2 + dil * (k - 1) + 1 - in);
    *lo = upper ? total / 2 : total - total / 2;
    *hi = total - *lo;
  };
  pads(p->h, p->r, p->dilation_h, &p->pad_top, &p->pad_bottom);
  pads(p->w, p->s, p->dilation_w, &p->pad_left, &p->pad_right);
}

// One axis of the cross product applied to a shape.
struct Variant {
  std::string name;
  std::function<void(Conv2dParams*)> apply;
};

void SetActivation(Conv2dParams* p, Activation a) {
  p->activation = a;
  if (a == Activation::kClip) p->clip_min = -0.25f, p->clip_max = 0.5f;
}

std::vector<Variant> AxisVariants() {
  std::vector<Variant> v = {
      {"pad_top", [](Conv2dParams* p) { p->pad_top += 1; }},
      {"pad_bottom", [](Conv2dParams* p) { p->pad_bottom += 2; }},
      {"pad_left", [](Conv2dParams* p) { p->pad_left += 1; }},
      {"pad_right", [](Conv2dParams* p) { p->pad_right += 2; }},
      {"same_upper_s2", [](Conv2dParams* p) { SameStride2(p, true); }},
      {"same_lower_s2", [](Conv2dParams* p) { SameStride2(p, false); }},
      {"residual", [](Conv2dParams* p) { p->has_residual = true; }},
  };
  for (Activation a : {Activation::kRelu, Activation::kRelu6, Activation::kClip,
                       Activation::kSigmoid, Activation::kTanh, Activation::kSilu,
                       Activation::kGeluTanh}) {
    v.push_back({ActivationName(a), [a](Conv2dParams* p) { SetActivation(p, a); }});
  }
  for (DataType t : {DataType::kBf16, DataType::kFp16}) {
    const std::string name = DataTypeName(t);
    v.push_back({name, [t](Conv2dParams* p) { p->dtype = p->output_dtype = t; }});
    v.push_back({name + "_out_fp32", [t](Conv2dParams* p) {
                   p->dtype = t;
                   p->output_dtype = DataType::kFp32;
                 }});
  }
  return v;
}

// The cross products, on a subset of shapes: asymmetric padding + residual + activation + a
// datatype together.
std::vector<Variant> CrossVariants() {
  return {
      {"bf16_res_gelu_pad_tl", [](Conv2dParams* p) {
         p->dtype = p->output_dtype = DataType::kBf16;
         p->has_residual = true;
         SetActivation(p, Activation::kGeluTanh);
         p->pad_top += 1, p->pad_left += 1;
       }},
      {"fp16_out_fp32_res_relu6_same_lower", [](Conv2dParams* p) {
         p->dtype = DataType::kFp16;
         p->output_dtype = DataType::kFp32;
         p->has_residual = true;
         SetActivation(p, Activation::kRelu6);
         SameStride2(p, false);
       }},
      {"fp16_clip_pad_br", [](Conv2dParams* p) {
         p->dtype = p->output_dtype = DataType::kFp16;
         SetActivation(p, Activation::kClip);
         p->pad_bottom += 1, p->pad_right += 2;
       }},
      {"fp32_res_silu_same_upper", [](Conv2dParams* p) {
         p->has_residual = true;
         SetActivation(p, Activation::kSilu);
         SameStride2(p, true);
       }},
      {"bf16_out_fp32_res_relu", [](Conv2dParams* p) {
         p->dtype = DataType::kBf16;
         p->output_dtype = DataType::kFp32;
         p->has_residual = true;
         SetActivation(p, Activation::kRelu);
       }},
  };
}

class ConvKernelsTypedTest : public ConvKernelsTest {
 protected:
  // Runs p through LaunchTyped with implementation `name` forced (device tensors in p's
  // datatypes, scratch of ScratchBytes) and returns the relative L2 error against Conv2dRef on
  // the same rounded inputs, compared in FP32 (infinity on any failure, with a test failure).
  double RunTyped(ConvKernels& kernels, const Conv2dParams& p, const std::string& name) {
    const std::vector<char> input = TypedRandom(p.dtype, p.input_elements(), 11);
    const std::vector<char> weight = TypedRandom(p.dtype, p.weight_elements(), 12);
    const std::vector<char> bias = TypedRandom(p.dtype, p.bias_elements(), 13);
    const std::vector<char> residual = TypedRandom(p.dtype, p.residual_elements(), 14);
    const int64_t out_count = p.output_elements();
    std::vector<char> expected(static_cast<size_t>(out_count * ElementSize(p.output_dtype)));
    std::vector<char> actual(expected.size());
    Conv2dRef(p, input.data(), weight.data(), p.has_bias ? bias.data() : nullptr,
              expected.data(), p.has_residual ? residual.data() : nullptr);
    void* d[6] = {};
    const size_t sizes[6] = {input.size(), weight.size(), bias.size(), residual.size(),
                             actual.size(),
                             static_cast<size_t>(std::max<int64_t>(
                                 1, ConvKernels::ScratchBytes(p, /*weights_fp32=*/false)))};
    double error = std::numeric_limits<double>::infinity();
    bool ok = kernels.ForceImplementation(name);
    for (int i = 0; i < 6 && ok; ++i) ok = hipMalloc(&d[i], sizes[i]) == hipSuccess;
    for (int i = 0; i < 4 && ok; ++i) {
      const std::vector<char>* src[4] = {&input, &weight, &bias, &residual};
      ok = hipMemcpy(d[i], src[i]->data(), sizes[i], hipMemcpyHostToDevice) == hipSuccess;
    }
    // NaN-filled output (all bits set is NaN in every datatype): a skipped element cannot pass.
    ok = ok && hipMemset(d[4], 0xff, sizes[4]) == hipSuccess;
    DevTensors t;
    t.input = d[0];
    t.weight = d[1];
    t.bias = p.has_bias ? d[2] : nullptr;
    t.residual = p.has_residual ? d[3] : nullptr;
    t.output = d[4];
    t.scratch = d[5];
    hipError_t e = ok ? kernels.LaunchTyped(p, t, stream_) : hipErrorInvalidValue;
    if (e == hipSuccess) e = hipStreamSynchronize(stream_);
    if (e == hipSuccess) {
      e = hipMemcpy(actual.data(), d[4], actual.size(), hipMemcpyDeviceToHost);
    }
    EXPECT_TRUE(ok && e == hipSuccess) << name << " " << p.ToString() << ": "
                                       << hipGetErrorName(e);
    if (ok && e == hipSuccess) {
      std::vector<float> a(static_cast<size_t>(out_count)), x(static_cast<size_t>(out_count));
      WidenToFloat(p.output_dtype, actual.data(), a.data(), out_count);
      WidenToFloat(p.output_dtype, expected.data(), x.data(), out_count);
      error = ::sparkle::testing::RelativeL2Error(a.data(), x.data(), out_count);
    }
    for (void* b : d) {
      if (b != nullptr) (void)hipFree(b);
    }
    return error;
  }

  // Every shape of `shapes` with `variant` applied (shapes it makes invalid are skipped),
  // through `per_shape` of the supporting implementations: all of them (per_shape <= 0) or that
  // many, rotating through the list so that every implementation meets several shapes.
  // Returns the largest error; *runs counts the launches, *impls the implementations used.
  double RunVariant(const Variant& variant, const std::vector<NamedShape>& shapes, int per_shape,
                    int* runs, std::set<std::string>* impls) {
    ConvKernels kernels(0, "test-device", "");
    const std::vector<std::string> names = kernels.ImplementationNames();
    double worst = 0;
    size_t rotation = 0;
    for (const NamedShape& shape : shapes) {
      Conv2dParams p = shape.params;
      variant.apply(&p);
      if (!p.Validate().ok()) continue;
      EXPECT_EQ(kernels.Supports(p), "") << shape.name << " " << p.ToString();
      std::vector<std::string> supporting;
      for (const std::string& name : names) {
        if (kernels.ImplementationSupports(name, p).empty()) supporting.push_back(name);
      }
      if (supporting.empty()) continue;
      const size_t take = per_shape <= 0 ? supporting.size()
                                         : std::min(supporting.size(), size_t(per_shape));
      for (size_t i = 0; i < take; ++i) {
        const std::string& name = supporting[(rotation + i) % supporting.size()];
        const double error = RunTyped(kernels, p, name);
        EXPECT_LT(error, ToleranceFor(p)) << variant.name << " " << shape.name << " "
                                          << p.ToString() << " " << name;
        worst = std::max(worst, error);
        ++*runs;
        impls->insert(name);
      }
      rotation += 1;
    }
    return worst;
  }
};

class ConvKernelsAxisTest : public ConvKernelsTypedTest,
                            public ::testing::WithParamInterface<Variant> {};

// Each axis alone on the whole (emulator-reduced) table, both layouts: one implementation per
// shape, rotating, so that every implementation supporting the variant is exercised.
TEST_P(ConvKernelsAxisTest, TheWholeTableMatchesTheReference) {
  int runs = 0;
  std::set<std::string> impls;
  const double worst = RunVariant(GetParam(), GpuShapeTable(), /*per_shape=*/1, &runs, &impls);
  std::cout << "[ axis " << GetParam().name << " ] " << runs << " runs, " << impls.size()
            << " implementations, max relative L2 error " << worst << std::endl;
  EXPECT_GE(runs, 30);
  EXPECT_GE(impls.size(), 8u);
}

INSTANTIATE_TEST_SUITE_P(Axes, ConvKernelsAxisTest, ::testing::ValuesIn(AxisVariants()),
                         [](const ::testing::TestParamInfo<Variant>& info) {
                           return info.param.name;
                         });

// The cross products, every supporting implementation forced, on a representative subset:
// 3x3, pointwise, depthwise, grouped NHWC, strided odd sizes, dilated, a small-output layer
// (split-K candidates).
TEST_F(ConvKernelsTypedTest, CrossProductsOnASubsetMatchTheReference) {
  const std::vector<std::string> names = {"small_3x3",        "pointwise_b3_9x8_bias",
                                          "depthwise_s2_bias", "grouped_g4_bias_nhwc",
                                          "odd_sizes_s2_bias", "dilated_d3_bias_nhwc",
                                          "resnet_3x3_7"};
  std::vector<NamedShape> subset;
  for (const NamedShape& shape : GpuShapeTable()) {
    for (const std::string& name : names) {
      if (shape.name.rfind(name, 0) == 0 &&
          (shape.name.size() == name.size() || shape.name.substr(name.size()) == "_emu_reduced")) {
        subset.push_back(shape);
      }
    }
  }
  ASSERT_EQ(subset.size(), names.size());
  for (const Variant& variant : CrossVariants()) {
    int runs = 0;
    std::set<std::string> impls;
    const double worst = RunVariant(variant, subset, /*per_shape=*/0, &runs, &impls);
    std::cout << "[ cross " << variant.name << " ] " << runs << " runs, " << impls.size()
              << " implementations, max relative L2 error " << worst << std::endl;
    EXPECT_GE(runs, 20) << variant.name;
  }
}

// Split-K refuses an activation (it needs the whole sum) but keeps residual; cuDNN (NVIDIA
// builds) refuses asymmetric padding, the epilogue and BF16/FP16; nothing else is refused.
TEST_F(ConvKernelsTest, SupportsNamesTheEpilogueAndDatatypeLimits) {
  ConvKernels kernels(0, "test-device", "");
  Conv2dParams small{.n = 1, .c = 512, .h = 7, .w = 7, .k = 512, .r = 3, .s = 3, .pad_top = 1,
                     .pad_bottom = 1, .pad_left = 1, .pad_right = 1};
  ASSERT_EQ(kernels.ImplementationSupports("igemm_3x3s1_splitk_32x32x8_t2x4", small), "");
  Conv2dParams act = small;
  act.activation = Activation::kRelu;
  EXPECT_NE(kernels.ImplementationSupports("igemm_3x3s1_splitk_32x32x8_t2x4", act)
                .find("split-K"),
            std::string::npos);
  EXPECT_EQ(kernels.ImplementationSupports("igemm_3x3s1_32x32x8_t2x4", act), "");
  Conv2dParams res = small;
  res.has_residual = true;
  res.dtype = res.output_dtype = DataType::kBf16;
  EXPECT_EQ(kernels.ImplementationSupports("igemm_3x3s1_splitk_32x32x8_t2x4", res), "");
  Conv2dParams asym = small;
  asym.pad_bottom = 0;
  asym.dtype = DataType::kFp16;
  for (const std::string& name : kernels.ImplementationNames()) {
    if (name.rfind("cudnn", 0) == 0) {
      EXPECT_NE(kernels.ImplementationSupports(name, asym).find("asymmetric"), std::string::npos);
      EXPECT_NE(kernels.ImplementationSupports(name, act).find("epilogue"), std::string::npos);
      Conv2dParams half = small;
      half.dtype = half.output_dtype = DataType::kFp16;
      EXPECT_NE(kernels.ImplementationSupports(name, half).find("FP32"), std::string::npos);
    }
  }
  EXPECT_EQ(kernels.Supports(asym), "");
  EXPECT_EQ(kernels.Supports(act), "");
  EXPECT_EQ(kernels.Supports(res), "");
  // Scratch: none for FP32; FP32 copies of input, residual, output and weights otherwise.
  EXPECT_EQ(ConvKernels::ScratchBytes(small, false), 0);
  EXPECT_EQ(ConvKernels::ScratchBytes(res, /*weights_fp32=*/true),
            3 * 512 * 7 * 7 * 4);  // input, residual, output; each a multiple of 256 bytes
  EXPECT_GT(ConvKernels::ScratchBytes(res, false),
            ConvKernels::ScratchBytes(res, true) + res.weight_elements() * 4 - 1);
}

#if defined(__HIP_PLATFORM_HIPEMU__)
// The device conversions agree with the host ones (data_type.h) bit for bit, on every BF16 and
// FP16 value and on floats around every rounding boundary. (Emulator build: the host compiler
// runs the __host__ __device__ functions.)
TEST(DeviceDtypeTest, ConversionsMatchTheHostOnes) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const uint16_t bits = static_cast<uint16_t>(h);
    const float b = DeviceBf16ToFloat(bits), f = DeviceFp16ToFloat(bits);
    const float hb = Bf16ToFloat(bits), hf = Fp16ToFloat(bits);
    ASSERT_TRUE(std::memcmp(&b, &hb, 4) == 0 || (std::isnan(b) && std::isnan(hb))) << h;
    ASSERT_TRUE(std::memcmp(&f, &hf, 4) == 0 || (std::isnan(f) && std::isnan(hf))) << h;
  }
  uint32_t state = 12345;
  for (int i = 0; i < 2000000; ++i) {
    state = state * 1664525u + 1013904223u;
    // Mostly values near FP16's range and its rounding ties (low mantissa bits 0x1000 / 0x8000).
    uint32_t x = state;
    if (i % 3 == 0) x = (x & 0x80000000u) | (0x30000000u + (x & 0x1fffffffu) % 0x18000000u);
    if (i % 5 == 0) x = (x & ~0x1fffu) | 0x1000u;
    if (i % 7 == 0) x = (x & ~0xffffu) | 0x8000u;
    float v;
    std::memcpy(&v, &x, 4);
    ASSERT_EQ(DeviceFloatToBf16(v), FloatToBf16(v)) << std::hex << x;
    ASSERT_EQ(DeviceFloatToFp16(v), FloatToFp16(v)) << std::hex << x;
  }
}
#endif

}  // namespace
}  // namespace sparkle::hip
