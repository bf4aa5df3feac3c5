// libFuzzer target: a serialized inference.ModelInferRequest (unparseable inputs are skipped)
// through ParseInferRequest (server/request_parser.h), with a WeightRegistry that holds one
// registered weight (tests/fuzz/fuzz_weights.h), so that the `weight_id` path is reached.
//
// Invariants checked when the parser says OK: the geometry validates; every pointer it returns,
// with the size the geometry gives it, lies inside the request (raw_input_contents entry or
// fp32_contents of the same tensor) or inside the registered weight, and every byte of it is read
// (ASan); the output size is within the limit; the request size is within the limit.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "server/request_parser.h"
#include "google/protobuf/stubs/logging.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/fuzz/fuzz_weights.h"

namespace sparkle::fuzz {
namespace {

// Small limits, so that the RESOURCE_EXHAUSTED paths are reached with small inputs.
constexpr int64_t kMaxRequestBytes = 1 << 20;
constexpr int64_t kMaxResponseBytes = 1 << 20;

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

// `data` with `elements` floats must lie inside the tensor `name` of the request.
void CheckInsideRequest(const inference::ModelInferRequest& request, const std::string& name,
                        const float* data, int64_t elements) {
  FUZZ_CHECK(data != nullptr, name);
  FUZZ_CHECK(elements >= 1, absl::StrCat(name, " elements ", elements));
  int index = -1;
  const auto* tensor = Find(request, name, &index);
  FUZZ_CHECK(tensor != nullptr, absl::StrCat(name, " pointer set but no such input"));
  const size_t bytes = static_cast<size_t>(elements) * 4;
  bool inside = false;
  if (request.raw_input_contents_size() > 0) {
    FUZZ_CHECK(index < request.raw_input_contents_size(), name);
    const std::string& raw = request.raw_input_contents(index);
    inside = Inside(data, bytes, raw.data(), raw.size());
  } else {
    const auto& fp32 = tensor->contents().fp32_contents();
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
  if (!request.ParseFromArray(data, static_cast<int>(size))) return -1;  // not in the corpus
  ParseLimits limits;
  limits.max_request_bytes = kMaxRequestBytes;
  limits.max_response_bytes = kMaxResponseBytes;
  absl::StatusOr<ParsedInferRequest> parsed = ParseInferRequest(request, limits, Registry());
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
  const int64_t output_bytes = p.output_elements() * 4;
  FUZZ_CHECK(output_bytes >= 4 && output_bytes <= kMaxResponseBytes,
             absl::StrCat("output bytes ", output_bytes));
  CheckInsideRequest(request, "input", parsed->input, p.input_elements());
  if (parsed->registered_weight != nullptr) {
    const RegisteredWeight& w = *parsed->registered_weight;
    FUZZ_CHECK(!parsed->weight_id.empty(), "registered weight without weight_id");
    FUZZ_CHECK(parsed->weight == w.weight(), "weight does not point at the registration");
    FUZZ_CHECK(p.weight_elements() == w.weight_elements(),
               absl::StrCat("weight elements ", p.weight_elements(), " vs registered ",
                            w.weight_elements()));
    FUZZ_CHECK(p.has_bias == w.has_bias(), "has_bias differs from the registration");
    FUZZ_CHECK(p.k == w.k(), "K differs from the registration");
    TouchBytes(parsed->weight, static_cast<size_t>(w.weight_elements()) * 4);
    if (p.has_bias) {
      FUZZ_CHECK(parsed->bias == w.bias(), "bias does not point at the registration");
      TouchBytes(parsed->bias, static_cast<size_t>(w.k()) * 4);
    }
  } else {
    FUZZ_CHECK(parsed->weight_id.empty(), "weight_id without a registered weight");
    CheckInsideRequest(request, "weight", parsed->weight, p.weight_elements());
    if (p.has_bias) {
      CheckInsideRequest(request, "bias", parsed->bias, p.k);
    } else {
      FUZZ_CHECK(parsed->bias == nullptr, "bias pointer without has_bias");
    }
  }
  FUZZ_CHECK(parsed->priority >= 0 && parsed->priority <= 16, "priority range");
  return 0;
}
