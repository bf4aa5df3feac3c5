// libFuzzer target: bytes as the JSON header of a KServe v2 REST infer request, through
// ParseRestInferRequest (server/rest_infer_request.h) and, when it parses, the one request parser
// ParseInferRequest (server/request_parser.h) as the REST endpoint hands it over
// (server/rest_service.cc): model from the URL, binary tensors (binary_data_size) as raw inputs
// in input order, with the FP32 JSON data of the other inputs moved to raw bytes when any input
// is binary. No engine, no shared memory, no registered weights.
//
// Invariants: a refusal is INVALID_ARGUMENT with a message. An accepted request has one binary
// size (>= -1) per input and one binary flag per requested output, no input carries both JSON
// data and a binary size, and the REST-only keys (binary_data_size, binary_data,
// binary_data_output at their levels) never reach the header's parameters. When the request
// parser says OK: the geometry validates, the sizes are within the limits, and every pointer it
// returns, with the size the geometry gives it, lies inside one of the request's buffers (every
// byte read: ASan).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/stubs/logging.h"
#include "server/infer_request_reader.h"
#include "server/request_parser.h"
#include "server/rest_infer_request.h"
#include "tests/fuzz/fuzz_util.h"

namespace sparkle::fuzz {
namespace {

// Small limits, so that the RESOURCE_EXHAUSTED paths are reached with small inputs; binary
// tensors larger than this are not materialised (the endpoint would refuse the body).
constexpr int64_t kMaxRequestBytes = 1 << 20;
constexpr int64_t kMaxResponseBytes = 1 << 20;

// Does [p, p + bytes) lie inside one of `buffers`, or inside a tensor's fp32_contents?
bool InsideRequest(const std::vector<std::string>& buffers,
                   const inference::ModelInferRequest& header, const void* p, size_t bytes) {
  for (const std::string& b : buffers) {
    if (Inside(p, bytes, b.data(), b.size())) return true;
  }
  for (const auto& t : header.inputs()) {
    const auto& c = t.contents().fp32_contents();
    if (Inside(p, bytes, c.data(), static_cast<size_t>(c.size()) * 4)) return true;
  }
  return false;
}

void CheckPointer(const std::vector<std::string>& buffers,
                  const inference::ModelInferRequest& header, const char* name, const void* p,
                  int64_t elements, int64_t element_size) {
  FUZZ_CHECK(p != nullptr, name);
  FUZZ_CHECK(elements >= 1, absl::StrCat(name, " elements ", elements));
  const size_t bytes = static_cast<size_t>(elements * element_size);
  FUZZ_CHECK(InsideRequest(buffers, header, p, bytes),
             absl::StrCat(name, ": ", elements, " elements outside the request's buffers"));
  TouchBytes(p, bytes);
}

}  // namespace
}  // namespace sparkle::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Protobuf logs every string field with invalid UTF-8: noise, and slow.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sparkle;
  using namespace sparkle::fuzz;
  const absl::string_view json(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<RestInferRequest> rest = ParseRestInferRequest(json);
  if (!rest.ok()) {
    FUZZ_CHECK(rest.status().code() == absl::StatusCode::kInvalidArgument,
               rest.status().ToString());
    FUZZ_CHECK(!rest.status().message().empty(), "refusal without a message");
    return 0;
  }
  inference::ModelInferRequest& header = rest->header;
  FUZZ_CHECK(static_cast<int>(rest->binary_sizes.size()) == header.inputs_size(),
             "binary_sizes per input");
  FUZZ_CHECK(static_cast<int>(rest->binary_outputs.size()) == header.outputs_size(),
             "binary_outputs per output");
  FUZZ_CHECK(header.model_name().empty() && header.model_version().empty(),
             "model set from the JSON");
  FUZZ_CHECK(header.raw_input_contents().empty(), "raw_input_contents from the JSON");
  FUZZ_CHECK(!header.parameters().contains("binary_data_output"), "binary_data_output forwarded");
  bool any_binary = false;
  int64_t binary_total = 0;
  for (int i = 0; i < header.inputs_size(); ++i) {
    const auto& input = header.inputs(i);
    const int64_t binary = rest->binary_sizes[static_cast<size_t>(i)];
    FUZZ_CHECK(binary >= -1, absl::StrCat("binary size ", binary));
    FUZZ_CHECK(!input.parameters().contains("binary_data_size"), "binary_data_size forwarded");
    for (int64_t d : input.shape()) FUZZ_CHECK(d >= 0, absl::StrCat("dimension ", d));
    if (binary >= 0) {
      FUZZ_CHECK(input.contents().ByteSizeLong() == 0, "binary input with JSON data");
      any_binary = true;
      binary_total += binary;
    }
  }
  for (const auto& output : header.outputs()) {
    FUZZ_CHECK(!output.parameters().contains("binary_data"), "binary_data forwarded");
  }

  // As the endpoint: the body would carry binary_total bytes after the JSON.
  if (binary_total > kMaxRequestBytes) return 0;
  header.set_model_name("conv2d");
  std::vector<std::string> buffers;  // the raw inputs, in order
  if (any_binary) {
    for (int i = 0; i < header.inputs_size(); ++i) {
      auto* input = header.mutable_inputs(i);
      if (input->parameters().contains("shared_memory_region")) continue;
      const int64_t binary = rest->binary_sizes[static_cast<size_t>(i)];
      if (binary >= 0) {
        std::string bytes(static_cast<size_t>(binary), '\0');
        for (size_t b = 0; b < bytes.size(); ++b) bytes[b] = static_cast<char>(b * 7 + i);
        buffers.push_back(std::move(bytes));
        continue;
      }
      const auto& floats = input->contents().fp32_contents();
      if (input->contents().ByteSizeLong() != 0 && floats.empty()) return 0;  // refused there
      buffers.emplace_back(reinterpret_cast<const char*>(floats.data()),
                           static_cast<size_t>(floats.size()) * 4);
      input->clear_contents();
    }
  }
  InferRequestView view = ViewOf(header);
  view.serialized_bytes = static_cast<int64_t>(size) + binary_total;
  for (const std::string& b : buffers) {
    TensorBytes bytes;
    bytes.size = static_cast<int64_t>(b.size());
    bytes.pieces.emplace_back(b.data(), b.size());
    view.raw_inputs.push_back(std::move(bytes));
  }
  ParseContext context;
  context.limits.max_request_bytes = kMaxRequestBytes;
  context.limits.max_response_bytes = kMaxResponseBytes;
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
  FUZZ_CHECK(parsed->registered_weight == nullptr && parsed->weight_id.empty(),
             "registered weights without a registry");
  FUZZ_CHECK(parsed->regions.empty() && parsed->output_in_region == nullptr,
             "shared memory without a registry");
  // Conv2dParams' accessors multiply; UBSan reports an overflow here as a crash.
  const int64_t output_bytes = p.output_elements() * ElementSize(p.output_dtype);
  FUZZ_CHECK(output_bytes >= 2 && output_bytes <= kMaxResponseBytes,
             absl::StrCat("output bytes ", output_bytes));
  // Each tensor lies in a pooled copy (read whole), in a raw input or in fp32_contents.
  const int64_t es = ElementSize(p.dtype);
  auto inside = [&](const char* name, const void* ptr, int64_t elements) {
    for (const auto& copy : parsed->copies) {
      if (Inside(ptr, static_cast<size_t>(elements * es), copy.data(),
                 static_cast<size_t>(copy.size()))) {
        TouchBytes(ptr, static_cast<size_t>(elements * es));
        return;
      }
    }
    CheckPointer(buffers, header, name, ptr, elements, es);
  };
  inside("input", parsed->input, p.input_elements());
  inside("weight", parsed->weight, p.weight_elements());
  if (p.has_bias) {
    inside("bias", parsed->bias, p.k);
  } else {
    FUZZ_CHECK(parsed->bias == nullptr, "bias pointer without has_bias");
  }
  if (p.has_residual) {
    inside("residual", parsed->residual, p.residual_elements());
  } else {
    FUZZ_CHECK(parsed->residual == nullptr, "residual pointer without has_residual");
  }
  FUZZ_CHECK(parsed->priority >= 0 && parsed->priority <= 16, "priority range");
  return 0;
}
