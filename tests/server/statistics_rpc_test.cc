// The Triton statistics RPCs through the real sparkled over loopback: ModelConfig describes the
// conv2d model with the daemon's batching options, ModelStatistics counts what was sent, and
// both agree with /metrics. Also: a metrics port in use is a clear startup error.
#include <signal.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "inference/grpc_predict_v2.grpc.pb.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/http_get.h"
#include "tests/testing/process_util.h"
#include "tests/testing/shape_table.h"

namespace sparkle {
namespace {

using ::sparkle::testing::DaemonProcess;
using ::sparkle::testing::HttpGet;
using ::sparkle::testing::MetricValue;
using ::sparkle::testing::RunCommand;
using ::testing::HasSubstr;

// A 3x3 convolution of an [n, 4, 8, 8] input with 4 filters, random data.
inference::ModelInferRequest Request(int64_t n) {
  inference::ModelInferRequest r;
  r.set_model_name("conv2d");
  (*r.mutable_parameters())["pad"].set_int64_param(1);
  auto add = [&r](const char* name, std::vector<int64_t> shape, uint32_t seed) {
    auto* t = r.add_inputs();
    t->set_name(name);
    t->set_datatype("FP32");
    int64_t count = 1;
    for (int64_t d : shape) t->add_shape(d), count *= d;
    const std::vector<float> data = testing::RandomFloats(count, seed);
    r.add_raw_input_contents()->assign(reinterpret_cast<const char*>(data.data()),
                                       data.size() * sizeof(float));
  };
  add("input", {n, 4, 8, 8}, 1);
  add("weight", {4, 4, 3, 3}, 2);
  return r;
}

// "host:port" from the daemon's "metrics on http://host:port/metrics" log line.
std::string MetricsAddress(const DaemonProcess& daemon) {
  const std::string log = daemon.Log();
  const std::string marker = "metrics on http://";
  const size_t at = log.find(marker);
  if (at == std::string::npos) return "";
  const size_t begin = at + marker.size();
  return log.substr(begin, log.find("/metrics", begin) - begin);
}

class StatisticsRpcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto daemon = DaemonProcess::Start(SPARKLED_PATH, {"--threads=2", "--max_queue_delay=2ms",
                                                       "--max_batch_size=8", "--log_level=info"});
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = *std::move(daemon);
    stub_ = inference::GRPCInferenceService::NewStub(
        grpc::CreateChannel(daemon_->address(), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    if (daemon_) {
      EXPECT_EQ(daemon_->Stop(SIGTERM).value_or(-1), 0);
    }
  }

  std::unique_ptr<DaemonProcess> daemon_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> stub_;
};

TEST_F(StatisticsRpcTest, ModelConfigDescribesConv2d) {
  grpc::ClientContext context;
  inference::ModelConfigRequest request;
  request.set_name("conv2d");
  inference::ModelConfigResponse response;
  ASSERT_TRUE(stub_->ModelConfig(&context, request, &response).ok());
  const inference::ModelConfig& c = response.config();
  EXPECT_EQ(c.name(), "conv2d");
  EXPECT_EQ(c.platform(), "sparkle_conv2d");
  EXPECT_EQ(c.max_batch_size(), 0);
  ASSERT_EQ(c.input_size(), 4);
  EXPECT_EQ(c.input(0).name(), "input");
  EXPECT_EQ(c.input(0).data_type(), inference::TYPE_FP32);
  EXPECT_THAT(c.input(0).dims(), ::testing::ElementsAre(-1, -1, -1, -1));
  EXPECT_EQ(c.input(1).name(), "weight");
  EXPECT_EQ(c.input(2).name(), "bias");
  EXPECT_TRUE(c.input(2).optional());
  EXPECT_EQ(c.input(3).name(), "residual");
  EXPECT_TRUE(c.input(3).optional());
  ASSERT_EQ(c.output_size(), 1);
  EXPECT_EQ(c.output(0).name(), "output");
  ASSERT_TRUE(c.has_dynamic_batching());
  EXPECT_EQ(c.dynamic_batching().max_queue_delay_microseconds(), 2000u);
  EXPECT_THAT(c.dynamic_batching().preferred_batch_size(), ::testing::ElementsAre(8));
  ASSERT_EQ(c.instance_group_size(), 1);
  EXPECT_EQ(c.instance_group(0).kind(), inference::ModelInstanceGroup::KIND_CPU);
  EXPECT_EQ(c.instance_group(0).count(), 2);

  grpc::ClientContext unknown_context;
  request.set_name("resnet");
  const grpc::Status unknown = stub_->ModelConfig(&unknown_context, request, &response);
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(unknown.error_message(), HasSubstr("resnet"));
}

TEST_F(StatisticsRpcTest, ModelStatisticsCountWhatWasSentAndAgreeWithMetrics) {
  // 6 requests of N = 1 and 3 of N = 2, all succeed; one invalid request is rejected.
  int64_t samples = 0;
  for (int i = 0; i < 9; ++i) {
    const int64_t n = i < 6 ? 1 : 2;
    grpc::ClientContext context;
    inference::ModelInferResponse response;
    ASSERT_TRUE(stub_->ModelInfer(&context, Request(n), &response).ok());
    samples += n;
  }
  {
    inference::ModelInferRequest bad = Request(1);
    bad.mutable_inputs(0)->set_datatype("FP16");
    grpc::ClientContext context;
    inference::ModelInferResponse response;
    EXPECT_EQ(stub_->ModelInfer(&context, bad, &response).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }

  grpc::ClientContext context;
  inference::ModelStatisticsRequest request;  // empty name: every model
  inference::ModelStatisticsResponse response;
  ASSERT_TRUE(stub_->ModelStatistics(&context, request, &response).ok());
  ASSERT_EQ(response.model_stats_size(), 1);
  const inference::ModelStatistics& m = response.model_stats(0);
  EXPECT_EQ(m.name(), "conv2d");
  EXPECT_EQ(m.version(), "1");
  EXPECT_GT(m.last_inference(), 0u);
  const inference::InferStatistics& s = m.inference_stats();
  EXPECT_EQ(s.success().count(), 9u);
  EXPECT_GT(s.success().ns(), 0u);
  // The invalid request named conv2d: it counts as a failure (Triton's rule), outside success.
  EXPECT_EQ(s.fail().count(), 1u);
  EXPECT_EQ(s.queue().count(), 9u);
  EXPECT_EQ(s.compute_infer().count(), 9u);
  EXPECT_GT(s.compute_infer().ns(), 0u);
  EXPECT_EQ(m.inference_count(), static_cast<uint64_t>(samples));
  // Sequential requests: every batch is complete, so the executions add up exactly.
  uint64_t executions = 0, batched_samples = 0;
  for (const inference::InferBatchStatistics& b : m.batch_stats()) {
    executions += b.compute_infer().count();
    batched_samples += b.batch_size() * b.compute_infer().count();
  }
  EXPECT_EQ(executions, m.execution_count());
  EXPECT_EQ(batched_samples, m.inference_count());
  EXPECT_GE(m.execution_count(), 1u);

  // /metrics reports the same numbers.
  const std::string metrics_address = MetricsAddress(*daemon_);
  ASSERT_FALSE(metrics_address.empty()) << daemon_->Log();
  absl::StatusOr<std::string> text = HttpGet(metrics_address, "/metrics");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(MetricValue(*text, R"(sparkle_requests_total{device="cpu",status="OK"})"), 9);
  EXPECT_EQ(MetricValue(*text, R"(sparkle_request_duration_seconds_count{device="cpu"})"), 9);
  EXPECT_EQ(MetricValue(*text, R"(sparkle_rejected_requests_total{reason="invalid"})"), 1);
  EXPECT_EQ(MetricValue(*text, "sparkle_batch_size_count"),
            static_cast<double>(m.execution_count()));
  EXPECT_EQ(MetricValue(*text, "sparkle_batch_size_sum"), static_cast<double>(samples));
  EXPECT_EQ(MetricValue(*text, R"(sparkle_device_healthy{device="cpu"})"), 1);
  EXPECT_EQ(MetricValue(*text, "sparkle_queue_jobs"), 0);

  // sparklectl stats prints the same counts.
  const std::string table =
      RunCommand(absl::StrCat(SPARKLECTL_PATH, " --target=", daemon_->address(), " stats")).output;
  EXPECT_THAT(table,
              HasSubstr(absl::StrCat("model conv2d version 1: 9 ok (", samples,
                                     " samples), 1 failed, ", m.execution_count(), " executions")));
  EXPECT_THAT(table, HasSubstr("compute_infer         9"));
  EXPECT_THAT(
      RunCommand(absl::StrCat(SPARKLECTL_PATH, " --target=", daemon_->address(), " stats --json"))
          .output,
      HasSubstr(absl::StrCat("\"inference_count\": \"", samples, "\"")));

  grpc::ClientContext unknown_context;
  request.set_name("conv2d");
  request.set_version("7");
  EXPECT_EQ(stub_->ModelStatistics(&unknown_context, request, &response).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(StatisticsRpcTest, MetricsPortInUseFailsStartup) {
  const std::string taken = MetricsAddress(*daemon_);
  ASSERT_FALSE(taken.empty());
  auto second = DaemonProcess::Start(SPARKLED_PATH,
                                     {"--threads=1", absl::StrCat("--metrics_address=", taken)});
  ASSERT_FALSE(second.ok());
  EXPECT_THAT(second.status().message(),
              HasSubstr(absl::StrCat("cannot serve metrics on ", taken)));
}

TEST(StatisticsRpcOffTest, MetricsOffStillAnswersStatistics) {
  auto daemon = DaemonProcess::Start(SPARKLED_PATH, {"--threads=1", "--metrics_address="});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  EXPECT_THAT((*daemon)->Log(), ::testing::Not(HasSubstr("metrics on")));
  auto stub = inference::GRPCInferenceService::NewStub(
      grpc::CreateChannel((*daemon)->address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext infer_context;
  inference::ModelInferResponse infer_response;
  ASSERT_TRUE(stub->ModelInfer(&infer_context, Request(1), &infer_response).ok());
  grpc::ClientContext context;
  inference::ModelStatisticsResponse response;
  ASSERT_TRUE(stub->ModelStatistics(&context, {}, &response).ok());
  ASSERT_EQ(response.model_stats_size(), 1);
  EXPECT_EQ(response.model_stats(0).inference_stats().success().count(), 1u);
  EXPECT_EQ((*daemon)->Stop(SIGTERM).value_or(-1), 0);
}

}  // namespace
}  // namespace sparkle
