// The real services (inference, control, weights, gRPC health, CallAuth) through
// InProcessServer (tests/testing/in_process_server.h): no daemon, no port. What a process test
// cannot control is controlled here: jobs are held in the engine by a paused fake GPU or a long
// max_queue_delay, so drain, queue timeouts, cancellation and status while busy are checked
// deterministically. Every error of docs/protocol.md gets its code and message here; the
// process tests keep what needs a process (signals, flags, systemd, TLS files, sparklectl).
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "grpcpp/generic/generic_stub.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/conv_case.h"
#include "tests/testing/in_process_server.h"
#include "tests/testing/start_in_process.h"
#include "tests/testing/wait_for.h"

namespace sparkle {
namespace {

using ::sparkle::testing::ConvCase;
using ::sparkle::testing::ConvShape;
using ::sparkle::testing::InProcessServer;
using ::sparkle::testing::StartServer;
using ::sparkle::testing::PendingInfer;
using ::sparkle::testing::WaitFor;
using ::testing::HasSubstr;
using inference::ModelInferRequest;
using inference::ModelInferResponse;

constexpr absl::Duration kPatience = absl::Seconds(10);  // bound of every poll below

// One fake GPU that every job goes to (device_policy gpu), paused: accepted jobs stay in the
// engine until the test resumes it.
std::unique_ptr<InProcessServer> StartWithPausedGpu(absl::Duration drain_timeout =
                                                        absl::Seconds(20)) {
  InProcessServer::Options options;
  options.fake_gpus = 1;
  options.server.engine.device_policy = DeviceRequest::AnyGpu();
  options.server.drain_timeout = drain_timeout;
  std::unique_ptr<InProcessServer> s = StartServer(std::move(options));
  if (s != nullptr) s->gpu(0).Pause();
  return s;
}

uint64_t InFlight(const InProcessServer& s) {
  auto status = s.Status();
  return status.ok() ? status->in_flight_jobs() : 0;
}

const ConvCase& Small() {
  static const auto* const kCase = new ConvCase(ConvShape(1, 4, 8, 8, 4, 3, 1, 1, 1, true), 77);
  return *kCase;
}

void ExpectStillServing(const InProcessServer& s) {
  ModelInferResponse resp;
  const grpc::Status status = s.Infer(Small().Request(), &resp);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(Small().Check(resp), "");
}

struct ErrorCase {
  std::string name;
  std::function<void(ModelInferRequest&)> mutate;
  grpc::StatusCode code;
  std::string message;
};

// The error table of docs/protocol.md: each bad request gets its code and a message naming the
// problem, and a good request succeeds right after it.
TEST(InProcessServerTest, EveryProtocolErrorGetsItsCodeAndMessage) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  ConvCase base(ConvShape(1, 4, 8, 8, 6, 3, 1, 1, 2, true));
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
      {"byte count mismatch", [](auto& r) { r.mutable_raw_input_contents(0)->resize(100); },
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
       [&](auto& r) {
         param(r, "pad_h").set_int64_param(0);
         r.mutable_inputs(1)->set_shape(2, 9);
       },
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
       StatusCode::FAILED_PRECONDITION, "test: no GPU"},
      {"bad priority", [&](auto& r) { param(r, "priority").set_int64_param(99); },
       StatusCode::INVALID_ARGUMENT, "priority must be in"},
      {"negative timeout", [&](auto& r) { param(r, "timeout").set_int64_param(-5); },
       StatusCode::INVALID_ARGUMENT, "timeout (µs) must be >= 0"},
      {"unknown weight_id",
       [&](auto& r) {
         r.mutable_inputs()->erase(r.mutable_inputs()->begin() + 1, r.mutable_inputs()->end());
         r.mutable_raw_input_contents()->erase(r.mutable_raw_input_contents()->begin() + 1,
                                               r.mutable_raw_input_contents()->end());
         param(r, "weight_id").set_string_param("sha256:0000");
       },
       StatusCode::NOT_FOUND, "sha256:0000"},
      {"weight_id and weight both",
       [&](auto& r) { param(r, "weight_id").set_string_param("sha256:0000"); },
       StatusCode::INVALID_ARGUMENT, "weight_id"},
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
       StatusCode::RESOURCE_EXHAUSTED, "max_message_bytes"},
      {"overflowing dims",
       [](auto& r) {
         for (int i = 0; i < 4; ++i) r.mutable_inputs(0)->set_shape(i, int64_t{1} << 20);
       },
       StatusCode::INVALID_ARGUMENT, "overflows"},
      {"huge dim", [](auto& r) { r.mutable_inputs(0)->set_shape(2, int64_t{1} << 40); },
       StatusCode::INVALID_ARGUMENT, "outside [1, 2^31 - 1]"},
      {"auto_pad with an explicit pad",
       [&](auto& r) { param(r, "auto_pad").set_string_param("SAME_UPPER"); },
       StatusCode::INVALID_ARGUMENT, "cannot be combined with an explicit pad"},
      {"unknown activation", [&](auto& r) { param(r, "activation").set_string_param("swish"); },
       StatusCode::INVALID_ARGUMENT, "activation must be one of none, relu"},
      {"clip bound without clip", [&](auto& r) { param(r, "clip_max").set_double_param(6); },
       StatusCode::INVALID_ARGUMENT, "clip_max is only valid with activation=clip"},
      {"residual of the wrong shape",
       [](auto& r) {
         auto* t = r.add_inputs();
         t->set_name("residual"), t->set_datatype("FP32");
         for (int64_t d : {1, 6, 8, 7}) t->add_shape(d);
         r.add_raw_input_contents()->assign(6 * 8 * 7 * 4, '\0');
       },
       StatusCode::INVALID_ARGUMENT, "has shape [1, 6, 8, 7] but the output's shape is [1, 6, 8, 8]"},
      {"typed contents for BF16",
       [](auto& r) {
         r.clear_raw_input_contents();
         for (auto& t : *r.mutable_inputs()) {
           t.set_datatype("BF16");
           t.mutable_contents()->add_fp32_contents(1.0f);
         }
       },
       StatusCode::INVALID_ARGUMENT, "has no typed contents field"},
      {"bad output datatype",
       [](auto& r) {
         auto* out = r.add_outputs();
         out->set_name("output");
         (*out->mutable_parameters())["datatype"].set_string_param("FP16");
       },
       StatusCode::INVALID_ARGUMENT, "requested output 'output' has datatype 'FP16'"},
  };
  for (const ErrorCase& c : cases) {
    SCOPED_TRACE(c.name);
    ModelInferRequest r = base.Request();
    c.mutate(r);
    ModelInferResponse resp;
    const grpc::Status s = server->Infer(r, &resp);
    EXPECT_EQ(s.error_code(), c.code) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(c.message));
    ExpectStillServing(*server);
  }
  // The typed-contents path has its own byte-count check.
  ModelInferRequest typed = base.Request(/*typed=*/true);
  typed.mutable_inputs(0)->mutable_contents()->mutable_fp32_contents()->RemoveLast();
  ModelInferResponse resp;
  const grpc::Status s = server->Infer(typed, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("fp32_contents holds"));
  // Every refusal was counted as rejected, none as accepted.
  auto status = server->Status();
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(status->jobs_accepted(), status->jobs_succeeded());
  EXPECT_EQ(status->jobs_failed(), 0u);
}

// Bytes sent to ModelInfer that are not a ModelInferRequest: INVALID_ARGUMENT with a message
// (gRPC's generated path said UNIMPLEMENTED with none), and a request whose tensor bytes gRPC
// delivers in many slices (1.5 MiB input) is read and answered correctly.
// Issue 13 end to end: a BF16 request with a residual and relu, asking for an FP32 output,
// through the real services on the CPU, against the oracle (on the BF16-rounded inputs); the
// same as FP16 with the output in FP16, and NHWC with asymmetric padding and clip.
TEST(InProcessServerTest, SixteenBitRequestsWithResidualAndActivationMatchTheOracle) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  struct Variant {
    const char* name;
    DataType dtype, output_dtype;
    Layout layout;
    Activation activation;
  };
  for (const Variant& v : {Variant{"bf16 relu fp32-out", DataType::kBf16, DataType::kFp32,
                                   Layout::kNCHW, Activation::kRelu},
                           Variant{"fp16 relu fp16-out", DataType::kFp16, DataType::kFp16,
                                   Layout::kNCHW, Activation::kRelu},
                           Variant{"bf16 nhwc clip bf16-out", DataType::kBf16, DataType::kBf16,
                                   Layout::kNHWC, Activation::kClip}}) {
    SCOPED_TRACE(v.name);
    Conv2dParams p = ConvShape(2, 8, 9, 7, 16, 3, 1, 1, 1, true, v.layout);
    p.has_residual = true;
    p.activation = v.activation;
    if (v.activation == Activation::kClip) {
      p.clip_min = -0.5f, p.clip_max = 0.75f;
      p.pad_top = 0, p.pad_bottom = 2, p.pad_left = 1, p.pad_right = 0;
    }
    p.dtype = v.dtype;
    p.output_dtype = v.output_dtype;
    ASSERT_TRUE(p.Validate().ok()) << p.Validate();
    const ConvCase c(p, 31);
    for (bool reversed : {false, true}) {
      ModelInferResponse resp;
      const grpc::Status status = server->Infer(c.Request(false, reversed), &resp);
      ASSERT_TRUE(status.ok()) << status.error_message();
      ASSERT_EQ(resp.outputs_size(), 1);
      EXPECT_EQ(resp.outputs(0).datatype(), DataTypeName(v.output_dtype));
      EXPECT_EQ(c.Check(resp), "");
    }
  }
  ExpectStillServing(*server);
}

TEST(InProcessServerTest, RawModelInferRefusesGarbageAndReadsSplitTensors) {
  std::unique_ptr<InProcessServer> server = StartServer();
  ASSERT_NE(server, nullptr);
  grpc::GenericStub stub(server->channel());
  auto call = [&stub](const std::string& bytes, grpc::ByteBuffer* reply) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + kPatience));
    grpc::Slice slice(bytes);
    grpc::ByteBuffer request(&slice, 1);
    absl::Notification done;
    grpc::Status result;
    stub.UnaryCall(&context, "/inference.GRPCInferenceService/ModelInfer", grpc::StubOptions(),
                   &request, reply, [&](grpc::Status s) {
                     result = std::move(s);
                     done.Notify();
                   });
    done.WaitForNotification();
    return result;
  };
  for (const std::string& garbage :
       {std::string("\x3a\x7f" "abc", 5), std::string("\x0b", 1), std::string(300, '\xff')}) {
    grpc::ByteBuffer reply;
    const grpc::Status s = call(garbage, &reply);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("not a valid ModelInferRequest"));
  }
  const ConvCase big(ConvShape(1, 6, 256, 256, 4, 3, 1, 1, 1, true), 5);  // 1.5 MiB input
  grpc::ByteBuffer reply;
  const grpc::Status s = call(big.Request().SerializeAsString(), &reply);
  ASSERT_TRUE(s.ok()) << s.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(reply.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  ModelInferResponse resp;
  ASSERT_TRUE(resp.ParseFromString(bytes));
  EXPECT_EQ(big.Check(resp), "");
  ExpectStillServing(*server);
}

// The `timeout` parameter (µs, Triton's queue timeout) long enough to pass admission and short
// enough to expire behind a backlog: the first job of the key waits max_queue_delay (1 s) for
// its batch; the second, allowed 100 ms, is queued behind it (the status shows both queued,
// so it passed admission) and expires there, while the first one succeeds.
TEST(InProcessServerTest, TimeoutParameterExpiresTheJobInTheQueue) {
  InProcessServer::Options options;
  options.server.engine.batcher.max_queue_delay = absl::Seconds(1);
  auto server = StartServer(std::move(options));
  ASSERT_NE(server, nullptr);
  auto stub = server->Inference();
  const absl::Time start = absl::Now();
  PendingInfer backlog(stub.get(), Small().Request());
  ASSERT_TRUE(WaitFor([&] { return InFlight(*server) == 1; }, kPatience));
  ModelInferRequest timed = Small().Request();
  (*timed.mutable_parameters())["timeout"].set_int64_param(100'000);
  PendingInfer expiring(stub.get(), timed);
  ASSERT_TRUE(WaitFor([&] { return server->Status()->queued_jobs() == 2; }, kPatience));
  const grpc::Status& s = expiring.Wait();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("deadline expired in the queue after"));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(100));
  ASSERT_TRUE(backlog.Wait().ok()) << backlog.Wait().error_message();
  EXPECT_EQ(Small().Check(backlog.response()), "");
  auto status = server->Status();
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->jobs_accepted(), 2u);
  EXPECT_EQ(status->jobs_succeeded(), 1u);
  EXPECT_EQ(status->jobs_failed(), 1u);
}

// Control.Drain with work held in the engine: health and ServerReady flip at once, new requests
// get UNAVAILABLE, the drain waits for the accepted work (it cannot finish while the GPU is
// paused), and every accepted request gets its correct answer.
TEST(InProcessServerTest, DrainFinishesAcceptedWorkWhileHealthSaysNotServing) {
  auto server = StartWithPausedGpu();
  ASSERT_NE(server, nullptr);
  auto stub = server->Inference();
  ASSERT_TRUE(server->Serving().value_or(false));
  constexpr int kJobs = 4;
  std::vector<std::unique_ptr<PendingInfer>> held;
  for (int i = 0; i < kJobs; ++i) {
    held.push_back(std::make_unique<PendingInfer>(stub.get(), Small().Request()));
  }
  ASSERT_TRUE(WaitFor([&] { return InFlight(*server) == kJobs; }, kPatience));

  auto control = server->Control();
  grpc::ClientContext drain_ctx;
  sparkle::v1::DrainRequest request;  // 0: the server's drain_timeout (20 s)
  sparkle::v1::DrainResponse drained;
  absl::Notification drain_done;
  grpc::Status drain_status;
  control->async()->Drain(&drain_ctx, &request, &drained, [&](grpc::Status s) {
    drain_status = std::move(s);
    drain_done.Notify();
  });
  for (const char* service : {"", "inference.GRPCInferenceService", "sparkle.v1.Control"}) {
    EXPECT_TRUE(WaitFor([&] { return server->Serving(service).value_or(true) == false; },
                        kPatience))
        << service;
  }
  {
    grpc::ClientContext ctx;
    inference::ServerReadyResponse ready;
    ASSERT_TRUE(stub->ServerReady(&ctx, {}, &ready).ok());
    EXPECT_FALSE(ready.ready());
    grpc::ClientContext live_ctx;
    inference::ServerLiveResponse live;
    ASSERT_TRUE(stub->ServerLive(&live_ctx, {}, &live).ok());
    EXPECT_TRUE(live.live());
  }
  ModelInferResponse refused;
  const grpc::Status s = server->Infer(Small().Request(), &refused);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("draining"));
  auto status = server->Status();
  ASSERT_TRUE(status.ok());
  EXPECT_TRUE(status->draining());
  EXPECT_FALSE(status->ready());
  EXPECT_EQ(status->in_flight_jobs(), static_cast<uint64_t>(kJobs));
  // The held work cannot have finished: the drain is still waiting for it.
  EXPECT_FALSE(drain_done.HasBeenNotified());

  server->gpu(0).Resume();
  ASSERT_TRUE(drain_done.WaitForNotificationWithTimeout(kPatience));
  ASSERT_TRUE(drain_status.ok()) << drain_status.error_message();
  EXPECT_TRUE(drained.drained());
  EXPECT_EQ(drained.in_flight_jobs(), 0u);
  for (auto& p : held) {
    ASSERT_TRUE(p->Wait().ok()) << p->Wait().error_message();
    EXPECT_EQ(Small().Check(p->response()), "");
  }
  status = server->Status();
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->jobs_accepted(), static_cast<uint64_t>(kJobs));
  EXPECT_EQ(status->jobs_succeeded(), static_cast<uint64_t>(kJobs));
  EXPECT_EQ(status->jobs_rejected(), 1u);
  EXPECT_EQ(status->in_flight_jobs(), 0u);
}

// Drain's own timeout passing with work still held: drained false and the count; the work
// still completes afterwards. A negative timeout is INVALID_ARGUMENT.
TEST(InProcessServerTest, DrainPastItsTimeoutReportsTheJobsStillInFlight) {
  auto server = StartWithPausedGpu();
  ASSERT_NE(server, nullptr);
  auto control = server->Control();
  {
    grpc::ClientContext ctx;
    sparkle::v1::DrainRequest bad;
    bad.set_timeout_seconds(-1);
    sparkle::v1::DrainResponse response;
    const grpc::Status s = control->Drain(&ctx, bad, &response);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("timeout_seconds"));
    EXPECT_TRUE(server->Serving().value_or(false));  // refused: nothing drained
  }
  auto stub = server->Inference();
  PendingInfer a(stub.get(), Small().Request()), b(stub.get(), Small().Request());
  ASSERT_TRUE(WaitFor([&] { return InFlight(*server) == 2; }, kPatience));
  grpc::ClientContext ctx;
  sparkle::v1::DrainRequest request;
  request.set_timeout_seconds(0.2);
  sparkle::v1::DrainResponse response;
  const grpc::Status s = control->Drain(&ctx, request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_FALSE(response.drained());
  EXPECT_EQ(response.in_flight_jobs(), 2u);
  EXPECT_GE(response.waited_seconds(), 0.15);
  server->gpu(0).Resume();
  EXPECT_TRUE(a.Wait().ok()) << a.Wait().error_message();
  EXPECT_TRUE(b.Wait().ok()) << b.Wait().error_message();
}

// SparkleServer::Shutdown (the in-process stop): health first, then the accepted work finishes
// before the server goes; OK because it finished before the deadline.
TEST(InProcessServerTest, ShutdownFinishesAcceptedWorkFirst) {
  auto server = StartWithPausedGpu();
  ASSERT_NE(server, nullptr);
  auto stub = server->Inference();
  std::vector<std::unique_ptr<PendingInfer>> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(std::make_unique<PendingInfer>(stub.get(), Small().Request()));
  }
  ASSERT_TRUE(WaitFor([&] { return InFlight(*server) == 3; }, kPatience));
  absl::Status shutdown;
  std::thread stopper(
      [&] { shutdown = server->Shutdown(absl::Now() + absl::Seconds(20)); });
  EXPECT_TRUE(WaitFor([&] { return server->Serving().value_or(true) == false; }, kPatience));
  for (auto& p : held) EXPECT_FALSE(p->done());
  server->gpu(0).Resume();
  stopper.join();
  EXPECT_TRUE(shutdown.ok()) << shutdown;
  for (auto& p : held) {
    ASSERT_TRUE(p->Wait().ok()) << p->Wait().error_message();
    EXPECT_EQ(Small().Check(p->response()), "");
  }
  // Idempotent: a second call returns the first result at once.
  EXPECT_TRUE(server->Shutdown(absl::Now()).ok());
}

// Shutdown whose budget passes with a job still running (a fake GPU that takes 1 s per work):
// DEADLINE_EXCEEDED naming the count, and the server still stops.
TEST(InProcessServerTest, ShutdownPastItsDeadlineSaysHowManyJobsWereLeft) {
  InProcessServer::Options options;
  options.fake_gpus = 1;
  options.fake_gpu.sleep = true;
  options.fake_gpu.launch_overhead_s = 1.0;
  options.server.engine.device_policy = DeviceRequest::AnyGpu();
  auto server = StartServer(std::move(options));
  ASSERT_NE(server, nullptr);
  auto stub = server->Inference();
  PendingInfer slow(stub.get(), Small().Request());
  ASSERT_TRUE(WaitFor([&] { return InFlight(*server) == 1; }, kPatience));
  const absl::Status s = server->Shutdown(absl::Now() + absl::Milliseconds(100));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_THAT(s.message(), HasSubstr("1 job(s) still in flight"));
  slow.Wait();  // the reply or the cancellation by gRPC's shutdown: not asserted
}

// GetStatus while work is held: devices (the fake GPU), router policy, counters, queue and
// in-flight figures, listener and security fields.
TEST(InProcessServerTest, StatusReportsDevicesCountersAndHeldWork) {
  auto server = StartWithPausedGpu();
  ASSERT_NE(server, nullptr);
  auto stub = server->Inference();
  PendingInfer a(stub.get(), Small().Request()), b(stub.get(), Small().Request());
  ASSERT_TRUE(WaitFor([&] { return InFlight(*server) == 2; }, kPatience));
  auto status = server->Status();
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(status->ready());
  EXPECT_FALSE(status->draining());
  EXPECT_FALSE(status->version().empty());
  EXPECT_GT(status->uptime_seconds(), 0);
  ASSERT_EQ(status->devices_size(), 2);
  EXPECT_EQ(status->devices(0).name(), "cpu");
  EXPECT_EQ(status->devices(0).threads(), 1);
  EXPECT_EQ(status->devices(1).name(), "gpu:0");
  EXPECT_EQ(status->devices(1).index(), 0);
  EXPECT_EQ(status->router().policy(), "gpu");
  EXPECT_EQ(status->jobs_accepted(), 2u);
  EXPECT_EQ(status->jobs_succeeded(), 0u);
  EXPECT_EQ(status->in_flight_jobs(), 2u);
  EXPECT_EQ(status->listen_address(), server->server().address());
  EXPECT_EQ(status->metrics_address(), "");
  EXPECT_FALSE(status->security().tls());
  EXPECT_FALSE(status->security().auth_tokens());
  server->gpu(0).Resume();
  ASSERT_TRUE(a.Wait().ok());
  ASSERT_TRUE(b.Wait().ok());
  status = server->Status();
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->jobs_succeeded(), 2u);
  EXPECT_EQ(status->in_flight_jobs(), 0u);
  EXPECT_EQ(status->devices(1).jobs_done(), 2);
}

// A client cancelling a queued call gets CANCELLED at once; the job is completed as failed
// (cancelled) when the batcher next looks at its queue (here when the batch is due), and
// nothing stays in flight.
TEST(InProcessServerTest, CancelledCallLeavesNothingInFlight) {
  InProcessServer::Options options;
  options.server.engine.batcher.max_queue_delay = absl::Seconds(1);
  auto server = StartServer(std::move(options));
  ASSERT_NE(server, nullptr);
  auto stub = server->Inference();
  PendingInfer call(stub.get(), Small().Request());
  ASSERT_TRUE(WaitFor([&] { return InFlight(*server) == 1; }, kPatience));
  call.context().TryCancel();
  EXPECT_EQ(call.Wait().error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_TRUE(WaitFor(
      [&] {
        auto s = server->Status();
        return s.ok() && s->jobs_failed() == 1 && s->in_flight_jobs() == 0;
      },
      kPatience));
  EXPECT_EQ(server->Status()->jobs_succeeded(), 0u);
}

// Bearer tokens through the whole stack: health and ServerLive need none, everything else
// needs one, admin calls need role admin.
TEST(InProcessServerTest, TokensAndRolesAreCheckedOnEveryCall) {
  char dir_template[] = "/tmp/sparkle_tokens_XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string tokens = absl::StrCat(dir_template, "/tokens");
  std::ofstream(tokens) << "infer-token-0123456789,alice,infer\n"
                           "admin-token-0123456789,ops,admin\n";
  InProcessServer::Options options;
  options.server.auth_token_file = tokens;
  auto server = StartServer(std::move(options));
  ASSERT_NE(server, nullptr);
  auto control = server->Control();
  auto stub = server->Inference();
  auto with_token = [](grpc::ClientContext& ctx, const char* token) {
    ctx.AddMetadata("authorization", absl::StrCat("Bearer ", token));
  };
  EXPECT_TRUE(server->Serving().value_or(false));
  {
    grpc::ClientContext ctx;
    inference::ServerLiveResponse live;
    EXPECT_TRUE(stub->ServerLive(&ctx, {}, &live).ok());
  }
  {
    grpc::ClientContext ctx;
    ModelInferResponse resp;
    const grpc::Status s = stub->ModelInfer(&ctx, Small().Request(), &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
  }
  {
    grpc::ClientContext ctx;
    with_token(ctx, "infer-token-0123456789");
    ModelInferResponse resp;
    const grpc::Status s = stub->ModelInfer(&ctx, Small().Request(), &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(Small().Check(resp), "");
  }
  {
    grpc::ClientContext ctx;
    with_token(ctx, "infer-token-0123456789");
    sparkle::v1::GetStatusResponse status;
    ASSERT_TRUE(control->GetStatus(&ctx, {}, &status).ok());
    EXPECT_TRUE(status.security().auth_tokens());
    EXPECT_EQ(status.security().caller(), "alice");
    EXPECT_EQ(status.security().caller_role(), "infer");
  }
  {
    grpc::ClientContext ctx;
    with_token(ctx, "infer-token-0123456789");
    sparkle::v1::DrainRequest request;
    sparkle::v1::DrainResponse response;
    const grpc::Status s = control->Drain(&ctx, request, &response);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_THAT(s.error_message(), HasSubstr("role admin"));
    EXPECT_TRUE(server->Serving().value_or(false));
  }
  {
    grpc::ClientContext ctx;
    with_token(ctx, "admin-token-0123456789");
    sparkle::v1::UnregisterWeightsRequest request;
    request.set_weight_id("sha256:0000");
    sparkle::v1::UnregisterWeightsResponse response;
    const grpc::Status s = control->UnregisterWeights(&ctx, request, &response);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  }
  unlink(tokens.c_str());
  rmdir(dir_template);
}

}  // namespace
}  // namespace sparkle
