// The real sparkled binary over loopback gRPC: results against Conv2dRef, every error case of
// docs/protocol.md with its code (and a good request succeeding right after each bad one), health,
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
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "inference/grpc_predict_v2.grpc.pb.h"
#include "sparkle/v1/control.grpc.pb.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/infer_check.h"
#include "tests/testing/shape_table.h"

namespace sparkle {
namespace {

using ::sparkle::testing::DaemonProcess;
using ::sparkle::testing::RandomFloats;
using ::sparkle::testing::RelativeL2Error;
using ::testing::HasSubstr;
using inference::ModelInferRequest;
using inference::ModelInferResponse;

std::shared_ptr<grpc::Channel> Connect(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

// A conv2d request with random data and the expected output.
struct Case {
  Conv2dParams params;
  std::vector<float> input, weight, bias, expected;

  explicit Case(const Conv2dParams& p, uint32_t seed = 1) : params(p) {
    input = RandomFloats(p.input_elements(), seed);
    weight = RandomFloats(p.weight_elements(), seed + 1);
    if (p.has_bias) bias = RandomFloats(p.k, seed + 2);
    expected.resize(p.output_elements());
    Conv2dRef(p, input.data(), weight.data(), p.has_bias ? bias.data() : nullptr,
              expected.data());
  }

  static void AddTensor(ModelInferRequest* r, const char* name, std::vector<int64_t> shape,
                        const std::vector<float>& data, bool typed) {
    auto* t = r->add_inputs();
    t->set_name(name);
    t->set_datatype("FP32");
    for (int64_t d : shape) t->add_shape(d);
    if (typed) {
      t->mutable_contents()->mutable_fp32_contents()->Add(data.begin(), data.end());
    } else {
      r->add_raw_input_contents()->assign(reinterpret_cast<const char*>(data.data()),
                                          data.size() * sizeof(float));
    }
  }

  // typed: fp32_contents instead of raw bytes; reversed: inputs listed bias, weight, input.
  ModelInferRequest Request(bool typed = false, bool reversed = false) const {
    const Conv2dParams& p = params;
    ModelInferRequest r;
    r.set_model_name("conv2d");
    r.set_id("case");
    auto set = [&r](const char* key, int64_t v) { (*r.mutable_parameters())[key].set_int64_param(v); };
    set("stride_h", p.stride_h), set("stride_w", p.stride_w);
    set("pad_h", p.pad_h), set("pad_w", p.pad_w);
    set("dilation_h", p.dilation_h), set("dilation_w", p.dilation_w);
    set("groups", p.groups);
    const bool nhwc = p.layout == Layout::kNHWC;
    auto add_input = [&] {
      AddTensor(&r, "input",
                nhwc ? std::vector<int64_t>{p.n, p.h, p.w, p.c}
                     : std::vector<int64_t>{p.n, p.c, p.h, p.w},
                input, typed);
      if (nhwc) {
        (*r.mutable_inputs(r.inputs_size() - 1)->mutable_parameters())["layout"]
            .set_string_param("NHWC");
      }
    };
    auto add_weight = [&] { AddTensor(&r, "weight", {p.k, p.c / p.groups, p.r, p.s}, weight, typed); };
    auto add_bias = [&] {
      if (p.has_bias) AddTensor(&r, "bias", {p.k}, bias, typed);
    };
    if (reversed) {
      add_bias(), add_weight(), add_input();
    } else {
      add_input(), add_weight(), add_bias();
    }
    return r;
  }

  // Empty when the response matches; otherwise what differs.
  std::string Check(const ModelInferResponse& resp) const {
    return ::sparkle::testing::CheckRawOutput(resp, expected);
  }
};

Conv2dParams Shape(int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t r,
                   int64_t stride = 1, int64_t pad = 0, int64_t groups = 1, bool bias = false,
                   Layout layout = Layout::kNCHW) {
  Conv2dParams p;
  p.n = n, p.c = c, p.h = h, p.w = w, p.k = k, p.r = r, p.s = r;
  p.stride_h = p.stride_w = stride, p.pad_h = p.pad_w = pad, p.groups = groups;
  p.has_bias = bias, p.layout = layout;
  return p;
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

struct ErrorCase {
  std::string name;
  std::function<void(ModelInferRequest&)> mutate;
  grpc::StatusCode code;
  std::string message;
};

TEST_F(ServerProcessTest, EveryProtocolErrorGetsItsCodeAndTheDaemonKeepsServing) {
  Case base(Shape(1, 4, 8, 8, 6, 3, 1, 1, 2, true));
  using grpc::StatusCode;
  auto param = [](ModelInferRequest& r, const char* k) -> inference::InferParameter& {
    return (*r.mutable_parameters())[k];
  };
  const std::vector<ErrorCase> cases = {
      {"unknown model", [](auto& r) { r.set_model_name("resnet"); }, StatusCode::NOT_FOUND,
       "unknown model 'resnet'"},
      {"unknown version", [](auto& r) { r.set_model_version("7"); }, StatusCode::NOT_FOUND,
       "unknown version '7'"},
      {"missing input",
       [](auto& r) {
         r.mutable_inputs()->erase(r.mutable_inputs()->begin());
         r.mutable_raw_input_contents()->erase(r.mutable_raw_input_contents()->begin());
       },
       StatusCode::INVALID_ARGUMENT, "missing input tensor 'input'"},
      {"missing weight",
       [](auto& r) {
         r.mutable_inputs()->erase(r.mutable_inputs()->begin() + 1);
         r.mutable_raw_input_contents()->erase(r.mutable_raw_input_contents()->begin() + 1);
       },
       StatusCode::INVALID_ARGUMENT, "missing input tensor 'weight'"},
      {"wrong datatype", [](auto& r) { r.mutable_inputs(0)->set_datatype("FP16"); },
       StatusCode::INVALID_ARGUMENT, "datatype 'FP16'"},
      {"unknown input name", [](auto& r) { r.mutable_inputs(2)->set_name("offset"); },
       StatusCode::INVALID_ARGUMENT, "unknown input tensor 'offset'"},
      {"duplicate input", [](auto& r) { r.mutable_inputs(2)->set_name("weight"); },
       StatusCode::INVALID_ARGUMENT, "given twice"},
      {"byte count mismatch",
       [](auto& r) { r.mutable_raw_input_contents(0)->resize(100); },
       StatusCode::INVALID_ARGUMENT, "holds 100 bytes"},
      {"shape mismatch", [](auto& r) { r.mutable_inputs(0)->set_shape(2, 9); },
       StatusCode::INVALID_ARGUMENT, "bytes"},
      {"rank", [](auto& r) { r.mutable_inputs(0)->mutable_shape()->RemoveLast(); },
       StatusCode::INVALID_ARGUMENT, "must have rank 4"},
      {"zero dim", [](auto& r) { r.mutable_inputs(0)->set_shape(0, 0); },
       StatusCode::INVALID_ARGUMENT, "outside [1, 2^31 - 1]"},
      {"negative dim", [](auto& r) { r.mutable_inputs(1)->set_shape(3, -3); },
       StatusCode::INVALID_ARGUMENT, "outside [1, 2^31 - 1]"},
      {"channel mismatch", [](auto& r) { r.mutable_inputs(1)->set_shape(1, 4); },
       StatusCode::INVALID_ARGUMENT, "C/groups=4"},
      {"groups not dividing", [&](auto& r) { param(r, "groups").set_int64_param(3); },
       StatusCode::INVALID_ARGUMENT, "groups (3) must divide"},
      {"bias shape", [](auto& r) { r.mutable_inputs(2)->set_shape(0, 5); },
       StatusCode::INVALID_ARGUMENT, "bias shape [5]"},
      {"kernel larger than padded input",
       [&](auto& r) { param(r, "pad_h").set_int64_param(0); r.mutable_inputs(1)->set_shape(2, 9); },
       StatusCode::INVALID_ARGUMENT, "larger than the padded input"},
      {"stride zero", [&](auto& r) { param(r, "stride_w").set_int64_param(0); },
       StatusCode::INVALID_ARGUMENT, "stride_w must be >= 1; was 0"},
      {"dilation zero", [&](auto& r) { param(r, "dilation_h").set_int64_param(0); },
       StatusCode::INVALID_ARGUMENT, "dilation_h must be >= 1"},
      {"negative pad", [&](auto& r) { param(r, "pad_w").set_int64_param(-1); },
       StatusCode::INVALID_ARGUMENT, "pad_w must be >= 0"},
      {"unknown parameter", [&](auto& r) { param(r, "stirde").set_int64_param(2); },
       StatusCode::INVALID_ARGUMENT, "unknown request parameter 'stirde'"},
      {"parameter of the wrong type", [&](auto& r) { param(r, "groups").set_string_param("2"); },
       StatusCode::INVALID_ARGUMENT, "groups must be an int64_param"},
      {"raw and typed both",
       [](auto& r) { r.mutable_inputs(2)->mutable_contents()->add_fp32_contents(1.0f); },
       StatusCode::INVALID_ARGUMENT, "send one or the other"},
      {"raw count", [](auto& r) { r.mutable_raw_input_contents()->RemoveLast(); },
       StatusCode::INVALID_ARGUMENT, "raw_input_contents has 2 entries"},
      {"bad layout",
       [](auto& r) {
         (*r.mutable_inputs(0)->mutable_parameters())["layout"].set_string_param("CHWN");
       },
       StatusCode::INVALID_ARGUMENT, "layout must be NCHW or NHWC"},
      {"unknown requested output", [](auto& r) { r.add_outputs()->set_name("logits"); },
       StatusCode::INVALID_ARGUMENT, "unknown requested output 'logits'"},
      {"bad device", [&](auto& r) { param(r, "device").set_string_param("tpu"); },
       StatusCode::INVALID_ARGUMENT, "device must be auto, cpu, gpu"},
      {"absent gpu", [&](auto& r) { param(r, "device").set_string_param("gpu:0"); },
       StatusCode::FAILED_PRECONDITION, "no GPU"},
      {"bad priority", [&](auto& r) { param(r, "priority").set_int64_param(99); },
       StatusCode::INVALID_ARGUMENT, "priority must be in"},
      {"output too large",
       [](auto& r) {
         // 1 x 1 x 2^16 x 2^16 input with K=2^12 and a 1x1 kernel: 64 TiB of output, refused
         // from the shapes alone, before any byte count is compared or anything allocated.
         r.mutable_inputs(0)->set_shape(1, 1), r.mutable_inputs(0)->set_shape(2, 65536);
         r.mutable_inputs(0)->set_shape(3, 65536);
         r.mutable_inputs(1)->set_shape(0, 4096), r.mutable_inputs(1)->set_shape(1, 1);
         r.mutable_inputs(1)->set_shape(2, 1), r.mutable_inputs(1)->set_shape(3, 1);
         r.mutable_inputs()->RemoveLast();
         r.mutable_raw_input_contents()->RemoveLast();
         (*r.mutable_parameters())["groups"].set_int64_param(1);
       },
       StatusCode::RESOURCE_EXHAUSTED, "--max_message_bytes"},
      {"overflowing dims",
       [](auto& r) {
         for (int i = 0; i < 4; ++i) r.mutable_inputs(0)->set_shape(i, int64_t{1} << 20);
       },
       StatusCode::INVALID_ARGUMENT, "overflows"},
      {"huge dim", [](auto& r) { r.mutable_inputs(0)->set_shape(2, int64_t{1} << 40); },
       StatusCode::INVALID_ARGUMENT, "outside [1, 2^31 - 1]"},
  };
  for (const ErrorCase& c : cases) {
    SCOPED_TRACE(c.name);
    ModelInferRequest r = base.Request();
    c.mutate(r);
    ModelInferResponse resp;
    grpc::Status s = Infer(r, &resp);
    EXPECT_EQ(s.error_code(), c.code) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(c.message));
    ExpectStillServing();
  }
  // The typed-contents path has its own byte-count check.
  ModelInferRequest typed = base.Request(/*typed=*/true);
  typed.mutable_inputs(0)->mutable_contents()->mutable_fp32_contents()->RemoveLast();
  ModelInferResponse resp;
  grpc::Status s = Infer(typed, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("fp32_contents holds"));
  ExpectStillServing();
}

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
    EXPECT_EQ(resp.inputs_size(), 3);
    EXPECT_EQ(resp.outputs_size(), 1);
    EXPECT_EQ(resp.versions(0), "1");
  }
  {
    grpc::ClientContext ctx;
    inference::ServerMetadataResponse resp;
    ASSERT_TRUE(stub->ServerMetadata(&ctx, {}, &resp).ok());
    EXPECT_EQ(resp.name(), "sparkled");
  }
  // grpc.health.v1.Health/Check, sent as raw bytes: HealthCheckRequest{service=""} is empty,
  // and a SERVING reply is field 1 = 1 (bytes 08 01).
  grpc::GenericStub generic(*channel_);
  for (const std::string service : {"", "inference.GRPCInferenceService", "sparkle.v1.Control"}) {
    SCOPED_TRACE(service);
    std::string request;
    if (!service.empty()) {
      request.push_back(0x0a);
      request.push_back(static_cast<char>(service.size()));
      request += service;
    }
    grpc::Slice slice(request);
    grpc::ByteBuffer req_buf(&slice, 1), resp_buf;
    grpc::ClientContext ctx;
    absl::Mutex mu;
    bool finished = false;
    grpc::Status status;
    generic.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &req_buf,
                      &resp_buf, [&](grpc::Status s) {
                        absl::MutexLock lock(&mu);
                        status = s;
                        finished = true;
                      });
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(&finished));
    ASSERT_TRUE(status.ok()) << status.error_message();
    std::vector<grpc::Slice> slices;
    ASSERT_TRUE(resp_buf.Dump(&slices).ok());
    std::string bytes;
    for (auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    EXPECT_EQ(bytes, std::string("\x08\x01", 2));
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

TEST_F(ServerProcessTest, QueueTimeoutParameterExpiresQueuedJobs) {
  // A backlog of big jobs, then a small one allowed 1 µs in the queue.
  Case big(Shape(4, 64, 56, 56, 64, 3, 1, 1), 3);
  ModelInferRequest big_req = big.Request();
  std::vector<std::thread> load;
  for (int i = 0; i < 4; ++i) {
    load.emplace_back([&] {
      ModelInferResponse resp;
      Infer(big_req, &resp);
    });
  }
  absl::SleepFor(absl::Milliseconds(50));
  Case small(Shape(1, 4, 8, 8, 4, 3, 1, 1), 4);
  ModelInferRequest r = small.Request();
  (*r.mutable_parameters())["timeout"].set_int64_param(1);
  ModelInferResponse resp;
  grpc::Status s = Infer(r, &resp);
  for (auto& t : load) t.join();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();
  ExpectStillServing();
}

TEST_F(ServerProcessTest, SparklectlInferAndStatusWork) {
  const std::string dir = ::testing::TempDir() + "/sparklectl_e2e";
  ASSERT_EQ(std::system(absl::StrCat("mkdir -p ", dir).c_str()), 0);
  const std::string target = absl::StrCat(" --target=", daemon_->address(), " ");
  const std::string ctl = SPARKLECTL_PATH;
  EXPECT_EQ(std::system((ctl + target + "health > /dev/null").c_str()), 0);
  EXPECT_EQ(std::system((ctl + target + "status > /dev/null").c_str()), 0);
  EXPECT_EQ(std::system((ctl + target + "status --json > /dev/null").c_str()), 0);
  const std::string infer = absl::StrCat(
      ctl, target,
      "infer --input_shape=1x3x16x16 --weight_shape=8x3x3x3 --bias_shape=8 --stride=2 --pad=1 "
      "--seed=3 --save_inputs=", dir, " --output=", dir, "/y.npy > /dev/null");
  ASSERT_EQ(std::system(infer.c_str()), 0);
  // Feed the saved inputs back through --input/--weight/--bias: the same result must come out.
  const std::string again = absl::StrCat(ctl, target, "infer --input=", dir,
                                         "/input.npy --weight=", dir, "/weight.npy --bias=", dir,
                                         "/bias.npy --stride=2 --pad=1 --output=", dir,
                                         "/y2.npy > /dev/null");
  ASSERT_EQ(std::system(again.c_str()), 0);
  EXPECT_EQ(std::system(absl::StrCat("cmp -s ", dir, "/y.npy ", dir, "/y2.npy").c_str()), 0);
  // A server-side error is exit code 1, a usage error 2.
  EXPECT_EQ(WEXITSTATUS(std::system(absl::StrCat(ctl, target,
                                                 "infer --input_shape=1x3x4x4 "
                                                 "--weight_shape=8x3x9x9 --output=",
                                                 dir, "/bad.npy 2>/dev/null")
                                        .c_str())),
            1);
  EXPECT_EQ(WEXITSTATUS(std::system((ctl + target + "frobnicate 2>/dev/null").c_str())), 2);
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
    EXPECT_THAT(s.error_message(), HasSubstr("--max_message_bytes"));
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
    absl::SleepFor(absl::Milliseconds(50));
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
  for (const absl::Time give_up = absl::Now() + absl::Seconds(30); absl::Now() < give_up;
       absl::SleepFor(absl::Milliseconds(5))) {
    grpc::ClientContext ctx;
    sparkle::v1::GetStatusResponse status;
    if (control->GetStatus(&ctx, {}, &status).ok() && status.jobs_accepted() >= kClients) break;
  }
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
