// ParseInferRequest with the `weight_id` parameter (registered weights).
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/request_parser.h"

namespace sparkle {
namespace {

using ::testing::HasSubstr;

class WeightIdParseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto registry = WeightRegistry::Create({});
    ASSERT_TRUE(registry.ok());
    registry_ = *std::move(registry);
    WeightHeader header;
    header.shape = {6, 4, 3, 3};
    header.bias = std::vector<float>(6, 0.5f);
    auto reg = registry_->Register(header, std::vector<float>(6 * 4 * 9, 1.0f));
    ASSERT_TRUE(reg.ok());
    id_ = reg->weight->id();
  }

  // input [1, 4, 8, 8] by weight_id, pad 1.
  inference::ModelInferRequest Request(const std::string& id) const {
    inference::ModelInferRequest r;
    r.set_model_name("conv2d");
    (*r.mutable_parameters())["pad"].set_int64_param(1);
    (*r.mutable_parameters())["weight_id"].set_string_param(id);
    auto* t = r.add_inputs();
    t->set_name("input");
    t->set_datatype("FP32");
    for (int64_t d : {1, 4, 8, 8}) t->add_shape(d);
    r.add_raw_input_contents()->assign(4 * 8 * 8 * 4, '\0');
    return r;
  }

  std::unique_ptr<WeightRegistry> registry_;
  std::string id_;
};

// The registration's datatype must be the request's (issue 13): FP32 weights, BF16 input.
TEST_F(WeightIdParseTest, RegisteredWeightsOfAnotherDatatypeAreRefused) {
  inference::ModelInferRequest r = Request(id_);
  r.mutable_inputs(0)->set_datatype("BF16");
  r.mutable_raw_input_contents(0)->resize(4 * 8 * 8 * 2);
  auto parsed = ParseInferRequest(r, ParseLimits(), registry_.get());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(parsed.status().message()),
              HasSubstr(absl::StrCat("the registered weights '", id_,
                                     "' are FP32 but the request's tensors are BF16")));
  EXPECT_EQ(registry_->List()[0]->in_use(), 0);  // the refused request holds nothing
}

TEST_F(WeightIdParseTest, GeometryAndBiasComeFromTheRegistration) {
  auto parsed = ParseInferRequest(Request(id_), ParseLimits(), registry_.get());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->params.k, 6);
  EXPECT_EQ(parsed->params.r, 3);
  EXPECT_TRUE(parsed->params.has_bias);
  ASSERT_NE(parsed->registered_weight, nullptr);
  EXPECT_EQ(parsed->weight, parsed->registered_weight->weight());
  EXPECT_EQ(parsed->bias, parsed->registered_weight->bias());
  EXPECT_EQ(parsed->registered_weight->in_use(), 1);
  parsed = absl::CancelledError("dropped");
  EXPECT_EQ(registry_->List()[0]->in_use(), 0);
}

TEST_F(WeightIdParseTest, UnknownIdOrNoRegistryIsNotFound) {
  auto parsed = ParseInferRequest(Request("sha256:beef"), ParseLimits(), registry_.get());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(parsed.status().message(), HasSubstr("sha256:beef"));
  parsed = ParseInferRequest(Request(id_), ParseLimits(), nullptr);
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(WeightIdParseTest, WeightOrBiasWithWeightIdIsInvalidArgument) {
  for (const char* name : {"weight", "bias"}) {
    inference::ModelInferRequest r = Request(id_);
    auto* t = r.add_inputs();
    t->set_name(name);
    t->set_datatype("FP32");
    t->add_shape(6);
    r.add_raw_input_contents()->assign(24, '\0');
    auto parsed = ParseInferRequest(r, ParseLimits(), registry_.get());
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_THAT(parsed.status().message(), HasSubstr("weight_id"));
  }
}

TEST_F(WeightIdParseTest, MismatchedInputAndWrongParameterTypeAreInvalidArgument) {
  inference::ModelInferRequest r = Request(id_);
  r.mutable_inputs(0)->set_shape(1, 8);  // C=8, registered C/groups=4
  r.mutable_raw_input_contents(0)->assign(8 * 8 * 8 * 4, '\0');
  EXPECT_EQ(ParseInferRequest(r, ParseLimits(), registry_.get()).status().code(),
            absl::StatusCode::kInvalidArgument);
  r = Request(id_);
  (*r.mutable_parameters())["weight_id"].set_int64_param(3);
  EXPECT_EQ(ParseInferRequest(r, ParseLimits(), registry_.get()).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Without weight_id, a missing weight names both ways to give one.
  r = Request(id_);
  r.mutable_parameters()->erase("weight_id");
  EXPECT_THAT(ParseInferRequest(r, ParseLimits(), registry_.get()).status().message(),
              HasSubstr("weight_id"));
}

}  // namespace
}  // namespace sparkle
