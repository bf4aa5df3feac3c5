// ParseRestInferRequest (server/rest_infer_request.h): the KServe v2 REST infer JSON (with
// Triton's binary tensor data extension) into a ModelInferRequest header. Typed data by datatype,
// parameters of every JSON type at each level, the REST-only keys consumed, every refusal with
// INVALID_ARGUMENT and a message naming the problem, and a parsed conv2d request through the one
// request parser (server/request_parser.h).
#include "server/rest_infer_request.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/infer_request_reader.h"
#include "server/request_parser.h"

namespace sparkle {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// The request around one input object (its JSON text).
std::string WithInput(const std::string& input) {
  return absl::StrCat(R"({"inputs": [)", input, "]}");
}

RestInferRequest ParseOk(const std::string& json) {
  absl::StatusOr<RestInferRequest> r = ParseRestInferRequest(json);
  EXPECT_TRUE(r.ok()) << r.status() << "\n" << json;
  return r.ok() ? *std::move(r) : RestInferRequest();
}

// The refusal of `json`: INVALID_ARGUMENT with a message containing every one of `parts`.
void ExpectInvalid(const std::string& json, std::vector<std::string> parts) {
  absl::StatusOr<RestInferRequest> r = ParseRestInferRequest(json);
  ASSERT_FALSE(r.ok()) << "accepted: " << json;
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  for (const std::string& part : parts) {
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(part)) << json;
  }
}

TEST(RestInferRequestTest, FlatFp32DataGoesToFp32Contents) {
  RestInferRequest r = ParseOk(
      R"({"id": "req-7", "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3],)"
      R"( "data": [1.5, -2, 3e-3]}], "outputs": [{"name": "output"}]})");
  EXPECT_EQ(r.header.id(), "req-7");
  EXPECT_TRUE(r.header.model_name().empty());  // from the URL, set by the caller
  ASSERT_EQ(r.header.inputs_size(), 1);
  const auto& in = r.header.inputs(0);
  EXPECT_EQ(in.name(), "input");
  EXPECT_EQ(in.datatype(), "FP32");
  EXPECT_THAT(in.shape(), ElementsAre(1, 3));
  EXPECT_THAT(in.contents().fp32_contents(), ElementsAre(1.5f, -2.0f, 3e-3f));
  EXPECT_EQ(in.contents().ByteSizeLong(),
            inference::InferTensorContents().ByteSizeLong() + 2 + 3 * 4);  // fp32 only
  EXPECT_THAT(r.binary_sizes, ElementsAre(-1));
  ASSERT_EQ(r.header.outputs_size(), 1);
  EXPECT_EQ(r.header.outputs(0).name(), "output");
  EXPECT_THAT(r.binary_outputs, ElementsAre(false));
  EXPECT_FALSE(r.binary_data_output);
  EXPECT_TRUE(r.header.raw_input_contents().empty());
}

TEST(RestInferRequestTest, NestedDataIsFlattenedRowMajor) {
  RestInferRequest r = ParseOk(WithInput(
      R"({"name": "x", "datatype": "FP32", "shape": [2, 2, 2],)"
      R"( "data": [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]})"));
  ASSERT_EQ(r.header.inputs_size(), 1);
  EXPECT_THAT(r.header.inputs(0).contents().fp32_contents(),
              ElementsAre(1, 2, 3, 4, 5, 6, 7, 8));
  // Sixteen levels are allowed.
  std::string deep = "1";
  for (int i = 0; i < 16; ++i) deep = absl::StrCat("[", deep, "]");
  r = ParseOk(WithInput(absl::StrCat(R"({"name": "x", "datatype": "FP32", "data": )", deep, "}")));
  ASSERT_EQ(r.header.inputs_size(), 1);
  EXPECT_THAT(r.header.inputs(0).contents().fp32_contents(), ElementsAre(1.0f));
}

TEST(RestInferRequestTest, EachDatatypeFillsItsTypedField) {
  auto contents = [](const std::string& type, const std::string& data) {
    RestInferRequest r = ParseOk(WithInput(absl::StrCat(
        R"({"name": "t", "datatype": ")", type, R"(", "shape": [3], "data": )", data, "}")));
    return r.header.inputs_size() == 1 ? r.header.inputs(0).contents()
                                       : inference::InferTensorContents();
  };
  EXPECT_THAT(contents("INT32", "[-2147483648, 0, 2147483647]").int_contents(),
              ElementsAre(std::numeric_limits<int32_t>::min(), 0, 2147483647));
  EXPECT_THAT(contents("INT8", "[-128, 0, 127]").int_contents(), ElementsAre(-128, 0, 127));
  EXPECT_THAT(contents("INT16", "[-32768, 1, 32767]").int_contents(),
              ElementsAre(-32768, 1, 32767));
  EXPECT_THAT(contents("INT64", "[-9007199254740992, 5, 9007199254740992]").int64_contents(),
              ElementsAre(-9007199254740992LL, 5, 9007199254740992LL));
  EXPECT_THAT(contents("UINT8", "[0, 128, 255]").uint_contents(), ElementsAre(0u, 128u, 255u));
  EXPECT_THAT(contents("UINT16", "[0, 1, 65535]").uint_contents(), ElementsAre(0u, 1u, 65535u));
  EXPECT_THAT(contents("UINT32", "[0, 1, 4294967295]").uint_contents(),
              ElementsAre(0u, 1u, 4294967295u));
  EXPECT_THAT(contents("UINT64", "[0, 1, 4294967296]").uint64_contents(),
              ElementsAre(0u, 1u, 4294967296u));
  EXPECT_THAT(contents("BOOL", "[true, false, true]").bool_contents(),
              ElementsAre(true, false, true));
  EXPECT_THAT(contents("BYTES", R"(["a", "", "\u00e9\n"])").bytes_contents(),
              ElementsAre("a", "", "\xc3\xa9\n"));
  EXPECT_THAT(contents("FP64", "[0.1, -1e300, 5]").fp64_contents(),
              ElementsAre(0.1, -1e300, 5.0));
  // Integers are numbers for FP32 too, and an integral double is an integer for INT32.
  EXPECT_THAT(contents("FP32", "[1, 2, 3]").fp32_contents(), ElementsAre(1, 2, 3));
  EXPECT_THAT(contents("INT32", "[1.0, -2.0, 3e2]").int_contents(), ElementsAre(1, -2, 300));
}

// Integer data keeps every integer the datatype holds, at its limits.
TEST(RestInferRequestTest, Int64AndUint64DataAtTheirLimits) {
  // 2^63 - 1 and 2^64 - 1 are integers that INT64 / UINT64 hold; the parser must either keep
  // them exactly or refuse them (never store a rounded value, never overflow a cast).
  absl::StatusOr<RestInferRequest> r = ParseRestInferRequest(WithInput(
      R"({"name": "t", "datatype": "INT64", "data": [9223372036854775807, -9223372036854775808]})"));
  if (r.ok()) {
    EXPECT_THAT(r->header.inputs(0).contents().int64_contents(),
                ElementsAre(std::numeric_limits<int64_t>::max(),
                            std::numeric_limits<int64_t>::min()));
  } else {
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  }
  r = ParseRestInferRequest(
      WithInput(R"({"name": "t", "datatype": "UINT64", "data": [18446744073709551615]})"));
  if (r.ok()) {
    EXPECT_THAT(r->header.inputs(0).contents().uint64_contents(),
                ElementsAre(std::numeric_limits<uint64_t>::max()));
  } else {
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  }
  // 2^53 + 1 is not a double: kept exactly or refused, never rounded to 2^53.
  r = ParseRestInferRequest(
      WithInput(R"({"name": "t", "datatype": "INT64", "data": [9007199254740993]})"));
  if (r.ok()) {
    EXPECT_THAT(r->header.inputs(0).contents().int64_contents(),
                ElementsAre(int64_t{9007199254740993}));
  }
}

TEST(RestInferRequestTest, DataBeforeDatatypeAndShape) {
  RestInferRequest r = ParseOk(WithInput(
      R"({"data": [[1, 2, 3]], "shape": [1, 3], "datatype": "INT32", "name": "late"})"));
  ASSERT_EQ(r.header.inputs_size(), 1);
  const auto& in = r.header.inputs(0);
  EXPECT_EQ(in.name(), "late");
  EXPECT_THAT(in.shape(), ElementsAre(1, 3));
  EXPECT_THAT(in.contents().int_contents(), ElementsAre(1, 2, 3));
  EXPECT_THAT(in.contents().fp32_contents(), IsEmpty());
  // Two inputs: each gets its own data, whichever order the keys come in.
  r = ParseOk(R"({"inputs": [{"data": [true], "datatype": "BOOL", "name": "a"},)"
              R"( {"name": "b", "datatype": "FP32", "data": [0.25]}]})");
  ASSERT_EQ(r.header.inputs_size(), 2);
  EXPECT_THAT(r.header.inputs(0).contents().bool_contents(), ElementsAre(true));
  EXPECT_THAT(r.header.inputs(1).contents().fp32_contents(), ElementsAre(0.25f));
  EXPECT_THAT(r.header.inputs(1).contents().bool_contents(), IsEmpty());
}

TEST(RestInferRequestTest, ShapeAndEmptyData) {
  RestInferRequest r =
      ParseOk(WithInput(R"({"name": "x", "datatype": "FP32", "shape": [0, 2147483648, 7]})"));
  ASSERT_EQ(r.header.inputs_size(), 1);
  EXPECT_THAT(r.header.inputs(0).shape(), ElementsAre(0, 2147483648LL, 7));
  EXPECT_EQ(r.header.inputs(0).contents().ByteSizeLong(), 0u);
  r = ParseOk(WithInput(R"({"name": "x", "datatype": "FP32", "shape": [], "data": []})"));
  ASSERT_EQ(r.header.inputs_size(), 1);
  EXPECT_THAT(r.header.inputs(0).shape(), IsEmpty());
  EXPECT_THAT(r.header.inputs(0).contents().fp32_contents(), IsEmpty());
}

// The value of parameter `key` at each level, from the same JSON value.
TEST(RestInferRequestTest, ParametersOfEveryJsonTypeAtEachLevel) {
  const std::string params =
      R"({"flag": true, "off": false, "n": 3, "neg": -7, "big": 9223372036854775807,)"
      R"( "x": 2.5, "s": "hello"})";
  RestInferRequest r = ParseOk(absl::StrCat(
      R"({"parameters": )", params, R"(, "inputs": [{"name": "i", "datatype": "FP32",)",
      R"( "shape": [1], "parameters": )", params, R"(}], "outputs": [{"name": "o",)",
      R"( "parameters": )", params, "}]}"));
  ASSERT_EQ(r.header.inputs_size(), 1);
  ASSERT_EQ(r.header.outputs_size(), 1);
  const google::protobuf::Map<std::string, inference::InferParameter>* levels[] = {
      &r.header.parameters(), &r.header.inputs(0).parameters(),
      &r.header.outputs(0).parameters()};
  for (const auto* p : levels) {
    ASSERT_EQ(p->size(), 7u);
    EXPECT_EQ(p->at("flag").parameter_choice_case(), inference::InferParameter::kBoolParam);
    EXPECT_TRUE(p->at("flag").bool_param());
    EXPECT_EQ(p->at("off").parameter_choice_case(), inference::InferParameter::kBoolParam);
    EXPECT_FALSE(p->at("off").bool_param());
    EXPECT_EQ(p->at("n").parameter_choice_case(), inference::InferParameter::kInt64Param);
    EXPECT_EQ(p->at("n").int64_param(), 3);
    EXPECT_EQ(p->at("neg").int64_param(), -7);
    EXPECT_EQ(p->at("big").int64_param(), std::numeric_limits<int64_t>::max());
    EXPECT_EQ(p->at("x").parameter_choice_case(), inference::InferParameter::kDoubleParam);
    EXPECT_EQ(p->at("x").double_param(), 2.5);
    EXPECT_EQ(p->at("s").parameter_choice_case(), inference::InferParameter::kStringParam);
    EXPECT_EQ(p->at("s").string_param(), "hello");
  }
  ExpectInvalid(R"({"parameters": {"n": 9223372036854775808}})", {"9223372036854775808", "too large"});
}

TEST(RestInferRequestTest, BinaryExtensionKeysAreConsumedNotForwarded) {
  RestInferRequest r = ParseOk(
      R"({"parameters": {"binary_data_output": true, "pad": 1},)"
      R"( "inputs": [{"name": "input", "datatype": "FP32", "shape": [2],)"
      R"(   "parameters": {"binary_data_size": 8}},)"
      R"(  {"name": "weight", "datatype": "FP32", "shape": [1], "data": [1]},)"
      R"(  {"name": "bias", "datatype": "FP32", "shape": [1],)"
      R"(   "parameters": {"binary_data_size": 0, "layout": "NCHW"}}],)"
      R"( "outputs": [{"name": "output", "parameters": {"binary_data": true}},)"
      R"(  {"name": "other", "parameters": {"binary_data": false, "k": 1}}, {"name": "third"}]})");
  ASSERT_EQ(r.header.inputs_size(), 3);
  ASSERT_EQ(r.header.outputs_size(), 3);
  EXPECT_TRUE(r.binary_data_output);
  EXPECT_THAT(r.binary_sizes, ElementsAre(8, -1, 0));
  EXPECT_THAT(r.binary_outputs, ElementsAre(true, false, false));
  ASSERT_EQ(r.header.parameters().size(), 1u);
  EXPECT_TRUE(r.header.parameters().contains("pad"));
  EXPECT_TRUE(r.header.inputs(0).parameters().empty());
  ASSERT_EQ(r.header.inputs(2).parameters().size(), 1u);
  EXPECT_EQ(r.header.inputs(2).parameters().at("layout").string_param(), "NCHW");
  EXPECT_TRUE(r.header.outputs(0).parameters().empty());
  ASSERT_EQ(r.header.outputs(1).parameters().size(), 1u);
  EXPECT_TRUE(r.header.outputs(1).parameters().contains("k"));
  // binary_data_output false is taken too, and still not forwarded.
  r = ParseOk(R"({"parameters": {"binary_data_output": false}})");
  EXPECT_FALSE(r.binary_data_output);
  EXPECT_TRUE(r.header.parameters().empty());
  // The REST keys only mean something at their own level; elsewhere they are ordinary
  // parameters that the request parser judges (docs/protocol.md: ignored keys).
  r = ParseOk(R"({"parameters": {"binary_data_size": 4, "binary_data": true}})");
  EXPECT_EQ(r.header.parameters().size(), 2u);
}

TEST(RestInferRequestTest, SyntaxErrorsNameTheOffset) {
  ExpectInvalid(R"({"inputs": [}")", {"does not parse", "at byte 12"});
  ExpectInvalid("", {"does not parse", "at byte 0"});
  ExpectInvalid(R"({"id": "a")", {"does not parse"});
  ExpectInvalid(R"({"id": "a"} {})", {"does not parse", "at byte 12"});
  ExpectInvalid(R"({"id": 'a'})", {"does not parse", "at byte 7"});
  ExpectInvalid(R"({"parameters": {"x": 1e999}})", {"does not parse"});
  ExpectInvalid(R"({"parameters": {"x": NaN}})", {"does not parse"});
}

TEST(RestInferRequestTest, UnknownKeysAtEachLevel) {
  ExpectInvalid(R"({"model": "conv2d"})", {"unknown key 'model'", "the request"});
  ExpectInvalid(WithInput(R"({"name": "x", "dtype": "FP32"})"),
                {"unknown key 'dtype'", "input 0"});
  ExpectInvalid(R"({"inputs": [{"name": "a"}, {"name": "b", "contents": {}}]})",
                {"unknown key 'contents'", "input 1"});
  ExpectInvalid(R"({"outputs": [{"name": "o", "datatype": "FP32"}]})",
                {"unknown key 'datatype'", "output 0"});
  // The request's own fields that JSON must not set (they come from the URL or the body).
  ExpectInvalid(R"({"model_name": "conv2d"})", {"unknown key 'model_name'"});
  ExpectInvalid(R"({"raw_input_contents": []})", {"unknown key 'raw_input_contents'"});
}

TEST(RestInferRequestTest, NullIsRefusedEverywhere) {
  ExpectInvalid("null", {"null"});
  ExpectInvalid(R"({"id": null})", {"null"});
  ExpectInvalid(R"({"parameters": {"p": null}})", {"null"});
  ExpectInvalid(WithInput(R"({"name": "x", "datatype": "FP32", "data": [1, null]})"), {"null"});
  ExpectInvalid(WithInput(R"({"name": "x", "shape": null})"), {"null"});
}

TEST(RestInferRequestTest, DataThatDoesNotFitItsDatatype) {
  ExpectInvalid(WithInput(R"({"name": "x", "datatype": "FP32", "data": [1, "2"]})"),
                {"'data' of input 0", "mixes numbers, booleans and strings"});
  ExpectInvalid(WithInput(R"({"name": "x", "datatype": "BOOL", "data": [[true], [1]]})"),
                {"mixes"});
  ExpectInvalid(WithInput(R"({"name": "x", "datatype": "FP16", "data": [1, 2]})"),
                {"input 'x'", "datatype 'FP16' cannot be sent as JSON", "binary_data_size"});
  ExpectInvalid(WithInput(R"({"name": "x", "datatype": "BF16", "data": [1]})"), {"'BF16'"});
  ExpectInvalid(WithInput(R"({"name": "x", "data": [1]})"), {"input 'x'", "datatype ''"});
  ExpectInvalid(WithInput(R"({"name": "x", "datatype": "INT8", "data": [300]})"),
                {"input 'x'", "does not fit its datatype 'INT8'"});
  ExpectInvalid(WithInput(R"({"name": "x", "datatype": "INT8", "data": [-129]})"), {"'INT8'"});
  ExpectInvalid(WithInput(R"({"name": "x", "datatype": "UINT8", "data": [-1]})"), {"'UINT8'"});
  ExpectInvalid(WithInput(R"({"name": "x", "datatype": "UINT32", "data": [4294967296]})"),
                {"'UINT32'"});
  ExpectInvalid(WithInput(R"({"name": "x", "datatype": "INT32", "data": [2147483648]})"),
                {"'INT32'"});
  ExpectInvalid(WithInput(R"({"name": "x", "datatype": "FP32", "data": [1e39]})"),
                {"does not fit its datatype 'FP32'"});
  ExpectInvalid(WithInput(R"({"name": "x", "datatype": "FP32", "data": [-1e39]})"), {"'FP32'"});
  ExpectInvalid(WithInput(R"({"name": "x", "datatype": "INT32", "data": [1.5]})"),
                {"does not fit its datatype 'INT32'"});
  ExpectInvalid(WithInput(R"({"name": "x", "datatype": "INT64", "data": [1e-300]})"),
                {"'INT64'"});
  ExpectInvalid(WithInput(R"({"name": "x", "datatype": "BOOL", "data": [1]})"), {"'BOOL'"});
  ExpectInvalid(WithInput(R"({"name": "x", "datatype": "BYTES", "data": [1]})"), {"'BYTES'"});
  ExpectInvalid(WithInput(R"({"name": "x", "datatype": "FP32", "data": [true]})"), {"'FP32'"});
  ExpectInvalid(WithInput(R"({"name": "x", "datatype": "FP32", "data": ["1.0"]})"), {"'FP32'"});
  ExpectInvalid(WithInput(R"({"name": "x", "datatype": "FP32", "data": [1], "data": [2]})"),
                {"two 'data' in input 0"});
  ExpectInvalid(WithInput(R"({"name": "x", "datatype": "FP32", "data": 1})"),
                {"unexpected an integer for 'data'"});
  ExpectInvalid(WithInput(R"({"name": "x", "datatype": "FP32", "data": [{"v": 1}]})"),
                {"unexpected an object"});
}

// FP32 values that round to a finite float are FP32 data: FLT_MAX as its shortest decimal
// (3.4028235e38, which InferResponseJson itself writes) is a little above FLT_MAX as a double.
TEST(RestInferRequestTest, Fp32DataAtTheFloatLimits) {
  RestInferRequest r = ParseOk(WithInput(
      R"({"name": "x", "datatype": "FP32", "data": [3.4028234663852886e38, -3.4028234663852886e38,)"
      R"( 1e-45, 1.17549435e-38, 0, -0.0]})"));
  ASSERT_EQ(r.header.inputs_size(), 1);
  EXPECT_THAT(r.header.inputs(0).contents().fp32_contents(),
              ElementsAre(std::numeric_limits<float>::max(), -std::numeric_limits<float>::max(),
                          std::numeric_limits<float>::denorm_min(),
                          std::numeric_limits<float>::min(), 0.0f, -0.0f));
  r = ParseOk(WithInput(R"({"name": "x", "datatype": "FP32", "data": [3.4028235e38, -3.4028235e+38]})"));
  ASSERT_EQ(r.header.inputs_size(), 1);
  EXPECT_THAT(r.header.inputs(0).contents().fp32_contents(),
              ElementsAre(std::numeric_limits<float>::max(), -std::numeric_limits<float>::max()));
  // Halfway between FLT_MAX and 2^128 rounds to infinity: refused.
  ExpectInvalid(WithInput(R"({"name": "x", "datatype": "FP32", "data": [3.4028235677973366e38]})"),
                {"'FP32'"});
}

// Zero written with an exponent is zero. (RapidJSON 1.1.0 with kParseFullPrecisionFlag reads
// "0e+300" as -2.2e-75 and "0.000e200" as 7.7e53: StrtodDiyFp normalises a zero significand,
// clz(0), found by rest_request_fuzz.)
TEST(RestInferRequestTest, ZeroWithAnExponentIsZero) {
  RestInferRequest r = ParseOk(absl::StrCat(
      R"({"parameters": {"a": 0e+300, "b": 0.000e200, "c": 0e-300, "d": -0.0e10},)",
      R"( "inputs": [{"name": "x", "datatype": "FP64", "data": [0e300, 0.0e+300, 1.5e0]}]})"));
  ASSERT_EQ(r.header.inputs_size(), 1);
  for (const char* key : {"a", "b", "c", "d"}) {
    ASSERT_TRUE(r.header.parameters().contains(key)) << key;
    EXPECT_EQ(r.header.parameters().at(key).double_param(), 0.0) << key;
  }
  EXPECT_THAT(r.header.inputs(0).contents().fp64_contents(), ElementsAre(0.0, 0.0, 1.5));
}

TEST(RestInferRequestTest, ShapeAndSizeErrors) {
  ExpectInvalid(WithInput(R"({"name": "x", "shape": [1, -3]})"),
                {"negative dimension -3 in input 0"});
  ExpectInvalid(WithInput(R"({"name": "x", "shape": [1.5]})"),
                {"unexpected a number with a fraction for 'shape'"});
  ExpectInvalid(WithInput(R"({"name": "x", "shape": ["1"]})"), {"unexpected a string"});
  ExpectInvalid(WithInput(R"({"name": "x", "shape": [[1]]})"), {"unexpected an array"});
  ExpectInvalid(WithInput(R"({"name": "x", "shape": [18446744073709551615]})"),
                {"18446744073709551615 is too large"});
  ExpectInvalid(WithInput(R"({"name": "x", "parameters": {"binary_data_size": -1}})"),
                {"negative binary_data_size in input 0"});
  ExpectInvalid(WithInput(R"({"name": "x", "datatype": "FP32", "data": [1],)"
                          R"( "parameters": {"binary_data_size": 4}})"),
                {"input 'x' has both 'data' and binary_data_size"});
  // The same, with the parameters before the data.
  ExpectInvalid(WithInput(R"({"name": "y", "parameters": {"binary_data_size": 4},)"
                          R"( "datatype": "FP32", "data": [1]})"),
                {"input 'y' has both"});
}

TEST(RestInferRequestTest, DataNestedDeeperThan16Levels) {
  std::string deep = "1";
  for (int i = 0; i < 17; ++i) deep = absl::StrCat("[", deep, "]");
  ExpectInvalid(WithInput(absl::StrCat(R"({"name": "x", "datatype": "FP32", "data": )", deep, "}")),
                {"'data' of input 0 is nested deeper than 16 levels"});
  // A hostile depth costs no stack (iterative reader): a million brackets are refused.
  std::string hostile = absl::StrCat(R"({"inputs": [{"data": )", std::string(1000000, '['));
  ExpectInvalid(hostile, {"nested deeper than 16"});
  ExpectInvalid(std::string(1000000, '['), {"unexpected an array"});
  std::string objects;
  for (int i = 0; i < 100000; ++i) objects += R"({"parameters": )";
  ExpectInvalid(objects, {"unexpected an object"});
}

TEST(RestInferRequestTest, TopLevelMustBeAnObject) {
  ExpectInvalid("[]", {"unexpected an array in the request"});
  ExpectInvalid(R"([{"inputs": []}])", {"unexpected an array"});
  ExpectInvalid("42", {"unexpected an integer in the request"});
  ExpectInvalid("4.5", {"unexpected a number with a fraction"});
  ExpectInvalid(R"("text")", {"unexpected a string"});
  ExpectInvalid("true", {"unexpected a boolean"});
  // An empty object is a request with nothing in it (the request parser refuses it).
  RestInferRequest r = ParseOk("{}");
  EXPECT_EQ(r.header.inputs_size(), 0);
}

TEST(RestInferRequestTest, InvalidUtf8IsRefused) {
  ExpectInvalid(absl::StrCat(R"({"id": ")", "\xff\xfe", R"("})"), {"does not parse", "at byte"});
  ExpectInvalid(absl::StrCat(R"({"id": ")", "\xc3", R"("})"), {"does not parse"});
  ExpectInvalid(absl::StrCat(R"({"parameters": {")", "\xed\xa0\x80", R"(": 1}})"),
                {"does not parse"});  // a UTF-16 surrogate in UTF-8
  ExpectInvalid(WithInput(absl::StrCat(R"({"name": "x", "datatype": "BYTES", "data": [")",
                                       "\x80", R"("]})")),
                {"does not parse"});
  ExpectInvalid(R"({"id": "\ud800"})", {"does not parse"});  // lone surrogate escape
  // Valid UTF-8 and escapes go through.
  RestInferRequest r = ParseOk(R"({"id": "caf\u00e9 \u2603 \ud83d\ude00 )"
                               "\xe2\x82\xac\"}");
  EXPECT_EQ(r.header.id(), "caf\xc3\xa9 \xe2\x98\x83 \xf0\x9f\x98\x80 \xe2\x82\xac");
}

TEST(RestInferRequestTest, WrongTypesForRestKeys) {
  ExpectInvalid(WithInput(R"({"name": "x", "parameters": {"binary_data_size": "x"}})"),
                {"unexpected a string for 'binary_data_size' in input 0"});
  ExpectInvalid(WithInput(R"({"name": "x", "parameters": {"binary_data_size": true}})"),
                {"unexpected a boolean for 'binary_data_size'"});
  ExpectInvalid(WithInput(R"({"name": "x", "parameters": {"binary_data_size": 4.5}})"),
                {"unexpected a number with a fraction for 'binary_data_size'"});
  ExpectInvalid(WithInput(R"({"name": "x", "parameters": {"binary_data_size": [4]}})"),
                {"unexpected an array"});
  ExpectInvalid(R"({"outputs": [{"name": "o", "parameters": {"binary_data": 1}}]})",
                {"unexpected an integer for 'binary_data' in output 0"});
  ExpectInvalid(R"({"outputs": [{"name": "o", "parameters": {"binary_data": "true"}}]})",
                {"unexpected a string for 'binary_data'"});
  ExpectInvalid(R"({"parameters": {"binary_data_output": 1}})",
                {"unexpected an integer for 'binary_data_output' in the request's parameters"});
  ExpectInvalid(R"({"parameters": {"binary_data_output": "yes"}})", {"unexpected a string"});
  // And for the request's own keys.
  ExpectInvalid(R"({"id": 5})", {"unexpected an integer for 'id'"});
  ExpectInvalid(R"({"inputs": {}})", {"unexpected an object for 'inputs'"});
  ExpectInvalid(R"({"parameters": []})", {"unexpected an array for 'parameters'"});
  ExpectInvalid(R"({"parameters": {"nested": {"a": 1}}})", {"unexpected an object"});
  ExpectInvalid(R"({"parameters": {"list": [1]}})", {"unexpected an array"});
  ExpectInvalid(WithInput(R"({"name": 7})"), {"unexpected an integer for 'name'"});
  ExpectInvalid(WithInput(R"({"datatype": ["FP32"]})"), {"unexpected an array for 'datatype'"});
  ExpectInvalid(R"({"outputs": [{"name": true}]})", {"unexpected a boolean for 'name'"});
  ExpectInvalid(R"({"outputs": ["output"]})", {"unexpected a string"});
  ExpectInvalid(R"({"inputs": [1]})", {"unexpected an integer"});
}

// A valid conv2d request in JSON, through the parser every path uses.
TEST(RestInferRequestTest, Conv2dRequestThroughTheRequestParser) {
  std::string input, weight;
  for (int i = 0; i < 1 * 2 * 4 * 4; ++i) absl::StrAppend(&input, i ? ", " : "", i * 0.5);
  for (int i = 0; i < 3 * 2 * 3 * 3; ++i) absl::StrAppend(&weight, i ? ", " : "", i - 9);
  RestInferRequest r = ParseOk(absl::StrCat(
      R"({"id": "c1", "parameters": {"pad": 1, "stride": 2, "binary_data_output": false},)",
      R"( "inputs": [{"name": "weight", "datatype": "FP32", "shape": [3, 2, 3, 3], "data": [)",
      weight, R"(]}, {"name": "input", "datatype": "FP32", "shape": [1, 2, 4, 4], "data": [)",
      input, R"(]}, {"name": "bias", "datatype": "FP32", "shape": [3], "data": [1, 2, 3]}],)",
      R"( "outputs": [{"name": "output", "parameters": {"binary_data": true}}]})"));
  ASSERT_EQ(r.header.inputs_size(), 3);
  ASSERT_EQ(r.binary_outputs.size(), 1u);
  r.header.set_model_name("conv2d");
  absl::StatusOr<ParsedInferRequest> parsed = ParseInferRequest(ViewOf(r.header), ParseContext());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const Conv2dParams& p = parsed->params;
  EXPECT_EQ(p.n, 1);
  EXPECT_EQ(p.c, 2);
  EXPECT_EQ(p.h, 4);
  EXPECT_EQ(p.w, 4);
  EXPECT_EQ(p.k, 3);
  EXPECT_EQ(p.r, 3);
  EXPECT_EQ(p.s, 3);
  EXPECT_EQ(p.pad_top, 1);
  EXPECT_EQ(p.pad_left, 1);
  EXPECT_EQ(p.stride_h, 2);
  EXPECT_EQ(p.stride_w, 2);
  EXPECT_TRUE(p.has_bias);
  EXPECT_EQ(p.p(), 2);
  EXPECT_EQ(p.q(), 2);
  // The tensors are read in place from the typed contents.
  EXPECT_EQ(parsed->input, r.header.inputs(1).contents().fp32_contents().data());
  EXPECT_EQ(static_cast<const float*>(parsed->input)[31], 15.5f);
  EXPECT_EQ(static_cast<const float*>(parsed->weight)[0], -9.0f);
  EXPECT_EQ(static_cast<const float*>(parsed->bias)[2], 3.0f);
  EXPECT_TRUE(r.binary_outputs[0]);

  // The same geometry with binary input bytes: the header says the size, the bytes come as
  // raw inputs (in input order), as rest_service.cc hands them over.
  RestInferRequest b = ParseOk(
      R"({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2, 4, 4],)"
      R"( "parameters": {"binary_data_size": 128}}, {"name": "weight", "datatype": "FP32",)"
      R"( "shape": [3, 2, 3, 3], "parameters": {"binary_data_size": 216}}]})");
  b.header.set_model_name("conv2d");
  ASSERT_THAT(b.binary_sizes, ElementsAre(128, 216));
  std::vector<float> in_bytes(32, 1.0f), w_bytes(54, 2.0f);
  InferRequestView view = ViewOf(b.header);
  for (const auto* v : {&in_bytes, &w_bytes}) {
    TensorBytes t;
    t.size = static_cast<int64_t>(v->size() * sizeof(float));
    t.pieces.emplace_back(reinterpret_cast<const char*>(v->data()), v->size() * sizeof(float));
    view.raw_inputs.push_back(std::move(t));
  }
  parsed = ParseInferRequest(view, ParseContext());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->params.k, 3);
  EXPECT_FALSE(parsed->params.has_bias);
  EXPECT_EQ(parsed->input, in_bytes.data());
  EXPECT_EQ(parsed->weight, w_bytes.data());

  // The REST keys never reach the parser, which refuses unknown parameters: so a parameter the
  // parser does not know, sent over REST, is still refused there.
  RestInferRequest bad = ParseOk(absl::StrCat(
      R"({"parameters": {"colour": "red"}, "inputs": [{"name": "input", "datatype": "FP32",)",
      R"( "shape": [1, 2, 4, 4], "data": [)", input, "]}]}"));
  bad.header.set_model_name("conv2d");
  parsed = ParseInferRequest(ViewOf(bad.header), ParseContext());
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
}

// Issue 13 over REST: BF16 tensors as binary data (binary_data_size), a residual, the
// activation parameters and the output datatype FP32 reach the one request parser as on gRPC.
// JSON data cannot carry BF16/FP16 (refused with a message pointing at binary data).
TEST(RestInferRequestTest, Bf16BinaryTensorsWithResidualAndFp32Output) {
  // input [1, 2, 4, 4] (32 BF16: 64 bytes), weight [3, 2, 3, 3] (54: 108 bytes), pad 1,
  // residual [1, 3, 4, 4] (48: 96 bytes).
  RestInferRequest r = ParseOk(
      R"({"id": "bf16", "parameters": {"pad": 1, "activation": "clip", "clip_min": -1,)"
      R"( "clip_max": 2.5, "binary_data_output": true},)"
      R"( "inputs": [{"name": "input", "datatype": "BF16", "shape": [1, 2, 4, 4],)"
      R"( "parameters": {"binary_data_size": 64}},)"
      R"( {"name": "weight", "datatype": "BF16", "shape": [3, 2, 3, 3],)"
      R"( "parameters": {"binary_data_size": 108}},)"
      R"( {"name": "residual", "datatype": "BF16", "shape": [1, 3, 4, 4],)"
      R"( "parameters": {"binary_data_size": 96}}],)"
      R"( "outputs": [{"name": "output", "parameters": {"datatype": "FP32", "binary_data": true}}]})");
  r.header.set_model_name("conv2d");
  ASSERT_THAT(r.binary_sizes, ElementsAre(64, 108, 96));
  EXPECT_TRUE(r.binary_outputs[0]);
  // The REST key is consumed; `datatype` goes on to the parser.
  ASSERT_EQ(r.header.outputs(0).parameters().size(), 1u);
  EXPECT_EQ(r.header.outputs(0).parameters().at("datatype").string_param(), "FP32");
  std::vector<uint16_t> in(32, 0x3f80), w(54, 0x4000), res(48, 0xbf80);  // 1, 2, -1
  InferRequestView view = ViewOf(r.header);
  for (const auto* v : {&in, &w, &res}) {
    TensorBytes t;
    t.size = static_cast<int64_t>(v->size() * 2);
    t.pieces.emplace_back(reinterpret_cast<const char*>(v->data()), v->size() * 2);
    view.raw_inputs.push_back(std::move(t));
  }
  absl::StatusOr<ParsedInferRequest> parsed = ParseInferRequest(view, ParseContext());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const Conv2dParams& p = parsed->params;
  EXPECT_EQ(p.dtype, DataType::kBf16);
  EXPECT_EQ(p.output_dtype, DataType::kFp32);
  EXPECT_TRUE(p.has_residual);
  EXPECT_EQ(p.activation, Activation::kClip);
  EXPECT_EQ(p.clip_min, -1.0f);
  EXPECT_EQ(p.clip_max, 2.5f);
  EXPECT_EQ(parsed->input, static_cast<const void*>(in.data()));
  EXPECT_EQ(parsed->weight, static_cast<const void*>(w.data()));
  EXPECT_EQ(parsed->residual, static_cast<const void*>(res.data()));

  // A BF16 byte count of FP32 size is refused by the parser, naming the datatype.
  view.raw_inputs[2].size = 192;
  std::vector<uint16_t> big(96, 0);
  view.raw_inputs[2].pieces[0] = absl::string_view(reinterpret_cast<const char*>(big.data()), 192);
  parsed = ParseInferRequest(view, ParseContext());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(parsed.status().message()),
              HasSubstr("48 BF16 elements (96 bytes), but raw_input_contents[2] holds 192"));

  // JSON data of BF16 / FP16: refused, pointing at binary data.
  for (const char* type : {"BF16", "FP16"}) {
    ExpectInvalid(WithInput(absl::StrCat(R"({"name": "input", "datatype": ")", type,
                                         R"(", "shape": [1], "data": [1.5]})")),
                  {absl::StrCat("datatype '", type, "' cannot be sent as JSON"),
                   "binary_data_size"});
  }
}

}  // namespace
}  // namespace sparkle
