// InferRequestReader: a serialized ModelInferRequest, as gRPC's slices hold it, read without
// materialising its tensors. Every field but raw_input_contents (7) is copied into a small header
// message (names, shapes, parameters: typically < 1 KiB); each raw_input_contents entry is left
// where it arrived and described by the pieces of the slices it spans. request_parser.h then
// checks the request and takes each tensor in place (one aligned piece) or copies it once.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "inference/grpc_predict_v2.pb.h"

namespace sparkle {

// One tensor's bytes: consecutive pieces of the request's slices (usually one).
struct TensorBytes {
  absl::InlinedVector<absl::string_view, 1> pieces;
  int64_t size = 0;
};

// A ModelInferRequest whose raw input bytes stay in the buffers they arrived in. The views point
// into those buffers (and `header` into `owned_header` or the caller's message): whatever holds
// the bytes must outlive the view and everything parsed from it.
struct InferRequestView {
  // Every field but raw_input_contents (whose entries, if the message has them, are not used).
  const inference::ModelInferRequest& header() const {
    return message_ != nullptr ? *message_ : owned_header_;
  }
  std::vector<TensorBytes> raw_inputs;  // raw_input_contents, in order
  int64_t serialized_bytes = 0;         // the whole request's size

 private:
  friend absl::Status ReadInferRequest(absl::Span<const absl::string_view>, InferRequestView*);
  friend InferRequestView ViewOf(const inference::ModelInferRequest&);
  const inference::ModelInferRequest* message_ = nullptr;  // ViewOf's message
  inference::ModelInferRequest owned_header_;               // read from bytes
};

// Reads `slices` (the request's bytes in order, e.g. from grpc::ByteBuffer::Dump) into `view`.
// INVALID_ARGUMENT naming what is wrong when the bytes are not a ModelInferRequest (truncated
// field, bad wire type, group, field 0, a malformed nested message).
absl::Status ReadInferRequest(absl::Span<const absl::string_view> slices, InferRequestView* view);

// A view of a parsed message (typed stubs, tests): `message` must outlive it.
InferRequestView ViewOf(const inference::ModelInferRequest& message);

}  // namespace sparkle
