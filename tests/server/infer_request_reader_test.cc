// The raw request path: InferRequestReader over gRPC-like slices (split anywhere), the parser on
// top of it (in place when a tensor lies whole and aligned in one slice, one pooled copy
// otherwise), and TensorBufferPool's sizes, reuse and bound.
#include "server/infer_request_reader.h"

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/request_parser.h"
#include "server/tensor_buffer_pool.h"

namespace sparkle {
namespace {

using inference::ModelInferRequest;
using ::testing::HasSubstr;

ModelInferRequest Request() {
  ModelInferRequest r;
  r.set_model_name("conv2d");
  r.set_id("req-7");
  (*r.mutable_parameters())["pad"].set_int64_param(1);
  auto add = [&r](const char* name, std::vector<int64_t> shape, float base) {
    auto* t = r.add_inputs();
    t->set_name(name);
    t->set_datatype("FP32");
    int64_t n = 1;
    for (int64_t d : shape) t->add_shape(d), n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) v[i] = base + static_cast<float>(i);
    r.add_raw_input_contents()->assign(reinterpret_cast<const char*>(v.data()), v.size() * 4);
  };
  add("input", {1, 2, 5, 5}, 0.5f);
  add("weight", {3, 2, 3, 3}, 100.f);
  add("bias", {3}, -7.f);
  r.add_outputs()->set_name("output");
  return r;
}

// `bytes` cut at `cuts` (sorted offsets), each piece in its own buffer like a gRPC slice.
struct Slices {
  std::vector<std::string> storage;
  std::vector<absl::string_view> views;
};
Slices Cut(const std::string& bytes, std::vector<size_t> cuts) {
  Slices s;
  size_t from = 0;
  cuts.push_back(bytes.size());
  for (size_t to : cuts) {
    s.storage.push_back(bytes.substr(from, to - from));
    from = to;
  }
  for (const std::string& piece : s.storage) s.views.push_back(piece);
  return s;
}

TEST(InferRequestReaderTest, ReadsTheSameRequestWhereverTheSlicesAreCut) {
  const ModelInferRequest r = Request();
  const std::string bytes = r.SerializeAsString();
  std::mt19937 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<size_t> cuts;
    const int n = trial == 0 ? 0 : static_cast<int>(rng() % 6) + 1;
    for (int i = 0; i < n; ++i) cuts.push_back(rng() % bytes.size());
    std::sort(cuts.begin(), cuts.end());
    const Slices slices = Cut(bytes, cuts);
    InferRequestView view;
    ASSERT_TRUE(ReadInferRequest(slices.views, &view).ok());
    EXPECT_EQ(view.serialized_bytes, static_cast<int64_t>(bytes.size()));
    EXPECT_EQ(view.header().id(), "req-7");
    EXPECT_EQ(view.header().inputs_size(), 3);
    EXPECT_EQ(view.header().raw_input_contents_size(), 0);
    ASSERT_EQ(view.raw_inputs.size(), 3u);
    for (int i = 0; i < 3; ++i) {
      std::string joined;
      for (absl::string_view piece : view.raw_inputs[i].pieces) joined.append(piece.data(), piece.size());
      EXPECT_EQ(joined, r.raw_input_contents(i));
      EXPECT_EQ(view.raw_inputs[i].size, static_cast<int64_t>(joined.size()));
    }
    // The parser gives the same tensors whether they were taken in place or copied.
    ParseContext context;
    absl::StatusOr<ParsedInferRequest> parsed = ParseInferRequest(view, context);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(std::memcmp(parsed->input, r.raw_input_contents(0).data(), 50 * 4), 0);
    EXPECT_EQ(std::memcmp(parsed->weight, r.raw_input_contents(1).data(), 54 * 4), 0);
    EXPECT_EQ(std::memcmp(parsed->bias, r.raw_input_contents(2).data(), 3 * 4), 0);
  }
}

TEST(InferRequestReaderTest, TakesAWholeAlignedTensorInPlaceAndCopiesASplitOne) {
  const ModelInferRequest r = Request();
  const std::string bytes = r.SerializeAsString();
  const size_t input_at = bytes.find(r.raw_input_contents(0));
  ASSERT_NE(input_at, std::string::npos);
  // One cut in the middle of the input tensor; the weight and the bias each start a slice
  // (where std::string's storage starts, so aligned).
  const size_t weight_at = bytes.find(r.raw_input_contents(1));
  const size_t bias_at = bytes.rfind(r.raw_input_contents(2));
  Slices slices = Cut(bytes, {input_at + 10, weight_at, bias_at});
  InferRequestView view;
  ASSERT_TRUE(ReadInferRequest(slices.views, &view).ok());
  auto pool = TensorBufferPool::Create({});
  ASSERT_TRUE(pool.ok());
  ParseContext context;
  context.pool = pool->get();
  absl::StatusOr<ParsedInferRequest> parsed = ParseInferRequest(view, context);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  // The input was split: one copy, 64-byte aligned, from the pool.
  ASSERT_EQ(parsed->copies.size(), 1u);
  EXPECT_EQ(reinterpret_cast<const uint8_t*>(parsed->input), parsed->copies[0].data());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(parsed->input) % 64, 0u);
  EXPECT_EQ((*pool)->snapshot().in_use_bytes, TensorBufferPool::CapacityFor(50 * 4));
  // The weight lies whole at the start of its slice: read in place.
  EXPECT_EQ(reinterpret_cast<const char*>(parsed->weight), slices.storage[2].data());
  EXPECT_EQ(reinterpret_cast<const char*>(parsed->bias), slices.storage[3].data());
  parsed->copies.clear();
  EXPECT_EQ((*pool)->snapshot().in_use_bytes, 0);
}

TEST(InferRequestReaderTest, MalformedBytesAreInvalidArgumentWithAMessage) {
  const std::string bytes = Request().SerializeAsString();
  struct Case {
    std::string bytes;
    const char* message;
  };
  const std::vector<Case> cases = {
      {bytes.substr(0, bytes.size() - 3), "truncated"},
      {std::string("\x3a\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", 11), "truncated"},  // 7: bad varint
      {std::string("\x3a\x05" "ab", 4), "truncated raw_input_contents"},
      {std::string("\x38\x01", 2), "raw_input_contents is not length-delimited"},
      {std::string("\x0b", 1), "wire type 3"},  // a group
      {std::string("\x00\x01", 2), "invalid field number"},
      {std::string("\x2a\x02\xff\xff", 4), "does not parse"},  // inputs: garbage message
      {std::string("\x0a", 1), "truncated length"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.message);
    InferRequestView view;
    std::vector<absl::string_view> one = {c.bytes};
    absl::Status status = ReadInferRequest(one, &view);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(status.message(), HasSubstr("not a valid ModelInferRequest"));
    EXPECT_THAT(status.message(), HasSubstr(c.message));
  }
  InferRequestView empty;
  EXPECT_TRUE(ReadInferRequest({}, &empty).ok());  // an empty message is a message
}

TEST(InferRequestReaderTest, UnknownFieldsAndTypedContentsStayInTheHeader) {
  ModelInferRequest r = Request();
  r.clear_raw_input_contents();
  for (auto& t : *r.mutable_inputs()) {
    int64_t n = 1;
    for (int64_t d : t.shape()) n *= d;
    for (int64_t i = 0; i < n; ++i) t.mutable_contents()->add_fp32_contents(2.0f);
  }
  std::string bytes = r.SerializeAsString();
  bytes.append("\xa0\x06\x2a", 3);  // field 100, varint 42: unknown, kept, ignored
  InferRequestView view;
  std::vector<absl::string_view> one = {bytes};
  ASSERT_TRUE(ReadInferRequest(one, &view).ok());
  EXPECT_TRUE(view.raw_inputs.empty());
  absl::StatusOr<ParsedInferRequest> parsed = ParseInferRequest(view, ParseContext{});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(static_cast<const float*>(parsed->input)[49], 2.0f);
}

TEST(TensorBufferPoolTest, CapacitiesAreQuarterPowersOfTwoFrom4KiB) {
  EXPECT_EQ(TensorBufferPool::CapacityFor(1), 4096);
  EXPECT_EQ(TensorBufferPool::CapacityFor(4096), 4096);
  EXPECT_EQ(TensorBufferPool::CapacityFor(4097), 5120);
  EXPECT_EQ(TensorBufferPool::CapacityFor(8192), 8192);
  EXPECT_EQ(TensorBufferPool::CapacityFor(8193), 10240);
  EXPECT_EQ(TensorBufferPool::CapacityFor(int64_t{3} << 20), int64_t{3} << 20);
  for (int64_t bytes : {int64_t{5000}, int64_t{1} << 20, (int64_t{1} << 30) + 1}) {
    const int64_t c = TensorBufferPool::CapacityFor(bytes);
    EXPECT_GE(c, bytes);
    EXPECT_LE(c, bytes + bytes / 4 + 1);  // at most a quarter step above
  }
}

TEST(TensorBufferPoolTest, ReusesGivenBackBuffersWithinItsIdleBound) {
  auto pool = TensorBufferPool::Create({.max_idle_bytes = 12288});
  ASSERT_TRUE(pool.ok());
  TensorBufferPool& p = **pool;
  uint8_t* first = nullptr;
  {
    auto a = p.Get(5000);
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->size(), 5000);
    EXPECT_EQ(a->capacity(), 5120);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a->data()) % 64, 0u);
    first = a->data();
    std::memset(a->data(), 0xab, a->size());  // the whole size is writable (ASan checks)
  }
  EXPECT_EQ(p.snapshot().idle_bytes, 5120);
  auto again = p.Get(4500);  // same capacity class
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->data(), first);
  EXPECT_EQ(p.snapshot().reused, 1);
  // Three more buffers given back: only what fits in 12 KiB of capacity stays idle.
  {
    auto b = p.Get(8192), c = p.Get(8192), d = p.Get(100);
    ASSERT_TRUE(b.ok() && c.ok() && d.ok());
  }
  EXPECT_LE(p.snapshot().idle_bytes, 12288);
  EXPECT_EQ(p.snapshot().in_use_bytes, 5120);
  TensorBufferPool::Buffer moved = *std::move(again);
  EXPECT_EQ(moved.data(), first);
  moved.Reset();
  EXPECT_EQ(p.snapshot().in_use_bytes, 0);
  // A mapped (>= 1 MiB) buffer: writable whole, reused, and unmapped by the pool's destructor.
  {
    auto big = TensorBufferPool::Create({.max_idle_bytes = int64_t{8} << 20});
    ASSERT_TRUE(big.ok());
    uint8_t* at = nullptr;
    {
      auto b = (*big)->Get((int64_t{3} << 20) + 5);
      ASSERT_TRUE(b.ok());
      EXPECT_EQ(b->capacity(), int64_t{7} << 19);  // 3.5 MiB
      std::memset(b->data(), 1, b->size());
      at = b->data();
    }
    auto again = (*big)->Get((int64_t{3} << 20) + 100);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->data(), at);
  }
  EXPECT_EQ(TensorBufferPool::Create({.max_idle_bytes = -1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(p.Get(0).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sparkle
