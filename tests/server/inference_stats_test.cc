// InferenceStats: Triton's cumulative statistics from known request outcomes, including the
// per-batch-size execution counts derived from each request's share of its batch.
#include "server/inference_stats.h"

#include "gtest/gtest.h"

namespace sparkle {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);

absl::Time At(int64_t us) { return kT0 + absl::Microseconds(us); }

// A CPU request of `n` samples in a batch of `batch_n`: received at 0, enqueued 10 µs, batch
// formed at 10 + queue_us, compute from +5 µs for compute_us, done 3 µs later.
RequestOutcome CpuOutcome(int64_t n, int64_t batch_n, int jobs, int64_t queue_us,
                          int64_t compute_us) {
  RequestOutcome o;
  o.n = n;
  o.received = At(0);
  ExecTimestamps& t = o.timestamps;
  t.enqueued = At(10);
  t.batch_formed = At(10 + queue_us);
  t.compute_start = At(15 + queue_us);
  t.compute_end = At(15 + queue_us + compute_us);
  t.done = At(18 + queue_us + compute_us);
  t.batch_n = batch_n;
  t.batch_jobs = jobs;
  t.device = -1;
  return o;
}

TEST(InferenceStatsTest, EmptyIsZero) {
  InferenceStats stats;
  const InferenceStats::Snapshot s = stats.Get();
  EXPECT_EQ(s.success.count, 0u);
  EXPECT_EQ(s.fail.count, 0u);
  EXPECT_EQ(s.inference_count, 0u);
  EXPECT_EQ(s.execution_count, 0u);
  EXPECT_TRUE(s.batch_sizes.empty());
  EXPECT_EQ(s.last_inference, absl::UnixEpoch());
}

TEST(InferenceStatsTest, OneBatchOfThreeRequests) {
  InferenceStats stats;
  // One batch of N = 4 made of requests with n = 1, 1, 2; same compute (100 µs) for all.
  stats.Record(CpuOutcome(1, 4, 3, 20, 100));
  stats.Record(CpuOutcome(1, 4, 3, 30, 100));
  stats.Record(CpuOutcome(2, 4, 3, 40, 100));
  const InferenceStats::Snapshot s = stats.Get();
  EXPECT_EQ(s.success.count, 3u);
  // total = done - received = 18 + queue + compute µs.
  EXPECT_EQ(s.success.ns, (138 + 148 + 158) * 1000u);
  EXPECT_EQ(s.queue.count, 3u);
  EXPECT_EQ(s.queue.ns, (20 + 30 + 40) * 1000u);
  EXPECT_EQ(s.compute_input.ns, 3 * 5 * 1000u);  // batch_formed → compute_start
  EXPECT_EQ(s.compute_infer.ns, 3 * 100 * 1000u);
  EXPECT_EQ(s.compute_output.ns, 3 * 3 * 1000u);  // compute_end → done
  EXPECT_EQ(s.inference_count, 4u);
  EXPECT_EQ(s.execution_count, 1u);
  ASSERT_EQ(s.batch_sizes.size(), 1u);
  EXPECT_EQ(s.batch_sizes[0].batch_size, 4);
  EXPECT_EQ(s.batch_sizes[0].executions, 1u);
  EXPECT_EQ(s.batch_sizes[0].compute_infer.count, 1u);
  EXPECT_EQ(s.batch_sizes[0].compute_infer.ns, 100 * 1000u);  // per execution, not per request
  EXPECT_EQ(s.last_inference, At(18 + 40 + 100));
}

TEST(InferenceStatsTest, PartialBatchIsNotAnExecutionYet) {
  InferenceStats stats;
  stats.Record(CpuOutcome(1, 2, 2, 0, 50));
  EXPECT_EQ(stats.Get().execution_count, 0u);
  EXPECT_TRUE(stats.Get().batch_sizes.empty());
  stats.Record(CpuOutcome(1, 2, 2, 0, 50));
  EXPECT_EQ(stats.Get().execution_count, 1u);
  stats.Record(CpuOutcome(8, 8, 1, 0, 70));
  const InferenceStats::Snapshot s = stats.Get();
  EXPECT_EQ(s.execution_count, 2u);
  ASSERT_EQ(s.batch_sizes.size(), 2u);
  EXPECT_EQ(s.batch_sizes[0].batch_size, 2);  // ascending
  EXPECT_EQ(s.batch_sizes[1].batch_size, 8);
  EXPECT_EQ(s.batch_sizes[1].compute_infer.ns, 70 * 1000u);
}

TEST(InferenceStatsTest, FailuresCountOnlyAsFail) {
  InferenceStats stats;
  RequestOutcome dropped;  // expired in the queue: never formed a batch
  dropped.code = absl::StatusCode::kDeadlineExceeded;
  dropped.n = 1;
  dropped.received = At(0);
  dropped.timestamps.enqueued = At(1);
  dropped.timestamps.done = At(500);
  stats.Record(dropped);
  const InferenceStats::Snapshot s = stats.Get();
  EXPECT_EQ(s.fail.count, 1u);
  EXPECT_EQ(s.fail.ns, 500 * 1000u);
  EXPECT_EQ(s.success.count, 0u);
  EXPECT_EQ(s.queue.count, 0u);
  EXPECT_EQ(s.inference_count, 0u);
  EXPECT_EQ(s.execution_count, 0u);
}

TEST(InferenceStatsTest, GpuStagesMapToComputeInputAndOutput) {
  InferenceStats stats;
  RequestOutcome o;
  o.n = 1;
  o.received = At(0);
  ExecTimestamps& t = o.timestamps;
  t.device = 0;
  t.enqueued = At(1);
  t.batch_formed = At(11);  // queue 10
  t.h2d_end = At(31);       // h2d 20
  t.compute_start = At(35);
  t.compute_end = At(75);  // compute 40
  t.d2h_end = At(90);      // d2h 15
  t.done = At(92);
  t.batch_n = 1;
  t.batch_jobs = 1;
  stats.Record(o);
  const InferenceStats::Snapshot s = stats.Get();
  EXPECT_EQ(s.queue.ns, 10 * 1000u);
  EXPECT_EQ(s.compute_input.ns, 20 * 1000u);
  EXPECT_EQ(s.compute_infer.ns, 40 * 1000u);
  EXPECT_EQ(s.compute_output.ns, 15 * 1000u);
}

}  // namespace
}  // namespace sparkle
