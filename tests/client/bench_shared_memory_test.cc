// `sparklectl bench --shm` (BenchOptions::shared_memory): end to end against the real server
// (tests/testing/in_process_server.h, through its unix socket), unary and streaming, and
// against a fake that accepts the registration but ignores the parameters, whose answers the
// bench must count as DATA_LOSS ("not via shm") instead of as successes.
#include <dirent.h>
#include <unistd.h>

#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/bench.h"
#include "client/sparkle_client.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "inference/grpc_predict_v2.grpc.pb.h"
#include "tests/testing/in_process_server.h"

namespace sparkle::client {
namespace {

using ::sparkle::testing::InProcessServer;
using ::testing::HasSubstr;

// Shared-memory objects this process's ClientSharedMemory created and did not unlink.
int LeftoverObjects() {
  const std::string prefix = absl::StrCat("sparklectl.", getpid(), ".");
  int n = 0;
  if (DIR* dir = opendir("/dev/shm")) {
    while (dirent* entry = readdir(dir)) {
      if (absl::StartsWith(entry->d_name, prefix)) ++n;
    }
    closedir(dir);
  }
  return n;
}

size_t RegisteredRegions(const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = inference::GRPCInferenceService::NewStub(channel);
  grpc::ClientContext context;
  inference::SystemSharedMemoryStatusResponse status;
  EXPECT_TRUE(stub->SystemSharedMemoryStatus(&context, {}, &status).ok());
  return static_cast<size_t>(status.regions_size());
}

BenchOptions ShmOptions() {
  BenchOptions options;
  options.shared_memory = true;
  options.shape_classes = {"tiny"};
  options.concurrency = {1, 3};
  options.warmup = absl::ZeroDuration();
  options.duration = absl::Seconds(30);  // max_requests ends each level long before
  options.max_requests = 12;
  return options;
}

class BenchSharedMemoryTest : public ::testing::TestWithParam<bool> {};

// The real server reads the inputs from the region and writes the output there: every answer
// is OK, none carries tensor bytes (each would count as DATA_LOSS), the first output of each
// slot matches the wire answer, and each level's region is gone afterwards.
TEST_P(BenchSharedMemoryTest, RealServerAnswersEveryRequestThroughSharedMemory) {
  auto server = InProcessServer::Start(InProcessServer::Options{});
  ASSERT_TRUE(server.ok()) << server.status();
  SparkleClient::Options connection;
  connection.target = (*server)->server().address();
  connection.channels = 2;
  connection.timeout = absl::Seconds(20);
  BenchOptions options = ShmOptions();
  options.stream = GetParam();
  // "mixed": each slot's stretch holds three requests' tensors, at different offsets.
  options.shape_classes = {"tiny", "mixed"};
  options.max_requests = 9;
  std::ostringstream out;
  std::vector<LevelResult> results;
  const absl::Status status = RunBench(connection, options, out, &results);
  ASSERT_TRUE(status.ok()) << status << "\n" << out.str();
  EXPECT_THAT(out.str(), HasSubstr("tensors in shared memory"));
  ASSERT_EQ(results.size(), 4u) << out.str();  // 2 classes x 2 levels
  for (const LevelResult& r : results) {
    SCOPED_TRACE(absl::StrCat(r.shape_class, " conc ", r.concurrency, ": ", out.str()));
    EXPECT_EQ(r.ok, 9);
    EXPECT_EQ(r.ErrorCount(), 0) << r.ErrorSummary();
    EXPECT_EQ(r.not_via_shared_memory, 0);
    EXPECT_GT(r.flop, 0);
    EXPECT_EQ(r.payload_bytes, 0);  // no tensor byte in the messages
  }
  auto sc = SparkleClient::Connect(connection);
  ASSERT_TRUE(sc.ok()) << sc.status();
  EXPECT_EQ(RegisteredRegions((*sc)->channels()[0]), 0u);
  EXPECT_EQ(LeftoverObjects(), 0);
}

INSTANTIATE_TEST_SUITE_P(UnaryAndStream, BenchSharedMemoryTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Stream" : "Unary";
                         });

// A server without shared memory refuses the registration: the class is skipped, the
// server's code returned, nothing left behind.
TEST(BenchSharedMemoryRefusedTest, ServerWithoutSharedMemorySkipsTheClass) {
  InProcessServer::Options server_options;
  server_options.server.shared_memory = "off";
  auto server = InProcessServer::Start(std::move(server_options));
  ASSERT_TRUE(server.ok()) << server.status();
  SparkleClient::Options connection;
  connection.target = (*server)->server().address();
  std::ostringstream out;
  std::vector<LevelResult> results;
  const absl::Status status = RunBench(connection, ShmOptions(), out, &results);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_EQ(ExitCodeFor(status), kExitServerError);
  EXPECT_THAT(out.str(), HasSubstr("skipping tiny at concurrency 1"));
  EXPECT_TRUE(results.empty());
  EXPECT_EQ(LeftoverObjects(), 0);
}

TEST(BenchSharedMemoryOptionsTest, NotWithASecondIdentity) {
  BenchOptions options = ShmOptions();
  options.second_connection = SparkleClient::Options{};
  EXPECT_EQ(ValidateBenchOptions(options).code(), absl::StatusCode::kInvalidArgument);
}

// Accepts every registration and ignores the shared-memory parameters: answers "tiny"
// (1x16x32x32, K=16, 3x3, pad 1) with zeros, on the wire or (write_nothing) as metadata only,
// without writing the region.
class IgnoringInference final : public inference::GRPCInferenceService::Service {
 public:
  explicit IgnoringInference(bool metadata_only) : metadata_only_(metadata_only) {}

  grpc::Status SystemSharedMemoryRegister(
      grpc::ServerContext*, const inference::SystemSharedMemoryRegisterRequest*,
      inference::SystemSharedMemoryRegisterResponse*) override {
    return grpc::Status::OK;
  }
  grpc::Status SystemSharedMemoryUnregister(
      grpc::ServerContext*, const inference::SystemSharedMemoryUnregisterRequest*,
      inference::SystemSharedMemoryUnregisterResponse*) override {
    return grpc::Status::OK;
  }
  grpc::Status ModelInfer(grpc::ServerContext*, const inference::ModelInferRequest* request,
                          inference::ModelInferResponse* response) override {
    const bool shm = request->outputs_size() == 1 &&
                     request->outputs(0).parameters().contains("shared_memory_region");
    auto* output = response->add_outputs();
    output->set_name("output");
    output->set_datatype("FP32");
    for (int64_t d : {1, 16, 32, 32}) output->add_shape(d);
    if (!shm || !metadata_only_) {
      response->add_raw_output_contents(std::string(16 * 32 * 32 * 4, '\0'));
    }
    return grpc::Status::OK;
  }

 private:
  const bool metadata_only_;
};

class BenchIgnoredTest : public ::testing::Test {
 protected:
  void Start(bool metadata_only) {
    service_ = std::make_unique<IgnoringInference>(metadata_only);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    connection_.target = absl::StrCat("127.0.0.1:", port);
    connection_.timeout = absl::Seconds(10);
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown();
  }

  std::unique_ptr<IgnoringInference> service_;
  std::unique_ptr<grpc::Server> server_;
  SparkleClient::Options connection_;
};

// The output came back on the wire: every answer is an error, none a success.
TEST_F(BenchIgnoredTest, OutputOnTheWireCountsAsDataLoss) {
  Start(/*metadata_only=*/false);
  BenchOptions options = ShmOptions();
  options.concurrency = {2};
  std::ostringstream out;
  std::vector<LevelResult> results;
  ASSERT_TRUE(RunBench(connection_, options, out, &results).ok()) << out.str();
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].ok, 0);
  EXPECT_EQ(results[0].errors.at(absl::StatusCode::kDataLoss), 12);
  EXPECT_EQ(results[0].not_via_shared_memory, 12);
  EXPECT_THAT(out.str(), HasSubstr("DATA_LOSS:12 (not via shm:12)"));
  EXPECT_EQ(LeftoverObjects(), 0);
}

// No raw output, but nothing written to the region either: the first answer of each slot fails
// the comparison (the region's output was NaN); later ones are not compared.
TEST_F(BenchIgnoredTest, OutputNeverWrittenFailsTheFirstAnswerOfEachSlot) {
  Start(/*metadata_only=*/true);
  BenchOptions options = ShmOptions();
  options.concurrency = {2};
  std::ostringstream out;
  std::vector<LevelResult> results;
  ASSERT_TRUE(RunBench(connection_, options, out, &results).ok()) << out.str();
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].not_via_shared_memory, 2);
  EXPECT_EQ(results[0].errors.at(absl::StatusCode::kDataLoss), 2);
  EXPECT_EQ(results[0].ok, 10);
}

}  // namespace
}  // namespace sparkle::client
