// ModelInferHandler: one KServe v2 inference request from its serialized bytes to its serialized
// reply, whichever RPC carried it (unary ModelInfer, or one message of a ModelStreamInfer
// stream). Reads the request without materialising its tensors (infer_request_reader.h), parses
// and validates it with the one request parser (request_parser.h), admits and submits the job,
// and builds the response from pooled buffers handed to gRPC as slices: no zero-fill, no second
// copy of the output. Knows nothing of reactors: the RPC adapters own the calls.
#pragma once

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "grpcpp/support/byte_buffer.h"
#include "server/call_auth.h"
#include "server/inference_stats.h"
#include "server/request_parser.h"
#include "server/server_metrics.h"
#include "server/tensor_buffer_pool.h"

namespace sparkle {

class SharedMemoryRegistry;

// The outcome of one request.
struct InferReply {
  // OK, or the request's refusal or failure (code and message for the client).
  absl::Status status;
  // The serialized ModelInferResponse when status is OK (its output bytes are a pooled buffer
  // that goes back to the pool, and the job's in-flight bytes to the budget, when gRPC drops the
  // last reference). Empty otherwise.
  grpc::ByteBuffer response;
  // The request id (empty when the request could not be read), for stream error replies.
  std::string id;
  // status is the retryable queue-full refusal: a unary adapter adds the retry trailers.
  bool queue_full = false;
};

class ModelInferHandler {
 public:
  using Done = std::function<void(InferReply)>;

  struct Options {
    ParseLimits limits;
  };

  // Not owned; all must outlive the handler and every request it accepted. `shared_memory` and
  // `metrics` may be null (no shared-memory regions; metrics off).
  ModelInferHandler(Engine* engine, TensorBufferPool* pool, SharedMemoryRegistry* shared_memory,
                    InferenceStats* stats, ServerMetrics* metrics, const Options& options);

  // Handles one request. `done` runs exactly once: on this thread before Handle returns when
  // the request is refused (unreadable, invalid, not admitted), otherwise on an engine thread
  // when the job completes. The request's bytes are kept alive until then. `caller` names the
  // client for fair scheduling and owns its shared-memory regions.
  void Handle(const grpc::ByteBuffer& request, const CallIdentity& caller, absl::Time deadline,
              CancelFlag cancelled, Done done);

 private:
  void RecordRejection(const absl::Status& status, bool queue_full);

  Engine* const engine_;
  TensorBufferPool* const pool_;
  SharedMemoryRegistry* const shared_memory_;
  InferenceStats* const stats_;
  ServerMetrics* const metrics_;
  const Options options_;
};

}  // namespace sparkle
