#include "client/weights_commands.h"

#include <sstream>

#include "client/commands.h"
#include "client/infer_request.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sparkle::client {
namespace {

using ::testing::HasSubstr;

TEST(WeightIdRequestTest, ByIdSendsNeitherWeightNorBias) {
  InferInputs inputs;
  inputs.input = RandomArray({1, 2, 4, 4}, 1);
  inputs.weight = RandomArray({3, 2, 3, 3}, 2);
  inputs.bias = RandomArray({3}, 3);
  InferRequestOptions options;
  options.weight_id = "sha256:abc";
  auto request = BuildInferRequest(inputs, options);
  ASSERT_TRUE(request.ok()) << request.status();
  ASSERT_EQ(request->inputs_size(), 1);
  EXPECT_EQ(request->inputs(0).name(), "input");
  EXPECT_EQ(request->raw_input_contents_size(), 1);
  EXPECT_EQ(request->parameters().at("weight_id").string_param(), "sha256:abc");

  options.weight_id.clear();
  request = BuildInferRequest(inputs, options);
  ASSERT_TRUE(request.ok());
  EXPECT_EQ(request->inputs_size(), 3);
  EXPECT_EQ(request->parameters().count("weight_id"), 0u);
}

TEST(WeightIdRequestTest, InferWithWeightIdTakesNoWeightFlags) {
  InferCommandOptions options;
  options.input_shape = {1, 2, 4, 4};
  options.request.weight_id = "sha256:abc";
  EXPECT_TRUE(ValidateInferOptions(options).ok());
  options.weight_shape = {3, 2, 3, 3};
  EXPECT_THAT(ValidateInferOptions(options).message(), HasSubstr("--weight_id"));
  options.weight_shape.clear();
  options.bias_path = "b.npy";
  EXPECT_EQ(ValidateInferOptions(options).code(), absl::StatusCode::kInvalidArgument);
}

TEST(WeightsCommandTest, BadSubcommandsAreUsageErrorsBeforeConnecting) {
  SparkleClient::Options connection;
  connection.target = "127.0.0.1:1";  // nothing listens: a usage error must come first
  std::ostringstream out;
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{}, {"frob"}, {"list", "extra"}, {"rm"}, {"register"},
        {"register", "a.npy", "b.npy"}}) {
    absl::Status s = RunWeights(connection, args, {}, out);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_EQ(ExitCodeFor(s), kExitLocalError);
  }
  WeightsCommandOptions with_label;
  with_label.label = "x";
  EXPECT_THAT(RunWeights(connection, {"list"}, with_label, out).message(), HasSubstr("--label"));
  // A missing file is reported without touching the server (exit 2).
  absl::Status missing = RunWeights(connection, {"register", "/nonexistent/w.npy"}, {}, out);
  EXPECT_FALSE(missing.ok());
  EXPECT_EQ(ExitCodeFor(missing), kExitLocalError);
}

}  // namespace
}  // namespace sparkle::client
