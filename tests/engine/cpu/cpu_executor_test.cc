#include "engine/cpu/cpu_executor.h"

#include <atomic>
#include <cmath>
#include <memory>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/test_job.h"
#include "tests/testing/typed_tensor.h"

namespace sparkle {
namespace {

using ::testing::HasSubstr;
using testing::TestJob;

Conv2dParams Tiny() {
  return Conv2dParams{.n = 1, .c = 4, .h = 8, .w = 8, .k = 4, .r = 3, .s = 3, .pad_top = 1, .pad_bottom = 1,
                      .pad_left = 1, .pad_right = 1, .has_bias = true};
}

// Records what the executor gives back: each job once, with its status.
struct Completions {
  absl::Mutex mu;
  std::vector<std::pair<Conv2dJob*, absl::Status>> seen;
  std::vector<ExecutionReport> reports;
  std::vector<std::unique_ptr<Conv2dJob>> kept;

  DeviceExecutor::Hooks Hooks() {
    DeviceExecutor::Hooks h;
    h.complete = [this](std::vector<std::unique_ptr<Conv2dJob>> jobs, const absl::Status& s) {
      absl::MutexLock lock(&mu);
      for (auto& job : jobs) {
        seen.emplace_back(job.get(), s);
        std::move(job->done)(s, job->timestamps);
        kept.push_back(std::move(job));
      }
    };
    h.report = [this](const ExecutionReport& r) {
      absl::MutexLock lock(&mu);
      reports.push_back(r);
    };
    return h;
  }
};

std::unique_ptr<CpuBackend> Backend() {
  auto b = CpuBackend::Create({.threads = 2});
  EXPECT_TRUE(b.ok()) << b.status();
  return std::move(b).value();
}

// Small jobs sharing weights run concatenated on one thread, each job's output its own slice.
TEST(CpuExecutorTest, GathersOneThreadBatchesAndScattersTheirOutputs) {
  auto backend = Backend();
  Completions done;
  auto executor = CpuExecutor::Create({.backend = backend.get()}, done.Hooks());
  ASSERT_TRUE(executor.ok()) << executor.status();
  TestJob first(Tiny(), 1);
  std::vector<std::unique_ptr<TestJob>> jobs;
  auto batch = std::make_unique<Batch>();
  batch->one_thread = true;
  for (int i = 0; i < 3; ++i) {
    Conv2dParams p = Tiny();
    p.n = i + 1;
    jobs.push_back(std::make_unique<TestJob>(p, 10 + i, &first.weight));
    jobs.back()->bias = first.bias;
    jobs.back()->expected.assign(p.output_elements(), 0);
    Conv2dRef(p, jobs.back()->input.data(), first.weight.data(), first.bias.data(),
              jobs.back()->expected.data());
    batch->Add(jobs.back()->Make());
  }
  EXPECT_EQ(batch->params.n, 6);
  (*executor)->Execute(std::move(batch), 0.001);
  for (auto& j : jobs) {
    ASSERT_TRUE(j->done.HasBeenNotified());  // the CPU runs it before Execute returns
    EXPECT_TRUE(j->status.ok()) << j->status;
    EXPECT_LT(j->Error(), 1e-5);
    EXPECT_EQ(j->timestamps.batch_jobs, 3);
    EXPECT_EQ(j->timestamps.batch_n, 6);
  }
  const DeviceCounters c = (*executor)->counters();
  EXPECT_EQ(c.batches_done, 1);
  EXPECT_EQ(c.jobs_done, 3);
  EXPECT_EQ(c.queued_batches, 0);
  EXPECT_EQ(c.queued_seconds, 0);
  ASSERT_EQ(done.reports.size(), 1u);
  EXPECT_TRUE(done.reports[0].one_thread);
  EXPECT_EQ(done.reports[0].params.n, 6);
}

// The one lifecycle check runs just before launch: a cancelled and an expired job come back
// with their codes, the live one runs alone.
TEST(CpuExecutorTest, DeadJobsAreGivenBackBeforeLaunch) {
  auto backend = Backend();
  testing::FakeClock clock(absl::FromUnixSeconds(1000));
  Completions done;
  auto executor = CpuExecutor::Create({.backend = backend.get(), .clock = &clock}, done.Hooks());
  ASSERT_TRUE(executor.ok());
  TestJob live(Tiny(), 1), cancelled(Tiny(), 2, &live.weight), expired(Tiny(), 3, &live.weight);
  cancelled.bias = expired.bias = live.bias;
  auto batch = std::make_unique<Batch>();
  batch->one_thread = true;
  batch->Add(live.Make());
  auto c = cancelled.Make();
  c->cancelled = std::make_shared<std::atomic<bool>>(true);
  batch->Add(std::move(c));
  auto e = expired.Make();
  e->deadline = clock.Now();
  batch->Add(std::move(e));
  (*executor)->Execute(std::move(batch), 0);
  EXPECT_TRUE(live.status.ok());
  EXPECT_EQ(live.timestamps.batch_jobs, 1);
  EXPECT_EQ(cancelled.status.code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(std::string(cancelled.status.message()), HasSubstr("before launch on cpu"));
  EXPECT_EQ(expired.status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(expired.status.message()), HasSubstr("before launch on cpu"));
  EXPECT_EQ(done.seen.size(), 3u);
}

// Batches handed over by a GPU run on the executor's own fallback thread.
TEST(CpuExecutorTest, ExecuteLaterRunsOnTheFallbackThread) {
  auto backend = Backend();
  Completions done;
  auto executor =
      CpuExecutor::Create({.backend = backend.get(), .fallback_thread = true}, done.Hooks());
  ASSERT_TRUE(executor.ok());
  TestJob job(Tiny(), 4);
  std::thread::id ran_on;
  auto made = job.Make();
  auto inner = std::move(made->done);
  made->done = [&, inner = std::move(inner)](const absl::Status& s,
                                             const ExecTimestamps& t) mutable {
    ran_on = std::this_thread::get_id();
    std::move(inner)(s, t);
  };
  auto batch = std::make_unique<Batch>();
  batch->Add(std::move(made));
  (*executor)->ExecuteLater(std::move(batch));
  ASSERT_TRUE(job.done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_TRUE(job.status.ok());
  EXPECT_LT(job.Error(), 1e-5);
  EXPECT_TRUE(ran_on != std::this_thread::get_id());
}

// Jobs with residuals, gathered along N on one thread and run whole-pool in one-image slices:
// each job's output is relu(conv + bias + its own residual), in FP32 and BF16.
TEST(CpuExecutorTest, RunsEachJobWithItsOwnResidual) {
  auto backend = Backend();
  for (DataType type : {DataType::kFp32, DataType::kBf16}) {
    for (bool one_thread : {true, false}) {
      SCOPED_TRACE(::testing::Message() << DataTypeName(type) << ", one_thread " << one_thread);
      Completions done;
      // 1.2 MFLOP per image: whole-pool jobs run one image per slice.
      auto executor =
          CpuExecutor::Create({.backend = backend.get(), .slice_flops = 1e6}, done.Hooks());
      ASSERT_TRUE(executor.ok()) << executor.status();
      const Conv2dParams base{.c = 16, .h = 16, .w = 16, .k = 16, .r = 3, .s = 3, .pad_top = 1,
                              .pad_bottom = 1, .pad_left = 1, .pad_right = 1, .has_bias = true,
                              .has_residual = true, .activation = Activation::kRelu,
                              .dtype = type, .output_dtype = type};
      const testing::TypedTensor weight =
          testing::TypedTensor::Random(type, base.weight_elements(), 1);
      const testing::TypedTensor bias = testing::TypedTensor::Random(type, base.k, 2);
      struct Job {
        testing::TypedTensor input, residual, output;
        std::vector<float> expected;
        absl::Status status = absl::UnknownError("not done");
      };
      std::vector<std::unique_ptr<Job>> jobs;
      auto batch = std::make_unique<Batch>();
      batch->one_thread = one_thread;
      for (int i = 0; i < 3; ++i) {
        Conv2dParams p = base;
        p.n = i + 1;
        auto job = std::make_unique<Job>();
        job->input = testing::TypedTensor::Random(type, p.input_elements(), 10 + i);
        job->residual = testing::TypedTensor::Random(type, p.output_elements(), 20 + i);
        job->output = testing::TypedTensor::Filled(type, p.output_elements(), NAN);
        job->expected.resize(p.output_elements());
        Conv2dParams exact = p;
        exact.output_dtype = DataType::kFp32;
        Conv2dRef(exact, job->input.data(), weight.data(), bias.data(), job->expected.data(),
                  job->residual.data());
        auto made = std::make_unique<Conv2dJob>();
        made->params = p;
        made->input = job->input.data();
        made->weight = weight.data();
        made->bias = bias.data();
        made->residual = job->residual.data();
        made->output = job->output.data();
        made->done = [j = job.get()](const absl::Status& s, const ExecTimestamps&) {
          j->status = s;
        };
        batch->Add(std::move(made));
        jobs.push_back(std::move(job));
      }
      ASSERT_EQ(batch->params.n, 6);
      (*executor)->Execute(std::move(batch), 0.001);
      // FP32: the oracle's bound; BF16 output: its unit roundoff on top.
      const double tolerance = type == DataType::kFp32 ? 1e-5 : std::ldexp(1.0, -8) + 1e-5;
      for (const auto& job : jobs) {
        EXPECT_TRUE(job->status.ok()) << job->status;
        const std::vector<float> got = job->output.ToFloats();
        EXPECT_LT(testing::RelativeL2Error(got.data(), job->expected.data(), got.size()),
                  tolerance);
      }
    }
  }
}

TEST(CpuExecutorTest, CreateChecksItsOptions) {
  Completions done;
  EXPECT_EQ(CpuExecutor::Create({}, done.Hooks()).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto backend = Backend();
  EXPECT_EQ(CpuExecutor::Create({.backend = backend.get(), .slice_flops = 1}, done.Hooks())
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sparkle
