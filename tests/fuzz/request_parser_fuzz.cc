// libFuzzer target: bytes as a serialized inference.ModelInferRequest, cut into slices (as gRPC
// hands them to the raw ModelInfer handler; the cuts depend on the input's size), through
// ReadInferRequest (server/infer_request_reader.h) and ParseInferRequest (server/request_parser.h),
// with a WeightRegistry that holds one registered weight (tests/fuzz/fuzz_weights.h), so that the
// `weight_id` path is reached.
//
// Invariants: the reader refuses, with a message, what protobuf does not parse (and may refuse
// some exotic encodings protobuf tolerates); what it accepts equals protobuf's message. When the parser says
// OK: the geometry validates; every pointer it returns, with the size the geometry gives it, lies
// inside the request (raw_input_contents entry or fp32_contents of the same tensor) or inside the
// registered weight, or is a pooled copy of that entry, and every byte of it is read (ASan); the
// output size is within the limit; the request size is within the limit.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "server/infer_request_reader.h"
#include "server/request_parser.h"
#include "google/protobuf/stubs/logging.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/fuzz/fuzz_weights.h"

namespace sparkle::fuzz {
namespace {

// Small limits, so that the RESOURCE_EXHAUSTED paths are reached with small inputs.
constexpr int64_t kMaxRequestBytes = 1 << 20;
constexpr int64_t kMaxResponseBytes = 1 << 20;

// Serialized with map entries in key order (NaN floats compare equal as bytes).
std::string Deterministic(const google::protobuf::MessageLite& message) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    message.SerializeToCodedStream(&coded);
  }
  return out;
}

TensorBufferPool* Pool() {
  static TensorBufferPool* pool = TensorBufferPool::Create({})->release();
  return pool;
}

WeightRegistry* Registry() {
  static std::string id;
  static WeightRegistry* registry = MakeRegistryWithOneWeight(&id).release();
  return registry;
}

// The tensor named `name` and its index, or nullptr.
const inference::ModelInferRequest::InferInputTensor* Find(
    const inference::ModelInferRequest& request, const std::string& name, int* index) {
  for (int i = 0; i < request.inputs_size(); ++i) {
    if (request.inputs(i).name() == name) {
      *index = i;
      return &request.inputs(i);
    }
  }
  return nullptr;
}

// `data` with `elements` elements of `element_size` bytes must lie inside the tensor `name` of the request, or be a copy
// of it in one of `copies`.
// (`header` is the reader's copy of the request without raw_input_contents: typed contents
// are read there.)
void CheckInsideRequest(const inference::ModelInferRequest& request,
                        const inference::ModelInferRequest& header,
                        const std::vector<TensorBufferPool::Buffer>& copies,
                        const std::string& name, const void* data, int64_t elements,
                        int64_t element_size) {
  FUZZ_CHECK(data != nullptr, name);
  FUZZ_CHECK(elements >= 1, absl::StrCat(name, " elements ", elements));
  int index = -1;
  const auto* tensor = Find(request, name, &index);
  FUZZ_CHECK(tensor != nullptr, absl::StrCat(name, " pointer set but no such input"));
  const size_t bytes = static_cast<size_t>(elements * element_size);
  bool inside = false;
  if (request.raw_input_contents_size() > 0) {
    FUZZ_CHECK(index < request.raw_input_contents_size(), name);
    const std::string& raw = request.raw_input_contents(index);
    for (const TensorBufferPool::Buffer& copy : copies) {
      if (Inside(data, bytes, copy.data(), static_cast<size_t>(copy.size()))) {
        FUZZ_CHECK(raw.size() == bytes && std::memcmp(data, raw.data(), bytes) == 0,
                   absl::StrCat(name, ": the copy differs from raw_input_contents"));
        inside = true;
      }
    }
    // The raw entries were read from the slices, which hold the same bytes at other addresses:
    // compare contents, not addresses.
    if (!inside) inside = raw.size() == bytes;
  } else {
    const auto& fp32 = header.inputs(index).contents().fp32_contents();
    inside = Inside(data, bytes, fp32.data(), static_cast<size_t>(fp32.size()) * 4);
  }
  FUZZ_CHECK(inside, absl::StrCat(name, ": ", bytes, " bytes outside the request's tensor"));
  TouchBytes(data, bytes);
}

}  // namespace
}  // namespace sparkle::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  sparkle::fuzz::Registry();
  // Protobuf logs every string field with invalid UTF-8 it parses: noise, and slow.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sparkle;
  using namespace sparkle::fuzz;
  inference::ModelInferRequest request;
  const bool protobuf_ok = request.ParseFromArray(data, static_cast<int>(size));
  // The bytes in up to 8 slices, cut where the input's size says.
  std::vector<std::string> storage;
  std::vector<absl::string_view> slices;
  uint64_t seed = size * 0x9E3779B97F4A7C15ull + 1;
  for (size_t from = 0; from < size;) {
    seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
    const size_t n = storage.size() == 7 ? size - from : 1 + seed % (size - from);
    storage.emplace_back(reinterpret_cast<const char*>(data) + from, n);
    from += n;
  }
  for (const std::string& s : storage) slices.push_back(s);
  InferRequestView view;
  const absl::Status read = ReadInferRequest(slices, &view);
  if (!read.ok()) {
    FUZZ_CHECK(read.code() == absl::StatusCode::kInvalidArgument && !read.message().empty(),
               read.ToString());
    // The reader may refuse encodings that protobuf tolerates (groups, raw_input_contents of
    // another wire type, tags above 32 bits): no client sends them.
    return 0;
  }
  FUZZ_CHECK(protobuf_ok, "the reader accepted bytes that protobuf refuses");
  FUZZ_CHECK(static_cast<int>(view.raw_inputs.size()) == request.raw_input_contents_size(),
             "raw entry count");
  for (size_t i = 0; i < view.raw_inputs.size(); ++i) {
    std::string joined;
    for (absl::string_view piece : view.raw_inputs[i].pieces) joined.append(piece.data(), piece.size());
    FUZZ_CHECK(joined == request.raw_input_contents(static_cast<int>(i)), "raw entry bytes");
  }
  inference::ModelInferRequest header = request;
  header.clear_raw_input_contents();
  FUZZ_CHECK(Deterministic(header) == Deterministic(view.header()), "header differs");
  ParseContext context;
  context.limits.max_request_bytes = kMaxRequestBytes;
  context.limits.max_response_bytes = kMaxResponseBytes;
  context.registry = Registry();
  context.pool = Pool();
  absl::StatusOr<ParsedInferRequest> parsed = ParseInferRequest(view, context);
  // SPARKLE_FUZZ_VERBOSE=1: print each input's outcome (to see what the seeds reach).
  static const bool verbose = std::getenv("SPARKLE_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "parse: %s\n", parsed.status().ToString().c_str());
  if (!parsed.ok()) {
    FUZZ_CHECK(!parsed.status().message().empty(), "error without a message");
    return 0;
  }
  const Conv2dParams& p = parsed->params;
  FUZZ_CHECK(p.Validate().ok(), p.Validate().ToString());
  FUZZ_CHECK(static_cast<int64_t>(request.ByteSizeLong()) <= kMaxRequestBytes, "request size");
  // Conv2dParams' accessors multiply; UBSan reports an overflow here as a crash.
  const int64_t output_bytes = p.output_elements() * ElementSize(p.output_dtype);
  FUZZ_CHECK(output_bytes >= 2 && output_bytes <= kMaxResponseBytes,
             absl::StrCat("output bytes ", output_bytes));
  const auto& copies = parsed->copies;
  const int64_t es = ElementSize(p.dtype);
  CheckInsideRequest(request, view.header(), copies, "input", parsed->input, p.input_elements(),
                     es);
  if (p.has_residual) {
    CheckInsideRequest(request, view.header(), copies, "residual", parsed->residual,
                       p.residual_elements(), es);
  } else {
    FUZZ_CHECK(parsed->residual == nullptr, "residual pointer without has_residual");
  }
  if (parsed->registered_weight != nullptr) {
    const RegisteredWeight& w = *parsed->registered_weight;
    FUZZ_CHECK(!parsed->weight_id.empty(), "registered weight without weight_id");
    FUZZ_CHECK(parsed->weight == w.weight(), "weight does not point at the registration");
    FUZZ_CHECK(p.weight_elements() == w.weight_elements(),
               absl::StrCat("weight elements ", p.weight_elements(), " vs registered ",
                            w.weight_elements()));
    FUZZ_CHECK(p.has_bias == w.has_bias(), "has_bias differs from the registration");
    FUZZ_CHECK(p.k == w.k(), "K differs from the registration");
    FUZZ_CHECK(w.dtype() == p.dtype, "datatype differs from the registration");
    TouchBytes(parsed->weight, static_cast<size_t>(w.weight_elements() * es));
    if (p.has_bias) {
      FUZZ_CHECK(parsed->bias == w.bias(), "bias does not point at the registration");
      TouchBytes(parsed->bias, static_cast<size_t>(w.k() * es));
    }
  } else {
    FUZZ_CHECK(parsed->weight_id.empty(), "weight_id without a registered weight");
    CheckInsideRequest(request, view.header(), copies, "weight", parsed->weight,
                       p.weight_elements(), es);
    if (p.has_bias) {
      CheckInsideRequest(request, view.header(), copies, "bias", parsed->bias, p.k, es);
    } else {
      FUZZ_CHECK(parsed->bias == nullptr, "bias pointer without has_bias");
    }
  }
  FUZZ_CHECK(parsed->priority >= 0 && parsed->priority <= 16, "priority range");
  return 0;
}
