// ModelStreamInfer (server/stream_infer_reactor.h) through the real services in-process
// (tests/testing/in_process_server.h): one response per request matched by id, errors for one
// request only, flow control, cancellation, authentication.
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
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
using ::sparkle::testing::WaitFor;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using inference::ModelInferRequest;
using inference::ModelStreamInferResponse;

using Stream =
    grpc::ClientReaderWriter<ModelInferRequest, ModelStreamInferResponse>;

constexpr absl::Duration kPatience = absl::Seconds(10);  // bound of every poll below

uint64_t InFlight(const InProcessServer& s) {
  auto status = s.Status();
  return status.ok() ? status->in_flight_jobs() : 0;
}

const ConvCase& Case(int i) {
  static const auto* const kCases = new std::vector<ConvCase>{
      ConvCase(ConvShape(1, 4, 8, 8, 4, 3, 1, 1, 1, true), 7),
      ConvCase(ConvShape(2, 3, 9, 7, 5, 3, 2, 1, 1, false), 8),
      ConvCase(ConvShape(1, 8, 6, 6, 8, 1, 1, 0, 2, true), 9),
  };
  return (*kCases)[i % kCases->size()];
}

ModelInferRequest RequestWithId(int i) {
  ModelInferRequest r = Case(i).Request();
  r.set_id(absl::StrCat("r", i));
  return r;
}

std::unique_ptr<grpc::ClientContext> Context() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  return context;
}

TEST(StreamInferTest, EveryRequestIsAnsweredOnceMatchedByIdAndABadOneDoesNotEndTheStream) {
  InProcessServer::Options options;
  options.server.engine.cpu.threads = 2;  // completions may come back out of order
  auto server = StartServer(std::move(options));
  ASSERT_NE(server, nullptr);
  auto stub = server->Inference();
  auto context = Context();
  std::unique_ptr<Stream> stream = stub->ModelStreamInfer(context.get());
  constexpr int kRequests = 24;
  constexpr int kBad = 11;
  for (int i = 0; i < kRequests; ++i) {
    ModelInferRequest r = RequestWithId(i);
    if (i == kBad) r.mutable_inputs(0)->clear_shape();  // invalid: rank 0 input
    ASSERT_TRUE(stream->Write(r));
  }
  ASSERT_TRUE(stream->WritesDone());
  std::map<std::string, ModelStreamInferResponse> replies;
  ModelStreamInferResponse reply;
  while (stream->Read(&reply)) {
    const std::string id = reply.infer_response().id();
    EXPECT_TRUE(replies.emplace(id, reply).second) << "two replies for " << id;
  }
  const grpc::Status status = stream->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(replies.size(), static_cast<size_t>(kRequests));
  for (int i = 0; i < kRequests; ++i) {
    SCOPED_TRACE(i);
    const ModelStreamInferResponse& r = replies.at(absl::StrCat("r", i));
    EXPECT_EQ(r.infer_response().model_name(), "conv2d");
    EXPECT_EQ(r.infer_response().model_version(), "1");
    if (i == kBad) {
      EXPECT_THAT(r.error_message(), StartsWith("[INVALID_ARGUMENT] "));
      EXPECT_THAT(r.error_message(), HasSubstr("input"));
      EXPECT_EQ(r.infer_response().raw_output_contents_size(), 0);
    } else {
      EXPECT_EQ(r.error_message(), "");
      EXPECT_EQ(Case(i).Check(r.infer_response()), "");
    }
  }
}

// With a paused fake GPU every accepted job stays in the engine: the daemon holds exactly
// max_inflight_per_stream of the stream's requests and reads the rest only as replies go out.
TEST(StreamInferTest, FlowControlBoundsTheRequestsOfAStreamInTheDaemon) {
  InProcessServer::Options options;
  options.fake_gpus = 1;
  options.server.engine.device_policy = DeviceRequest::AnyGpu();
  options.server.max_inflight_per_stream = 3;
  auto server = StartServer(std::move(options));
  ASSERT_NE(server, nullptr);
  server->gpu(0).Pause();
  auto stub = server->Inference();
  auto context = Context();
  std::unique_ptr<Stream> stream = stub->ModelStreamInfer(context.get());
  constexpr int kRequests = 10;
  // The writes block once the daemon stops reading (that is the flow control), so they run on
  // their own thread.
  std::thread writer([&] {
    for (int i = 0; i < kRequests; ++i) EXPECT_TRUE(stream->Write(RequestWithId(0)));
    EXPECT_TRUE(stream->WritesDone());
  });
  ASSERT_TRUE(WaitFor([&] { return InFlight(*server) == 3; }, kPatience));
  for (int i = 0; i < 20; ++i) ASSERT_LE(InFlight(*server), 3u);
  EXPECT_EQ(server->Status()->jobs_succeeded(), 0u);
  server->gpu(0).Resume();
  int answered = 0;
  ModelStreamInferResponse reply;
  while (stream->Read(&reply)) {
    EXPECT_EQ(reply.error_message(), "");
    EXPECT_EQ(Case(0).Check(reply.infer_response()), "");
    ++answered;
  }
  writer.join();
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(answered, kRequests);
}

// Cancelling the stream cancels its queued jobs: they leave the engine as failed without
// running, and nothing stays in flight.
TEST(StreamInferTest, CancellingTheStreamCancelsItsQueuedJobs) {
  InProcessServer::Options options;
  options.server.engine.batcher.max_queue_delay = absl::Seconds(1);
  auto server = StartServer(std::move(options));
  ASSERT_NE(server, nullptr);
  auto stub = server->Inference();
  auto context = Context();
  std::unique_ptr<Stream> stream = stub->ModelStreamInfer(context.get());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(stream->Write(RequestWithId(0)));
  ASSERT_TRUE(WaitFor([&] { return InFlight(*server) == 3; }, kPatience));
  context->TryCancel();
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_TRUE(WaitFor(
      [&] {
        auto s = server->Status();
        return s.ok() && s->jobs_failed() == 3 && s->in_flight_jobs() == 0;
      },
      kPatience));
  EXPECT_EQ(server->Status()->jobs_succeeded(), 0u);
}

TEST(StreamInferTest, StreamsNeedAToken) {
  char dir_template[] = "/tmp/sparkle_tokens_XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string tokens = absl::StrCat(dir_template, "/tokens");
  std::ofstream(tokens) << "infer-token-0123456789,alice,infer\n";
  InProcessServer::Options options;
  options.server.auth_token_file = tokens;
  auto server = StartServer(std::move(options));
  ASSERT_NE(server, nullptr);
  auto stub = server->Inference();
  {
    auto context = Context();
    std::unique_ptr<Stream> stream = stub->ModelStreamInfer(context.get());
    stream->Write(RequestWithId(0));
    ModelStreamInferResponse reply;
    EXPECT_FALSE(stream->Read(&reply));
    const grpc::Status status = stream->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();
  }
  auto context = Context();
  context->AddMetadata("authorization", "Bearer infer-token-0123456789");
  std::unique_ptr<Stream> stream = stub->ModelStreamInfer(context.get());
  ASSERT_TRUE(stream->Write(RequestWithId(0)));
  ASSERT_TRUE(stream->WritesDone());
  ModelStreamInferResponse reply;
  ASSERT_TRUE(stream->Read(&reply));
  EXPECT_EQ(reply.error_message(), "");
  EXPECT_EQ(reply.infer_response().id(), "r0");
  EXPECT_TRUE(stream->Finish().ok());
}

}  // namespace
}  // namespace sparkle
