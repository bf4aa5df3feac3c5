#include "engine/engine.h"

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "engine/cpu/conv2d_ref.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/shape_table.h"
#include "tests/testing/test_job.h"

namespace sparkle {
namespace {

using ::sparkle::testing::RandomFloats;
using ::sparkle::testing::RelativeL2Error;
using ::sparkle::testing::TestJob;
using ::testing::HasSubstr;

Conv2dParams Small() {
  Conv2dParams p;
  p.n = 1, p.c = 16, p.h = 32, p.w = 32, p.k = 16, p.r = 3, p.s = 3, p.SetPad(1, 1);
  return p;
}

std::unique_ptr<Engine> MakeEngine(EngineOptions options = {}) {
  options.cpu.threads = 2;
  auto engine = Engine::Create(options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return std::move(engine).value();
}

TEST(EngineTest, ComputesCorrectResultsForMixedShapes) {
  auto engine = MakeEngine();
  Conv2dParams big;
  big.n = 2, big.c = 32, big.h = 28, big.w = 28, big.k = 64, big.r = big.s = 3;
  big.SetPad(1, 1), big.has_bias = true;  // above small_job_max_flops
  Conv2dParams nhwc = Small();
  nhwc.layout = Layout::kNHWC, nhwc.stride_h = 2;
  std::vector<std::unique_ptr<TestJob>> jobs;
  for (int i = 0; i < 12; ++i) {
    const Conv2dParams& p = i % 3 == 0 ? big : i % 3 == 1 ? Small() : nhwc;
    jobs.push_back(std::make_unique<TestJob>(p, i));
  }
  for (auto& j : jobs) {
    auto job = j->Make();
    ASSERT_TRUE(engine->Submit(&job).ok());
    EXPECT_EQ(job, nullptr);
  }
  for (auto& j : jobs) {
    j->done.WaitForNotification();
    EXPECT_TRUE(j->status.ok()) << j->status;
    EXPECT_LT(j->Error(), 1e-5) << j->params.ToString();
    EXPECT_LE(j->timestamps.enqueued, j->timestamps.batch_formed);
    EXPECT_LE(j->timestamps.compute_start, j->timestamps.compute_end);
  }
  EngineStats stats = engine->Stats();
  EXPECT_EQ(stats.jobs_accepted, 12);
  EXPECT_EQ(stats.jobs_succeeded, 12);
  EXPECT_GT(stats.gflop, 0);
}

TEST(EngineTest, JobsWithTheSameWeightsBatchAlongNAndStayCorrect) {
  EngineOptions options;
  options.batcher.max_queue_delay = absl::Milliseconds(200);  // let the batch fill
  options.batcher.max_batch_size = 8;
  auto engine = MakeEngine(options);
  Conv2dParams p = Small();
  p.has_bias = true;
  const std::vector<float> weight = RandomFloats(p.weight_elements(), 99);
  std::vector<std::unique_ptr<TestJob>> jobs;
  for (int i = 0; i < 8; ++i) {
    Conv2dParams pi = p;
    pi.n = 1 + i % 2;  // N=1 and N=2 mixed: 12 images in all
    jobs.push_back(std::make_unique<TestJob>(pi, i, &weight));
    jobs.back()->bias = jobs.front()->bias;
    Conv2dRef(pi, jobs.back()->input.data(), weight.data(), jobs.back()->bias.data(),
              jobs.back()->expected.data());
  }
  for (auto& j : jobs) {
    auto job = j->Make();
    ASSERT_TRUE(engine->Submit(&job).ok());
  }
  int max_batch_jobs = 0;
  for (auto& j : jobs) {
    j->done.WaitForNotification();
    ASSERT_TRUE(j->status.ok()) << j->status;
    EXPECT_LT(j->Error(), 1e-5);
    max_batch_jobs = std::max(max_batch_jobs, j->timestamps.batch_jobs);
  }
  EXPECT_GT(max_batch_jobs, 1) << "identical weights should have been batched";
  EXPECT_LT(engine->Stats().batches, 8);
}

TEST(EngineTest, DifferentWeightsNeverShareABatch) {
  EngineOptions options;
  options.batcher.max_queue_delay = absl::Milliseconds(100);
  auto engine = MakeEngine(options);
  std::vector<std::unique_ptr<TestJob>> jobs;
  for (int i = 0; i < 6; ++i) jobs.push_back(std::make_unique<TestJob>(Small(), 10 * i));
  for (auto& j : jobs) {
    auto job = j->Make();
    ASSERT_TRUE(engine->Submit(&job).ok());
  }
  for (auto& j : jobs) {
    j->done.WaitForNotification();
    ASSERT_TRUE(j->status.ok());
    EXPECT_EQ(j->timestamps.batch_jobs, 1);
    EXPECT_LT(j->Error(), 1e-5);
  }
}

TEST(EngineTest, CallerSuppliedWeightKeyCollisionIsCaughtBeforeCompute) {
  EngineOptions options;
  options.batcher.max_queue_delay = absl::Milliseconds(100);
  auto engine = MakeEngine(options);
  std::vector<std::unique_ptr<TestJob>> jobs;
  for (int i = 0; i < 4; ++i) jobs.push_back(std::make_unique<TestJob>(Small(), 7 * i + 1));
  for (auto& j : jobs) {
    auto job = j->Make();
    job->weight_key = 42;  // a lying identity: the engine must still compare the bytes
    ASSERT_TRUE(engine->Submit(&job).ok());
  }
  for (auto& j : jobs) {
    j->done.WaitForNotification();
    ASSERT_TRUE(j->status.ok());
    EXPECT_LT(j->Error(), 1e-5);
  }
}

TEST(EngineTest, RejectsBadJobsWithoutCallingDone) {
  EngineOptions options;
  options.max_job_bytes = 200000;
  auto engine = MakeEngine(options);
  TestJob ok_job(Small(), 1);

  auto job = ok_job.Make();
  job->params.k = 0;
  absl::Status s = engine->Submit(&job);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  ASSERT_NE(job, nullptr);  // still the caller's

  job = ok_job.Make();
  job->input = nullptr;
  EXPECT_EQ(engine->Submit(&job).code(), absl::StatusCode::kInvalidArgument);

  Conv2dParams large = Small();
  large.c = large.k = 64;
  TestJob large_job(large, 2);
  job = large_job.Make();
  s = engine->Submit(&job);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()), HasSubstr("max_job_bytes"));
  EXPECT_FALSE(IsQueueFull(s));

  job = ok_job.Make();
  job->deadline = absl::Now() - absl::Seconds(1);
  EXPECT_EQ(engine->Submit(&job).code(), absl::StatusCode::kDeadlineExceeded);

  EXPECT_FALSE(ok_job.done.HasBeenNotified());
  // The engine keeps serving after every rejection.
  job = ok_job.Make();
  ASSERT_TRUE(engine->Submit(&job).ok());
  ok_job.done.WaitForNotification();
  EXPECT_TRUE(ok_job.status.ok());
  EXPECT_EQ(engine->Stats().jobs_rejected, 4);
}

TEST(EngineTest, FullQueueIsRetryableResourceExhausted) {
  EngineOptions options;
  options.batcher.max_queued_jobs = 2;
  options.batcher.max_queue_delay = absl::Milliseconds(300);  // keep them queued
  options.batcher.max_batch_size = 64;
  auto engine = MakeEngine(options);
  std::vector<std::unique_ptr<TestJob>> jobs;
  for (int i = 0; i < 3; ++i) jobs.push_back(std::make_unique<TestJob>(Small(), 5));
  auto a = jobs[0]->Make(), b = jobs[1]->Make(), c = jobs[2]->Make();
  ASSERT_TRUE(engine->Submit(&a).ok());
  ASSERT_TRUE(engine->Submit(&b).ok());
  absl::Status s = engine->Submit(&c);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(IsQueueFull(s));
  jobs[0]->done.WaitForNotification();
  jobs[1]->done.WaitForNotification();
}

TEST(EngineTest, JobLargerThanTheWholeQueueIsNotMarkedRetryable) {
  EngineOptions options;
  options.batcher.max_queued_bytes = 100000;  // a Small() job is ~140 KB
  auto engine = MakeEngine(options);
  TestJob job(Small(), 1);
  auto j = job.Make();
  absl::Status s = engine->Submit(&j);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(IsQueueFull(s)) << s;
}

TEST(EngineTest, CancelledAndExpiredJobsCompleteWithTheirCodes) {
  EngineOptions options;
  options.batcher.max_queue_delay = absl::Milliseconds(100);
  auto engine = MakeEngine(options);
  TestJob cancelled(Small(), 1), expired(Small(), 2), fine(Small(), 3);
  auto job = cancelled.Make();
  job->cancelled = std::make_shared<std::atomic<bool>>(false);
  auto flag = job->cancelled;
  ASSERT_TRUE(engine->Submit(&job).ok());
  flag->store(true);
  job = expired.Make();
  job->deadline = absl::Now() + absl::Milliseconds(20);
  ASSERT_TRUE(engine->Submit(&job).ok());
  job = fine.Make();
  ASSERT_TRUE(engine->Submit(&job).ok());
  cancelled.done.WaitForNotification();
  expired.done.WaitForNotification();
  fine.done.WaitForNotification();
  EXPECT_EQ(cancelled.status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(expired.status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(fine.status.ok());
  EXPECT_LT(fine.Error(), 1e-5);
  EngineStats stats = engine->Stats();
  EXPECT_EQ(stats.jobs_failed, 2);
  EXPECT_EQ(stats.jobs_succeeded, 1);
}

TEST(EngineTest, DrainFinishesAcceptedWorkThenRefusesNewJobs) {
  auto engine = MakeEngine();
  std::vector<std::unique_ptr<TestJob>> jobs;
  for (int i = 0; i < 20; ++i) jobs.push_back(std::make_unique<TestJob>(Small(), i));
  for (auto& j : jobs) {
    auto job = j->Make();
    ASSERT_TRUE(engine->Submit(&job).ok());
  }
  EXPECT_TRUE(engine->Drain(absl::Now() + absl::Seconds(30)).ok());
  EXPECT_TRUE(engine->draining());
  for (auto& j : jobs) {
    ASSERT_TRUE(j->done.HasBeenNotified());
    EXPECT_TRUE(j->status.ok());
    EXPECT_LT(j->Error(), 1e-5);
  }
  TestJob late(Small(), 99);
  auto job = late.Make();
  EXPECT_EQ(engine->Submit(&job).code(), absl::StatusCode::kUnavailable);
}

TEST(EngineTest, ConcurrentSubmittersAllGetCorrectAnswers) {
  auto engine = MakeEngine();
  constexpr int kThreads = 4, kPerThread = 25;
  std::vector<std::unique_ptr<TestJob>> jobs;
  const std::vector<float> weight = RandomFloats(Small().weight_elements(), 5);
  for (int i = 0; i < kThreads * kPerThread; ++i) {
    jobs.push_back(std::make_unique<TestJob>(Small(), i, i % 2 ? &weight : nullptr));
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto job = jobs[t * kPerThread + i]->Make();
        ASSERT_TRUE(engine->Submit(&job).ok());
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& j : jobs) {
    j->done.WaitForNotification();
    ASSERT_TRUE(j->status.ok());
    EXPECT_LT(j->Error(), 1e-5);
  }
}

TEST(EngineTest, InvalidOptionsAreRejectedByName) {
  EngineOptions options;
  options.max_job_bytes = 0;
  auto engine = Engine::Create(options);
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(engine.status().message()), HasSubstr("max_job_bytes"));
  options = {};
  options.batcher.max_batch_size = 0;
  EXPECT_EQ(Engine::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
}

// The cost limits are checked from the geometry alone, before any buffer exists: the params
// below would need gigabytes, and no buffer is ever made for them.
TEST(EngineTest, AdmitRefusesCostlyJobsNamingTheFlag) {
  EngineOptions options;
  options.max_job_gflop = 1;
  options.max_job_scratch_bytes = 8 << 20;
  options.max_inflight_bytes = 16 << 20;
  auto engine = MakeEngine(options);
  struct Case {
    const char* name;
    Conv2dParams params;
    const char* flag;
  };
  Conv2dParams flops = Small();  // 2 GFLOP, a few KB
  flops.c = flops.k = 1024, flops.h = flops.w = 8;
  Conv2dParams padded{.pad_left = 1 << 21, .pad_right = 1 << 21};  // 16 MiB padded input, 16 MiB output
  Conv2dParams im2col{.c = 256, .h = 64, .w = 64, .r = 3, .s = 3, .pad_top = 1, .pad_bottom = 1, .pad_left = 1, .pad_right = 1};
  Conv2dParams bytes{.h = 1024, .w = 1024, .k = 8};  // 36 MiB of tensors, 4 MiB of im2col
  const Case cases[] = {{"flops", flops, "max_job_gflop"},
                        {"padded extent", padded, "max_job_scratch_bytes"},
                        {"im2col per thread", im2col, "max_job_scratch_bytes"},
                        {"larger than the in-flight budget", bytes, "max_inflight_bytes"}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    absl::StatusOr<Engine::Admission> a = engine->Admit(c.params);
    ASSERT_EQ(a.status().code(), absl::StatusCode::kResourceExhausted) << a.status();
    EXPECT_THAT(std::string(a.status().message()), HasSubstr(c.flag));
    EXPECT_FALSE(IsQueueFull(a.status()));  // can never fit: not retryable
  }
  Conv2dParams bad = Small();
  bad.stride_w = int64_t{1} << 31;  // passed validation once and came back INTERNAL
  EXPECT_EQ(engine->Admit(bad).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->Stats().inflight_bytes, 0);
}

TEST(EngineTest, InflightBudgetIsRetryableAndReleasedOnCompletion) {
  EngineOptions options;
  options.max_inflight_bytes = 1 << 20;
  auto engine = MakeEngine(options);
  Conv2dParams p{.h = 256, .w = 256};  // 512 KiB of tensors
  absl::StatusOr<Engine::Admission> first = engine->Admit(p);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->bytes(), p.total_bytes());
  absl::StatusOr<Engine::Admission> second = engine->Admit(p);
  ASSERT_FALSE(second.ok());  // 2 x 512 KiB + 8 > 1 MiB
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(IsQueueFull(second.status()));
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("max_inflight_bytes"));
  EXPECT_EQ(engine->Stats().inflight_bytes, p.total_bytes());

  // A job submitted with the admission runs; the budget is the admission holder's until it
  // lets go (the server: when the response is sent).
  TestJob t(p, 3);
  auto job = t.Make();
  ASSERT_TRUE(engine->Submit(&job, *first).ok());
  t.done.WaitForNotification();
  ASSERT_TRUE(t.status.ok()) << t.status;
  EXPECT_LT(t.Error(), 1e-5);
  EXPECT_EQ(engine->Stats().inflight_bytes, p.total_bytes());
  *first = Engine::Admission();
  EXPECT_EQ(engine->Stats().inflight_bytes, 0);

  // Submit without an admission holds one until done has run.
  TestJob u(p, 4);
  job = u.Make();
  ASSERT_TRUE(engine->Submit(&job).ok());
  u.done.WaitForNotification();
  ASSERT_TRUE(u.status.ok());
  absl::StatusOr<Engine::Admission> again = engine->Admit(p);  // room again
  EXPECT_TRUE(again.ok()) << again.status();

  // An admission too small for the job is a caller bug.
  Conv2dParams bigger = p;
  bigger.k = 2;
  TestJob v(bigger, 5);
  job = v.Make();
  EXPECT_EQ(engine->Submit(&job, *again).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(job, nullptr);
}

// A large job (every thread, exclusive) is run in slices of N; a small job submitted while it
// runs gets the pool between two slices instead of waiting for the whole job.
TEST(EngineTest, SmallJobIsNotBlockedByALargeOne) {
  EngineOptions options;
  options.max_inflight_bytes = int64_t{1} << 30;
  auto engine = MakeEngine(options);
  // resnet_3x3_14 at N=256: 59 GFLOP in 3 slices of <= 20 GFLOP, 51 MB in and out.
  Conv2dParams big{.n = 256, .c = 256, .h = 14, .w = 14, .k = 256, .r = 3, .s = 3, .pad_top = 1, .pad_bottom = 1,
                   .pad_left = 1, .pad_right = 1};
  std::vector<float> in(big.input_elements(), 0.5f), w(big.weight_elements(), 0.25f),
      out(big.output_elements());
  absl::Notification big_done;
  absl::Time big_end;
  auto job = std::make_unique<Conv2dJob>();
  job->params = big;
  job->input = in.data(), job->weight = w.data(), job->output = out.data();
  job->done = [&](const absl::Status& s, const ExecTimestamps& t) {
    EXPECT_TRUE(s.ok()) << s;
    big_end = t.compute_end;
    big_done.Notify();
  };
  ASSERT_TRUE(engine->Submit(&job).ok());
  // Polls until a worker has taken the big job (the queue is empty), then sends a small one.
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (engine->Stats().queue.jobs > 0 && absl::Now() < give_up) std::this_thread::yield();
  TestJob small(Small(), 9);
  auto small_job = small.Make();
  const absl::Time sent = absl::Now();
  ASSERT_TRUE(engine->Submit(&small_job).ok());
  small.done.WaitForNotification();
  const absl::Time small_end = absl::Now();
  big_done.WaitForNotification();
  ASSERT_TRUE(small.status.ok());
  EXPECT_LT(small.Error(), 1e-5);
  EXPECT_LT(small_end, big_end) << "the small job waited for the whole large job";
  EXPECT_LT(small_end - sent, absl::Seconds(2));
  EXPECT_NEAR(out[0], 0.5f * 0.25f * 256 * 4, 1e-3);  // corner: 2x2 valid taps x 256 channels
  EXPECT_NEAR(out.back(), 0.5f * 0.25f * 256 * 4, 1e-3);
}

}  // namespace
}  // namespace sparkle
