// ParseInferRequest under hostile input: random byte mutations of a valid serialized request
// and random extreme shape/parameter values. Whatever comes in, the parser must return a status
// without crashing, and whenever it accepts a request, every pointer it returns must cover
// exactly the bytes the geometry implies, inside the request's own storage.
#include "server/request_parser.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
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
bool Inside(const ModelInferRequest& r, const void* p, int64_t elements) {
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

// --- Issue 13: per-side padding, auto_pad, the epilogue, residual and datatypes -------------

using ::testing::HasSubstr;

// A request of `datatype` tensors with raw contents of the right size (elements of 1.0 in that
// datatype's bits do not matter to the parser): input, weight, then optionally bias, residual.
struct Req {
  ModelInferRequest r;
  explicit Req(const char* datatype = "FP32") : type(datatype) { r.set_model_name("conv2d"); }
  Req& Add(const char* name, std::vector<int64_t> shape, const char* datatype = nullptr) {
    auto* t = r.add_inputs();
    t->set_name(name);
    t->set_datatype(datatype != nullptr ? datatype : type);
    int64_t n = 1;
    for (int64_t d : shape) t->add_shape(d), n *= d;
    const int64_t size = t->datatype() == "FP32" ? 4 : 2;
    // Huge shapes get a token entry: they are refused before the byte counts are compared.
    r.add_raw_input_contents()->assign(n > (1 << 20) ? 4 : static_cast<size_t>(n * size), '\x01');
    return *this;
  }
  Req& Int(const char* key, int64_t v) {
    (*r.mutable_parameters())[key].set_int64_param(v);
    return *this;
  }
  Req& Str(const char* key, const char* v) {
    (*r.mutable_parameters())[key].set_string_param(v);
    return *this;
  }
  Req& Dbl(const char* key, double v) {
    (*r.mutable_parameters())[key].set_double_param(v);
    return *this;
  }
  Req& OutputDatatype(const char* datatype) {
    auto* out = r.add_outputs();
    out->set_name("output");
    (*out->mutable_parameters())["datatype"].set_string_param(datatype);
    return *this;
  }
  const char* type;
};

// The status of parsing; when OK, also the parsed request's pointers are checked.
absl::StatusOr<ParsedInferRequest> Parse(const ModelInferRequest& r, ParseLimits limits = {}) {
  auto parsed = ParseInferRequest(r, limits);
  if (parsed.ok()) {
    const Conv2dParams& p = parsed->params;
    const int64_t size = ElementSize(p.dtype);
    EXPECT_TRUE(p.Validate().ok());
    EXPECT_TRUE(Inside(r, parsed->input, p.input_elements() * size / 4));
    EXPECT_TRUE(Inside(r, parsed->weight, p.weight_elements() * size / 4));
    EXPECT_EQ(parsed->residual != nullptr, p.has_residual);
  }
  return parsed;
}

void ExpectInvalid(const ModelInferRequest& r, const std::string& message) {
  auto parsed = ParseInferRequest(r, {});
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << message;
  EXPECT_THAT(std::string(parsed.status().message()), HasSubstr(message));
}

TEST(RequestParserTest, PerSidePadsOverridePadHAndPadW) {
  Req q;
  q.Add("input", {1, 2, 6, 6}).Add("weight", {3, 2, 3, 3});
  q.Int("pad", 4).Int("pad_h", 1).Int("pad_w", 2).Int("pad_top", 0).Int("pad_right", 3);
  auto parsed = Parse(q.r);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const Conv2dParams& p = parsed->params;
  EXPECT_EQ(p.pad_top, 0);
  EXPECT_EQ(p.pad_bottom, 1);
  EXPECT_EQ(p.pad_left, 2);
  EXPECT_EQ(p.pad_right, 3);
  EXPECT_EQ(p.p(), 5);  // floor((6 + 0 + 1 - 2 - 1) / 1) + 1
  EXPECT_EQ(p.q(), 9);  // floor((6 + 2 + 3 - 2 - 1) / 1) + 1
  // Only the shorthand: every side.
  Req all;
  all.Add("input", {1, 2, 6, 6}).Add("weight", {3, 2, 3, 3}).Int("pad_bottom", 2).Int("pad", 1);
  parsed = Parse(all.r);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->params.pad_top, 1);
  EXPECT_EQ(parsed->params.pad_bottom, 2);
  EXPECT_EQ(parsed->params.pad_left, 1);
  EXPECT_EQ(parsed->params.pad_right, 1);
}

TEST(RequestParserTest, NegativePadsAreRefusedNamingTheWireKey) {
  for (const char* key : {"pad", "pad_h", "pad_w", "pad_top", "pad_bottom", "pad_left",
                          "pad_right"}) {
    Req q;
    q.Add("input", {1, 2, 6, 6}).Add("weight", {3, 2, 3, 3}).Int(key, -1);
    ExpectInvalid(q.r, absl::StrCat(key, " must be >= 0; was -1"));
  }
}

struct AutoPadCase {
  int64_t h, k, stride, dilation;
  int64_t upper_begin, upper_end;  // SAME_UPPER; SAME_LOWER is the reverse
};

TEST(RequestParserTest, AutoPadSameAndValidAsOnnx) {
  // Worked by hand: out = ceil(h / stride), total = max(0, (out-1)*stride + (k-1)*dilation + 1 - h).
  const AutoPadCase cases[] = {
      {5, 3, 1, 1, 1, 1},   // out 5, total 2
      {6, 3, 2, 1, 0, 1},   // out 3, total 2*2 + 2 + 1 - 6 = 1
      {7, 4, 1, 1, 1, 2},   // out 7, total 6 + 3 + 1 - 7 = 3
      {10, 3, 3, 2, 2, 2},  // out 4, total 9 + 4 + 1 - 10 = 4
      {5, 3, 1, 3, 3, 3},   // out 5, total 4 + 6 + 1 - 5 = 6
      {4, 1, 4, 1, 0, 0},   // out 1, total max(0, 1 - 4) = 0
      {9, 2, 2, 1, 0, 1},   // out 5, total 8 + 1 + 1 - 9 = 1
  };
  for (const AutoPadCase& c : cases) {
    for (const char* mode : {"SAME_UPPER", "SAME_LOWER", "VALID"}) {
      SCOPED_TRACE(absl::StrCat(mode, " h=", c.h, " k=", c.k, " stride=", c.stride,
                                " dilation=", c.dilation));
      Req q;
      // The width axis gets the same case through a transposed shape.
      q.Add("input", {1, 1, c.h, c.h}).Add("weight", {1, 1, c.k, c.k});
      q.Int("stride", c.stride).Int("dilation", c.dilation).Str("auto_pad", mode);
      auto parsed = Parse(q.r);
      if (std::string(mode) == "VALID" && c.dilation * (c.k - 1) + 1 > c.h) {
        EXPECT_FALSE(parsed.ok());
        continue;
      }
      ASSERT_TRUE(parsed.ok()) << parsed.status();
      const Conv2dParams& p = parsed->params;
      int64_t begin = c.upper_begin, end = c.upper_end;
      if (std::string(mode) == "SAME_LOWER") std::swap(begin, end);
      if (std::string(mode) == "VALID") begin = end = 0;
      EXPECT_EQ(p.pad_top, begin);
      EXPECT_EQ(p.pad_bottom, end);
      EXPECT_EQ(p.pad_left, begin);
      EXPECT_EQ(p.pad_right, end);
      if (std::string(mode) != "VALID") {
        EXPECT_EQ(p.p(), (c.h + c.stride - 1) / c.stride);  // ceil(h / stride)
        EXPECT_EQ(p.q(), (c.h + c.stride - 1) / c.stride);
      }
    }
  }
}

TEST(RequestParserTest, AutoPadErrors) {
  for (const char* key : {"pad", "pad_h", "pad_w", "pad_top", "pad_bottom", "pad_left",
                          "pad_right"}) {
    Req q;
    q.Add("input", {1, 2, 6, 6}).Add("weight", {3, 2, 3, 3}).Str("auto_pad", "SAME_UPPER");
    q.Int(key, 0);  // even an explicit zero
    ExpectInvalid(q.r, absl::StrCat("auto_pad (SAME_UPPER) cannot be combined with an explicit "
                                    "pad (", key, ")"));
  }
  {
    // ONNX's NOTSET is the explicit pads.
    Req q;
    q.Add("input", {1, 2, 6, 6}).Add("weight", {3, 2, 3, 3}).Str("auto_pad", "NOTSET");
    q.Int("pad_top", 1);
    auto parsed = Parse(q.r);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(parsed->params.pad_top, 1);
    EXPECT_EQ(parsed->params.pad_bottom, 0);
  }
  for (const char* bad : {"SAME", "same_upper", "notset", ""}) {
    Req q;
    q.Add("input", {1, 2, 6, 6}).Add("weight", {3, 2, 3, 3}).Str("auto_pad", bad);
    ExpectInvalid(q.r, "auto_pad must be SAME_UPPER, SAME_LOWER, VALID or NOTSET");
  }
  Req typed;
  typed.Add("input", {1, 2, 6, 6}).Add("weight", {3, 2, 3, 3}).Int("auto_pad", 1);
  ExpectInvalid(typed.r, "auto_pad must be a string_param");
}

TEST(RequestParserTest, AutoPadOverflowIsRefused) {
  // (k - 1) * dilation overflows int64.
  Req q;
  q.Add("input", {1, 1, 5, 5}).Add("weight", {1, 1, 3, 3});
  q.Str("auto_pad", "SAME_LOWER").Int("dilation_h", INT64_MAX / 2 + 1);
  ExpectInvalid(q.r, "auto_pad SAME_LOWER: the height padding overflows");
  // A huge H with a huge stride and dilation: no overflow, but the padding is out of range.
  const int64_t huge = (int64_t{1} << 31) - 1;
  Req h;
  h.Add("input", {1, 1, huge, 1}).Add("weight", {1, 1, 3, 1});
  h.Str("auto_pad", "SAME_UPPER").Int("dilation_h", int64_t{1} << 40);
  auto parsed = ParseInferRequest(h.r, {});
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  // A huge stride: out 1, no padding needed beyond the kernel.
  Req s;
  s.Add("input", {1, 1, huge, 1}).Add("weight", {1, 1, 1, 1});
  s.Str("auto_pad", "SAME_UPPER").Int("stride_h", INT64_MAX);
  parsed = ParseInferRequest(s.r, {});
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);  // stride > 2^31-1
  // A stride below 1 is Validate's error, not auto_pad's.
  Req zero;
  zero.Add("input", {1, 1, 5, 5}).Add("weight", {1, 1, 3, 3});
  zero.Str("auto_pad", "SAME_UPPER").Int("stride_w", 0);
  ExpectInvalid(zero.r, "stride_w must be >= 1; was 0");
}

TEST(RequestParserTest, ActivationAndClipBounds) {
  for (const char* name : {"none", "relu", "relu6", "clip", "sigmoid", "tanh", "silu", "gelu"}) {
    Req q;
    q.Add("input", {1, 2, 6, 6}).Add("weight", {3, 2, 3, 3}).Str("activation", name);
    auto parsed = Parse(q.r);
    ASSERT_TRUE(parsed.ok()) << name << ": " << parsed.status();
    EXPECT_STREQ(ActivationName(parsed->params.activation), name);
  }
  Req unknown;
  unknown.Add("input", {1, 2, 6, 6}).Add("weight", {3, 2, 3, 3}).Str("activation", "swish");
  ExpectInvalid(unknown.r, absl::StrCat("activation must be one of ", ActivationNames(),
                                        "; was 'swish'"));

  Req clip;
  clip.Add("input", {1, 2, 6, 6}).Add("weight", {3, 2, 3, 3}).Str("activation", "clip");
  clip.Int("clip_min", -1).Dbl("clip_max", 6.5);
  auto parsed = Parse(clip.r);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->params.activation, Activation::kClip);
  EXPECT_EQ(parsed->params.clip_min, -1.0f);
  EXPECT_EQ(parsed->params.clip_max, 6.5f);
  // A missing bound is unbounded.
  Req lower;
  lower.Add("input", {1, 2, 6, 6}).Add("weight", {3, 2, 3, 3}).Str("activation", "clip");
  lower.Dbl("clip_min", 0.25);
  parsed = Parse(lower.r);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->params.clip_min, 0.25f);
  EXPECT_EQ(parsed->params.clip_max, FLT_MAX);
  Req none;
  none.Add("input", {1, 2, 6, 6}).Add("weight", {3, 2, 3, 3}).Str("activation", "clip");
  parsed = Parse(none.r);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->params.clip_min, -FLT_MAX);
  EXPECT_EQ(parsed->params.clip_max, FLT_MAX);
}

TEST(RequestParserTest, ClipErrors) {
  auto base = [](const char* activation) {
    Req q;
    q.Add("input", {1, 2, 6, 6}).Add("weight", {3, 2, 3, 3});
    if (activation != nullptr) q.Str("activation", activation);
    return q;
  };
  {
    Req q = base(nullptr);
    q.Dbl("clip_min", 0);
    ExpectInvalid(q.r, "clip_min is only valid with activation=clip; the activation is none");
  }
  {
    Req q = base("relu");
    q.Int("clip_max", 6);
    ExpectInvalid(q.r, "clip_max is only valid with activation=clip; the activation is relu");
  }
  for (double bad : {std::nan(""), double{INFINITY}, -double{INFINITY}, 1e39}) {
    Req q = base("clip");
    q.Dbl("clip_max", bad);
    ExpectInvalid(q.r, "clip_max must be a finite number within the FP32 range");
  }
  {
    Req q = base("clip");
    q.Dbl("clip_min", 2).Dbl("clip_max", 1);
    ExpectInvalid(q.r, "clip_min (2) must be <= clip_max (1)");
  }
  {
    Req q = base("clip");
    q.Str("clip_min", "0");
    ExpectInvalid(q.r, "clip_min must be an int64_param, uint64_param or double_param");
  }
  {
    Req q = base(nullptr);
    q.Int("activation", 1);
    ExpectInvalid(q.r, "activation must be a string_param");
  }
}

TEST(RequestParserTest, ResidualHasTheOutputsShapeLayoutAndDatatype) {
  // Input [1, 2, 6, 6], weight [3, 2, 3, 3], pad 1: output [1, 3, 6, 6].
  {
    Req q;
    q.Add("input", {1, 2, 6, 6}).Add("weight", {3, 2, 3, 3}).Int("pad", 1);
    q.Add("residual", {1, 3, 6, 6}).Str("activation", "relu");
    auto parsed = Parse(q.r);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_TRUE(parsed->params.has_residual);
    EXPECT_TRUE(Inside(q.r, parsed->residual, parsed->params.residual_elements()));
    EXPECT_EQ(parsed->residual, q.r.raw_input_contents(2).data());
  }
  {  // Typed contents (FP32).
    ModelInferRequest r;
    r.set_model_name("conv2d");
    auto add = [&r](const char* name, std::vector<int64_t> shape) {
      auto* t = r.add_inputs();
      t->set_name(name);
      t->set_datatype("FP32");
      int64_t n = 1;
      for (int64_t d : shape) t->add_shape(d), n *= d;
      for (int64_t i = 0; i < n; ++i) t->mutable_contents()->add_fp32_contents(0.5f);
    };
    add("residual", {1, 3, 4, 4});
    add("input", {1, 2, 6, 6});
    add("weight", {3, 2, 3, 3});
    auto parsed = Parse(r);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(parsed->residual, r.inputs(0).contents().fp32_contents().data());
  }
  {
    Req q;
    q.Add("input", {1, 2, 6, 6}).Add("weight", {3, 2, 3, 3}).Add("residual", {1, 3, 6, 6});
    ExpectInvalid(q.r, "input tensor 'residual' has shape [1, 3, 6, 6] but the output's shape "
                       "is [1, 3, 4, 4] ([N, K, P, Q])");
  }
  {
    Req q;
    q.Add("input", {1, 2, 6, 6}).Add("weight", {3, 2, 3, 3}).Add("residual", {1, 3, 4});
    ExpectInvalid(q.r, "input tensor 'residual' has shape [1, 3, 4] but the output's shape");
  }
  {
    Req q;
    q.Add("input", {1, 2, 6, 6}).Add("weight", {3, 2, 3, 3}).Add("residual", {1, 3, 4, 4}, "FP16");
    ExpectInvalid(q.r, "input tensor 'residual' has datatype 'FP16' but input tensor 'input' has "
                       "datatype 'FP32'");
  }
  // NHWC: the residual is [N, P, Q, K]; without a layout parameter it follows the input's.
  auto nhwc = [](Req& q) {
    (*q.r.mutable_inputs(0)->mutable_parameters())["layout"].set_string_param("NHWC");
  };
  {
    Req q;
    q.Add("input", {1, 6, 6, 2}).Add("weight", {3, 2, 3, 3}).Add("residual", {1, 4, 4, 3});
    nhwc(q);
    auto parsed = Parse(q.r);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(parsed->params.layout, Layout::kNHWC);
    (*q.r.mutable_inputs(2)->mutable_parameters())["layout"].set_string_param("NHWC");
    EXPECT_TRUE(Parse(q.r).ok());
    (*q.r.mutable_inputs(2)->mutable_parameters())["layout"].set_string_param("NCHW");
    ExpectInvalid(q.r, "input tensor 'residual' has layout NCHW but the input's is NHWC");
  }
  {
    Req q;
    q.Add("input", {1, 6, 6, 2}).Add("weight", {3, 2, 3, 3}).Add("residual", {1, 3, 4, 4});
    nhwc(q);
    ExpectInvalid(q.r, "but the output's shape is [1, 4, 4, 3] ([N, P, Q, K])");
  }
  {
    Req q;
    q.Add("input", {1, 2, 6, 6}).Add("weight", {3, 2, 3, 3}).Add("residual", {1, 3, 4, 4});
    q.Add("residual", {1, 3, 4, 4});
    ExpectInvalid(q.r, "input tensor 'residual' is given twice");
  }
}

TEST(RequestParserTest, Bf16AndFp16RequestsAndTheOutputDatatype) {
  for (const char* type : {"BF16", "FP16"}) {
    SCOPED_TRACE(type);
    const DataType dtype = *ParseDataType(type);
    Req q(type);
    q.Add("input", {1, 2, 6, 6}).Add("weight", {3, 2, 3, 3}).Add("bias", {3});
    q.Add("residual", {1, 3, 4, 4});
    auto parsed = Parse(q.r);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(parsed->params.dtype, dtype);
    EXPECT_EQ(parsed->params.output_dtype, dtype);  // the default: the inputs' datatype
    EXPECT_EQ(parsed->input, q.r.raw_input_contents(0).data());
    EXPECT_EQ(parsed->bias, q.r.raw_input_contents(2).data());
    EXPECT_EQ(parsed->residual, q.r.raw_input_contents(3).data());

    Req fp32_out(type);
    fp32_out.Add("input", {1, 2, 6, 6}).Add("weight", {3, 2, 3, 3}).OutputDatatype("FP32");
    parsed = Parse(fp32_out.r);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(parsed->params.output_dtype, DataType::kFp32);

    Req same_out(type);
    same_out.Add("input", {1, 2, 6, 6}).Add("weight", {3, 2, 3, 3}).OutputDatatype(type);
    parsed = Parse(same_out.r);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(parsed->params.output_dtype, dtype);

    const char* other = dtype == DataType::kBf16 ? "FP16" : "BF16";
    Req bad_out(type);
    bad_out.Add("input", {1, 2, 6, 6}).Add("weight", {3, 2, 3, 3}).OutputDatatype(other);
    ExpectInvalid(bad_out.r, absl::StrCat("requested output 'output' has datatype '", other,
                                          "'; it may be FP32 or ", type));

    // Byte counts are the datatype's: an FP32-sized entry is refused.
    Req wrong_size(type);
    wrong_size.Add("input", {1, 2, 6, 6}, "FP32").Add("weight", {3, 2, 3, 3}, "FP32");
    wrong_size.r.mutable_inputs(0)->set_datatype(type);
    wrong_size.r.mutable_inputs(1)->set_datatype(type);
    ExpectInvalid(wrong_size.r, absl::StrCat("= 72 ", type, " elements (144 bytes), but "
                                             "raw_input_contents[0] holds 288 bytes"));

    // No typed contents for 16-bit floats.
    ModelInferRequest typed;
    typed.set_model_name("conv2d");
    for (const char* name : {"input", "weight"}) {
      auto* t = typed.add_inputs();
      t->set_name(name);
      t->set_datatype(type);
      for (int64_t d : {1, 1, 1, 1}) t->add_shape(d);
      t->mutable_contents()->add_fp32_contents(1.0f);
    }
    ExpectInvalid(typed, absl::StrCat("input tensor 'input' is ", type,
                                      ", which has no typed contents field in KServe v2"));
  }
  // FP32 requests: the output may be asked as FP32, not as a 16-bit type.
  Req fp32;
  fp32.Add("input", {1, 2, 6, 6}).Add("weight", {3, 2, 3, 3}).OutputDatatype("FP32");
  EXPECT_TRUE(Parse(fp32.r).ok());
  Req fp32_bf16;
  fp32_bf16.Add("input", {1, 2, 6, 6}).Add("weight", {3, 2, 3, 3}).OutputDatatype("BF16");
  ExpectInvalid(fp32_bf16.r, "requested output 'output' has datatype 'BF16'; it must be FP32");
  Req not_string;
  not_string.Add("input", {1, 2, 6, 6}).Add("weight", {3, 2, 3, 3});
  auto* out = not_string.r.add_outputs();
  out->set_name("output");
  (*out->mutable_parameters())["datatype"].set_int64_param(11);
  ExpectInvalid(not_string.r, "datatype of requested output 'output' must be a string_param");
}

TEST(RequestParserTest, MixedAndUnknownDatatypesAreRefused) {
  {
    Req q("FP32");
    q.Add("input", {1, 2, 6, 6}).Add("weight", {3, 2, 3, 3}, "BF16");
    ExpectInvalid(q.r, "input tensor 'weight' has datatype 'BF16' but input tensor 'input' has "
                       "datatype 'FP32'; input, weight, bias and residual must share one datatype");
  }
  {
    Req q("BF16");
    q.Add("input", {1, 2, 6, 6}).Add("weight", {3, 2, 3, 3}).Add("bias", {3}, "FP16");
    ExpectInvalid(q.r, "input tensor 'bias' has datatype 'FP16' but input tensor 'input' has "
                       "datatype 'BF16'");
  }
  for (const char* bad : {"INT8", "FP64", "bf16", ""}) {
    Req q;
    q.Add("input", {1, 2, 6, 6}, bad).Add("weight", {3, 2, 3, 3});
    ExpectInvalid(q.r, absl::StrCat("input tensor 'input' has datatype '", bad,
                                    "'; the conv2d model takes FP32, BF16 or FP16"));
  }
}

// A 16-bit tensor at an odd address is copied (2-byte aligned); one at an even address that is
// not 4-byte aligned is read in place.
TEST(RequestParserTest, SixteenBitTensorsNeedTwoByteAlignment) {
  Req q("BF16");
  q.Add("input", {1, 1, 3, 3}).Add("weight", {1, 1, 3, 3});
  InferRequestView view = ViewOf(q.r);
  std::string storage(128, '\0');
  const size_t base = 64 - reinterpret_cast<uintptr_t>(storage.data()) % 64;  // 64-aligned
  for (int i = 0; i < 2; ++i) {
    TensorBytes t;
    t.size = 18;
    t.pieces.emplace_back(storage.data() + base + (i == 0 ? 1 : 22), 18);  // odd, then 2 mod 4
    view.raw_inputs[i] = std::move(t);
  }
  auto parsed = ParseInferRequest(view, ParseContext{});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->copies.size(), 1u);
  EXPECT_EQ(parsed->input, static_cast<const void*>(parsed->copies[0].data()));
  EXPECT_EQ(parsed->weight, static_cast<const void*>(storage.data() + base + 22));
}

// Every size limit counts bytes of the datatypes: a BF16 output is half an FP32 one.
TEST(RequestParserTest, ResponseLimitCountsTheOutputDatatype) {
  Req q("BF16");
  q.Add("input", {1, 2, 6, 6}).Add("weight", {3, 2, 3, 3});  // output 48 elements
  ParseLimits limits;
  limits.max_response_bytes = 48 * 2 + kResponseOverheadBytes;
  EXPECT_TRUE(Parse(q.r, limits).ok());
  q.OutputDatatype("FP32");
  auto parsed = ParseInferRequest(q.r, limits);
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("(192 of output)"));
}

// Shared memory: a BF16 residual read from a region like any input (2-byte element sizes), and
// the output written to a region in its datatype: byte size and alignment by element size.
TEST(RequestParserTest, ResidualAndSixteenBitOutputInSharedMemory) {
  const std::string key = absl::StrCat("/sparkle-parser-test-", ::getpid());
  const int fd = ::shm_open(key.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 4096), 0);
  ::close(fd);
  auto registry = SharedMemoryRegistry::Create({});
  ASSERT_TRUE(registry.ok());
  ASSERT_TRUE((*registry)->Register("me", "r", key, 0, 4096).ok());
  ::shm_unlink(key.c_str());  // the registration keeps its mapping

  auto shm = [](inference::ModelInferRequest::InferInputTensor* t, int64_t offset, int64_t size) {
    (*t->mutable_parameters())["shared_memory_region"].set_string_param("r");
    (*t->mutable_parameters())["shared_memory_offset"].set_int64_param(offset);
    (*t->mutable_parameters())["shared_memory_byte_size"].set_int64_param(size);
  };
  auto request = [&](int64_t output_offset, const char* output_datatype) {
    Req q("BF16");
    q.Add("input", {1, 2, 6, 6}).Add("weight", {3, 2, 3, 3});
    auto* residual = q.r.add_inputs();  // [1, 3, 4, 4] BF16: 96 bytes at offset 2
    residual->set_name("residual");
    residual->set_datatype("BF16");
    for (int64_t d : {1, 3, 4, 4}) residual->add_shape(d);
    shm(residual, 2, 96);
    auto* out = q.r.add_outputs();
    out->set_name("output");
    (*out->mutable_parameters())["shared_memory_region"].set_string_param("r");
    (*out->mutable_parameters())["shared_memory_offset"].set_int64_param(output_offset);
    (*out->mutable_parameters())["shared_memory_byte_size"].set_int64_param(192);
    if (output_datatype != nullptr) {
      (*out->mutable_parameters())["datatype"].set_string_param(output_datatype);
    }
    return q;
  };
  ParseContext context;
  context.shared_memory = registry->get();
  context.owner = "me";
  {
    Req q = request(1026, nullptr);  // a BF16 output at an even offset
    auto parsed = ParseInferRequest(ViewOf(q.r), context);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_TRUE(parsed->params.has_residual);
    ASSERT_EQ(parsed->regions.size(), 2u);
    const uint8_t* base = static_cast<const uint8_t*>(parsed->output_in_region) - 1026;
    EXPECT_EQ(parsed->residual, static_cast<const void*>(base + 2));  // in place: 2-aligned
    EXPECT_EQ(parsed->params.output_dtype, DataType::kBf16);
  }
  {
    Req q = request(1025, nullptr);  // odd
    auto parsed = ParseInferRequest(ViewOf(q.r), context);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(parsed.status().message()),
                HasSubstr("is not 2-byte aligned; the output (BF16) needs an offset that is a "
                          "multiple of 2"));
  }
  {
    Req q = request(1026, "FP32");  // FP32 output: 4-byte alignment and 192 bytes
    auto parsed = ParseInferRequest(ViewOf(q.r), context);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("is not 4-byte aligned"));
    q = request(1024, "FP32");
    parsed = ParseInferRequest(ViewOf(q.r), context);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(parsed->params.output_dtype, DataType::kFp32);
  }
  {
    Req q = request(1024, nullptr);
    (*q.r.mutable_inputs(2)->mutable_parameters())["shared_memory_byte_size"].set_int64_param(192);
    auto parsed = ParseInferRequest(ViewOf(q.r), context);
    EXPECT_THAT(std::string(parsed.status().message()),
                HasSubstr("= 48 BF16 elements (96 bytes), but its shared_memory_byte_size is 192"));
  }
}

}  // namespace
}  // namespace sparkle
