// The commands and the bench end to end against an in-process fake sparkled: a KServe v2
// service that computes the convolution with plain loops from the request's own parameters,
// a canned Control service, and gRPC's built-in health service. What this checks is the
// client's side of docs/protocol.md (names, parameters, data placement, exit codes), not the server.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "client/bench.h"
#include "client/commands.h"
#include "client/npy.h"
#include "client/sparkle_client.h"
#include "client/status_commands.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "gtest/gtest.h"

namespace sparkle::client {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

struct Geometry {
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dilation_h = 1, dilation_w = 1,
          groups = 1;
};

// out[n][k][p][q] = bias[k] + Σ in[n][g·C/G + c][p·s − pad + r·d][...] · w[k][c][r][s].
std::vector<float> NaiveConv(const std::vector<int64_t>& in_shape, const std::vector<float>& in,
                             const std::vector<int64_t>& w_shape, const std::vector<float>& w,
                             const std::vector<float>& bias, const Geometry& g,
                             std::vector<int64_t>* out_shape) {
  const int64_t n = in_shape[0], c = in_shape[1], h = in_shape[2], wd = in_shape[3];
  const int64_t k = w_shape[0], cg = w_shape[1], r = w_shape[2], s = w_shape[3];
  const int64_t p = (h + 2 * g.pad_h - g.dilation_h * (r - 1) - 1) / g.stride_h + 1;
  const int64_t q = (wd + 2 * g.pad_w - g.dilation_w * (s - 1) - 1) / g.stride_w + 1;
  *out_shape = {n, k, p, q};
  std::vector<float> out(n * k * p * q);
  const int64_t k_per_group = k / g.groups;
  for (int64_t in_n = 0; in_n < n; ++in_n)
    for (int64_t ok = 0; ok < k; ++ok)
      for (int64_t op = 0; op < p; ++op)
        for (int64_t oq = 0; oq < q; ++oq) {
          double acc = bias.empty() ? 0 : bias[ok];
          const int64_t group = ok / k_per_group;
          for (int64_t ic = 0; ic < cg; ++ic)
            for (int64_t kr = 0; kr < r; ++kr)
              for (int64_t ks = 0; ks < s; ++ks) {
                const int64_t ih = op * g.stride_h - g.pad_h + kr * g.dilation_h;
                const int64_t iw = oq * g.stride_w - g.pad_w + ks * g.dilation_w;
                if (ih < 0 || ih >= h || iw < 0 || iw >= wd) continue;
                const int64_t cin = group * cg + ic;
                acc += in[((in_n * c + cin) * h + ih) * wd + iw] *
                       w[((ok * cg + ic) * r + kr) * s + ks];
              }
          out[((in_n * k + ok) * p + op) * q + oq] = static_cast<float>(acc);
        }
  return out;
}

std::vector<float> Floats(const std::string& bytes) {
  std::vector<float> out(bytes.size() / 4);
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

class FakeInference final : public inference::GRPCInferenceService::Service {
 public:
  grpc::Status ServerLive(grpc::ServerContext*, const inference::ServerLiveRequest*,
                          inference::ServerLiveResponse* response) override {
    response->set_live(true);
    return grpc::Status::OK;
  }
  grpc::Status ServerReady(grpc::ServerContext*, const inference::ServerReadyRequest*,
                           inference::ServerReadyResponse* response) override {
    response->set_ready(ready);
    return grpc::Status::OK;
  }
  grpc::Status ModelReady(grpc::ServerContext*, const inference::ModelReadyRequest* request,
                          inference::ModelReadyResponse* response) override {
    if (request->name() != "conv2d") return grpc::Status(grpc::StatusCode::NOT_FOUND, "model");
    response->set_ready(ready);
    return grpc::Status::OK;
  }
  grpc::Status ModelInfer(grpc::ServerContext*, const inference::ModelInferRequest* request,
                          inference::ModelInferResponse* response) override {
    {
      absl::MutexLock lock(&mu);
      ++infer_calls;
      last_request = *request;
      if (!fail_with.ok()) return fail_with;
      if (fail_every > 0 && infer_calls % fail_every == 0) {
        return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "queue full");
      }
    }
    if (request->model_name() != "conv2d" ||
        request->raw_input_contents_size() != request->inputs_size() ||
        request->inputs_size() < 2) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "malformed");
    }
    Geometry g;
    for (const auto& [key, value] : request->parameters()) {
      int64_t* slot = key == "stride_h"     ? &g.stride_h
                      : key == "stride_w"   ? &g.stride_w
                      : key == "pad_h"      ? &g.pad_h
                      : key == "pad_w"      ? &g.pad_w
                      : key == "dilation_h" ? &g.dilation_h
                      : key == "dilation_w" ? &g.dilation_w
                      : key == "groups"     ? &g.groups
                                            : nullptr;
      if (slot != nullptr) *slot = value.int64_param();
    }
    auto shape = [&](int i) {
      return std::vector<int64_t>(request->inputs(i).shape().begin(),
                                  request->inputs(i).shape().end());
    };
    std::vector<int64_t> out_shape;
    const std::vector<float> out = NaiveConv(
        shape(0), Floats(request->raw_input_contents(0)), shape(1),
        Floats(request->raw_input_contents(1)),
        request->inputs_size() > 2 ? Floats(request->raw_input_contents(2))
                                   : std::vector<float>(),
        g, &out_shape);
    response->set_model_name("conv2d");
    auto* tensor = response->add_outputs();
    tensor->set_name("output");
    tensor->set_datatype("FP32");
    for (int64_t d : out_shape) tensor->add_shape(d);
    response->add_raw_output_contents()->assign(reinterpret_cast<const char*>(out.data()),
                                                out.size() * 4);
    return grpc::Status::OK;
  }

  // Each request answered in order through ModelInfer above; failures as error_message
  // "[CODE] message" with the request id, and the stream goes on.
  grpc::Status ModelStreamInfer(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<inference::ModelStreamInferResponse, inference::ModelInferRequest>*
          stream) override {
    {
      absl::MutexLock lock(&mu);
      ++streams_opened;
    }
    inference::ModelInferRequest request;
    while (stream->Read(&request)) {
      inference::ModelStreamInferResponse reply;
      const grpc::Status status = ModelInfer(context, &request, reply.mutable_infer_response());
      if (!status.ok()) {
        reply.Clear();
        reply.set_error_message(absl::StrCat(
            "[", absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())),
            "] ", status.error_message()));
      }
      reply.mutable_infer_response()->set_id(request.id());
      if (!stream->Write(reply)) break;
    }
    return grpc::Status::OK;
  }

  bool ready = true;  // set before any call
  absl::Mutex mu;
  int streams_opened ABSL_GUARDED_BY(mu) = 0;
  grpc::Status fail_with ABSL_GUARDED_BY(mu) = grpc::Status::OK;
  int fail_every ABSL_GUARDED_BY(mu) = 0;  // > 0: every fail_every-th call is rejected
  int infer_calls ABSL_GUARDED_BY(mu) = 0;
  inference::ModelInferRequest last_request ABSL_GUARDED_BY(mu);
};

class FakeControl final : public sparkle::v1::Control::Service {
 public:
  grpc::Status GetStatus(grpc::ServerContext*, const sparkle::v1::GetStatusRequest*,
                         sparkle::v1::GetStatusResponse* response) override {
    response->set_version("0.1.0-test");
    response->set_build("GNU 12, Release");
    response->set_uptime_seconds(3723.9);
    response->set_ready(true);
    auto* cpu = response->add_devices();
    cpu->set_name("cpu");
    cpu->set_kind("cpu");
    cpu->set_healthy(true);
    cpu->set_threads(2);
    cpu->set_jobs_done(42);
    cpu->set_gflop_done(10);
    cpu->set_busy_seconds(4);
    response->set_queued_jobs(3);
    response->set_queued_bytes(3 << 20);
    auto* q = response->add_queue();
    q->set_shape("ic16oc16_ih32kh3ph1_iw32kw3pw1");
    q->set_jobs(3);
    q->set_bytes(3 << 20);
    response->set_jobs_accepted(45);
    response->set_mean_batch_size(1.5);
    auto* security = response->mutable_security();
    security->set_tls(true);
    security->set_auth_tokens(true);
    security->add_warnings("tokens are sent to a non-loopback listener");
    security->set_certificate_subject("CN=sparkled.test");
    security->set_certificate_not_after_unix_seconds(1e9);  // 2001: long expired
    security->set_caller("ci");
    security->set_caller_role("infer");
    return grpc::Status::OK;
  }
};

class CommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&inference_);
    builder.RegisterService(&control_);
    builder.SetMaxReceiveMessageSize(64 << 20);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    connection_.target = "127.0.0.1:" + std::to_string(port);
    connection_.timeout = absl::Seconds(10);
    dir_ = std::filesystem::path(testing::TempDir()) /
           ("commands_test_" + std::to_string(port));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    server_->Shutdown();
    std::filesystem::remove_all(dir_);
  }

  FakeInference inference_;
  FakeControl control_;
  std::unique_ptr<grpc::Server> server_;
  SparkleClient::Options connection_;
  std::filesystem::path dir_;
};

TEST_F(CommandsTest, HealthIsOkWhenReady) {
  std::ostringstream out;
  const absl::Status status = RunHealth(connection_, out);
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(ExitCodeFor(status), 0);
  EXPECT_EQ(out.str(), "live:   yes\nready:  yes\nmodel:  conv2d ready\nhealth: SERVING\n");
}

TEST_F(CommandsTest, HealthIsExitOneWhenNotReady) {
  inference_.ready = false;
  server_->GetHealthCheckService()->SetServingStatus("", false);
  std::ostringstream out;
  const absl::Status status = RunHealth(connection_, out);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ExitCodeFor(status), kExitServerError);
  EXPECT_THAT(out.str(), HasSubstr("ready:  no"));
  EXPECT_THAT(out.str(), HasSubstr("health: NOT_SERVING"));
}

TEST_F(CommandsTest, UnreachableIsExitTwo) {
  SparkleClient::Options nowhere = connection_;
  nowhere.target = "127.0.0.1:1";
  std::ostringstream out;
  const absl::Status status = RunHealth(nowhere, out);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ExitCodeFor(status), kExitLocalError);
  EXPECT_THAT(status.message(), HasSubstr("cannot connect to 127.0.0.1:1"));
}

TEST_F(CommandsTest, StatusPrintsATableAndJson) {
  std::ostringstream table;
  ASSERT_TRUE(RunStatus(connection_, /*json=*/false, table).ok());
  EXPECT_THAT(table.str(), HasSubstr("sparkled 0.1.0-test (GNU 12, Release)"));
  EXPECT_THAT(table.str(), HasSubstr("uptime 1h2m3s"));
  EXPECT_THAT(table.str(), HasSubstr("GFLOP/s(busy)"));
  EXPECT_THAT(table.str(), HasSubstr("2.5"));  // 10 GFLOP / 4 s
  EXPECT_THAT(table.str(), HasSubstr("ic16oc16_ih32kh3ph1_iw32kw3pw1"));
  EXPECT_THAT(table.str(), HasSubstr("mean batch size 1.50"));
  EXPECT_THAT(table.str(), HasSubstr("security tls on  client certificates not required  "
                                     "tokens required  admin listener no"));
  EXPECT_THAT(table.str(), HasSubstr("certificate CN=sparkled.test  expires 2001-09-09"));
  EXPECT_THAT(table.str(), HasSubstr("(EXPIRED)"));
  EXPECT_THAT(table.str(), HasSubstr("caller ci  role infer"));
  EXPECT_THAT(table.str(), HasSubstr("\nWARNING: tokens are sent to a non-loopback listener\n"));

  std::ostringstream json;
  ASSERT_TRUE(RunStatus(connection_, /*json=*/true, json).ok());
  EXPECT_THAT(json.str(), HasSubstr("\"version\": \"0.1.0-test\""));
  EXPECT_THAT(json.str(), HasSubstr("\"draining\": false"));  // defaults printed too
  EXPECT_THAT(json.str(), HasSubstr("\"jobs_accepted\": \"45\""));  // uint64 as a string
  EXPECT_THAT(json.str(), HasSubstr("\"caller_role\": \"infer\""));
  EXPECT_THAT(json.str(), HasSubstr("tokens are sent to a non-loopback listener"));
}

// A list of daemons (the same fake twice): the SECURITY column is compact, the warnings follow
// the table, one line per daemon and warning.
TEST_F(CommandsTest, FleetStatusShowsSecurityCompactly) {
  SparkleClient::Options fleet = connection_;
  fleet.target = absl::StrCat(connection_.target, ",", connection_.target);
  std::ostringstream out;
  ASSERT_TRUE(RunStatus(fleet, /*json=*/false, out).ok());
  EXPECT_THAT(out.str(), HasSubstr("SECURITY"));
  EXPECT_THAT(out.str(), HasSubstr("tls+token (1 warning)"));
  EXPECT_THAT(out.str(), HasSubstr(absl::StrCat("WARNING: ", connection_.target,
                                                ": tokens are sent to a non-loopback listener")));
  EXPECT_THAT(out.str(), Not(HasSubstr("caller")));  // the details stay in single-daemon status
}

TEST_F(CommandsTest, InferSendsGeneratedTensorsAndWritesTheOutput) {
  InferCommandOptions options;
  options.input_shape = {2, 4, 9, 7};
  options.weight_shape = {6, 2, 3, 3};
  options.bias_shape = {6};
  options.seed = 7;
  options.save_inputs_dir = (dir_ / "inputs").string();
  options.output_path = (dir_ / "y.npy").string();
  options.request.geometry.stride_h = 2;
  options.request.geometry.pad_w = 1;
  options.request.geometry.dilation_h = 2;
  options.request.geometry.groups = 2;
  options.request.device = "cpu";
  options.request.extra_params = {{"priority", 1}};
  std::ostringstream out;
  const absl::Status status = RunInfer(connection_, options, out);
  ASSERT_TRUE(status.ok()) << status;
  // P = (9 - 2·2 - 1)/2 + 1 = 3, Q = (7 + 2 - 2 - 1)/1 + 1 = 7.
  EXPECT_THAT(out.str(), HasSubstr("output  2x6x3x7 FP32"));
  EXPECT_THAT(out.str(), HasSubstr("round trip"));

  absl::StatusOr<NpyArray> x = ReadNpyFile((dir_ / "inputs/input.npy").string());
  absl::StatusOr<NpyArray> w = ReadNpyFile((dir_ / "inputs/weight.npy").string());
  absl::StatusOr<NpyArray> b = ReadNpyFile((dir_ / "inputs/bias.npy").string());
  absl::StatusOr<NpyArray> y = ReadNpyFile(options.output_path);
  ASSERT_TRUE(x.ok() && w.ok() && b.ok() && y.ok());
  Geometry g;
  g.stride_h = 2;
  g.pad_w = 1;
  g.dilation_h = 2;
  g.groups = 2;
  std::vector<int64_t> shape;
  const std::vector<float> want =
      NaiveConv(x->shape, x->ToFloats(), w->shape, w->ToFloats(), b->ToFloats(), g, &shape);
  EXPECT_EQ(y->shape, shape);
  EXPECT_EQ(y->ToFloats(), want);

  absl::MutexLock lock(&inference_.mu);
  EXPECT_EQ(inference_.last_request.parameters().at("device").string_param(), "cpu");
  EXPECT_EQ(inference_.last_request.parameters().at("priority").int64_param(), 1);
}

TEST_F(CommandsTest, InferReadsNpyFiles) {
  ASSERT_TRUE(WriteNpyFile((dir_ / "x.npy").string(),
                           *NpyArray::FromFloats({1, 1, 2, 2}, {1, 2, 3, 4}))
                  .ok());
  ASSERT_TRUE(WriteNpyFile((dir_ / "w.npy").string(), *NpyArray::FromFloats({1, 1, 1, 1}, {2}))
                  .ok());
  InferCommandOptions options;
  options.input_path = (dir_ / "x.npy").string();
  options.weight_path = (dir_ / "w.npy").string();
  options.output_path = (dir_ / "y.npy").string();
  std::ostringstream out;
  ASSERT_TRUE(RunInfer(connection_, options, out).ok());
  EXPECT_EQ(ReadNpyFile(options.output_path)->ToFloats(), std::vector<float>({2, 4, 6, 8}));
}

TEST_F(CommandsTest, InferErrorsCarryTheirOrigin) {
  InferCommandOptions options;
  options.input_shape = {1, 1, 4, 4};
  options.weight_shape = {1, 1, 3, 3};
  {
    absl::MutexLock lock(&inference_.mu);
    inference_.fail_with =
        grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "stride_h must be >= 1; was 0");
  }
  std::ostringstream out;
  absl::Status status = RunInfer(connection_, options, out);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "stride_h must be >= 1; was 0");
  EXPECT_EQ(ExitCodeFor(status), kExitServerError);

  options.input_shape.clear();
  options.input_path = (dir_ / "missing.npy").string();
  status = RunInfer(connection_, options, out);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ExitCodeFor(status), kExitLocalError);

  options.input_shape = {1, 1, 4, 4};
  status = RunInfer(connection_, options, out);  // both a path and a shape
  EXPECT_EQ(ExitCodeFor(status), kExitLocalError);
  EXPECT_THAT(status.message(), HasSubstr("not both"));
}

TEST_F(CommandsTest, BenchMeasuresEveryLevelAndWritesCsv) {
  connection_.channels = 2;
  BenchOptions options;
  // Two cheap classes (4.7 MFLOP each): the fake computes with plain loops, and "mixed" holds a
  // 231 MFLOP shape that under ASan beside other tests can outlast a 1 s window at concurrency 1
  // ("mixed" itself is resolved in bench_test). The warm-up takes each class's first request.
  options.shape_classes = {"tiny", "small_3x3"};
  options.concurrency = {1, 3};
  options.duration = absl::Seconds(1);
  options.warmup = absl::Milliseconds(600);
  options.csv_path = (dir_ / "bench.csv").string();
  std::ostringstream out;
  const absl::Status status = RunBench(connection_, options, out);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_THAT(out.str(), HasSubstr("REQ/s"));
  EXPECT_THAT(out.str(), Not(HasSubstr("skipping")));

  std::ifstream csv(options.csv_path);
  std::string line;
  std::vector<std::vector<std::string>> rows;
  while (std::getline(csv, line)) rows.push_back(absl::StrSplit(line, ','));
  ASSERT_EQ(rows.size(), 5u);  // header + 2 classes × 2 levels
  EXPECT_EQ(rows[0][0], "Concurrency");
  for (size_t i = 1; i < rows.size(); ++i) {
    SCOPED_TRACE(absl::StrJoin(rows[i], ","));
    EXPECT_EQ(rows[i][0], i % 2 == 1 ? "1" : "3");
    EXPECT_EQ(rows[i][8], i <= 2 ? "tiny" : "small_3x3");
    EXPECT_GT(std::stod(rows[i][1]), 0);   // Inferences/Second
    EXPECT_GT(std::stod(rows[i][9]), 0);   // GFLOP/s
    EXPECT_GT(std::stod(rows[i][11]), 0);  // Requests
    EXPECT_EQ(rows[i][12], "0");           // Errors
    EXPECT_NEAR(std::stod(rows[i][14]), absl::ToDoubleSeconds(options.duration), 1e-6);  // Window s
  }
}

TEST_F(CommandsTest, BenchStopsAfterMaxRequestsAndCountsErrorsByCode) {
  BenchOptions options;
  options.concurrency = {2};
  options.duration = absl::Seconds(30);  // max_requests ends it long before
  options.warmup = absl::ZeroDuration();
  options.max_requests = 5;
  std::ostringstream out;
  const absl::Time start = absl::Now();
  ASSERT_TRUE(RunBench(connection_, options, out).ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_THAT(out.str(), HasSubstr(" 5  -"));  // OK column, no errors

  // Errors during the window are counted by code, not fatal.
  {
    absl::MutexLock lock(&inference_.mu);
    inference_.infer_calls = 0;
    inference_.fail_every = 2;
  }
  options.max_requests = 10;
  std::ostringstream some_errors;
  ASSERT_TRUE(RunBench(connection_, options, some_errors).ok());
  EXPECT_THAT(some_errors.str(), HasSubstr("RESOURCE_EXHAUSTED:"));

  // A server that rejects the class outright: reported, skipped, exit code 1.
  {
    absl::MutexLock lock(&inference_.mu);
    inference_.fail_with = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "queue full");
  }
  std::ostringstream rejected;
  const absl::Status status = RunBench(connection_, options, rejected);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ExitCodeFor(status), kExitServerError);
  EXPECT_THAT(rejected.str(), HasSubstr("skipping tiny"));
}

TEST_F(CommandsTest, BenchStreamMatchesResponsesByIdAndCountsStreamErrorsByCode) {
  connection_.channels = 2;
  BenchOptions options;
  options.stream = true;
  options.concurrency = {3};
  options.duration = absl::Seconds(30);  // max_requests ends it long before
  options.warmup = absl::ZeroDuration();
  options.max_requests = 12;
  std::vector<LevelResult> results;
  std::ostringstream out;
  ASSERT_TRUE(RunBench(connection_, options, out, &results).ok()) << out.str();
  EXPECT_THAT(out.str(), HasSubstr("ModelStreamInfer"));
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].ok, 12);
  EXPECT_EQ(results[0].ErrorCount(), 0);
  EXPECT_GT(results[0].GflopPerSecond(), 0);
  int infer_calls = 0;
  {
    absl::MutexLock lock(&inference_.mu);
    // One stream per channel (2), not per request; the first request checks the class (unary).
    EXPECT_EQ(inference_.streams_opened, 2);
    infer_calls = inference_.infer_calls;
    inference_.infer_calls = 0;
    inference_.fail_every = 2;
  }
  EXPECT_GE(infer_calls, 12 + 1);
  EXPECT_LE(infer_calls, 12 + 1 + 3);  // at most one more per slot when the window closed

  // error_message replies are errors under the code they name; the stream goes on.
  results.clear();
  options.max_requests = 10;
  std::ostringstream some_errors;
  ASSERT_TRUE(RunBench(connection_, options, some_errors, &results).ok());
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].ok + results[0].ErrorCount(), 10);
  EXPECT_GE(results[0].errors[absl::StatusCode::kResourceExhausted], 4);
  EXPECT_EQ(results[0].errors.size(), 1u) << results[0].ErrorSummary();
}

TEST(StatusTextTest, ShowsCodeAndMessageButNotTheOriginMarker) {
  const absl::Status server = FromGrpcStatus(grpc::Status(grpc::StatusCode::NOT_FOUND, "model"));
  EXPECT_EQ(StatusText(server), "NOT_FOUND: model");
  EXPECT_EQ(ExitCodeFor(server), kExitServerError);
  EXPECT_EQ(ExitCodeFor(absl::NotFoundError("x.npy")), kExitLocalError);
  EXPECT_EQ(StatusText(absl::OkStatus()), "OK");
  EXPECT_EQ(ExitCodeFor(absl::OkStatus()), kExitOk);
}

}  // namespace
}  // namespace sparkle::client
