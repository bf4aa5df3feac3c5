// ParseInferRequest under hostile input: random byte mutations of a valid serialized request
// and random extreme shape/parameter values. Whatever comes in, the parser must return a status
// without crashing, and whenever it accepts a request, every pointer it returns must cover
// exactly the bytes the geometry implies, inside the request's own storage.
#include "server/request_parser.h"

#include <cstdint>
#include <random>
#include <string>

#include "gtest/gtest.h"

namespace sparkle {
namespace {

using inference::ModelInferRequest;

ModelInferRequest ValidRequest() {
  ModelInferRequest r;
  r.set_model_name("conv2d");
  (*r.mutable_parameters())["pad"].set_int64_param(1);
  (*r.mutable_parameters())["groups"].set_int64_param(2);
  auto add = [&r](const char* name, std::vector<int64_t> shape) {
    auto* t = r.add_inputs();
    t->set_name(name);
    t->set_datatype("FP32");
    int64_t n = 1;
    for (int64_t d : shape) t->add_shape(d), n *= d;
    r.add_raw_input_contents()->assign(static_cast<size_t>(n) * 4, '\x01');
  };
  add("input", {1, 4, 6, 6});
  add("weight", {6, 2, 3, 3});
  add("bias", {6});
  return r;
}

// Does [p, p + bytes) lie inside one of the request's raw_input_contents or fp32_contents?
bool Inside(const ModelInferRequest& r, const float* p, int64_t elements) {
  const char* begin = reinterpret_cast<const char*>(p);
  const char* end = begin + elements * 4;
  for (const std::string& raw : r.raw_input_contents()) {
    if (begin >= raw.data() && end <= raw.data() + raw.size()) return true;
  }
  for (const auto& t : r.inputs()) {
    const auto& c = t.contents().fp32_contents();
    const char* b = reinterpret_cast<const char*>(c.data());
    if (begin >= b && end <= b + c.size() * 4) return true;
  }
  return false;
}

void CheckAccepted(const ModelInferRequest& r, const ParsedInferRequest& parsed) {
  const Conv2dParams& p = parsed.params;
  ASSERT_TRUE(p.Validate().ok());
  EXPECT_TRUE(Inside(r, parsed.input, p.input_elements()));
  EXPECT_TRUE(Inside(r, parsed.weight, p.weight_elements()));
  if (p.has_bias) {
    EXPECT_TRUE(Inside(r, parsed.bias, p.k));
  }
}

TEST(RequestParserTest, ValidRequestParses) {
  ModelInferRequest r = ValidRequest();
  auto parsed = ParseInferRequest(r, {});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->params.groups, 2);
  EXPECT_EQ(parsed->params.p(), 6);
  CheckAccepted(r, *parsed);
}

TEST(RequestParserTest, RandomByteMutationsNeverCrashAndAcceptedRequestsAreConsistent) {
  const std::string valid = ValidRequest().SerializeAsString();
  std::mt19937_64 rng(12345);
  int parsed_messages = 0, accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string bytes = valid;
    const int edits = 1 + static_cast<int>(rng() % 8);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % bytes.size();
      switch (rng() % 3) {
        case 0: bytes[at] = static_cast<char>(rng()); break;
        case 1: bytes.erase(at, 1 + rng() % 16); break;
        default: bytes.insert(at, 1 + rng() % 4, static_cast<char>(rng())); break;
      }
      if (bytes.empty()) bytes = valid;
    }
    ModelInferRequest r;
    if (!r.ParseFromString(bytes)) continue;
    ++parsed_messages;
    auto parsed = ParseInferRequest(r, {});
    if (parsed.ok()) {
      ++accepted;
      CheckAccepted(r, *parsed);
    } else {
      EXPECT_FALSE(parsed.status().message().empty());
    }
  }
  EXPECT_GT(parsed_messages, 1000);  // the mutations reach the parser, not just protobuf
  EXPECT_GT(accepted, 0);
}

TEST(RequestParserTest, DeviceParameter) {
  ModelInferRequest r = ValidRequest();
  EXPECT_EQ(ParseInferRequest(r, {})->device, DeviceRequest::Auto());  // the default
  const std::pair<const char*, DeviceRequest> good[] = {{"auto", DeviceRequest::Auto()},
                                                        {"cpu", DeviceRequest::Cpu()},
                                                        {"gpu", DeviceRequest::AnyGpu()},
                                                        {"gpu:0", DeviceRequest::Gpu(0)},
                                                        {"gpu:12", DeviceRequest::Gpu(12)}};
  for (const auto& [text, expected] : good) {
    (*r.mutable_parameters())["device"].set_string_param(text);
    absl::StatusOr<ParsedInferRequest> parsed = ParseInferRequest(r, {});
    // A GPU that may not exist still parses: the engine answers FAILED_PRECONDITION.
    ASSERT_TRUE(parsed.ok()) << text << ": " << parsed.status();
    EXPECT_EQ(parsed->device, expected) << text;
  }
  for (const char* bad : {"tpu", "GPU", "gpu:", "gpu:x", "gpu:-1", "cuda:0", ""}) {
    (*r.mutable_parameters())["device"].set_string_param(bad);
    absl::StatusOr<ParsedInferRequest> parsed = ParseInferRequest(r, {});
    ASSERT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(parsed.status().message().find("parameter device must be auto, cpu, gpu"),
              std::string::npos)
        << parsed.status();
  }
  (*r.mutable_parameters())["device"].set_int64_param(0);
  EXPECT_EQ(ParseInferRequest(r, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RequestParserTest, ExtremeShapesAndParametersAreRejectedCleanly) {
  const int64_t values[] = {0,  1,  2,  3,  -1, -(int64_t{1} << 62), int64_t{1} << 31,
                            (int64_t{1} << 31) + 1, int64_t{1} << 62, INT64_MAX, INT64_MIN};
  std::mt19937_64 rng(7);
  auto pick = [&] { return values[rng() % std::size(values)]; };
  const char* keys[] = {"stride", "pad_h", "dilation_w", "groups", "priority", "timeout"};
  for (int i = 0; i < 20000; ++i) {
    ModelInferRequest r = ValidRequest();
    for (int e = 0; e < 3; ++e) {
      switch (rng() % 3) {
        case 0: r.mutable_inputs(rng() % 3)->set_shape(0, pick()); break;
        case 1: {
          auto* t = r.mutable_inputs(rng() % 2);
          t->set_shape(static_cast<int>(rng() % 4), pick());
          break;
        }
        default: (*r.mutable_parameters())[keys[rng() % std::size(keys)]].set_int64_param(pick());
      }
    }
    auto parsed = ParseInferRequest(r, {});
    if (parsed.ok()) CheckAccepted(r, *parsed);
  }
}

}  // namespace
}  // namespace sparkle
