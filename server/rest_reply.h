// RestReply: what the KServe v2 REST endpoint sends back, built from the same messages gRPC
// sends: the HTTP status of an absl::Status, the `{"error": "..."}` body, a protobuf message
// as KServe/Triton JSON, and an infer response as JSON or with Triton's binary tensor data
// extension.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"
#include "inference/grpc_predict_v2.pb.h"

namespace sparkle {

// The HTTP status for a refusal or failure, as docs/protocol.md maps gRPC codes:
// INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE 400; UNAUTHENTICATED 401;
// PERMISSION_DENIED 403; NOT_FOUND 404; ALREADY_EXISTS 409; RESOURCE_EXHAUSTED 429 for a full
// queue (`queue_full`, with Retry-After), else 413 (too large); UNIMPLEMENTED 501;
// UNAVAILABLE 503; DEADLINE_EXCEEDED 504; anything else 500.
int HttpStatusFor(const absl::Status& status, bool queue_full);

// {"error": "<message>"}.
std::string ErrorJson(absl::string_view message);

// The message as JSON with protobuf field names and integers as JSON numbers (KServe's and
// Triton's REST form, where protobuf's own JSON mapping would quote 64-bit integers). Maps
// become objects, enums their names; every scalar and repeated field is written (defaults
// included, as Triton prints its statistics), sub-messages and oneof members when set;
// non-finite numbers are null, and strings that are not UTF-8 get U+FFFD for each bad byte.
std::string ProtoToJson(const google::protobuf::Message& message);

// An infer response: {"model_name", "model_version", "id", "outputs": [{"name", "datatype",
// "shape", ...}]}. With `binary`, the output's parameters carry binary_data_size and its bytes
// follow the JSON in the body (the caller sends them and sets Inference-Header-Content-Length);
// otherwise "data" holds them as a flat JSON array (the output's datatype, FP32, BF16 or FP16,
// widened exactly to float and written in its shortest round-trip form). An empty
// `output` (written to shared memory) gets neither.
std::string InferResponseJson(const inference::ModelInferResponse& header,
                              absl::string_view output, bool binary);

}  // namespace sparkle
