// ServerMetrics: the exposition text after known requests (from the registry's serializer and
// over HTTP from the real endpoint), the scrape-time families from snapshots, and a clear error
// when the port is taken.
#include "server/server_metrics.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/http_get.h"

namespace sparkle {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);
absl::Time At(int64_t us) { return kT0 + absl::Microseconds(us); }

// A successful CPU request: 100 µs queue, 20 µs formation, `compute_us` compute, 5 µs output.
RequestOutcome CpuOk(int64_t n, int64_t batch_n, int64_t compute_us) {
  RequestOutcome o;
  o.n = n;
  o.response_bytes = 4096;
  o.received = At(0);
  ExecTimestamps& t = o.timestamps;
  t.enqueued = At(0);
  t.batch_formed = At(100);
  t.compute_start = At(120);
  t.compute_end = At(120 + compute_us);
  t.done = At(125 + compute_us);
  t.batch_n = batch_n;
  t.batch_jobs = static_cast<int>(batch_n / n);
  t.device = -1;
  return o;
}

ServerMetrics::Sources FakeSources(const InferenceStats* stats) {
  ServerMetrics::Sources sources;
  sources.engine = [] {
    EngineStats e;
    e.jobs_accepted = 7;
    e.busy_seconds = 1.5;
    e.queue.jobs = 3;
    e.queue.bytes = 12345;
    e.queue.levels = {{1, 1, 100, absl::Milliseconds(5)}, {2, 2, 12245, absl::Seconds(2)}};
    return e;
  };
  sources.devices = [] {
    DevicesSnapshot d;
    DeviceSnapshot cpu;
    cpu.name = "cpu";
    cpu.busy_seconds = 1.5;
    cpu.decisions = 11;
    DeviceSnapshot gpu;
    gpu.name = "gpu:0";
    gpu.index = 0;
    gpu.healthy = false;
    gpu.decisions = 4;
    d.devices = {cpu, gpu};
    return d;
  };
  sources.registry = [] { return ServerMetrics::RegistrySize{2, 4096, 1 << 20}; };
  sources.stats = stats;
  return sources;
}

using ::sparkle::testing::HttpGet;

double Value(const std::string& text, const std::string& series) {
  return ::sparkle::testing::MetricValue(text, series);
}

TEST(ServerMetricsTest, CountsAndHistogramsAfterKnownRequests) {
  InferenceStats stats;
  auto metrics = ServerMetrics::Create({}, FakeSources(&stats));
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ((*metrics)->address(), "");

  // Two requests of one batch of N = 2 (compute 300 µs), one alone (compute 3 ms), one expired
  // in the queue, one rejected because the queue was full.
  for (int i = 0; i < 2; ++i) {
    const RequestOutcome o = CpuOk(1, 2, 300);
    stats.Record(o);
    (*metrics)->RecordOutcome(o);
  }
  const RequestOutcome alone = CpuOk(1, 1, 3000);
  stats.Record(alone);
  (*metrics)->RecordOutcome(alone);
  RequestOutcome expired;
  expired.code = absl::StatusCode::kDeadlineExceeded;
  expired.received = At(0);
  expired.timestamps.enqueued = At(0);
  expired.timestamps.done = At(900);
  stats.Record(expired);
  (*metrics)->RecordOutcome(expired);
  (*metrics)->RecordRejection(RejectReason::kQueueFull);
  (*metrics)->RecordRequestBytes(1000);
  (*metrics)->RecordRequestBytes(24);

  const std::string text = (*metrics)->Serialize();
  EXPECT_EQ(Value(text, R"(sparkle_requests_total{device="cpu",status="OK"})"), 3);
  EXPECT_EQ(Value(text, R"(sparkle_requests_total{device="none",status="DEADLINE_EXCEEDED"})"), 1);
  EXPECT_EQ(Value(text, R"(sparkle_rejected_requests_total{reason="queue_full"})"), 1);
  EXPECT_EQ(Value(text, R"(sparkle_rejected_requests_total{reason="draining"})"), 0);
  EXPECT_EQ(Value(text, "sparkle_request_bytes_total"), 1024);
  EXPECT_EQ(Value(text, "sparkle_response_bytes_total"), 3 * 4096);

  // End to end: 425 µs twice and 3.125 ms once.
  EXPECT_EQ(Value(text, R"(sparkle_request_duration_seconds_count{device="cpu"})"), 3);
  EXPECT_EQ(Value(text, R"(sparkle_request_duration_seconds_bucket{device="cpu",le="0.0005"})"), 2);
  EXPECT_EQ(Value(text, R"(sparkle_request_duration_seconds_bucket{device="cpu",le="0.0025"})"), 2);
  EXPECT_EQ(Value(text, R"(sparkle_request_duration_seconds_bucket{device="cpu",le="0.005"})"), 3);
  EXPECT_NEAR(Value(text, R"(sparkle_request_duration_seconds_sum{device="cpu"})"),
              2 * 425e-6 + 3125e-6, 1e-9);
  // Stages.
  EXPECT_EQ(
      Value(text,
            R"(sparkle_stage_duration_seconds_bucket{device="cpu",stage="queue",le="0.0001"})"),
      3);
  EXPECT_EQ(
      Value(text,
            R"(sparkle_stage_duration_seconds_bucket{device="cpu",stage="compute",le="0.00025"})"),
      0);
  EXPECT_EQ(
      Value(text,
            R"(sparkle_stage_duration_seconds_bucket{device="cpu",stage="compute",le="0.0005"})"),
      2);
  EXPECT_EQ(
      Value(text, R"(sparkle_stage_duration_seconds_count{device="cpu",stage="batch_formation"})"),
      3);
  EXPECT_EQ(Value(text, R"(sparkle_stage_duration_seconds_count{device="cpu",stage="output"})"), 3);
  EXPECT_THAT(text, Not(HasSubstr(R"(stage="h2d")")));  // no GPU stages for CPU requests

  // Executed batches: one of N = 2 and one of N = 1 (from InferenceStats).
  EXPECT_EQ(Value(text, R"(sparkle_batch_size_bucket{le="1"})"), 1);
  EXPECT_EQ(Value(text, R"(sparkle_batch_size_bucket{le="2"})"), 2);
  EXPECT_EQ(Value(text, R"(sparkle_batch_size_bucket{le="+Inf"})"), 2);
  EXPECT_EQ(Value(text, "sparkle_batch_size_count"), 2);
  EXPECT_EQ(Value(text, "sparkle_batch_size_sum"), 3);
  EXPECT_EQ(static_cast<uint64_t>(Value(text, "sparkle_batch_size_count")),
            stats.Get().execution_count);
}

TEST(ServerMetricsTest, GpuRequestsGetTransferStagesPerDevice) {
  InferenceStats stats;
  auto metrics = ServerMetrics::Create({}, FakeSources(&stats));
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  for (int device : {0, 20, 20}) {  // 20: beyond the lock-free slots
    RequestOutcome o = CpuOk(1, 1, 40);
    o.timestamps.device = device;
    o.timestamps.h2d_end = At(110);  // h2d 10 µs after batch formation
    o.timestamps.d2h_end = At(190);  // d2h 30 µs after compute end (160)
    (*metrics)->RecordOutcome(o);
  }
  const std::string text = (*metrics)->Serialize();
  EXPECT_EQ(Value(text, R"(sparkle_requests_total{device="gpu:0",status="OK"})"), 1);
  EXPECT_EQ(Value(text, R"(sparkle_requests_total{device="gpu:20",status="OK"})"), 2);
  EXPECT_EQ(Value(text, R"(sparkle_stage_duration_seconds_count{device="gpu:20",stage="h2d"})"),
            2);
  EXPECT_NEAR(Value(text, R"(sparkle_stage_duration_seconds_sum{device="gpu:0",stage="d2h"})"),
              30e-6, 1e-9);
  EXPECT_THAT(text, Not(HasSubstr(R"(device="gpu:0",stage="batch_formation")")));
}

TEST(ServerMetricsTest, ScrapeTimeFamiliesComeFromSnapshots) {
  InferenceStats stats;
  auto metrics = ServerMetrics::Create({}, FakeSources(&stats));
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  const std::string text = (*metrics)->Serialize();
  EXPECT_EQ(Value(text, "sparkle_queue_jobs"), 3);
  EXPECT_EQ(Value(text, "sparkle_queue_bytes"), 12345);
  EXPECT_EQ(Value(text, R"(sparkle_engine_jobs_total{outcome="accepted"})"), 7);
  EXPECT_EQ(Value(text, R"(sparkle_device_healthy{device="cpu"})"), 1);
  EXPECT_EQ(Value(text, R"(sparkle_device_healthy{device="gpu:0"})"), 0);
  EXPECT_EQ(Value(text, R"(sparkle_device_busy_seconds_total{device="cpu"})"), 1.5);
  EXPECT_EQ(Value(text, R"(sparkle_router_decisions_total{device="cpu"})"), 11);
  EXPECT_EQ(Value(text, R"(sparkle_router_decisions_total{device="gpu:0"})"), 4);
  EXPECT_EQ(Value(text, "sparkle_registry_weights"), 2);
  EXPECT_EQ(Value(text, "sparkle_registry_bytes"), 4096);
  EXPECT_THAT(text, HasSubstr("# TYPE sparkle_device_busy_seconds_total counter"));
  EXPECT_THAT(text, HasSubstr("# TYPE sparkle_batch_size histogram"));
}

TEST(ServerMetricsTest, QueuePerLevel) {
  InferenceStats stats;
  auto metrics = ServerMetrics::Create({}, FakeSources(&stats));
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  // Waits: level 1 100 µs twice (CpuOk), level 2 3 ms once (an OK request) and 30 µs once (a
  // batched job that failed later: counted too). Not observed: a job that never left the
  // queue, and one without a level.
  for (int i = 0; i < 2; ++i) {
    RequestOutcome o = CpuOk(1, 2, 300);
    o.timestamps.level = 1;
    (*metrics)->RecordOutcome(o);
  }
  RequestOutcome slow = CpuOk(1, 1, 300);
  slow.timestamps.level = 2;
  slow.timestamps.batch_formed = At(3000);
  (*metrics)->RecordOutcome(slow);
  RequestOutcome failed = CpuOk(1, 1, 300);
  failed.code = absl::StatusCode::kInternal;
  failed.timestamps.level = 2;
  failed.timestamps.batch_formed = At(30);
  (*metrics)->RecordOutcome(failed);
  RequestOutcome expired;
  expired.code = absl::StatusCode::kDeadlineExceeded;
  expired.timestamps.level = 2;
  expired.timestamps.enqueued = At(0);
  expired.timestamps.done = At(900);
  (*metrics)->RecordOutcome(expired);
  (*metrics)->RecordOutcome(CpuOk(1, 1, 300));  // level 0: not queued by a batcher

  const std::string text = (*metrics)->Serialize();
  EXPECT_EQ(Value(text, R"(sparkle_queue_wait_seconds_count{level="1"})"), 2);
  EXPECT_NEAR(Value(text, R"(sparkle_queue_wait_seconds_sum{level="1"})"), 200e-6, 1e-9);
  EXPECT_EQ(Value(text, R"(sparkle_queue_wait_seconds_count{level="2"})"), 2);
  EXPECT_EQ(Value(text, R"(sparkle_queue_wait_seconds_bucket{level="2",le="5e-05"})"), 1);
  EXPECT_EQ(Value(text, R"(sparkle_queue_wait_seconds_bucket{level="2",le="0.0025"})"), 1);
  EXPECT_EQ(Value(text, R"(sparkle_queue_wait_seconds_bucket{level="2",le="0.005"})"), 2);
  EXPECT_THAT(text, Not(HasSubstr(R"(sparkle_queue_wait_seconds_count{level="0"})")));
  EXPECT_THAT(text, HasSubstr("# TYPE sparkle_queue_wait_seconds histogram"));
  // Scrape time: one series per level of the snapshot.
  EXPECT_EQ(Value(text, R"(sparkle_queue_level_jobs{level="1"})"), 1);
  EXPECT_EQ(Value(text, R"(sparkle_queue_level_jobs{level="2"})"), 2);
  EXPECT_EQ(Value(text, R"(sparkle_queue_level_oldest_wait_seconds{level="1"})"), 0.005);
  EXPECT_EQ(Value(text, R"(sparkle_queue_level_oldest_wait_seconds{level="2"})"), 2);
  EXPECT_THAT(text, HasSubstr("# TYPE sparkle_queue_level_jobs gauge"));
}

TEST(ServerMetricsTest, RejectReasonsFollowTheStatus) {
  EXPECT_EQ(RejectReasonFor(absl::ResourceExhaustedError("q"), true, false),
            RejectReason::kQueueFull);
  EXPECT_EQ(RejectReasonFor(absl::ResourceExhaustedError("big"), false, false),
            RejectReason::kTooLarge);
  EXPECT_EQ(RejectReasonFor(absl::UnavailableError("x"), false, true), RejectReason::kDraining);
  EXPECT_EQ(RejectReasonFor(absl::UnavailableError("x"), false, false), RejectReason::kUnavailable);
  EXPECT_EQ(RejectReasonFor(absl::InvalidArgumentError("x"), false, false), RejectReason::kInvalid);
  EXPECT_EQ(RejectReasonFor(absl::NotFoundError("x"), false, false), RejectReason::kUnknownModel);
  EXPECT_EQ(RejectReasonFor(absl::DeadlineExceededError("x"), false, false),
            RejectReason::kDeadline);
  EXPECT_EQ(RejectReasonFor(absl::FailedPreconditionError("x"), false, false),
            RejectReason::kDevice);
  EXPECT_STREQ(RejectReasonName(RejectReason::kQueueFull), "queue_full");
}

TEST(ServerMetricsTest, EndpointServesTheSameTextOverHttp) {
  InferenceStats stats;
  auto metrics = ServerMetrics::Create({"127.0.0.1:0"}, FakeSources(&stats));
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  const std::string address = (*metrics)->address();
  EXPECT_NE(address, "127.0.0.1:0");  // the bound port
  const RequestOutcome o = CpuOk(1, 1, 100);
  stats.Record(o);
  (*metrics)->RecordOutcome(o);
  absl::StatusOr<std::string> body = HttpGet(address, "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(Value(*body, "sparkle_queue_jobs"), 3);
  EXPECT_EQ(Value(*body, R"(sparkle_requests_total{device="cpu",status="OK"})"), 1);
  (*metrics)->StopEndpoint();
  EXPECT_EQ(HttpGet(address, "/metrics").status().code(), absl::StatusCode::kUnavailable);
}

TEST(ServerMetricsTest, PortInUseIsAClearError) {
  InferenceStats stats;
  auto first = ServerMetrics::Create({"127.0.0.1:0"}, FakeSources(&stats));
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = ServerMetrics::Create({(*first)->address()}, FakeSources(&stats));
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr((*first)->address()));
  EXPECT_THAT(second.status().message(), HasSubstr("--metrics_address"));
}

}  // namespace
}  // namespace sparkle
