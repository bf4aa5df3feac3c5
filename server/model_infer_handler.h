// ModelInferHandler: one KServe v2 inference request to its reply, whichever adapter carried it
// (unary ModelInfer, one message of a ModelStreamInfer stream, or a REST infer: server/rest_*).
// gRPC's serialized bytes are read without materialising their tensors (infer_request_reader.h);
// every request is then parsed and validated by the one request parser (request_parser.h),
// admitted and submitted. The reply is the response's small header plus the output's pooled
// buffer: gRPC sends it as slices (ToResponseBuffer), REST as its body; no zero-fill, no second
// copy of the output. Knows nothing of reactors or HTTP: the adapters own the calls.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"
#include "inference/grpc_predict_v2.pb.h"
#include "server/infer_request_reader.h"
#include "server/call_auth.h"
#include "server/inference_stats.h"
#include "server/request_parser.h"
#include "server/server_metrics.h"
#include "server/tensor_buffer_pool.h"

namespace sparkle {

class SharedMemoryRegistry;

// The output tensor's bytes: a pooled buffer, holding the job's share of the in-flight budget
// until it is dropped (so the budget also covers the reply being sent). Move-only.
class InferOutput {
 public:
  struct Lease;  // the buffer and the admission
  InferOutput();
  explicit InferOutput(std::unique_ptr<Lease> lease);
  InferOutput(InferOutput&&) noexcept;
  InferOutput& operator=(InferOutput&&) noexcept;
  ~InferOutput();
  // Empty when the output went to a shared-memory region.
  const char* data() const;
  int64_t size() const;
  // Hands the lease to a gRPC slice (released when gRPC drops the slice); leaves this empty.
  grpc::Slice ToSlice() &&;

 private:
  std::unique_ptr<Lease> lease_;
};

// The outcome of one request.
struct InferReply {
  // OK, or the request's refusal or failure (code and message for the client).
  absl::Status status;
  // When status is OK: model, version, id and the output's name, datatype and shape (no tensor
  // bytes), and the output's bytes.
  inference::ModelInferResponse header;
  InferOutput output;
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

  // Handles one serialized ModelInferRequest. `done` runs exactly once: on this thread before
  // Handle returns when the request is refused (unreadable, invalid, not admitted), otherwise on
  // an engine thread when the job completes. The request's bytes are kept alive until then.
  // `caller` names the client for fair scheduling and owns its shared-memory regions.
  void Handle(const grpc::ByteBuffer& request, const CallIdentity& caller, absl::Time deadline,
              CancelFlag cancelled, Done done);

  // The same for a request another adapter has read: `view` points into what `bytes` owns,
  // which is kept alive until `done` has run. The adapter has checked the request's size.
  void Handle(InferRequestView view, std::shared_ptr<const void> bytes,
              const CallIdentity& caller, absl::Time deadline, CancelFlag cancelled, Done done);

 private:
  struct Pending;
  void Run(std::unique_ptr<Pending> pending, const CallIdentity& caller, absl::Time deadline,
           CancelFlag cancelled, Done done);
  void Refuse(const absl::Status& status, bool queue_full, const std::string& id,
              const Done& done);

  Engine* const engine_;
  TensorBufferPool* const pool_;
  SharedMemoryRegistry* const shared_memory_;
  InferenceStats* const stats_;
  ServerMetrics* const metrics_;
  const Options options_;
};

// The serialized ModelInferResponse of an OK reply: its header, then the output as
// raw_output_contents, handed to gRPC as the pooled buffer itself. Takes the reply's output.
grpc::ByteBuffer ToResponseBuffer(InferReply* reply);

}  // namespace sparkle
