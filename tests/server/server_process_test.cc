// The real sparkled binary over loopback gRPC: results against Conv2dRef (the error table of
// docs/protocol.md is checked in-process: in_process_server_test.cc), health,
// metadata, limits, concurrency, sparklectl end to end, and a clean stop on SIGTERM.
#include <signal.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "engine/cpu/conv2d_ref.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "inference/grpc_predict_v2.grpc.pb.h"
#include "sparkle/v1/control.grpc.pb.h"
#include "tests/testing/conv_case.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/grpc_test_util.h"
#include "tests/testing/infer_check.h"
#include "tests/testing/process_util.h"
#include "tests/testing/shape_table.h"
#include "tests/testing/wait_for.h"

namespace sparkle {
namespace {

using ::sparkle::testing::DaemonProcess;
using ::testing::HasSubstr;
using inference::ModelInferRequest;
using inference::ModelInferResponse;

using Case = ::sparkle::testing::ConvCase;
using ::sparkle::testing::Connect;
using ::sparkle::testing::Shell;

Conv2dParams Shape(int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t r,
                   int64_t stride = 1, int64_t pad = 0, int64_t groups = 1, bool bias = false,
                   Layout layout = Layout::kNCHW) {
  return ::sparkle::testing::ConvShape(n, c, h, w, k, r, stride, pad, groups, bias, layout);
}

class ServerProcessTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto d = DaemonProcess::Start(SPARKLED_PATH, {"--threads=2", "--log_level=info"});
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = d->release();
    channel_ = new std::shared_ptr<grpc::Channel>(Connect(daemon_->address()));
  }
  static void TearDownTestSuite() {
    delete channel_;
    delete daemon_;
  }

  static std::unique_ptr<inference::GRPCInferenceService::Stub> Stub() {
    return inference::GRPCInferenceService::NewStub(*channel_);
  }

  static grpc::Status Infer(const ModelInferRequest& req, ModelInferResponse* resp,
                            absl::Duration timeout = absl::Seconds(60)) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + absl::ToChronoSeconds(timeout));
    return Stub()->ModelInfer(&ctx, req, resp);
  }

  // A small good request must succeed (the daemon keeps serving after a bad one).
  static void ExpectStillServing() {
    Case good(Shape(1, 4, 8, 8, 4, 3, 1, 1, 1, true), 77);
    ModelInferResponse resp;
    grpc::Status s = Infer(good.Request(), &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(good.Check(resp), "");
  }

  static DaemonProcess* daemon_;
  static std::shared_ptr<grpc::Channel>* channel_;
};

DaemonProcess* ServerProcessTest::daemon_ = nullptr;
std::shared_ptr<grpc::Channel>* ServerProcessTest::channel_ = nullptr;

TEST_F(ServerProcessTest, ResultsMatchTheOracle) {
  const Conv2dParams shapes[] = {
      Shape(1, 16, 32, 32, 16, 3, 1, 1),
      Shape(2, 3, 31, 29, 8, 5, 2, 2, 1, true),
      Shape(1, 32, 14, 14, 32, 3, 1, 1, 32),  // depthwise
      Shape(3, 8, 12, 12, 16, 3, 1, 1, 4, true, Layout::kNHWC),
      Shape(1, 64, 7, 7, 128, 1),
      Shape(1, 1, 5, 5, 1, 5),  // kernel = image
  };
  for (const Conv2dParams& p : shapes) {
    SCOPED_TRACE(p.ToString());
    Case c(p);
    for (bool typed : {false, true}) {
      for (bool reversed : {false, true}) {
        ModelInferResponse resp;
        grpc::Status s = Infer(c.Request(typed, reversed), &resp);
        ASSERT_TRUE(s.ok()) << s.error_message();
        EXPECT_EQ(c.Check(resp), "") << "typed=" << typed << " reversed=" << reversed;
        EXPECT_EQ(resp.id(), "case");
        EXPECT_EQ(resp.model_name(), "conv2d");
        EXPECT_EQ(resp.model_version(), "1");
        ASSERT_EQ(resp.outputs_size(), 1);
        EXPECT_EQ(resp.outputs(0).name(), "output");
        EXPECT_EQ(resp.outputs(0).datatype(), "FP32");
        const std::vector<int64_t> want =
            p.layout == Layout::kNHWC ? std::vector<int64_t>{p.n, p.p(), p.q(), p.k}
                                      : std::vector<int64_t>{p.n, p.k, p.p(), p.q()};
        EXPECT_EQ(std::vector<int64_t>(resp.outputs(0).shape().begin(),
                                       resp.outputs(0).shape().end()),
                  want);
      }
    }
  }
}

TEST_F(ServerProcessTest, ShorthandParametersAndIgnoredClientKeys) {
  Case c(Shape(1, 4, 9, 9, 4, 3, 2, 1));
  ModelInferRequest r = c.Request();
  r.mutable_parameters()->clear();
  (*r.mutable_parameters())["stride"].set_uint64_param(2);
  (*r.mutable_parameters())["pad"].set_int64_param(1);
  (*r.mutable_parameters())["sequence_id"].set_int64_param(5);
  (*r.mutable_parameters())["binary_data_output"].set_bool_param(true);
  (*r.mutable_parameters())["priority"].set_int64_param(1);
  (*r.mutable_parameters())["device"].set_string_param("cpu");
  r.add_outputs()->set_name("output");
  ModelInferResponse resp;
  grpc::Status s = Infer(r, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(c.Check(resp), "");
}

// Every protocol error (code and message) and the `timeout` parameter expiring a job in the
// queue are checked in-process: tests/server/in_process_server_test.cc.

TEST_F(ServerProcessTest, HealthLivenessReadinessAndMetadata) {
  auto stub = Stub();
  {
    grpc::ClientContext ctx;
    inference::ServerLiveResponse resp;
    ASSERT_TRUE(stub->ServerLive(&ctx, {}, &resp).ok());
    EXPECT_TRUE(resp.live());
  }
  {
    grpc::ClientContext ctx;
    inference::ServerReadyResponse resp;
    ASSERT_TRUE(stub->ServerReady(&ctx, {}, &resp).ok());
    EXPECT_TRUE(resp.ready());
  }
  {
    grpc::ClientContext ctx;
    inference::ModelReadyRequest req;
    req.set_name("conv2d");
    inference::ModelReadyResponse resp;
    ASSERT_TRUE(stub->ModelReady(&ctx, req, &resp).ok());
    EXPECT_TRUE(resp.ready());
    grpc::ClientContext ctx2;
    req.set_name("nope");
    EXPECT_EQ(stub->ModelReady(&ctx2, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext ctx;
    inference::ModelMetadataRequest req;
    req.set_name("conv2d");
    inference::ModelMetadataResponse resp;
    ASSERT_TRUE(stub->ModelMetadata(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.inputs_size(), 4);  // input, weight, bias, residual
    EXPECT_EQ(resp.outputs_size(), 1);
    EXPECT_EQ(resp.versions(0), "1");
  }
  {
    grpc::ClientContext ctx;
    inference::ServerMetadataResponse resp;
    ASSERT_TRUE(stub->ServerMetadata(&ctx, {}, &resp).ok());
    EXPECT_EQ(resp.name(), "sparkled");
  }
  for (const std::string service : {"", "inference.GRPCInferenceService", "sparkle.v1.Control"}) {
    SCOPED_TRACE(service);
    bool serving = false;
    const grpc::Status status = ::sparkle::testing::HealthCheck(*channel_, service, &serving);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_TRUE(serving);
  }
}

TEST_F(ServerProcessTest, StatusReportsCountersAndDevices) {
  ExpectStillServing();
  auto stub = sparkle::v1::Control::NewStub(*channel_);
  grpc::ClientContext ctx;
  sparkle::v1::GetStatusResponse resp;
  ASSERT_TRUE(stub->GetStatus(&ctx, {}, &resp).ok());
  EXPECT_TRUE(resp.ready());
  EXPECT_FALSE(resp.draining());
  EXPECT_FALSE(resp.version().empty());
  ASSERT_GE(resp.devices_size(), 1);
  EXPECT_EQ(resp.devices(0).name(), "cpu");
  EXPECT_EQ(resp.devices(0).threads(), 2);
  EXPECT_GE(resp.jobs_succeeded(), 1u);
  EXPECT_GT(resp.uptime_seconds(), 0);
}

// Issue 13: the status says how the CPU computes each datatype (never a silent slowdown).
TEST_F(ServerProcessTest, StatusSaysHowTheCpuComputesEachDatatype) {
  auto control = sparkle::v1::Control::NewStub(*channel_);
  grpc::ClientContext ctx;
  sparkle::v1::GetStatusResponse status;
  ASSERT_TRUE(control->GetStatus(&ctx, {}, &status).ok());
  ASSERT_GE(status.devices_size(), 1);
  const std::string& detail = status.devices(0).detail();
  EXPECT_THAT(detail, HasSubstr("oneDNN "));
  EXPECT_THAT(detail, HasSubstr("FP32 native"));
  EXPECT_THAT(detail, ::testing::ContainsRegex("BF16 (native|converted to FP32)"));
  EXPECT_THAT(detail, HasSubstr("FP16 converted to FP32"));
}

TEST_F(ServerProcessTest, GpuRequestWithoutGpuIsFailedPreconditionNamingTheReason) {
  auto control = sparkle::v1::Control::NewStub(*channel_);
  grpc::ClientContext ctx;
  sparkle::v1::GetStatusResponse status;
  ASSERT_TRUE(control->GetStatus(&ctx, {}, &status).ok());
  EXPECT_EQ(status.router().policy(), "auto");
  if (status.devices_size() > 1) {
    GTEST_SKIP() << "this machine has a GPU (" << status.devices(1).detail()
                 << "): the no-GPU answer cannot be observed here";
  }
  // No GPU: the status says why, and a request naming a GPU gets that reason back.
  const std::string reason = status.router().gpu_fallback_reason();
  ASSERT_FALSE(reason.empty());
  EXPECT_EQ(status.router().crossover_mflop(), 0);
  EXPECT_EQ(status.router().decisions_gpu(), 0u);
  EXPECT_EQ(status.devices(0).kind(), "cpu");
  EXPECT_TRUE(status.devices(0).healthy());
  EXPECT_EQ(status.devices(0).index(), -1);
  Case c(Shape(1, 4, 8, 8, 4, 3, 1, 1, 1, true), 78);
  for (const char* device : {"gpu", "gpu:0", "gpu:7"}) {
    ModelInferRequest r = c.Request();
    (*r.mutable_parameters())["device"].set_string_param(device);
    ModelInferResponse resp;
    grpc::Status s = Infer(r, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << device;
    EXPECT_THAT(s.error_message(), HasSubstr(reason)) << device;
    EXPECT_THAT(s.error_message(), HasSubstr("no GPU")) << device;
  }
  for (const char* device : {"cpu", "auto"}) {
    ModelInferRequest r = c.Request();
    (*r.mutable_parameters())["device"].set_string_param(device);
    ModelInferResponse resp;
    grpc::Status s = Infer(r, &resp);
    ASSERT_TRUE(s.ok()) << device << ": " << s.error_message();
    EXPECT_EQ(c.Check(resp), "");
  }
}

TEST_F(ServerProcessTest, ThirtyTwoConcurrentClientsWithMixedShapes) {
  const Conv2dParams shapes[] = {
      Shape(1, 16, 32, 32, 16, 3, 1, 1),
      Shape(1, 16, 32, 32, 16, 3, 1, 1),  // same geometry, different weights
      Shape(2, 8, 20, 20, 8, 3, 2, 1, 1, true),
      Shape(1, 32, 16, 16, 32, 3, 1, 1, 32),
      Shape(1, 64, 28, 28, 64, 3, 1, 1),
  };
  std::vector<std::unique_ptr<Case>> cases;
  for (int i = 0; i < 5; ++i) cases.push_back(std::make_unique<Case>(shapes[i], 100 + i));
  // Shared weights across clients so that batching has something to merge.
  std::vector<ModelInferRequest> requests;
  for (auto& c : cases) requests.push_back(c->Request());
  constexpr int kClients = 32, kPerClient = 8;
  absl::Mutex mu;
  std::vector<std::string> failures;
  std::vector<std::thread> clients;
  for (int t = 0; t < kClients; ++t) {
    clients.emplace_back([&, t] {
      auto stub = inference::GRPCInferenceService::NewStub(Connect(daemon_->address()));
      for (int i = 0; i < kPerClient; ++i) {
        const int which = (t + i) % 5;
        grpc::ClientContext ctx;
        ModelInferResponse resp;
        grpc::Status s = stub->ModelInfer(&ctx, requests[which], &resp);
        std::string problem = s.ok() ? cases[which]->Check(resp) : s.error_message();
        if (!problem.empty()) {
          absl::MutexLock lock(&mu);
          failures.push_back(absl::StrCat("client ", t, " shape ", which, ": ", problem));
        }
      }
    });
  }
  for (auto& c : clients) c.join();
  EXPECT_TRUE(failures.empty()) << failures.size() << " failures, first: " << failures[0];
}

TEST_F(ServerProcessTest, SparklectlInferAndStatusWork) {
  const std::string dir = ::testing::TempDir() + "/sparklectl_e2e";
  ASSERT_EQ(Shell(absl::StrCat("mkdir -p ", dir)), 0);
  const std::string target = absl::StrCat(" --target=", daemon_->address(), " ");
  const std::string ctl = SPARKLECTL_PATH;
  EXPECT_EQ(Shell(ctl + target + "health > /dev/null"), 0);
  EXPECT_EQ(Shell(ctl + target + "status > /dev/null"), 0);
  EXPECT_EQ(Shell(ctl + target + "status --json > /dev/null"), 0);
  const std::string infer = absl::StrCat(
      ctl, target,
      "infer --input_shape=1x3x16x16 --weight_shape=8x3x3x3 --bias_shape=8 --stride=2 --pad=1 "
      "--seed=3 --save_inputs=", dir, " --output=", dir, "/y.npy > /dev/null");
  ASSERT_EQ(Shell(infer), 0);
  // Feed the saved inputs back through --input/--weight/--bias: the same result must come out.
  const std::string again = absl::StrCat(ctl, target, "infer --input=", dir,
                                         "/input.npy --weight=", dir, "/weight.npy --bias=", dir,
                                         "/bias.npy --stride=2 --pad=1 --output=", dir,
                                         "/y2.npy > /dev/null");
  ASSERT_EQ(Shell(again), 0);
  EXPECT_EQ(Shell(absl::StrCat("cmp -s ", dir, "/y.npy ", dir, "/y2.npy")), 0);
  // A server-side error is exit code 1, a usage error 2.
  EXPECT_EQ(Shell(absl::StrCat(ctl, target, "infer --input_shape=1x3x4x4 --weight_shape=8x3x9x9 ",
                               "--output=", dir, "/bad.npy 2>/dev/null")),
            1);
  EXPECT_EQ(Shell(ctl + target + "frobnicate 2>/dev/null"), 2);
}

// Daemons with their own flags.

TEST(ServerLimitsTest, OversizedRequestNamesTheFlagAndQueueFullCarriesARetryHint) {
  auto d = DaemonProcess::Start(SPARKLED_PATH,
                                {"--threads=1", "--max_message_bytes=65536", "--max_queued_jobs=1",
                                 "--max_queue_delay=200ms"});
  ASSERT_TRUE(d.ok()) << d.status();
  auto stub = inference::GRPCInferenceService::NewStub(Connect((*d)->address()));
  {
    Case c(Shape(1, 16, 32, 32, 4, 1));  // 64 KiB input: above the 64 KiB message limit
    grpc::ClientContext ctx;
    ModelInferResponse resp;
    grpc::Status s = stub->ModelInfer(&ctx, c.Request(), &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_THAT(s.error_message(), HasSubstr("max_message_bytes"));
  }
  {
    // Two same-shape jobs while the first waits 200 ms for its batch: the second finds the
    // one-job queue full.
    Case c(Shape(1, 4, 8, 8, 4, 3, 1, 1));
    ModelInferRequest req = c.Request();
    grpc::Status first;
    std::thread t([&] {
      grpc::ClientContext ctx;
      ModelInferResponse resp;
      first = stub->ModelInfer(&ctx, req, &resp);
    });
    // Until the daemon holds the first one in its queue (a bounded poll of its status).
    auto control = sparkle::v1::Control::NewStub(Connect((*d)->address()));
    ASSERT_TRUE(::sparkle::testing::WaitFor(
        [&] {
          grpc::ClientContext status_ctx;
          sparkle::v1::GetStatusResponse status;
          return control->GetStatus(&status_ctx, {}, &status).ok() && status.queued_jobs() == 1;
        },
        absl::Seconds(10)));
    grpc::ClientContext ctx;
    ModelInferResponse resp;
    grpc::Status s = stub->ModelInfer(&ctx, req, &resp);
    t.join();
    EXPECT_TRUE(first.ok()) << first.error_message();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("max_queued_jobs"));
    auto hint = ctx.GetServerTrailingMetadata().find("retry-after-ms");
    ASSERT_NE(hint, ctx.GetServerTrailingMetadata().end());
    EXPECT_EQ(std::string(hint->second.data(), hint->second.size()), "20");
  }
  EXPECT_EQ((*d)->Stop(SIGTERM).value_or(-1), 0);
}

TEST(ServerLifecycleTest, SigtermFinishesAcceptedWorkAndExitsZero) {
  auto d = DaemonProcess::Start(SPARKLED_PATH, {"--threads=2", "--drain_timeout=20s"});
  ASSERT_TRUE(d.ok()) << d.status();
  Case c(Shape(2, 64, 56, 56, 64, 3, 1, 1), 9);
  ModelInferRequest req = c.Request();
  constexpr int kClients = 6;
  std::vector<grpc::Status> statuses(kClients);
  std::vector<std::string> checks(kClients);
  std::vector<std::thread> clients;
  auto channel = Connect((*d)->address());
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&, i] {
      auto stub = inference::GRPCInferenceService::NewStub(channel);
      grpc::ClientContext ctx;
      ModelInferResponse resp;
      statuses[i] = stub->ModelInfer(&ctx, req, &resp);
      if (statuses[i].ok()) checks[i] = c.Check(resp);
    });
  }
  // SIGTERM once all six are accepted (queued, running or done), as the daemon counts them.
  auto control = sparkle::v1::Control::NewStub(channel);
  ::sparkle::testing::WaitFor(
      [&] {
        grpc::ClientContext ctx;
        sparkle::v1::GetStatusResponse status;
        return control->GetStatus(&ctx, {}, &status).ok() && status.jobs_accepted() >= kClients;
      },
      absl::Seconds(30));
  absl::StatusOr<int> code = (*d)->Stop(SIGTERM);
  for (auto& t : clients) t.join();
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << (*d)->Log();
  for (int i = 0; i < kClients; ++i) {
    // Accepted before SIGTERM: each one gets its correct answer.
    EXPECT_TRUE(statuses[i].ok()) << i << ": " << statuses[i].error_message();
    EXPECT_EQ(checks[i], "") << i;
  }
  EXPECT_THAT((*d)->Log(), HasSubstr("all accepted work finished"));
}

TEST(ServerLifecycleTest, BadFlagsFailFastWithTheFlagName) {
  auto d = DaemonProcess::Start(SPARKLED_PATH, {"--max_batch_size=0"}, absl::Seconds(10));
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("max_batch_size"));
}

}  // namespace
}  // namespace sparkle
