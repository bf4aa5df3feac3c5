// RestReply (server/rest_reply.h): HTTP status per gRPC code, the {"error"} body, protobuf
// messages as KServe/Triton JSON (integers as numbers), and infer responses as JSON (FP32 values
// that read back bit-exactly) or with Triton's binary data extension. Every output is parsed back
// with RapidJSON, validating UTF-8.
#include "server/rest_reply.h"

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/core/data_type.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rapidjson/document.h"
#include "rapidjson/error/en.h"
#include "server/rest_infer_request.h"

namespace sparkle {
namespace {

using ::testing::ElementsAre;

// The JSON text as a document; fails the test when it is not JSON (or not UTF-8).
template <unsigned kFlags = 0>
rapidjson::Document Parse(const std::string& json) {
  rapidjson::Document doc;
  doc.Parse<kFlags | rapidjson::kParseValidateEncodingFlag>(json.data(), json.size());
  EXPECT_FALSE(doc.HasParseError()) << rapidjson::GetParseError_En(doc.GetParseError())
                                    << " at byte " << doc.GetErrorOffset() << " of: " << json;
  return doc;
}

TEST(RestReplyTest, HttpStatusForEveryCode) {
  struct Case {
    absl::StatusCode code;
    int http;
  };
  const Case cases[] = {
      {absl::StatusCode::kOk, 200},
      {absl::StatusCode::kInvalidArgument, 400},
      {absl::StatusCode::kFailedPrecondition, 400},
      {absl::StatusCode::kOutOfRange, 400},
      {absl::StatusCode::kUnauthenticated, 401},
      {absl::StatusCode::kPermissionDenied, 403},
      {absl::StatusCode::kNotFound, 404},
      {absl::StatusCode::kAlreadyExists, 409},
      {absl::StatusCode::kUnimplemented, 501},
      {absl::StatusCode::kUnavailable, 503},
      {absl::StatusCode::kDeadlineExceeded, 504},
      {absl::StatusCode::kInternal, 500},
      {absl::StatusCode::kUnknown, 500},
      {absl::StatusCode::kCancelled, 500},
      {absl::StatusCode::kAborted, 500},
      {absl::StatusCode::kDataLoss, 500},
  };
  for (const Case& c : cases) {
    const absl::Status status(c.code, c.code == absl::StatusCode::kOk ? "" : "x");
    EXPECT_EQ(HttpStatusFor(status, false), c.http) << status;
    // queue_full only changes RESOURCE_EXHAUSTED.
    EXPECT_EQ(HttpStatusFor(status, true), c.http) << status;
  }
  const absl::Status exhausted = absl::ResourceExhaustedError("max_queued_jobs");
  EXPECT_EQ(HttpStatusFor(exhausted, true), 429);   // retryable: Too Many Requests
  EXPECT_EQ(HttpStatusFor(exhausted, false), 413);  // too large: Payload Too Large
}

TEST(RestReplyTest, ErrorJsonEscapes) {
  const std::string messages[] = {
      "plain",
      "",
      "quote \" and 'single' and backslash \\ and slash /",
      "newline\nreturn\rtab\tbell\x01 del\x7f",
      std::string("nul \0 inside", 12),
      "caf\xc3\xa9 \xe2\x98\x83 \xf0\x9f\x98\x80",  // é ☃ 😀
      "</script><b>html</b>",
  };
  for (const std::string& m : messages) {
    const std::string json = ErrorJson(m);
    // No raw control characters (JSON forbids them in strings).
    for (char ch : json) EXPECT_GE(static_cast<unsigned char>(ch), 0x20) << json;
    rapidjson::Document doc = Parse(json);
    ASSERT_TRUE(doc.IsObject());
    ASSERT_EQ(doc.MemberCount(), 1u);
    ASSERT_TRUE(doc.HasMember("error"));
    ASSERT_TRUE(doc["error"].IsString());
    EXPECT_EQ(std::string(doc["error"].GetString(), doc["error"].GetStringLength()), m);
  }
  EXPECT_EQ(ErrorJson("a\"b\nc"), R"({"error":"a\"b\nc"})");
}

// Messages can quote bytes from the URL (a model or region name, percent-decoded by
// cpp-httplib: /v2/models/%FF/infer gives "unknown model '\xff'"): the body must still be
// valid JSON in UTF-8.
TEST(RestReplyTest, ErrorJsonWithInvalidUtf8IsStillValidJson) {
  const std::string json = ErrorJson("unknown model '\xff\xfe'");
  rapidjson::Document doc = Parse(json);
  ASSERT_TRUE(doc.IsObject());
  EXPECT_TRUE(doc.HasMember("error"));
}

TEST(RestReplyTest, ModelStatisticsIntegersAreJsonNumbers) {
  inference::ModelStatisticsResponse m;
  auto* s = m.add_model_stats();
  s->set_name("conv2d");
  s->set_version("1");
  s->set_last_inference(1764938400123);
  s->set_inference_count(uint64_t{1} << 60);
  s->set_execution_count(std::numeric_limits<uint64_t>::max());
  s->mutable_inference_stats()->mutable_success()->set_count(7);
  s->mutable_inference_stats()->mutable_success()->set_ns(123456789012);
  auto* b = s->add_batch_stats();
  b->set_batch_size(4);
  b->mutable_compute_infer()->set_count(2);
  rapidjson::Document doc = Parse(ProtoToJson(m));
  ASSERT_TRUE(doc.IsObject());
  ASSERT_TRUE(doc["model_stats"].IsArray());
  ASSERT_EQ(doc["model_stats"].Size(), 1u);
  const auto& st = doc["model_stats"][0];
  EXPECT_STREQ(st["name"].GetString(), "conv2d");
  EXPECT_STREQ(st["version"].GetString(), "1");
  ASSERT_TRUE(st["last_inference"].IsUint64());  // a number, not "1764938400123"
  EXPECT_EQ(st["last_inference"].GetUint64(), 1764938400123u);
  EXPECT_EQ(st["inference_count"].GetUint64(), uint64_t{1} << 60);
  EXPECT_EQ(st["execution_count"].GetUint64(), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(st["inference_stats"]["success"]["count"].GetUint64(), 7u);
  EXPECT_EQ(st["inference_stats"]["success"]["ns"].GetUint64(), 123456789012u);
  // Scalars at their default are written (Triton prints zero counts); unset sub-messages not.
  ASSERT_TRUE(st["inference_stats"]["success"].IsObject());
  ASSERT_EQ(st["batch_stats"].Size(), 1u);
  EXPECT_EQ(st["batch_stats"][0]["batch_size"].GetUint64(), 4u);
  EXPECT_EQ(st["batch_stats"][0]["compute_infer"]["count"].GetUint64(), 2u);
  EXPECT_EQ(st["batch_stats"][0]["compute_infer"]["ns"].GetUint64(), 0u);
  EXPECT_FALSE(st["batch_stats"][0].HasMember("compute_input"));
}

TEST(RestReplyTest, ModelMetadataShapesAreNumbers) {
  inference::ModelMetadataResponse m;
  m.set_name("conv2d");
  m.add_versions("1");
  m.set_platform("sparkle");
  auto* in = m.add_inputs();
  in->set_name("input");
  in->set_datatype("FP32");
  for (int64_t d : {int64_t{-1}, int64_t{3}, int64_t{1} << 40, std::numeric_limits<int64_t>::min()}) {
    in->add_shape(d);
  }
  m.add_outputs()->set_name("output");
  rapidjson::Document doc = Parse(ProtoToJson(m));
  EXPECT_STREQ(doc["name"].GetString(), "conv2d");
  ASSERT_TRUE(doc["versions"].IsArray());
  EXPECT_STREQ(doc["versions"][0].GetString(), "1");
  EXPECT_STREQ(doc["platform"].GetString(), "sparkle");
  const auto& shape = doc["inputs"][0]["shape"];
  ASSERT_TRUE(shape.IsArray());
  ASSERT_EQ(shape.Size(), 4u);
  for (const auto& d : shape.GetArray()) EXPECT_TRUE(d.IsInt64());
  EXPECT_EQ(shape[0].GetInt64(), -1);
  EXPECT_EQ(shape[1].GetInt64(), 3);
  EXPECT_EQ(shape[2].GetInt64(), int64_t{1} << 40);
  EXPECT_EQ(shape[3].GetInt64(), std::numeric_limits<int64_t>::min());
  EXPECT_STREQ(doc["inputs"][0]["datatype"].GetString(), "FP32");
  // An output without a shape gets an empty array (repeated fields are always written).
  ASSERT_TRUE(doc["outputs"][0]["shape"].IsArray());
  EXPECT_EQ(doc["outputs"][0]["shape"].Size(), 0u);
}

TEST(RestReplyTest, MapsBecomeObjectsAndOneofsTheirSetMember) {
  inference::SystemSharedMemoryStatusResponse status;
  auto& r = (*status.mutable_regions())["in\"put"];
  r.set_name("in\"put");
  r.set_key("/sparkle-shm");
  r.set_offset(64);
  r.set_byte_size(uint64_t{1} << 33);
  (*status.mutable_regions())["out"].set_byte_size(4);
  rapidjson::Document doc = Parse(ProtoToJson(status));
  ASSERT_TRUE(doc["regions"].IsObject());
  ASSERT_EQ(doc["regions"].MemberCount(), 2u);
  const auto& in = doc["regions"]["in\"put"];
  EXPECT_STREQ(in["key"].GetString(), "/sparkle-shm");
  EXPECT_EQ(in["offset"].GetUint64(), 64u);
  EXPECT_EQ(in["byte_size"].GetUint64(), uint64_t{1} << 33);
  EXPECT_EQ(doc["regions"]["out"]["byte_size"].GetUint64(), 4u);

  // map<string, InferParameter>: each value an object with only its set oneof member.
  inference::ModelInferRequest req;
  (*req.mutable_parameters())["b"].set_bool_param(false);
  (*req.mutable_parameters())["i"].set_int64_param(-5);
  (*req.mutable_parameters())["u"].set_uint64_param(std::numeric_limits<uint64_t>::max());
  (*req.mutable_parameters())["s"].set_string_param("");
  (*req.mutable_parameters())["d"].set_double_param(0.1);
  doc = Parse(ProtoToJson(req));
  const auto& p = doc["parameters"];
  ASSERT_TRUE(p.IsObject());
  EXPECT_EQ(p["b"].MemberCount(), 1u);
  EXPECT_FALSE(p["b"]["bool_param"].GetBool());
  EXPECT_EQ(p["i"]["int64_param"].GetInt64(), -5);
  EXPECT_EQ(p["u"]["uint64_param"].GetUint64(), std::numeric_limits<uint64_t>::max());
  EXPECT_STREQ(p["s"]["string_param"].GetString(), "");
  EXPECT_EQ(p["d"]["double_param"].GetDouble(), 0.1);
  EXPECT_EQ(p["d"].MemberCount(), 1u);

  // Enums by name; the oneof member only when set.
  inference::ModelConfig config;
  config.set_name("conv2d");
  config.set_max_batch_size(8);
  auto* input = config.add_input();
  input->set_data_type(inference::TYPE_FP32);
  input->set_format(inference::ModelInput::FORMAT_NCHW);
  doc = Parse(ProtoToJson(config));
  EXPECT_STREQ(doc["input"][0]["data_type"].GetString(), "TYPE_FP32");
  EXPECT_STREQ(doc["input"][0]["format"].GetString(), "FORMAT_NCHW");
  EXPECT_EQ(doc["max_batch_size"].GetInt(), 8);
  EXPECT_FALSE(doc.HasMember("dynamic_batching"));
  config.mutable_dynamic_batching()->set_max_queue_delay_microseconds(100);
  doc = Parse(ProtoToJson(config));
  EXPECT_EQ(doc["dynamic_batching"]["max_queue_delay_microseconds"].GetUint64(), 100u);
}

// A double that is not finite (JSON has no NaN) still gives valid JSON.
TEST(RestReplyTest, ProtoToJsonWithNonFiniteDoubleIsValidJson) {
  inference::ModelInferRequest req;
  (*req.mutable_parameters())["nan"].set_double_param(std::nan(""));
  (*req.mutable_parameters())["inf"].set_double_param(INFINITY);
  Parse(ProtoToJson(req));
}

inference::ModelInferResponse OutputHeader(int64_t elements) {
  inference::ModelInferResponse h;
  h.set_model_name("conv2d");
  h.set_model_version("1");
  h.set_id("req \"1\"");
  auto* out = h.add_outputs();
  out->set_name("output");
  out->set_datatype("FP32");
  out->add_shape(1);
  out->add_shape(elements);
  return h;
}

std::string Bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

std::vector<float> InterestingFloats() {
  std::vector<float> v = {0.0f,
                          -0.0f,
                          1.0f,
                          -1.5f,
                          0.1f,
                          1.0f / 3.0f,
                          1e-45f,  // the smallest denormal
                          std::numeric_limits<float>::denorm_min(),
                          std::numeric_limits<float>::min(),
                          std::nextafter(std::numeric_limits<float>::min(), 0.0f),  // largest denormal
                          3.4e38f,
                          std::numeric_limits<float>::max(),
                          -std::numeric_limits<float>::max(),
                          16777217.0f,
                          123456792.0f,
                          std::numeric_limits<float>::epsilon()};
  std::mt19937 rng(20261205);
  for (int i = 0; i < 20000; ++i) {
    uint32_t bits = rng();
    if (i % 4 == 0) bits &= 0x807fffffu;  // denormals (exponent 0)
    float f;
    std::memcpy(&f, &bits, sizeof f);
    if (std::isfinite(f)) v.push_back(f);
  }
  return v;
}

TEST(RestReplyTest, InferResponseJsonFloatsRoundTripExactly) {
  const std::vector<float> values = InterestingFloats();
  const std::string json =
      InferResponseJson(OutputHeader(static_cast<int64_t>(values.size())), Bytes(values), false);
  // Each number's own text, read as a float (no detour through double).
  rapidjson::Document doc = Parse<rapidjson::kParseNumbersAsStringsFlag>(json);
  EXPECT_STREQ(doc["model_name"].GetString(), "conv2d");
  EXPECT_STREQ(doc["model_version"].GetString(), "1");
  EXPECT_STREQ(doc["id"].GetString(), "req \"1\"");
  ASSERT_EQ(doc["outputs"].Size(), 1u);
  const auto& out = doc["outputs"][0];
  EXPECT_STREQ(out["name"].GetString(), "output");
  EXPECT_STREQ(out["datatype"].GetString(), "FP32");
  EXPECT_STREQ(out["shape"][1].GetString(), std::to_string(values.size()).c_str());
  EXPECT_FALSE(out.HasMember("parameters"));
  const auto& data = out["data"];
  ASSERT_TRUE(data.IsArray());
  ASSERT_EQ(data.Size(), values.size());
  int mismatches = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    const char* text = data[static_cast<rapidjson::SizeType>(i)].GetString();
    char* end = nullptr;
    const float back = std::strtof(text, &end);
    EXPECT_EQ(*end, '\0') << text;
    if (Bits(back) != Bits(values[i]) && ++mismatches <= 10) {
      ADD_FAILURE() << "value " << i << " bits " << std::hex << Bits(values[i]) << " written as "
                    << text << " reads back as bits " << Bits(back);
    }
    // Shortest form: no more than 9 significant digits.
    EXPECT_LE(std::strlen(text), 15u) << text;
  }
  EXPECT_EQ(mismatches, 0);
}

// The response's JSON numbers sent back as a request's FP32 data (a client that echoes them)
// give the same floats: the REST parser reads each as a double, then rounds to float.
TEST(RestReplyTest, InferResponseJsonFloatsReadBackByTheRestParser) {
  const std::vector<float> values = InterestingFloats();
  const std::string json =
      InferResponseJson(OutputHeader(static_cast<int64_t>(values.size())), Bytes(values), false);
  const size_t from = json.find("\"data\":");
  ASSERT_NE(from, std::string::npos);
  const size_t to = json.find(']', from);
  const std::string data = json.substr(from + 7, to - from - 6);
  absl::StatusOr<RestInferRequest> r = ParseRestInferRequest(
      R"({"inputs": [{"name": "input", "datatype": "FP32", "data": )" + data + "}]}");
  ASSERT_TRUE(r.ok()) << r.status();
  const auto& back = r->header.inputs(0).contents().fp32_contents();
  ASSERT_EQ(back.size(), static_cast<int>(values.size()));
  int mismatches = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    if (values[i] == 0.0f) continue;  // the sign of zero: NegativeZeroKeepsItsSign
    if (Bits(back[static_cast<int>(i)]) != Bits(values[i]) && ++mismatches <= 10) {
      ADD_FAILURE() << "value " << i << " bits " << std::hex << Bits(values[i])
                    << " reads back as " << Bits(back[static_cast<int>(i)]);
    }
  }
  EXPECT_EQ(mismatches, 0);
}

// -0.0f is written "-0", which JSON readers (RapidJSON: an integer 0, so the REST parser too;
// Python's json: int 0) read as +0: the sign must survive a round trip.
TEST(RestReplyTest, NegativeZeroKeepsItsSign) {
  const std::string json = InferResponseJson(OutputHeader(2), Bytes({-0.0f, 0.0f}), false);
  rapidjson::Document doc = Parse(json);
  const auto& data = doc["outputs"][0]["data"];
  ASSERT_EQ(data.Size(), 2u);
  EXPECT_TRUE(data[0].IsDouble()) << json;
  EXPECT_TRUE(std::signbit(data[0].GetDouble())) << json;
  EXPECT_FALSE(std::signbit(data[1].GetDouble())) << json;
}

TEST(RestReplyTest, InferResponseJsonNonFiniteIsNull) {
  const std::vector<float> values = {1.0f, std::numeric_limits<float>::quiet_NaN(),
                                     std::numeric_limits<float>::infinity(),
                                     -std::numeric_limits<float>::infinity(), 2.0f};
  rapidjson::Document doc = Parse(InferResponseJson(OutputHeader(5), Bytes(values), false));
  const auto& data = doc["outputs"][0]["data"];
  ASSERT_EQ(data.Size(), 5u);
  EXPECT_EQ(data[0].GetDouble(), 1.0);
  EXPECT_TRUE(data[1].IsNull());
  EXPECT_TRUE(data[2].IsNull());
  EXPECT_TRUE(data[3].IsNull());
  EXPECT_EQ(data[4].GetDouble(), 2.0);
}

// BF16 and FP16 outputs as JSON: each value widened exactly to float, written in its shortest
// form; read back and rounded to the datatype, it is the same value (bits). Non-finite: null.
TEST(RestReplyTest, InferResponseJsonSixteenBitOutputsWidenExactly) {
  for (const DataType type : {DataType::kBf16, DataType::kFp16}) {
    SCOPED_TRACE(DataTypeName(type));
    std::vector<uint16_t> bits;
    for (uint32_t b = 0; b < 0x10000; b += 7) bits.push_back(static_cast<uint16_t>(b));
    inference::ModelInferResponse header = OutputHeader(static_cast<int64_t>(bits.size()));
    header.mutable_outputs(0)->set_datatype(DataTypeName(type));
    const std::string json = InferResponseJson(
        header, std::string(reinterpret_cast<const char*>(bits.data()), bits.size() * 2), false);
    rapidjson::Document doc = Parse<rapidjson::kParseNumbersAsStringsFlag>(json);
    const auto& out = doc["outputs"][0];
    EXPECT_STREQ(out["datatype"].GetString(), DataTypeName(type));
    const auto& data = out["data"];
    ASSERT_EQ(data.Size(), bits.size());
    int mismatches = 0;
    for (size_t i = 0; i < bits.size(); ++i) {
      const float wide = type == DataType::kBf16 ? Bf16ToFloat(bits[i]) : Fp16ToFloat(bits[i]);
      const auto& v = data[static_cast<rapidjson::SizeType>(i)];
      if (!std::isfinite(wide)) {
        EXPECT_TRUE(v.IsNull()) << i;
        continue;
      }
      const float back = std::strtof(v.GetString(), nullptr);
      const uint16_t narrowed = type == DataType::kBf16 ? FloatToBf16(back) : FloatToFp16(back);
      if ((Bits(back) != Bits(wide) || narrowed != bits[i]) && ++mismatches <= 10) {
        ADD_FAILURE() << "bits " << std::hex << bits[i] << " written as " << v.GetString();
      }
    }
    EXPECT_EQ(mismatches, 0);
  }
}

TEST(RestReplyTest, InferResponseJsonBinary) {
  const std::vector<float> values = {1.0f, 2.0f, 3.0f};
  inference::ModelInferResponse h = OutputHeader(3);
  (*h.mutable_outputs(0)->mutable_parameters())["note"].set_string_param("kept");
  h.clear_id();
  const std::string json = InferResponseJson(h, Bytes(values), true);
  rapidjson::Document doc = Parse(json);
  EXPECT_FALSE(doc.HasMember("id"));  // no id sent, none echoed
  const auto& out = doc["outputs"][0];
  EXPECT_FALSE(out.HasMember("data"));
  ASSERT_TRUE(out["parameters"].IsObject());
  EXPECT_EQ(out["parameters"]["binary_data_size"].GetInt64(), 12);
  EXPECT_STREQ(out["parameters"]["note"].GetString(), "kept");
  EXPECT_EQ(out["shape"][0].GetInt64(), 1);
  EXPECT_EQ(out["shape"][1].GetInt64(), 3);
  // JSON mode keeps the output's own parameters too, without binary_data_size.
  doc = Parse(InferResponseJson(h, Bytes(values), false));
  EXPECT_FALSE(doc["outputs"][0]["parameters"].HasMember("binary_data_size"));
  EXPECT_STREQ(doc["outputs"][0]["parameters"]["note"].GetString(), "kept");
  EXPECT_EQ(doc["outputs"][0]["data"].Size(), 3u);
}

// An output written to shared memory: no bytes in the response, so neither data nor
// binary_data_size, whichever mode was asked for.
TEST(RestReplyTest, InferResponseJsonEmptyOutput) {
  inference::ModelInferResponse h = OutputHeader(3);
  auto& params = *h.mutable_outputs(0)->mutable_parameters();
  params["shared_memory_region"].set_string_param("out");
  params["shared_memory_byte_size"].set_int64_param(12);
  for (bool binary : {false, true}) {
    rapidjson::Document doc = Parse(InferResponseJson(h, "", binary));
    const auto& out = doc["outputs"][0];
    EXPECT_FALSE(out.HasMember("data")) << binary;
    EXPECT_FALSE(out["parameters"].HasMember("binary_data_size")) << binary;
    EXPECT_STREQ(out["parameters"]["shared_memory_region"].GetString(), "out");
    EXPECT_EQ(out["parameters"]["shared_memory_byte_size"].GetInt64(), 12);
  }
  // Without output parameters: no parameters key at all.
  inference::ModelInferResponse bare = OutputHeader(3);
  rapidjson::Document doc = Parse(InferResponseJson(bare, "", true));
  EXPECT_FALSE(doc["outputs"][0].HasMember("parameters"));
  EXPECT_FALSE(doc["outputs"][0].HasMember("data"));
}

}  // namespace
}  // namespace sparkle
