// Jobs that name registered weights (Conv2dJob::registered_weight) against Conv2dRef and
// against the same jobs sending their weights inline.
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "engine/cpu/conv2d_ref.h"
#include "engine/engine.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/shape_table.h"

namespace sparkle {
namespace {

using ::sparkle::testing::RandomFloats;
using ::sparkle::testing::RelativeL2Error;
using ::testing::HasSubstr;

struct JobRun {
  std::vector<float> output;
  absl::Notification done;
  absl::Status status;
};

std::unique_ptr<Engine> MakeEngine() {
  EngineOptions options;
  options.cpu.threads = 2;
  auto engine = Engine::Create(options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return std::move(engine).value();
}

std::shared_ptr<const RegisteredWeight> Register(Engine& engine, const Conv2dParams& p,
                                                 const std::vector<float>& weight,
                                                 const std::vector<float>& bias) {
  WeightHeader header;
  header.shape = {p.k, p.c / p.groups, p.r, p.s};
  header.bias = bias;
  auto registered = engine.registry().Register(header, weight);
  EXPECT_TRUE(registered.ok()) << registered.status();
  auto acquired = engine.registry().Acquire(registered->weight->id());
  EXPECT_TRUE(acquired.ok()) << acquired.status();
  return *acquired;
}

// Submits a job over `input`, by `registered` weights when given, else with weight/bias inline.
std::unique_ptr<Conv2dJob> MakeJob(const Conv2dParams& p, const std::vector<float>& input,
                                   const std::vector<float>& weight, const std::vector<float>& bias,
                                   std::shared_ptr<const RegisteredWeight> registered, JobRun* run) {
  run->output.assign(p.output_elements(), -7.0f);
  auto job = std::make_unique<Conv2dJob>();
  job->params = p;
  job->input = input.data();
  if (registered != nullptr) {
    job->registered_weight = std::move(registered);
  } else {
    job->weight = weight.data();
    job->bias = p.has_bias ? bias.data() : nullptr;
  }
  job->output = run->output.data();
  job->done = [run](const absl::Status& s, const ExecTimestamps&) {
    run->status = s;
    run->done.Notify();
  };
  return job;
}

Conv2dParams Shape(int64_t n, int64_t c, int64_t hw, int64_t k, int64_t rs, int64_t pad,
                   bool bias, int64_t groups = 1, Layout layout = Layout::kNCHW) {
  Conv2dParams p;
  p.n = n, p.c = c, p.h = p.w = hw, p.k = k, p.r = p.s = rs, p.SetPad(pad, pad);
  p.has_bias = bias, p.groups = groups, p.layout = layout;
  return p;
}

class RegisteredWeightsTest : public ::testing::TestWithParam<Conv2dParams> {};

TEST_P(RegisteredWeightsTest, SameResultsAsInlineWeightsAndTheReference) {
  const Conv2dParams p = GetParam();
  auto engine = MakeEngine();
  const auto weight = RandomFloats(p.weight_elements(), 11);
  const auto bias = p.has_bias ? RandomFloats(p.k, 12) : std::vector<float>();
  const auto registered = Register(*engine, p, weight, bias);
  // Several jobs by id (they share a key: they batch, and reuse one prepacked copy) and one
  // inline, each against the reference.
  constexpr int kJobs = 4;
  std::vector<std::vector<float>> inputs;
  std::vector<std::unique_ptr<JobRun>> by_id, inline_runs;
  for (int i = 0; i < kJobs; ++i) {
    inputs.push_back(RandomFloats(p.input_elements(), 100 + i));
    by_id.push_back(std::make_unique<JobRun>());
    inline_runs.push_back(std::make_unique<JobRun>());
  }
  for (int i = 0; i < kJobs; ++i) {
    auto job = MakeJob(p, inputs[i], weight, bias, registered, by_id[i].get());
    ASSERT_TRUE(engine->Submit(&job).ok());
    auto inline_job = MakeJob(p, inputs[i], weight, bias, nullptr, inline_runs[i].get());
    ASSERT_TRUE(engine->Submit(&inline_job).ok());
  }
  for (int i = 0; i < kJobs; ++i) {
    by_id[i]->done.WaitForNotification();
    inline_runs[i]->done.WaitForNotification();
    ASSERT_TRUE(by_id[i]->status.ok()) << by_id[i]->status;
    ASSERT_TRUE(inline_runs[i]->status.ok()) << inline_runs[i]->status;
    std::vector<float> expected(p.output_elements());
    Conv2dRef(p, inputs[i].data(), weight.data(), p.has_bias ? bias.data() : nullptr,
              expected.data());
    EXPECT_LT(RelativeL2Error(by_id[i]->output.data(), expected.data(), expected.size()), 1e-5)
        << p.ToString() << " job " << i;
    EXPECT_LT(RelativeL2Error(by_id[i]->output.data(), inline_runs[i]->output.data(),
                              expected.size()),
              1e-5);
  }
  EXPECT_EQ(registered->in_use(), 1);  // only the test's own hold remains
  EXPECT_EQ(registered->uses(), 1);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, RegisteredWeightsTest,
    ::testing::Values(Shape(1, 32, 8, 32, 3, 1, /*bias=*/true),            // Winograd-eligible
                      Shape(1, 64, 7, 64, 3, 1, /*bias=*/false),           // large (all threads)
                      Shape(2, 16, 9, 24, 1, 0, /*bias=*/true),            // 1x1, NCHW gemm
                      Shape(1, 16, 10, 32, 3, 1, /*bias=*/false, /*groups=*/4),
                      Shape(1, 8, 12, 8, 3, 1, /*bias=*/true, /*groups=*/8),  // depthwise
                      Shape(1, 24, 6, 40, 3, 0, /*bias=*/true, 1, Layout::kNHWC)));

TEST(RegisteredWeightsEngineTest, PrepackedCopyIsKeptInTheRegistrationAndBudgeted) {
  auto engine = MakeEngine();
  const Conv2dParams p = Shape(1, 32, 8, 32, 3, 1, /*bias=*/false);
  const auto weight = RandomFloats(p.weight_elements(), 3);
  const auto registered = Register(*engine, p, weight, {});
  const int64_t plain = p.weight_elements() * 4;
  const auto input = RandomFloats(p.input_elements(), 4);
  for (int i = 0; i < 3; ++i) {
    JobRun run;
    auto job = MakeJob(p, input, weight, {}, registered, &run);
    ASSERT_TRUE(engine->Submit(&job).ok());
    run.done.WaitForNotification();
    ASSERT_TRUE(run.status.ok()) << run.status;
  }
  // oneDNN's layout for these weights is blocked (or Winograd), never the plain one: the copy
  // is stored once, in the registration, and counted in the registry's bytes.
  EXPECT_GT(registered->prepacked().bytes(), 0);
  EXPECT_EQ(registered->bytes(), plain + registered->prepacked().bytes());
  EXPECT_EQ(engine->registry().snapshot().bytes, registered->bytes());
  const int64_t after_three = registered->prepacked().bytes();
  JobRun run;
  auto job = MakeJob(p, input, weight, {}, registered, &run);
  ASSERT_TRUE(engine->Submit(&job).ok());
  run.done.WaitForNotification();
  EXPECT_EQ(registered->prepacked().bytes(), after_three);  // reused, not made again
}

TEST(RegisteredWeightsEngineTest, PrepackedCopyBeyondTheBudgetFallsBackAndStaysCorrect) {
  const Conv2dParams p = Shape(1, 32, 8, 32, 3, 1, /*bias=*/true);
  EngineOptions options;
  options.cpu.threads = 2;
  options.weights.budget_bytes = (p.weight_elements() + p.k) * 4;  // the plain bytes only
  auto created = Engine::Create(options);
  ASSERT_TRUE(created.ok());
  auto& engine = **created;
  const auto weight = RandomFloats(p.weight_elements(), 21);
  const auto bias = RandomFloats(p.k, 22);
  const auto registered = Register(engine, p, weight, bias);
  std::vector<float> expected(p.output_elements());
  for (int i = 0; i < 2; ++i) {
    const auto input = RandomFloats(p.input_elements(), 30 + i);
    JobRun run;
    auto job = MakeJob(p, input, weight, bias, registered, &run);
    ASSERT_TRUE(engine.Submit(&job).ok());
    run.done.WaitForNotification();
    ASSERT_TRUE(run.status.ok()) << run.status;
    Conv2dRef(p, input.data(), weight.data(), bias.data(), expected.data());
    EXPECT_LT(RelativeL2Error(run.output.data(), expected.data(), expected.size()), 1e-5);
  }
  EXPECT_EQ(registered->prepacked().bytes(), 0);
  EXPECT_GE(registered->prepacked().refused(), 1);
  EXPECT_EQ(engine.registry().snapshot().bytes, options.weights.budget_bytes);
}

TEST(RegisteredWeightsEngineTest, UnregisteredWhileQueuedStillCompletesCorrectly) {
  EngineOptions options;
  options.cpu.threads = 2;
  options.batcher.max_queue_delay = absl::Milliseconds(50);  // the job waits in the queue
  auto created = Engine::Create(options);
  ASSERT_TRUE(created.ok());
  auto& engine = **created;
  const Conv2dParams p = Shape(1, 8, 8, 8, 3, 1, /*bias=*/true);
  const auto weight = RandomFloats(p.weight_elements(), 5);
  const auto bias = RandomFloats(p.k, 6);
  auto registered = Register(engine, p, weight, bias);
  const std::string id = registered->id();
  const auto input = RandomFloats(p.input_elements(), 7);
  JobRun run;
  auto job = MakeJob(p, input, weight, bias, std::move(registered), &run);
  ASSERT_TRUE(engine.Submit(&job).ok());
  ASSERT_TRUE(engine.registry().Unregister(id).ok());
  EXPECT_EQ(engine.registry().Acquire(id).status().code(), absl::StatusCode::kNotFound);
  run.done.WaitForNotification();
  ASSERT_TRUE(run.status.ok()) << run.status;
  std::vector<float> expected(p.output_elements());
  Conv2dRef(p, input.data(), weight.data(), bias.data(), expected.data());
  EXPECT_LT(RelativeL2Error(run.output.data(), expected.data(), expected.size()), 1e-5);
  // The finished job dropped the last hold: the memory went back to the budget.
  EXPECT_EQ(engine.registry().snapshot().bytes, 0);
}

TEST(RegisteredWeightsEngineTest, MismatchedJobIsInvalidArgument) {
  auto engine = MakeEngine();
  const Conv2dParams p = Shape(1, 8, 8, 8, 3, 1, /*bias=*/false);
  const auto weight = RandomFloats(p.weight_elements(), 5);
  auto registered = Register(*engine, p, weight, {});
  Conv2dParams wrong = p;
  wrong.k = 16;
  const auto input = RandomFloats(p.input_elements(), 7);
  JobRun run;
  auto job = MakeJob(wrong, input, weight, {}, registered, &run);
  absl::Status status = engine->Submit(&job);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr(registered->id()));
  Conv2dParams with_bias = p;
  with_bias.has_bias = true;
  job = MakeJob(with_bias, input, weight, {}, registered, &run);
  EXPECT_EQ(engine->Submit(&job).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sparkle
