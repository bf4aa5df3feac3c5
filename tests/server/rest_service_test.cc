// The KServe v2 REST endpoint (server/rest_service.h) over HTTP on loopback, with the real
// services in-process (tests/testing/in_process_server.h): every route, JSON and Triton's binary
// tensor data extension checked against the reference convolution, every error's HTTP status and
// message, tokens, drain, queue-full pushback, shared memory and concurrent keep-alive clients.
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "rapidjson/document.h"
#include "tests/testing/conv_case.h"
#include "tests/testing/in_process_server.h"
#include "tests/testing/start_in_process.h"
#include "tests/testing/shm_object.h"
#include "tests/testing/wait_for.h"

namespace sparkle {
namespace {

using ::sparkle::testing::ConvCase;
using ::sparkle::testing::ConvShape;
using ::sparkle::testing::InProcessServer;
using ::sparkle::testing::ShmObject;
using ::sparkle::testing::WaitFor;
using ::testing::HasSubstr;

constexpr absl::Duration kPatience = absl::Seconds(10);
constexpr char kInfer[] = "/v2/models/conv2d/infer";

const ConvCase& Small() {
  static const auto* const kCase = new ConvCase(ConvShape(1, 4, 8, 8, 4, 3, 1, 1, 1, true), 77);
  return *kCase;
}

std::unique_ptr<InProcessServer> StartWithRest(InProcessServer::Options options = {}) {
  options.keep_http = true;
  options.server.http_address = "127.0.0.1:0";
  return ::sparkle::testing::StartServer(std::move(options));
}

std::unique_ptr<httplib::Client> ClientOf(InProcessServer& server) {
  const std::string address = server.server().http_address();
  int port = 0;
  EXPECT_TRUE(absl::SimpleAtoi(address.substr(address.rfind(':') + 1), &port)) << address;
  auto client = std::make_unique<httplib::Client>("127.0.0.1", port);
  client->set_read_timeout(30);
  return client;
}

std::string Floats(const std::vector<float>& v) {
  return absl::StrCat("[", absl::StrJoin(v, ","), "]");
}

std::string Bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

std::string Shape(std::initializer_list<int64_t> dims) {
  return absl::StrCat("[", absl::StrJoin(dims, ","), "]");
}

// The request's parameters: the geometry of the cases here (stride 1, pad 1), and `extra`.
std::string Geometry(const std::string& extra = "") {
  return absl::StrCat(R"("parameters": {"stride_h": 1, "stride_w": 1, "pad_h": 1, "pad_w": 1)",
                      extra, "}");
}

// The case as a JSON-only request: the input as nested arrays [N][C][H][W] flattened per row.
std::string JsonRequest(const ConvCase& c, const std::string& id = "rest-1") {
  const Conv2dParams& p = c.params;
  std::string nested = "[";
  for (int64_t row = 0; row < p.n * p.c * p.h; ++row) {
    if (row > 0) nested += ",";
    std::vector<float> r(c.input.begin() + row * p.w, c.input.begin() + (row + 1) * p.w);
    nested += Floats(r);
  }
  nested += "]";
  return absl::StrCat(R"({"id": ")", id, R"(", )", Geometry(), R"(, "inputs": [)",
                      R"({"name": "input", "datatype": "FP32", "shape": )",
                      Shape({p.n, p.c, p.h, p.w}), R"(, "data": )", nested, "},",
                      R"({"name": "weight", "datatype": "FP32", "shape": )",
                      Shape({p.k, p.c, p.r, p.s}), R"(, "data": )", Floats(c.weight), "},",
                      R"({"name": "bias", "datatype": "FP32", "shape": )", Shape({p.k}),
                      R"(, "data": )", Floats(c.bias), "}]}");
}

// The case with Triton's binary extension: the JSON header, then input, weight and bias bytes.
struct BinaryRequest {
  std::string body;
  size_t header_length = 0;
};
BinaryRequest BinaryOf(const ConvCase& c, const std::string& outputs,
                       const std::string& extra_params = "") {
  const Conv2dParams& p = c.params;
  auto input = [](const char* name, const std::string& shape, size_t bytes) {
    return absl::StrCat(R"({"name": ")", name, R"(", "datatype": "FP32", "shape": )", shape,
                        R"(, "parameters": {"binary_data_size": )", bytes, "}}");
  };
  const std::string header = absl::StrCat(
      "{", Geometry(extra_params), R"(, "inputs": [)",
      input("input", Shape({p.n, p.c, p.h, p.w}), c.input.size() * 4), ",",
      input("weight", Shape({p.k, p.c, p.r, p.s}), c.weight.size() * 4), ",",
      input("bias", Shape({p.k}), c.bias.size() * 4), "]", outputs, "}");
  return {header + Bytes(c.input) + Bytes(c.weight) + Bytes(c.bias), header.size()};
}

httplib::Result PostBinary(httplib::Client& client, const BinaryRequest& r) {
  httplib::Headers headers = {{"Inference-Header-Content-Length", absl::StrCat(r.header_length)}};
  return client.Post(kInfer, headers, r.body, "application/octet-stream");
}

rapidjson::Document Json(const std::string& text) {
  rapidjson::Document doc;
  doc.Parse(text.data(), text.size());
  EXPECT_FALSE(doc.HasParseError()) << text;
  return doc;
}

// Compares the JSON reply's output data with the case's reference output.
void ExpectJsonOutput(const ConvCase& c, const std::string& body) {
  rapidjson::Document doc = Json(body);
  ASSERT_TRUE(doc.IsObject()) << body;
  ASSERT_TRUE(doc.HasMember("outputs")) << body;
  const auto& out = doc["outputs"][0];
  EXPECT_STREQ(out["name"].GetString(), "output");
  EXPECT_STREQ(out["datatype"].GetString(), "FP32");
  const Conv2dParams& p = c.params;
  const std::vector<int64_t> shape = {p.n, p.k, p.p(), p.q()};
  ASSERT_EQ(out["shape"].Size(), shape.size());
  for (size_t i = 0; i < shape.size(); ++i) EXPECT_EQ(out["shape"][i].GetInt64(), shape[i]);
  ASSERT_EQ(out["data"].Size(), c.expected.size());
  for (size_t i = 0; i < c.expected.size(); ++i) {
    ASSERT_NEAR(out["data"][i].GetDouble(), c.expected[i], 1e-4) << i;
  }
}

// Compares a binary reply (JSON header + output bytes) with the reference output.
void ExpectBinaryOutput(const ConvCase& c, const httplib::Response& res) {
  ASSERT_TRUE(res.has_header("Inference-Header-Content-Length")) << res.body;
  size_t header_length = 0;
  ASSERT_TRUE(absl::SimpleAtoi(res.get_header_value("Inference-Header-Content-Length"),
                               &header_length));
  ASSERT_LE(header_length, res.body.size());
  rapidjson::Document doc = Json(res.body.substr(0, header_length));
  const auto& out = doc["outputs"][0];
  EXPECT_FALSE(out.HasMember("data"));
  const size_t bytes = c.expected.size() * sizeof(float);
  EXPECT_EQ(out["parameters"]["binary_data_size"].GetUint64(), bytes);
  ASSERT_EQ(res.body.size() - header_length, bytes);
  std::vector<float> got(c.expected.size());
  std::memcpy(got.data(), res.body.data() + header_length, bytes);
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], c.expected[i], 1e-4) << i;
}

std::string ErrorOf(const httplib::Response& res) {
  rapidjson::Document doc = Json(res.body);
  if (!doc.IsObject() || !doc.HasMember("error") || !doc["error"].IsString()) return "";
  return doc["error"].GetString();
}

TEST(RestServiceTest, HealthMetadataConfigAndUnknownPaths) {
  auto server = StartWithRest();
  ASSERT_NE(server, nullptr);
  auto client = ClientOf(*server);
  for (const char* path : {"/v2/health/live", "/v2/health/ready", "/v2/models/conv2d/ready",
                           "/v2/models/conv2d/versions/1/ready"}) {
    auto res = client->Get(path);
    ASSERT_TRUE(res) << path;
    EXPECT_EQ(res->status, 200) << path;
  }
  auto meta = client->Get("/v2");
  ASSERT_TRUE(meta);
  EXPECT_EQ(meta->status, 200);
  rapidjson::Document server_doc = Json(meta->body);
  EXPECT_STREQ(server_doc["name"].GetString(), "sparkled");
  std::vector<std::string> extensions;
  for (const auto& e : server_doc["extensions"].GetArray()) extensions.push_back(e.GetString());
  EXPECT_THAT(extensions, ::testing::IsSupersetOf({"binary_tensor_data", "model_configuration",
                                                   "statistics", "system_shared_memory"}));

  for (const char* path : {"/v2/models/conv2d", "/v2/models/conv2d/versions/1"}) {
    auto model = client->Get(path);
    ASSERT_TRUE(model);
    EXPECT_EQ(model->status, 200);
    rapidjson::Document doc = Json(model->body);
    EXPECT_STREQ(doc["name"].GetString(), "conv2d");
    EXPECT_STREQ(doc["versions"][0].GetString(), "1");
    EXPECT_EQ(doc["inputs"].Size(), 4u);  // input, weight, bias, residual
    EXPECT_EQ(doc["inputs"][0]["shape"][0].GetInt(), -1);  // a number, not "-1"
  }
  auto config = client->Get("/v2/models/conv2d/config");
  ASSERT_TRUE(config);
  EXPECT_EQ(config->status, 200);
  EXPECT_STREQ(Json(config->body)["name"].GetString(), "conv2d");

  struct Missing {
    const char* path;
    const char* message;
  };
  for (const Missing& m : {Missing{"/v2/models/resnet", "unknown model 'resnet'"},
                           Missing{"/v2/models/conv2d/versions/2", "version"},
                           Missing{"/v2/models/resnet/ready", "unknown model"},
                           Missing{"/v2/nothing", "no KServe v2 endpoint GET /v2/nothing"}}) {
    auto res = client->Get(m.path);
    ASSERT_TRUE(res) << m.path;
    EXPECT_EQ(res->status, 404) << m.path;
    EXPECT_THAT(ErrorOf(*res), HasSubstr(m.message)) << m.path << ": " << res->body;
  }
}

TEST(RestServiceTest, JsonInferMatchesTheReference) {
  auto server = StartWithRest();
  ASSERT_NE(server, nullptr);
  auto client = ClientOf(*server);
  auto res = client->Post(kInfer, JsonRequest(Small()), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(res->get_header_value("Content-Type"), "application/json");
  ExpectJsonOutput(Small(), res->body);
  EXPECT_STREQ(Json(res->body)["id"].GetString(), "rest-1");
  // The versioned path is the same model.
  res = client->Post("/v2/models/conv2d/versions/1/infer", JsonRequest(Small()),
                     "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  ExpectJsonOutput(Small(), res->body);
}

TEST(RestServiceTest, BinaryTensorsInAndOutMatchTheReference) {
  auto server = StartWithRest();
  ASSERT_NE(server, nullptr);
  auto client = ClientOf(*server);
  // Binary output asked per output, and by the request's default.
  for (const BinaryRequest& r :
       {BinaryOf(Small(), R"(, "outputs": [{"name": "output", "parameters": {"binary_data": true}}])"),
        BinaryOf(Small(), "", R"(, "binary_data_output": true)")}) {
    auto res = PostBinary(*client, r);
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
    EXPECT_EQ(res->get_header_value("Content-Type"), "application/octet-stream");
    ExpectBinaryOutput(Small(), *res);
  }
  // Binary in, JSON out (no output asked binary).
  auto res = PostBinary(*client, BinaryOf(Small(), ""));
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_FALSE(res->has_header("Inference-Header-Content-Length"));
  ExpectJsonOutput(Small(), res->body);
}

TEST(RestServiceTest, JsonAndBinaryInputsMixInOneRequest) {
  auto server = StartWithRest();
  ASSERT_NE(server, nullptr);
  auto client = ClientOf(*server);
  const ConvCase& c = Small();
  const Conv2dParams& p = c.params;
  // weight as binary data between two JSON-data inputs.
  const std::string header = absl::StrCat(
      "{", Geometry(), R"(, "inputs": [)",
      R"({"name": "input", "datatype": "FP32", "shape": )", Shape({p.n, p.c, p.h, p.w}),
      R"(, "data": )", Floats(c.input), "},",
      R"({"name": "weight", "datatype": "FP32", "shape": )", Shape({p.k, p.c, p.r, p.s}),
      R"(, "parameters": {"binary_data_size": )", c.weight.size() * 4, "}},",
      R"({"name": "bias", "datatype": "FP32", "shape": )", Shape({p.k}), R"(, "data": )",
      Floats(c.bias), "}]}");
  auto res = PostBinary(*client, {header + Bytes(c.weight), header.size()});
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  ExpectJsonOutput(c, res->body);
}

TEST(RestServiceTest, EveryErrorGetsItsStatusAndAMessage) {
  InProcessServer::Options options;
  options.server.max_message_bytes = 64 << 10;
  options.server.http_max_json_bytes = 8 << 10;
  auto server = StartWithRest(std::move(options));
  ASSERT_NE(server, nullptr);
  auto client = ClientOf(*server);
  const BinaryRequest good = BinaryOf(Small(), "");
  struct Case {
    std::string name;
    httplib::Headers headers;
    std::string body;
    int status;
    std::string message;
  };
  auto header_length = [](size_t n) {
    return httplib::Headers{{"Inference-Header-Content-Length", absl::StrCat(n)}};
  };
  const std::vector<Case> cases = {
      {"syntax", {}, R"({"inputs": [)", 400, "does not parse"},
      {"unknown key", {}, R"({"inputs": [], "colour": 1})", 400, "unknown key 'colour'"},
      {"missing weight", {},
       R"({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1,1,1,1], "data": [1]}]})",
       400, "weight"},
      {"header length past the body", header_length(good.body.size() + 1), good.body, 400,
       "Inference-Header-Content-Length"},
      {"bytes after the last tensor", header_length(good.header_length), good.body + "xxxx", 400,
       "after the last binary tensor"},
      {"body ends inside a tensor", header_length(good.header_length),
       good.body.substr(0, good.body.size() - 4), 400, "ends inside binary tensor"},
      {"body above --max_message_bytes", {}, std::string(70 << 10, ' '), 413,
       "max_message_bytes"},
      {"JSON above --http_max_json_bytes", {},
       absl::StrCat(R"({"id": ")", std::string(9 << 10, 'x'), R"("})"), 413,
       "http_max_json_bytes"},
      {"FP16 as JSON", {},
       R"({"inputs": [{"name": "input", "datatype": "FP16", "shape": [1], "data": [1]}]})", 400,
       "cannot be sent as JSON"},
  };
  // One keep-alive connection: a refusal that left part of its body unread must not leave it to
  // be read as the next request (the good request after each case).
  client->set_keep_alive(true);
  for (const Case& c : cases) {
    auto res = client->Post(kInfer, c.headers, c.body, "application/json");
    ASSERT_TRUE(res) << c.name;
    EXPECT_EQ(res->status, c.status) << c.name << ": " << res->body;
    EXPECT_THAT(ErrorOf(*res), HasSubstr(c.message)) << c.name << ": " << res->body;
    auto next = PostBinary(*client, good);
    ASSERT_TRUE(next) << c.name;
    EXPECT_EQ(next->status, 200) << "after " << c.name << ": " << next->body;
  }
  auto wrong_model = client->Post("/v2/models/resnet/infer", JsonRequest(Small()),
                                  "application/json");
  ASSERT_TRUE(wrong_model);
  EXPECT_EQ(wrong_model->status, 404);
  // Nothing was lost: a good request right after.
  auto res = PostBinary(*client, good);
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  ExpectJsonOutput(Small(), res->body);
}

TEST(RestServiceTest, StatisticsCountRestRequests) {
  auto server = StartWithRest();
  ASSERT_NE(server, nullptr);
  auto client = ClientOf(*server);
  for (int i = 0; i < 3; ++i) {
    auto res = PostBinary(*client, BinaryOf(Small(), ""));
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
  }
  for (const char* path : {"/v2/models/conv2d/stats", "/v2/models/stats"}) {
    auto res = client->Get(path);
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
    rapidjson::Document doc = Json(res->body);
    const auto& stats = doc["model_stats"][0];
    EXPECT_STREQ(stats["name"].GetString(), "conv2d");
    EXPECT_EQ(stats["inference_stats"]["success"]["count"].GetUint64(), 3u) << res->body;
    EXPECT_EQ(stats["inference_count"].GetUint64(), 3u) << res->body;
  }
}

TEST(RestServiceTest, TokensAreCheckedAsOnGrpc) {
  char dir_template[] = "/tmp/sparkle_rest_tokens_XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string tokens = absl::StrCat(dir_template, "/tokens");
  std::ofstream(tokens) << "infer-token-0123456789,alice,infer\n";
  InProcessServer::Options options;
  options.server.auth_token_file = tokens;
  auto server = StartWithRest(std::move(options));
  ASSERT_NE(server, nullptr);
  auto client = ClientOf(*server);
  // Health needs no token.
  for (const char* path : {"/v2/health/live", "/v2/health/ready"}) {
    auto res = client->Get(path);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200) << path;
  }
  auto none = client->Get("/v2");
  ASSERT_TRUE(none);
  EXPECT_EQ(none->status, 401);
  EXPECT_FALSE(ErrorOf(*none).empty());
  auto wrong = client->Post(kInfer, {{"Authorization", "Bearer not-a-token-000000"}},
                            JsonRequest(Small()), "application/json");
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 401);
  const httplib::Headers good = {{"Authorization", "Bearer infer-token-0123456789"}};
  auto meta = client->Get("/v2", good);
  ASSERT_TRUE(meta);
  EXPECT_EQ(meta->status, 200);
  auto res = client->Post(kInfer, good, JsonRequest(Small()), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  ExpectJsonOutput(Small(), res->body);
}

// Drain: ready turns 503 at once and new requests get 503 naming the drain, while live stays 200.
TEST(RestServiceTest, DrainTurnsReadyAndInferTo503) {
  auto server = StartWithRest();
  ASSERT_NE(server, nullptr);
  auto client = ClientOf(*server);
  auto control = server->Control();
  grpc::ClientContext ctx;
  sparkle::v1::DrainRequest request;
  sparkle::v1::DrainResponse response;
  ASSERT_TRUE(control->Drain(&ctx, request, &response).ok());
  auto ready = client->Get("/v2/health/ready");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 503);
  auto live = client->Get("/v2/health/live");
  ASSERT_TRUE(live);
  EXPECT_EQ(live->status, 200);
  auto res = client->Post(kInfer, JsonRequest(Small()), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503) << res->body;
  EXPECT_THAT(ErrorOf(*res), HasSubstr("draining"));
}

// A full in-flight budget: 429 with Retry-After; the held request still succeeds.
TEST(RestServiceTest, FullBudgetIs429WithRetryAfter) {
  InProcessServer::Options options;
  options.fake_gpus = 1;
  options.server.engine.device_policy = DeviceRequest::AnyGpu();
  // A job of about 1 MiB (the budget's minimum), and a budget for one and a half.
  const ConvCase big(ConvShape(1, 32, 64, 64, 32, 3, 1, 1, 1, true), 5);
  options.server.engine.max_inflight_bytes = big.params.total_bytes() * 3 / 2;
  options.server.retry_after_ms = 1500;
  auto server = StartWithRest(std::move(options));
  ASSERT_NE(server, nullptr);
  server->gpu(0).Pause();
  auto client = ClientOf(*server);
  int held_status = 0;
  std::string held_body;
  std::thread first([&] {
    auto own = ClientOf(*server);
    if (auto res = PostBinary(*own, BinaryOf(big, ""))) {
      held_status = res->status;
      held_body = res->body;
    }
  });
  ASSERT_TRUE(WaitFor([&] { return server->Status()->in_flight_jobs() == 1; }, kPatience));
  auto res = PostBinary(*client, BinaryOf(big, ""));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 429) << res->body;
  EXPECT_EQ(res->get_header_value("Retry-After"), "2");
  EXPECT_THAT(ErrorOf(*res), HasSubstr("max_inflight_bytes"));
  server->gpu(0).Resume();
  first.join();
  ASSERT_EQ(held_status, 200) << held_body;
  ExpectJsonOutput(big, held_body);
}

TEST(RestServiceTest, SystemSharedMemoryOverRest) {
  auto server = StartWithRest();
  ASSERT_NE(server, nullptr);
  auto client = ClientOf(*server);
  const ConvCase& c = Small();
  const Conv2dParams& p = c.params;
  const size_t input_bytes = c.input.size() * 4;
  ShmObject shm(input_bytes);
  std::memcpy(shm.data(), c.input.data(), input_bytes);
  auto reg = client->Post("/v2/systemsharedmemory/region/in0/register",
                          absl::StrCat(R"({"key": ")", shm.key(), R"(", "offset": 0, "byte_size": )",
                                       input_bytes, "}"),
                          "application/json");
  ASSERT_TRUE(reg);
  ASSERT_EQ(reg->status, 200) << reg->body;
  auto status = client->Get("/v2/systemsharedmemory/status");
  ASSERT_TRUE(status);
  ASSERT_EQ(status->status, 200) << status->body;
  rapidjson::Document regions = Json(status->body);
  ASSERT_TRUE(regions.IsArray());
  ASSERT_EQ(regions.Size(), 1u);
  EXPECT_STREQ(regions[0]["name"].GetString(), "in0");
  EXPECT_EQ(regions[0]["byte_size"].GetUint64(), input_bytes);

  const std::string header = absl::StrCat(
      "{", Geometry(), R"(, "inputs": [)",
      R"({"name": "input", "datatype": "FP32", "shape": )", Shape({p.n, p.c, p.h, p.w}),
      R"(, "parameters": {"shared_memory_region": "in0", "shared_memory_byte_size": )",
      input_bytes, "}},",
      R"({"name": "weight", "datatype": "FP32", "shape": )", Shape({p.k, p.c, p.r, p.s}),
      R"(, "parameters": {"binary_data_size": )", c.weight.size() * 4, "}},",
      R"({"name": "bias", "datatype": "FP32", "shape": )", Shape({p.k}),
      R"(, "parameters": {"binary_data_size": )", c.bias.size() * 4, "}}]}");
  auto res = PostBinary(*client, {header + Bytes(c.weight) + Bytes(c.bias), header.size()});
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  ExpectJsonOutput(c, res->body);

  auto unreg = client->Post("/v2/systemsharedmemory/region/in0/unregister", "", "text/plain");
  ASSERT_TRUE(unreg);
  EXPECT_EQ(unreg->status, 200) << unreg->body;
  status = client->Get("/v2/systemsharedmemory/status");
  ASSERT_TRUE(status);
  EXPECT_EQ(status->body, "[]");
  auto cuda = client->Get("/v2/cudasharedmemory/status");
  ASSERT_TRUE(cuda);
  EXPECT_EQ(cuda->status, 501);
  EXPECT_FALSE(ErrorOf(*cuda).empty());
}

// Keep-alive clients at once, each with many requests: every answer is right.
TEST(RestServiceTest, ConcurrentKeepAliveClientsGetTheirOwnAnswers) {
  InProcessServer::Options options;
  options.server.http_threads = 4;
  auto server = StartWithRest(std::move(options));
  ASSERT_NE(server, nullptr);
  constexpr int kClients = 6, kRequests = 10;  // more clients than threads: some wait
  std::vector<ConvCase> cases;
  for (int i = 0; i < kClients; ++i) {
    cases.emplace_back(ConvShape(1, 3, 6 + i, 6, 2, 3, 1, 1, 1, true), 100 + i);
  }
  std::vector<std::thread> threads;
  std::vector<int> ok(kClients, 0);
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      auto client = ClientOf(*server);
      client->set_keep_alive(true);
      for (int j = 0; j < kRequests; ++j) {
        auto res = PostBinary(*client, BinaryOf(cases[i], ""));
        if (!res || res->status != 200) continue;
        rapidjson::Document doc = Json(res->body);
        const auto& data = doc["outputs"][0]["data"];
        bool same = data.Size() == cases[i].expected.size();
        for (rapidjson::SizeType k = 0; same && k < data.Size(); ++k) {
          same = std::abs(data[k].GetDouble() - cases[i].expected[k]) < 1e-4;
        }
        ok[i] += same;
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kClients; ++i) EXPECT_EQ(ok[i], kRequests) << "client " << i;
}

}  // namespace
}  // namespace sparkle
