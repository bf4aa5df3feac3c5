#include "engine/cpu/cpu_backend.h"

#include <cmath>
#include <fstream>
#include <iostream>
#include <functional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/cpu/conv2d_ref.h"
#include "gtest/gtest.h"
#include "tests/testing/shape_table.h"

namespace sparkle {
namespace {

using testing::NamedShape;

// fp32 against a double-accumulated oracle; Winograd included.
constexpr double kMaxRelativeError = 1e-5;

// Random tensors for one shape and the oracle's output on them.
struct Problem {
  Conv2dParams params;
  std::vector<float> input, weight, bias, expected;

  Problem(const Conv2dParams& p, uint32_t seed)
      : params(p),
        input(testing::RandomFloats(p.input_elements(), seed)),
        weight(testing::RandomFloats(p.weight_elements(), seed + 1)),
        bias(testing::RandomFloats(p.bias_elements(), seed + 2)),
        expected(p.output_elements()) {
    Conv2dRef(p, input.data(), weight.data(), bias.data(), expected.data());
  }

  // `key` 0: no identity; otherwise the confirmed WeightId the engine would pass (equal keys
  // must only be used for equal weights).
  ConvArgs Args(float* output, uint64_t key) const {
    return {.input = input.data(),
            .weight = weight.data(),
            .bias = params.has_bias ? bias.data() : nullptr,
            .output = output,
            .weight_id = key == 0 ? WeightId{} : WeightId::Content(0, key)};
  }

  // Runs on `backend` into a NaN-filled buffer (so unwritten elements count as errors) and
  // returns the relative L2 error against the oracle, or the status.
  absl::StatusOr<double> RunError(CpuBackend& backend, uint64_t weight_key, int threads) const {
    std::vector<float> output(params.output_elements(), NAN);
    absl::Status status = backend.Run(params, Args(output.data(), weight_key), threads);
    if (!status.ok()) return status;
    return testing::RelativeL2Error(output.data(), expected.data(), output.size());
  }
};

std::unique_ptr<CpuBackend> MakeBackend(CpuBackend::Options options) {
  auto backend = CpuBackend::Create(options);
  EXPECT_TRUE(backend.ok()) << backend.status();
  return std::move(backend).value();
}

CpuBackend& SharedBackend(bool allow_winograd) {
  static CpuBackend* const with = MakeBackend({.allow_winograd = true}).release();
  static CpuBackend* const without = MakeBackend({.allow_winograd = false}).release();
  return allow_winograd ? *with : *without;
}

const NamedShape& Shape(const std::string& name) {
  for (const NamedShape& shape : testing::ShapeTable()) {
    if (shape.name == name) return shape;
  }
  ADD_FAILURE() << "no shape " << name;
  return testing::ShapeTable().front();
}

class ShapeTableTest : public ::testing::TestWithParam<NamedShape> {};

// Every shape, with and without Winograd, on one and on all threads, with weights reordered
// per call (key 0, never Winograd), reordered into the cache (first keyed call) and taken from
// it (second). Key 1001 is shared by every shape: none may get another shape's weights.
TEST_P(ShapeTableTest, MatchesReference) {
  const Problem problem(GetParam().params, 7);
  for (bool winograd : {true, false}) {
    CpuBackend& backend = SharedBackend(winograd);
    for (int threads : {1, backend.threads()}) {
      auto impl = backend.ImplementationName(problem.params, threads);
      ASSERT_TRUE(impl.ok()) << impl.status();
      const uint64_t id = 1000 + std::hash<std::string>()(GetParam().name) % 100000;
      for (uint64_t key : {uint64_t{0}, id, id}) {
        SCOPED_TRACE(::testing::Message() << *impl << ", threads " << threads << ", key " << key);
        absl::StatusOr<double> error = problem.RunError(backend, key, threads);
        ASSERT_TRUE(error.ok()) << error.status();
        EXPECT_LT(*error, kMaxRelativeError);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(CpuBackend, ShapeTableTest, ::testing::ValuesIn(testing::ShapeTable()),
                         [](const auto& info) { return info.param.name; });

TEST(CpuBackendTest, SupportsEveryTableShape) {
  for (const NamedShape& shape : testing::ShapeTable()) {
    EXPECT_TRUE(SharedBackend(true).Supports(shape.params).ok()) << shape.name;
  }
}

// Weights of one geometry under distinct ids stay apart in the cache, including weights that
// differ in their last value only. (Proving that equal ids are equal bytes is the engine's
// job: tests/engine/core/weight_cache_test.cc.)
TEST(CpuBackendTest, DistinctIdsKeepDistinctWeights) {
  const Conv2dParams& p = Shape("resnet_3x3_14").params;
  const Problem first(p, 1);
  Problem second(p, 1);
  second.weight = testing::RandomFloats(p.weight_elements(), 99);
  Conv2dRef(p, second.input.data(), second.weight.data(), nullptr, second.expected.data());
  // Only the last value differs: the comparison must cover the whole buffer.
  Problem last_changed(p, 1);
  last_changed.weight.back() += 1.0f;
  Conv2dRef(p, last_changed.input.data(), last_changed.weight.data(), nullptr,
            last_changed.expected.data());

  for (bool winograd : {true, false}) {
    CpuBackend& backend = SharedBackend(winograd);
    for (int threads : {1, backend.threads()}) {
      const std::vector<std::tuple<const char*, const Problem*, uint64_t>> sequence = {
          {"first", &first, 2002},
          {"first again", &first, 2002},
          {"second", &second, 2003},
          {"second", &second, 2003},
          {"last value changed", &last_changed, 2004},
          {"first", &first, 2002}};
      for (const auto& [name, problem, key] : sequence) {
        SCOPED_TRACE(::testing::Message()
                     << name << ", winograd " << winograd << ", threads " << threads);
        absl::StatusOr<double> error = problem->RunError(backend, key, threads);
        ASSERT_TRUE(error.ok()) << error.status();
        EXPECT_LT(*error, kMaxRelativeError);
      }
    }
  }
}

// Weight caches too small for an entry, disabled, or holding one entry at a time.
TEST(CpuBackendTest, SmallWeightCachesStayCorrect) {
  const Problem a(Shape("resnet_3x3_28").params, 1), b(Shape("resnet_3x3_28").params, 2);
  const Problem c(Shape("grouped_g4_bias_nhwc").params, 3);
  const int64_t one_entry = 2 * a.params.weight_elements() * sizeof(float) + (64 << 10);
  for (int64_t cache_bytes : {int64_t{0}, int64_t{1}, one_entry}) {
    SCOPED_TRACE(::testing::Message() << "weight_cache_bytes " << cache_bytes);
    auto backend = MakeBackend({.weight_cache_bytes = cache_bytes, .max_primitives = 1});
    for (int round = 0; round < 3; ++round) {
      for (const auto& [problem, key] :
           std::vector<std::pair<const Problem*, uint64_t>>{{&a, 1}, {&b, 2}, {&c, 3}, {&a, 1}}) {
        absl::StatusOr<double> error = problem->RunError(*backend, key, 1);
        ASSERT_TRUE(error.ok()) << error.status();
        EXPECT_LT(*error, kMaxRelativeError);
      }
    }
  }
}

// Engine workers run batches side by side, each with one OpenMP thread; they share the
// primitive and weight caches (same keys, racing to insert) but never scratch memory.
TEST(CpuBackendTest, ConcurrentRunsAreCorrect) {
  std::vector<Problem> problems;
  for (const char* name : {"small_3x3", "resnet_3x3_14", "grouped_g4_bias_nhwc",
                           "mobilenet_dw_nhwc_bias", "odd_sizes_s2_bias"}) {
    problems.emplace_back(Shape(name).params, 5);
  }
  for (int workers : {2, 4}) {
    auto backend = MakeBackend({});
    std::vector<std::vector<std::string>> failures(workers);
    std::vector<std::thread> threads;
    for (int w = 0; w < workers; ++w) {
      threads.emplace_back([&, w] {
        for (int i = 0; i < 40; ++i) {
          const size_t index = (w + i) % problems.size();
          // Keys 0 (scratch reorders) and 1.. (shared cache entries) interleaved.
          const uint64_t key = i % 3 == 0 ? 0 : index + 1;
          absl::StatusOr<double> error = problems[index].RunError(*backend, key, 1);
          if (!error.ok() || !(*error < kMaxRelativeError)) {
            failures[w].push_back(
                absl::StrCat(problems[index].params.ToString(), ": ",
                             error.ok() ? std::to_string(*error) : error.status().ToString()));
          }
        }
      });
    }
    for (std::thread& t : threads) t.join();
    for (int w = 0; w < workers; ++w) {
      EXPECT_TRUE(failures[w].empty())
          << workers << " workers, worker " << w << ": " << failures[w].front();
    }
  }
}

TEST(CpuBackendTest, RejectsInvalidRuns) {
  const Problem problem(Shape("small_3x3_nhwc").params, 1);
  Problem with_bias = problem;
  with_bias.params.has_bias = true;
  CpuBackend& backend = SharedBackend(true);
  std::vector<float> output(problem.params.output_elements());
  struct Case {
    const char* name;
    std::function<absl::Status()> run;
  };
  auto run = [&](const Problem& pr, ConvArgs args, int threads) {
    return [&backend, &pr, args, threads] { return backend.Run(pr.params, args, threads); };
  };
  const ConvArgs good = problem.Args(output.data(), 0);
  ConvArgs no_input = good, no_weight = good, no_output = good;
  no_input.input = nullptr;
  no_weight.weight = nullptr;
  no_output.output = nullptr;
  Problem bad_groups = problem;
  bad_groups.params.groups = 3;
  Problem bad_kernel = problem;
  bad_kernel.params.r = 100;
  const std::vector<Case> cases = {
      {"null input", run(problem, no_input, 1)},
      {"null weight", run(problem, no_weight, 1)},
      {"null output", run(problem, no_output, 1)},
      {"null bias with has_bias", run(with_bias, good, 1)},
      {"groups not dividing C", run(bad_groups, good, 1)},
      {"kernel larger than image", run(bad_kernel, good, 1)},
      {"0 threads", run(problem, good, 0)},
      {"more threads than threads()", run(problem, good, backend.threads() + 1)},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(c.run().code(), absl::StatusCode::kInvalidArgument) << c.run();
  }
  EXPECT_EQ(backend.Supports(bad_groups.params).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend.ImplementationName(bad_kernel.params, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CpuBackendTest, RejectsInvalidOptions) {
  const std::vector<std::pair<const char*, CpuBackend::Options>> cases = {
      {"threads < 0", {.threads = -1}},
      {"threads > 1024", {.threads = 1025}},
      {"weight_cache_bytes < 0", {.weight_cache_bytes = -1}},
      {"weight_cache_bytes > 2^40", {.weight_cache_bytes = (int64_t{1} << 40) + 1}},
      {"max_primitives < 1", {.max_primitives = 0}},
      {"max_primitives > 65536", {.max_primitives = 65537}},
  };
  for (const auto& [name, options] : cases) {
    EXPECT_EQ(CpuBackend::Create(options).status().code(), absl::StatusCode::kInvalidArgument)
        << name;
  }
}

TEST(CpuBackendTest, ReportsThreadsIsaAndImplementation) {
  auto three = MakeBackend({.threads = 3});
  EXPECT_EQ(three->threads(), 3);
  CpuBackend& backend = SharedBackend(true);
  EXPECT_GE(backend.threads(), 1);
  EXPECT_FALSE(backend.Isa().empty());
  auto impl = backend.ImplementationName(Shape("resnet_1x1_56").params, 1);
  ASSERT_TRUE(impl.ok()) << impl.status();
  EXPECT_FALSE(impl->empty());
}

// The calling process's VmRSS in bytes.
int64_t RssBytes() {
  std::ifstream status("/proc/self/status");
  std::string key;
  int64_t kb = 0;
  while (status >> key) {
    if (key == "VmRSS:") {
      status >> kb;
      return kb * 1024;
    }
  }
  return 0;
}

// A 1x1 input padded to 1201x1201: oneDNN's blocked layouts would pad K=1 to 16 channels (a
// 92 MB dst buffer), the plain gemm kernel needs an im2col-sized scratchpad (5.8 MB per
// thread). The limit is checked on the descriptor, before any buffer.
TEST(CpuBackendTest, ScratchLimitIsCheckedBeforeAnyBuffer) {
  Conv2dParams p{.pad_top = 600, .pad_bottom = 600, .pad_left = 600, .pad_right = 600};
  ASSERT_TRUE(p.Validate().ok());
  std::vector<float> in(1, 2.0f), w(1, 3.0f), out(p.output_elements(), -7.0f);
  ConvArgs args{.input = in.data(), .weight = w.data(), .output = out.data()};
  {
    auto tight = MakeBackend({.threads = 2, .max_job_scratch_bytes = 1 << 20});
    absl::Status s = tight->Run(p, args, 2);
    EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
    EXPECT_NE(std::string(s.message()).find("max_job_scratch_bytes"), std::string::npos) << s;
    EXPECT_EQ(out[0], -7.0f);
  }
  auto roomy = MakeBackend({.threads = 2, .max_job_scratch_bytes = 64 << 20});
  ASSERT_TRUE(roomy->Run(p, args, 2).ok());
  EXPECT_EQ(out[600 * 1201 + 600], 6.0f);  // the one real tap
  EXPECT_EQ(out[0], 0.0f);
}

// The hostile request: pad_w near 2^20 (a 16 MiB output) kept ~3.7 GB per distinct pad
// value. Served (or refused) within 512 MiB of RSS growth, and the per-thread scratch above
// the retain cap is given back.
TEST(CpuBackendTest, HugePaddingStaysWithinBoundedMemory) {
  auto backend = MakeBackend({.threads = 2});
  const int64_t before = RssBytes();
  for (int64_t pad : {(1 << 20) - 1, (1 << 20) - 2}) {
    Conv2dParams p{.k = 2, .pad_left = pad, .pad_right = pad};
    std::vector<float> in(1, 1.0f), w(2, 1.0f), out(p.output_elements());
    absl::Status s = backend->Run(p, {.input = in.data(), .weight = w.data(), .output = out.data()},
                                  2);
    EXPECT_TRUE(s.ok() || s.code() == absl::StatusCode::kResourceExhausted) << s;
    if (s.ok()) {
      EXPECT_EQ(out[pad], 1.0f);
    }
    const int64_t growth = RssBytes() - before;
    EXPECT_LT(growth, int64_t{512} << 20) << "after pad " << pad;
    std::cout << "pad " << pad << ": " << s << ", RSS growth " << (growth >> 20) << " MiB\n";
  }
}

}  // namespace
}  // namespace sparkle
