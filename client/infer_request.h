// The conv2d ModelInferRequest as docs/protocol.md defines it, built from host arrays, and the output
// array taken back out of a ModelInferResponse. Shared by `sparklectl infer` and `sparklectl
// bench` so that both send byte-identical requests. Geometry is not validated here: the server
// is the authority (and names the field it rejects); only what this side must know to build
// the message is checked.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/npy.h"
#include "inference/grpc_predict_v2.pb.h"

namespace sparkle::client {

inline constexpr absl::string_view kModelName = "conv2d";

// Convolution geometry, sent as int64 request parameters (all seven, always: explicit beats the
// server's defaults when someone reads a captured request).
struct ConvGeometry {
  int64_t stride_h = 1;
  int64_t stride_w = 1;
  int64_t pad_h = 0;
  int64_t pad_w = 0;
  int64_t dilation_h = 1;
  int64_t dilation_w = 1;
  int64_t groups = 1;
};

enum class Layout { kNCHW, kNHWC };

// "NCHW" / "NHWC" (case-insensitive); INVALID_ARGUMENT otherwise.
absl::StatusOr<Layout> ParseLayout(absl::string_view text);

struct InferInputs {
  NpyArray input;   // [N, C, H, W], or [N, H, W, C] with Layout::kNHWC
  NpyArray weight;  // [K, C/groups, R, S]
  std::optional<NpyArray> bias;  // [K]
};

struct InferRequestOptions {
  ConvGeometry geometry;
  Layout layout = Layout::kNCHW;
  // string_param "device"; empty: not sent, so the server's default placement ("auto") applies.
  std::string device;
  // string_param "weight_id": weights registered with `sparklectl weights register`. When set,
  // the request carries no weight and no bias input (InferInputs' are ignored).
  std::string weight_id;
  // Further int64 request parameters (priority, timeout, future keys), sent as given after the
  // geometry; a key repeated here overrides the geometry's value.
  std::vector<std::pair<std::string, int64_t>> extra_params;
  std::string id;  // echoed by the server; empty: not set
};

// Builds the request, moving the arrays' bytes into raw_input_contents (inputs "input",
// "weight", then "bias" if present, in that order). INVALID_ARGUMENT, naming the tensor, if an
// array's byte count does not match its shape.
absl::StatusOr<inference::ModelInferRequest> BuildInferRequest(InferInputs inputs,
                                                               const InferRequestOptions& options);

// Bytes of tensor payload in `request` (raw_input_contents), the figure bench reports as MB/s.
int64_t RequestPayloadBytes(const inference::ModelInferRequest& request);

// Takes the tensor named "output" out of `response` (moving its bytes). INVALID_ARGUMENT naming
// the problem if the server sent no such output, a datatype other than FP32, a negative
// dimension, or a byte count that does not match the shape. Accepts raw_output_contents (what
// sparkled sends) and contents.fp32_contents (what other KServe servers may send).
absl::StatusOr<NpyArray> TakeOutput(inference::ModelInferResponse* response);

// An array of `shape` filled with uniform values in [-1, 1) from a generator seeded with `seed`.
// The generator is spelled out (splitmix64), not a <random> distribution whose output differs
// between standard libraries, so the same seed and shape give the same bytes everywhere.
NpyArray RandomArray(std::vector<int64_t> shape, uint64_t seed);

}  // namespace sparkle::client
