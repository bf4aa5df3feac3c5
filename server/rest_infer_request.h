// RestInferRequest: the JSON header of a KServe v2 REST infer request (with Triton's binary
// tensor data extension) turned into a ModelInferRequest header for the one request parser
// (request_parser.h). This is all REST adds to inference: the parser, the engine path and the
// limits are gRPC's.
//
// The JSON is read with RapidJSON's SAX reader in iterative mode: no document is built and no
// recursion happens, so a deeply nested or hostile body costs no stack. Tensor `data` (flat or
// nested arrays) lands in the input's typed contents (FP32 in fp32_contents, and so on by
// datatype), where the parser takes it in place. Input parameter `binary_data_size` says the
// tensor's bytes follow the JSON in the body instead (in input order); output parameter
// `binary_data` and request parameter `binary_data_output` ask for binary outputs. Those three
// REST-only keys are consumed here; every other parameter goes to the parser as in gRPC.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "inference/grpc_predict_v2.pb.h"

namespace sparkle {

struct RestInferRequest {
  // id, parameters, inputs (name, datatype, shape, parameters, JSON data in typed contents) and
  // requested outputs. model_name and model_version are left for the caller (they are in the
  // URL).
  inference::ModelInferRequest header;
  // Per input of header.inputs(): the byte size of its binary data in the body after the JSON,
  // or -1 when it has none (JSON data, or shared memory).
  std::vector<int64_t> binary_sizes;
  // Per requested output of header.outputs(): send its data binary.
  std::vector<bool> binary_outputs;
  // The request's `binary_data_output` parameter: outputs not requested by name are sent
  // binary (Triton's default is JSON).
  bool binary_data_output = false;
};

// INVALID_ARGUMENT naming what is wrong: JSON syntax (with the byte offset), an unknown key,
// a value of the wrong type, a shape or size that is negative, data of a datatype JSON cannot
// carry (FP16, BF16), data whose values do not fit the datatype, nesting deeper than 16 levels.
absl::StatusOr<RestInferRequest> ParseRestInferRequest(absl::string_view json);

}  // namespace sparkle
