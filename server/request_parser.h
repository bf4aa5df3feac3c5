// ParseInferRequest: a KServe v2 ModelInferRequest for the `conv2d` model → the geometry and
// data pointers of one conv2d job. Every rule of docs/protocol.md's error table is checked here, with
// a message that names the field and the value; sizes are validated with overflow-checked
// arithmetic before anything is allocated.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/core/conv2d_params.h"
#include "engine/registry/weight_registry.h"
#include "engine/core/device_request.h"
#include "inference/grpc_predict_v2.pb.h"

namespace sparkle {

inline constexpr char kModelName[] = "conv2d";
inline constexpr char kModelVersion[] = "1";

struct ParsedInferRequest {
  Conv2dParams params;
  // Point into the request message, which outlives the job (gRPC keeps it until Finish).
  const float* input = nullptr;
  const float* weight = nullptr;
  const float* bias = nullptr;
  // Set when the request names registered weights (`weight_id`): weight and bias point into
  // it, and it keeps them alive (and counted in use) while the job holds it.
  std::shared_ptr<const RegisteredWeight> registered_weight;
  std::string weight_id;  // `weight_id` parameter; empty when the weights were sent
  int priority = 0;                                  // `priority` parameter, 0 = default
  absl::Duration queue_timeout = absl::InfiniteDuration();  // `timeout` parameter (µs)
  // `device` parameter (auto | cpu | gpu | gpu:N). Whether that device exists is the engine's
  // call at Submit (FAILED_PRECONDITION when absent).
  DeviceRequest device;
};

// Upper bound of a ModelInferResponse's bytes besides the output bytes and the request id:
// model name and version, the output's name, datatype and shape (4 varints of at most 10
// bytes), and the tags and length prefixes: at most 92 bytes by the protobuf wire format.
inline constexpr int64_t kResponseOverheadBytes = 128;

struct ParseLimits {
  // Largest request (serialized), in bytes; RESOURCE_EXHAUSTED naming max_message_bytes above it.
  int64_t max_request_bytes = int64_t{256} << 20;
  // Largest response the daemon may send, in bytes (the output, its metadata and the echoed
  // request id: kResponseOverheadBytes); RESOURCE_EXHAUSTED naming max_message_bytes above it.
  int64_t max_response_bytes = int64_t{256} << 20;
};

// NOT_FOUND for an unknown model or version, RESOURCE_EXHAUSTED for an output above the limit,
// INVALID_ARGUMENT otherwise (a malformed `device` included; an absent device is the engine's
// FAILED_PRECONDITION).
// A `weight_id` parameter names weights in `registry` (NOT_FOUND when unknown or when
// `registry` is null); sending the `weight` or `bias` input as well is INVALID_ARGUMENT.
absl::StatusOr<ParsedInferRequest> ParseInferRequest(const inference::ModelInferRequest& request,
                                                     const ParseLimits& limits,
                                                     WeightRegistry* registry = nullptr);

// NOT_FOUND unless name is "conv2d" and version is "" or "1".
absl::Status CheckModel(const std::string& name, const std::string& version);

}  // namespace sparkle
