// ParseInferRequest: a KServe v2 ModelInferRequest for the `conv2d` model → the geometry and
// data pointers of one conv2d job. The one parser of every path (unary, streaming, shared
// memory): it reads an InferRequestView (infer_request_reader.h), whose tensors stay where they
// arrived, and takes each tensor in place when it lies whole and aligned in one buffer (a gRPC
// slice, a shared-memory region), else copies it once into a pooled buffer. Every rule of docs/protocol.md's error table is checked here, with
// a message that names the field and the value; sizes are validated with overflow-checked
// arithmetic before anything is allocated.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include <vector>

#include "engine/core/conv2d_params.h"
#include "engine/core/device_request.h"
#include "engine/registry/weight_registry.h"
#include "inference/grpc_predict_v2.pb.h"
#include "server/infer_request_reader.h"
#include "server/shared_memory_registry.h"
#include "server/tensor_buffer_pool.h"

namespace sparkle {

inline constexpr char kModelName[] = "conv2d";
inline constexpr char kModelVersion[] = "1";

struct ParsedInferRequest {
  Conv2dParams params;
  // Point into the request's buffers (which the caller keeps until the job is done), into
  // `copies`, into `regions`, or into `registered_weight`: elements of params.dtype, aligned to
  // its element size. residual is null unless params.has_residual.
  const void* input = nullptr;
  const void* weight = nullptr;
  const void* bias = nullptr;
  const void* residual = nullptr;
  // Set when the request names registered weights (`weight_id`): weight and bias point into
  // it, and it keeps them alive (and counted in use) while the job holds it.
  std::shared_ptr<const RegisteredWeight> registered_weight;
  std::string weight_id;  // `weight_id` parameter; empty when the weights were sent
  int priority = 0;                                  // `priority` parameter, 0 = default
  absl::Duration queue_timeout = absl::InfiniteDuration();  // `timeout` parameter (µs)
  // `device` parameter (auto | cpu | gpu | gpu:N). Whether that device exists is the engine's
  // call at Submit (FAILED_PRECONDITION when absent).
  DeviceRequest device;
  // Tensors that arrived split across buffers or misaligned, copied once (64-byte aligned).
  std::vector<TensorBufferPool::Buffer> copies;
  // Shared-memory regions the tensors are read from or written to: mapped while held.
  std::vector<std::shared_ptr<const SharedMemoryRegion>> regions;
  // Where the engine writes the output when it was requested into a shared-memory region
  // (params.output_elements() elements of params.output_dtype, aligned to its element size);
  // null: the output goes in the response.
  void* output_in_region = nullptr;
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

struct ParseContext {
  ParseLimits limits;
  // Registered weights for the `weight_id` parameter; null: none (NOT_FOUND).
  WeightRegistry* registry = nullptr;
  // System shared-memory regions for the `shared_memory_region` tensor parameters, looked up as
  // `owner`'s (server/scheduling_client.h); null: shared memory off (INVALID_ARGUMENT).
  const SharedMemoryRegistry* shared_memory = nullptr;
  std::string owner;
  // Where copies go; null: plain aligned allocations (tests, fuzzing).
  TensorBufferPool* pool = nullptr;
};

// Geometry, epilogue and datatypes (docs/protocol.md, request parameters): per-side padding
// (pad_top, pad_bottom, pad_left, pad_right over pad_h/pad_w over pad) or ONNX's auto_pad
// (SAME_UPPER, SAME_LOWER, VALID; never with an explicit pad), activation with clip_min and
// clip_max, the optional input `residual` (the output's shape and layout), input, weight, bias
// and residual in one datatype (FP32, BF16, FP16) and the output in that datatype or FP32 (the
// requested output's `datatype` parameter).
// NOT_FOUND for an unknown model or version, RESOURCE_EXHAUSTED for a request or an output
// above the limit, INVALID_ARGUMENT otherwise (a malformed `device` included; an absent device
// is the engine's FAILED_PRECONDITION).
// A `weight_id` parameter names weights in `registry` (NOT_FOUND when unknown or when
// `registry` is null); sending the `weight` or `bias` input as well is INVALID_ARGUMENT.
// An input or the requested output with `shared_memory_region` (and `shared_memory_byte_size`,
// `shared_memory_offset`) is read from / written to that region of the caller's (NOT_FOUND for an
// unknown region, INVALID_ARGUMENT for a size or offset that does not fit); raw_input_contents
// then has one entry per input NOT in shared memory, in order, as Triton sends them.
absl::StatusOr<ParsedInferRequest> ParseInferRequest(const InferRequestView& request,
                                                     const ParseContext& context);

// A parsed message (typed stubs, tests, fuzzing): no shared memory, no pool.
absl::StatusOr<ParsedInferRequest> ParseInferRequest(const inference::ModelInferRequest& request,
                                                     const ParseLimits& limits,
                                                     WeightRegistry* registry = nullptr);

// NOT_FOUND unless name is "conv2d" and version is "" or "1".
absl::Status CheckModel(const std::string& name, const std::string& version);

}  // namespace sparkle
