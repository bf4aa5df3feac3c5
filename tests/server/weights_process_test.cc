// The weights registry through the real sparkled binary over loopback: registration streamed in
// chunks (also larger than --max_message_bytes), inference by weight_id against Conv2dRef, every
// registry error with its gRPC code, deferred unregister, persistence across a restart, and
// `sparklectl weights` end to end.
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/cpu/conv2d_ref.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "inference/grpc_predict_v2.grpc.pb.h"
#include "sparkle/v1/control.grpc.pb.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/grpc_test_util.h"
#include "tests/testing/infer_check.h"
#include "tests/testing/process_util.h"
#include "tests/testing/shape_table.h"
#include "tests/testing/wait_for.h"

namespace sparkle {
namespace {

using inference::ModelInferRequest;
using inference::ModelInferResponse;
using ::sparkle::testing::Connect;
using ::sparkle::testing::DaemonProcess;
using ::sparkle::testing::RandomFloats;
using ::sparkle::testing::Shell;
using ::sparkle::testing::WaitFor;
using sparkle::v1::Control;
using ::testing::HasSubstr;

std::unique_ptr<grpc::ClientContext> Context() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  return ctx;
}

std::string Bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

// A conv2d layer: its weights, bias, one input and the expected output.
struct Layer {
  Conv2dParams p;
  std::vector<float> input, weight, bias, expected;

  Layer(int64_t c, int64_t hw, int64_t k, int64_t rs, int64_t pad, bool with_bias, uint32_t seed) {
    p.n = 1, p.c = c, p.h = p.w = hw, p.k = k, p.r = p.s = rs, p.SetPad(pad, pad);
    p.has_bias = with_bias;
    input = RandomFloats(p.input_elements(), seed);
    weight = RandomFloats(p.weight_elements(), seed + 1);
    if (with_bias) bias = RandomFloats(p.k, seed + 2);
    expected.resize(p.output_elements());
    Conv2dRef(p, input.data(), weight.data(), with_bias ? bias.data() : nullptr, expected.data());
  }
  std::vector<int64_t> WeightShape() const { return {p.k, p.c, p.r, p.s}; }

  // By weight_id when `id` is given (plus the inline weight too when `also_weight`).
  ModelInferRequest Request(const std::string& id, bool also_weight = false) const {
    ModelInferRequest r;
    r.set_model_name("conv2d");
    (*r.mutable_parameters())["pad"].set_int64_param(p.pad_top);
    auto add = [&r](const char* name, std::vector<int64_t> shape, const std::vector<float>& d) {
      auto* t = r.add_inputs();
      t->set_name(name);
      t->set_datatype("FP32");
      for (int64_t x : shape) t->add_shape(x);
      r.add_raw_input_contents()->assign(Bytes(d));
    };
    add("input", {p.n, p.c, p.h, p.w}, input);
    if (id.empty() || also_weight) add("weight", WeightShape(), weight);
    if (id.empty() && p.has_bias) add("bias", {p.k}, bias);
    if (!id.empty()) (*r.mutable_parameters())["weight_id"].set_string_param(id);
    return r;
  }

  std::string Check(const ModelInferResponse& resp) const {
    return ::sparkle::testing::CheckRawOutput(resp, expected);
  }
};

struct Registration {
  grpc::Status status;
  sparkle::v1::RegisterWeightsResponse response;
};

// Streams a registration: header with the first chunk, then `chunk`-byte slices. `extra_bytes`
// appends that many more bytes; `drop_bytes` leaves out the last ones; `cancel_after` cancels
// the call after that many messages (0: never).
Registration Register(Control::Stub& stub, const std::vector<int64_t>& shape,
                      const std::vector<float>& weight, const std::vector<float>& bias,
                      size_t chunk = 1 << 20, std::string datatype = "FP32",
                      size_t extra_bytes = 0, size_t drop_bytes = 0, int cancel_after = 0,
                      bool header = true) {
  Registration out;
  auto ctx = Context();
  auto writer = stub.RegisterWeights(ctx.get(), &out.response);
  std::string data = Bytes(weight) + std::string(extra_bytes, '\0');
  data.resize(data.size() - drop_bytes);
  sparkle::v1::RegisterWeightsRequest m;
  if (header) {
    m.mutable_header()->set_label("test");
    m.mutable_header()->set_datatype(datatype);
    for (int64_t d : shape) m.mutable_header()->add_shape(d);
    m.mutable_header()->set_bias(Bytes(bias));
  }
  int sent = 0;
  for (size_t pos = 0; pos < data.size() || sent == 0; pos += chunk) {
    m.set_data(data.substr(pos, chunk));
    if (!writer->Write(m)) break;
    m.Clear();
    if (++sent == cancel_after) {
      ctx->TryCancel();
      break;
    }
  }
  writer->WritesDone();
  out.status = writer->Finish();
  return out;
}

sparkle::v1::ListWeightsResponse List(Control::Stub& stub) {
  sparkle::v1::ListWeightsResponse list;
  auto ctx = Context();
  EXPECT_TRUE(stub.ListWeights(ctx.get(), {}, &list).ok());
  return list;
}

grpc::Status Unregister(Control::Stub& stub, const std::string& id) {
  sparkle::v1::UnregisterWeightsRequest req;
  req.set_weight_id(id);
  sparkle::v1::UnregisterWeightsResponse resp;
  auto ctx = Context();
  return stub.UnregisterWeights(ctx.get(), req, &resp);
}

grpc::Status Infer(const std::shared_ptr<grpc::Channel>& channel, const ModelInferRequest& req,
                   ModelInferResponse* resp) {
  auto ctx = Context();
  return inference::GRPCInferenceService::NewStub(channel)->ModelInfer(ctx.get(), req, resp);
}

class WeightsProcessTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> flags) {
    flags.push_back("--threads=2");
    auto d = DaemonProcess::Start(SPARKLED_PATH, flags);
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
    channel_ = Connect(daemon_->address());
    control_ = Control::NewStub(channel_);
  }
  void ExpectStillServing() {
    Layer good(4, 8, 4, 3, 1, true, 77);
    ModelInferResponse resp;
    grpc::Status s = Infer(channel_, good.Request(""), &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(good.Check(resp), "");
  }
  std::unique_ptr<DaemonProcess> daemon_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<Control::Stub> control_;
};

TEST_F(WeightsProcessTest, RegisterInChunksThenInferByIdMatchesTheOracle) {
  Start({});
  Layer layer(32, 8, 48, 3, 1, /*bias=*/true, 5);
  Registration reg = Register(*control_, layer.WeightShape(), layer.weight, layer.bias,
                              /*chunk=*/1000);  // odd chunks, not float-aligned
  ASSERT_TRUE(reg.status.ok()) << reg.status.error_message();
  const std::string id = reg.response.weight().weight_id();
  EXPECT_THAT(id, ::testing::MatchesRegex("sha256:[0-9a-f]{64}"));
  EXPECT_FALSE(reg.response.already_registered());
  EXPECT_TRUE(reg.response.weight().has_bias());
  // Same bytes again, in other chunks: the same id, nothing new.
  Registration again = Register(*control_, layer.WeightShape(), layer.weight, layer.bias);
  ASSERT_TRUE(again.status.ok());
  EXPECT_TRUE(again.response.already_registered());
  EXPECT_EQ(again.response.weight().weight_id(), id);

  for (int i = 0; i < 3; ++i) {
    ModelInferResponse by_id;
    grpc::Status s = Infer(channel_, layer.Request(id), &by_id);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(layer.Check(by_id), "");
  }
  sparkle::v1::ListWeightsResponse list = List(*control_);
  ASSERT_EQ(list.weights_size(), 1);
  EXPECT_EQ(list.weights(0).uses(), 3u);
  EXPECT_EQ(list.weights(0).in_use(), 0u);
  EXPECT_GE(list.weights(0).bytes(), layer.weight.size() * 4 + layer.bias.size() * 4);
  EXPECT_EQ(list.budget_bytes(), uint64_t{2} << 30);  // the documented default

  sparkle::v1::GetStatusResponse status;
  auto ctx = Context();
  ASSERT_TRUE(control_->GetStatus(ctx.get(), {}, &status).ok());
  EXPECT_EQ(status.registry().weights(), 1u);
  EXPECT_EQ(status.registry().bytes(), list.bytes());
  EXPECT_EQ(status.registry().budget_bytes(), uint64_t{2} << 30);
}

TEST_F(WeightsProcessTest, InferenceErrorsByIdHaveTheirCodes) {
  Start({});
  Layer layer(8, 8, 8, 3, 1, /*bias=*/false, 9);
  Registration reg = Register(*control_, layer.WeightShape(), layer.weight, {});
  ASSERT_TRUE(reg.status.ok()) << reg.status.error_message();
  const std::string id = reg.response.weight().weight_id();
  ModelInferResponse resp;

  grpc::Status s = Infer(channel_, layer.Request("sha256:0123"), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("sha256:0123"));
  ExpectStillServing();

  s = Infer(channel_, layer.Request(id, /*also_weight=*/true), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("weight_id"));
  ExpectStillServing();

  Layer with_bias(8, 8, 8, 3, 1, /*bias=*/true, 9);
  ModelInferRequest bias_too = with_bias.Request("");
  (*bias_too.mutable_parameters())["weight_id"].set_string_param(id);
  bias_too.mutable_inputs()->erase(bias_too.mutable_inputs()->begin() + 1);  // drop weight
  bias_too.mutable_raw_input_contents()->erase(bias_too.mutable_raw_input_contents()->begin() + 1);
  s = Infer(channel_, bias_too, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("bias"));

  Layer other_c(16, 8, 8, 3, 1, /*bias=*/false, 9);  // input C=16, registered C=8
  s = Infer(channel_, other_c.Request(id), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  ExpectStillServing();
}

TEST_F(WeightsProcessTest, RegistrationErrorsHaveTheirCodesAndRegisterNothing) {
  Start({"--weights_budget_bytes=100000"});
  Layer layer(8, 8, 8, 3, 1, /*bias=*/true, 3);  // 2304 + 32 bytes
  auto expect = [&](const Registration& r, grpc::StatusCode code, absl::string_view text) {
    EXPECT_EQ(r.status.error_code(), code) << r.status.error_message();
    EXPECT_THAT(r.status.error_message(), HasSubstr(std::string(text)));
  };
  const auto shape = layer.WeightShape();
  expect(Register(*control_, shape, layer.weight, layer.bias, 512, "FP32", /*extra=*/4),
         grpc::StatusCode::INVALID_ARGUMENT, "longer");
  expect(Register(*control_, shape, layer.weight, layer.bias, 512, "FP32", 0, /*drop=*/4),
         grpc::StatusCode::INVALID_ARGUMENT, "shorter");
  expect(Register(*control_, shape, layer.weight, layer.bias, 512, "INT8"),
         grpc::StatusCode::INVALID_ARGUMENT, "FP32, BF16 or FP16");
  expect(Register(*control_, {8, 8, 3}, layer.weight, {}, 512),
         grpc::StatusCode::INVALID_ARGUMENT, "rank 4");
  expect(Register(*control_, shape, layer.weight, {1.f, 2.f}, 512),
         grpc::StatusCode::INVALID_ARGUMENT, "bias");
  expect(Register(*control_, shape, layer.weight, {}, 512, "FP32", 0, 0, 0, /*header=*/false),
         grpc::StatusCode::INVALID_ARGUMENT, "header");
  const std::vector<float> big(30000, 1.0f);  // 120 KB > the 100 KB budget
  expect(Register(*control_, {30000, 1, 1, 1}, big, {}), grpc::StatusCode::RESOURCE_EXHAUSTED,
         "budget_bytes");
  // Cancelled mid-stream: nothing registered, nothing left reserved.
  Registration cancelled = Register(*control_, shape, layer.weight, layer.bias, 512, "FP32", 0,
                                    0, /*cancel_after=*/2);
  EXPECT_EQ(cancelled.status.error_code(), grpc::StatusCode::CANCELLED);
  sparkle::v1::ListWeightsResponse list = List(*control_);
  EXPECT_EQ(list.weights_size(), 0);
  WaitFor([&] { return List(*control_).bytes() == 0; }, absl::Seconds(1), absl::Milliseconds(20));
  EXPECT_EQ(List(*control_).bytes(), 0u);
  // And a good registration still works.
  Registration good = Register(*control_, shape, layer.weight, layer.bias, 512);
  EXPECT_TRUE(good.status.ok()) << good.status.error_message();
}

// A registration without a bias (an empty header.bias) once memcpy'd from a null pointer
// (undefined behaviour; UBSan halts the daemon): it must register and serve like any other.
TEST_F(WeightsProcessTest, RegistrationWithoutBiasServesByIdAndMatchesTheOracle) {
  Start({});
  Layer layer(8, 8, 8, 3, 1, /*bias=*/false, 14);
  Registration reg = Register(*control_, layer.WeightShape(), layer.weight, {}, 512);
  ASSERT_TRUE(reg.status.ok()) << reg.status.error_message();
  EXPECT_FALSE(reg.response.weight().has_bias());
  ModelInferResponse resp;
  grpc::Status s = Infer(channel_, layer.Request(reg.response.weight().weight_id()), &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(layer.Check(resp), "");
}

// A stream that declares almost the whole budget and then sends nothing must not block other
// registrations (bytes are reserved as they arrive); a stream that sent part of its bytes and
// stalls holds only those, and is finished DEADLINE_EXCEEDED after the idle timeout, which
// returns them to the budget.
TEST_F(WeightsProcessTest, StalledRegistrationStreamsDoNotHoldTheBudget) {
  Start({"--weights_budget_bytes=100000", "--weights_upload_idle_timeout=1s"});
  Layer small(8, 8, 8, 3, 1, /*bias=*/true, 15);  // 2304 + 32 bytes
  auto open_stream = [&](int64_t k, size_t data_bytes, grpc::ClientContext* ctx,
                         sparkle::v1::RegisterWeightsResponse* response) {
    auto writer = control_->RegisterWeights(ctx, response);
    sparkle::v1::RegisterWeightsRequest m;
    for (int64_t d : {k, int64_t{1}, int64_t{1}, int64_t{1}}) m.mutable_header()->add_shape(d);
    m.set_data(std::string(data_bytes, '\1'));
    EXPECT_TRUE(writer->Write(m));
    return writer;
  };
  // 1. Header only, declaring 99 KB of the 100 KB budget, then silence.
  auto ctx1 = Context();
  sparkle::v1::RegisterWeightsResponse r1;
  auto held = open_stream(24750, 0, ctx1.get(), &r1);
  Registration other = Register(*control_, small.WeightShape(), small.weight, small.bias, 512);
  EXPECT_TRUE(other.status.ok()) << other.status.error_message();
  // 2. A stream that sent 80 KB and stalls: a 30 KB registration does not fit meanwhile...
  auto ctx2 = Context();
  sparkle::v1::RegisterWeightsResponse r2;
  auto stalled = open_stream(22000, 80000, ctx2.get(), &r2);  // declares 88 KB
  WaitFor([&] { return List(*control_).bytes() >= 80000; }, absl::Seconds(1),
          absl::Milliseconds(10));
  const std::vector<float> w30k(7500, 0.5f);
  Registration refused = Register(*control_, {7500, 1, 1, 1}, w30k, {});
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << refused.status.error_message();
  EXPECT_THAT(refused.status.error_message(), HasSubstr("budget_bytes"));
  // ...and both idle streams are finished by the daemon after --weights_upload_idle_timeout.
  const absl::Time start = absl::Now();
  const grpc::Status s1 = held->Finish();  // returns when the daemon ends the call
  const grpc::Status s2 = stalled->Finish();
  EXPECT_EQ(s1.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s1.error_message();
  EXPECT_EQ(s2.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s2.error_message();
  EXPECT_THAT(s2.error_message(), HasSubstr("--weights_upload_idle_timeout"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  // The 80 KB are back: the 30 KB registration now fits.
  Registration fits = Register(*control_, {7500, 1, 1, 1}, w30k, {});
  EXPECT_TRUE(fits.status.ok()) << fits.status.error_message();
  EXPECT_EQ(List(*control_).weights_size(), 2);
}

TEST_F(WeightsProcessTest, UnregisterRemovesTheIdAndUnknownIdsAreNotFound) {
  Start({});
  Layer layer(8, 8, 8, 3, 1, /*bias=*/false, 4);
  Registration reg = Register(*control_, layer.WeightShape(), layer.weight, {});
  ASSERT_TRUE(reg.status.ok());
  const std::string id = reg.response.weight().weight_id();
  ASSERT_TRUE(Unregister(*control_, id).ok());
  EXPECT_EQ(List(*control_).weights_size(), 0);
  EXPECT_EQ(Unregister(*control_, id).error_code(), grpc::StatusCode::NOT_FOUND);
  ModelInferResponse resp;
  EXPECT_EQ(Infer(channel_, layer.Request(id), &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  ExpectStillServing();
}

TEST_F(WeightsProcessTest, RegistrationLargerThanTheMessageLimitWorks) {
  Start({"--max_message_bytes=1048576"});  // 1 MiB
  Layer layer(256, 4, 512, 3, 1, /*bias=*/true, 8);  // 4.5 MiB of weights
  ASSERT_GT(layer.weight.size() * 4, 4u << 20);
  // Sent whole, the request is over the limit...
  ModelInferResponse resp;
  EXPECT_EQ(Infer(channel_, layer.Request(""), &resp).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  // ...registered in 512 KiB chunks it is not, and inference by id works.
  Registration reg = Register(*control_, layer.WeightShape(), layer.weight, layer.bias, 512 << 10);
  ASSERT_TRUE(reg.status.ok()) << reg.status.error_message();
  grpc::Status s = Infer(channel_, layer.Request(reg.response.weight().weight_id()), &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(layer.Check(resp), "");
}

TEST_F(WeightsProcessTest, RegistrationsPersistAcrossARestart) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/weights_persist_", getpid());
  ASSERT_EQ(Shell(absl::StrCat("rm -rf ", dir)), 0);
  Layer layer(16, 8, 16, 3, 1, /*bias=*/true, 12);
  Start({"--weights_dir=" + dir});
  Registration reg = Register(*control_, layer.WeightShape(), layer.weight, layer.bias, 700);
  ASSERT_TRUE(reg.status.ok()) << reg.status.error_message();
  const std::string id = reg.response.weight().weight_id();
  ASSERT_EQ(*daemon_->Stop(SIGTERM), 0);
  daemon_.reset();

  Start({"--weights_dir=" + dir});
  sparkle::v1::ListWeightsResponse list = List(*control_);
  ASSERT_EQ(list.weights_size(), 1);
  EXPECT_EQ(list.weights(0).weight_id(), id);
  EXPECT_EQ(list.weights(0).label(), "test");
  ModelInferResponse resp;
  grpc::Status s = Infer(channel_, layer.Request(id), &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(layer.Check(resp), "");
  ASSERT_TRUE(Unregister(*control_, id).ok());
  ASSERT_EQ(*daemon_->Stop(SIGTERM), 0);
  Start({"--weights_dir=" + dir});
  EXPECT_EQ(List(*control_).weights_size(), 0);
  Shell(absl::StrCat("rm -rf ", dir));
}

TEST_F(WeightsProcessTest, SparklectlWeightsCommandsEndToEnd) {
  Start({});
  const std::string dir = absl::StrCat(::testing::TempDir(), "/sparklectl_weights_", getpid());
  ASSERT_EQ(Shell(absl::StrCat("rm -rf ", dir, " && mkdir -p ", dir)), 0);
  const std::string ctl = absl::StrCat(SPARKLECTL_PATH, " --target=", daemon_->address(), " ");
  // Inline once, saving the generated tensors.
  ASSERT_EQ(Shell(absl::StrCat(ctl, "infer --input_shape=1x16x8x8 --weight_shape=24x16x3x3 ",
                               "--bias_shape=24 --pad=1 --save_inputs=", dir, " --output=", dir,
                               "/inline.npy > /dev/null")),
            0);
  ASSERT_EQ(Shell(absl::StrCat(ctl, "weights register ", dir, "/weight.npy --bias=", dir,
                               "/bias.npy --label=layer1 > ", dir, "/register.txt")),
            0);
  ASSERT_EQ(Shell(absl::StrCat(ctl, "weights list --json > ", dir, "/list.json")), 0);
  sparkle::v1::ListWeightsResponse list = List(*control_);
  ASSERT_EQ(list.weights_size(), 1);
  const std::string id = list.weights(0).weight_id();
  EXPECT_EQ(list.weights(0).label(), "layer1");
  EXPECT_EQ(Shell(absl::StrCat("grep -q ", id, " ", dir, "/list.json")), 0);
  EXPECT_EQ(Shell(absl::StrCat("grep -q ", id, " ", dir, "/register.txt")), 0);
  EXPECT_EQ(Shell(absl::StrCat(ctl, "weights list | grep -q layer1")), 0);
  // By id: the very same bytes come out.
  ASSERT_EQ(Shell(absl::StrCat(ctl, "infer --input=", dir, "/input.npy --weight_id=", id,
                               " --pad=1 --output=", dir, "/by_id.npy > /dev/null")),
            0);
  EXPECT_EQ(Shell(absl::StrCat("cmp -s ", dir, "/inline.npy ", dir, "/by_id.npy")), 0);
  // Exit codes: unknown id 1 (server), --weight with --weight_id 2 (usage), bad subcommand 2.
  EXPECT_EQ(Shell(absl::StrCat(ctl, "infer --input=", dir, "/input.npy --weight_id=sha256:00 ",
                               "--pad=1 2>/dev/null")),
            1);
  EXPECT_EQ(Shell(absl::StrCat(ctl, "infer --input=", dir, "/input.npy --weight=", dir,
                               "/weight.npy --weight_id=", id, " 2>/dev/null")),
            2);
  EXPECT_EQ(Shell(absl::StrCat(ctl, "weights frob 2>/dev/null")), 2);
  EXPECT_EQ(Shell(absl::StrCat(ctl, "weights register ", dir, "/missing.npy 2>/dev/null")), 2);
  ASSERT_EQ(Shell(absl::StrCat(ctl, "weights rm ", id, " > /dev/null")), 0);
  EXPECT_EQ(Shell(absl::StrCat(ctl, "weights rm ", id, " 2>/dev/null")), 1);
  EXPECT_EQ(List(*control_).weights_size(), 0);
  Shell(absl::StrCat("rm -rf ", dir));
}

}  // namespace
}  // namespace sparkle
