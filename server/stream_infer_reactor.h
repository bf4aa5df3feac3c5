// StreamInferReactor: one ModelStreamInfer call (KServe v2 / Triton bidirectional streaming).
// Each ModelInferRequest read from the stream goes to the ModelInferHandler, and each request
// gets exactly one ModelStreamInferResponse, in completion order: `infer_response` (the
// handler's serialized ModelInferResponse, framed without a copy) or, for that request only,
// `error_message` "[CODE] message" with an `infer_response` carrying the model, version and the
// request `id`. A bad request never ends the stream.
//
// Flow control: at most `max_inflight` requests of the stream are read and not yet answered
// (in the engine, or waiting to be written); at the limit the reactor stops reading, and reads
// again when a reply has been written. gRPC allows one outstanding write, so finished replies
// wait in a FIFO (bounded by max_inflight by construction).
//
// Ending: the client's half-close finishes the stream with OK once every reply has been
// written. Cancellation (client gone, deadline, a failed write) sets the stream's one cancel
// flag, shared by all its jobs, so that the engine drops the queued ones; the stream finishes
// CANCELLED at once and the reactor deletes itself once gRPC's OnDone and every job's done
// callback have run.
//
// Knows the raw messages only: parsing, admission, statistics and metrics are the handler's.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/server_callback.h"
#include "server/call_auth.h"
#include "server/model_infer_handler.h"

namespace grpc {
class CallbackServerContext;
}

namespace sparkle {

class StreamInferReactor final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  using Base = grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>;

  // Starts reading at once. `handler` is not owned and must outlive every request of the
  // stream (the service's does). `unsent_replies` (not owned, may be null) counts each accepted
  // request until its reply has been written or dropped, so that a draining server waits for
  // them. `max_inflight`: requests read and not yet answered, [1, 4096]
  // (--max_inflight_per_stream). Deletes itself.
  StreamInferReactor(grpc::CallbackServerContext* context, ModelInferHandler* handler,
                     CallIdentity caller, std::atomic<int64_t>* unsent_replies,
                     int max_inflight);

  // A reactor that finishes the call at once with `status` (authentication refused) and
  // deletes itself.
  static Base* Refused(const grpc::Status& status);

  // The ModelStreamInferResponse bytes for one handler reply: `0x12 <varint len>` followed by
  // the ModelInferResponse slices (not copied) when OK; otherwise error_message "[CODE]
  // message" (message cut at 1 KiB) and an infer_response naming model, version and `id`.
  // Takes the reply's output.
  static grpc::ByteBuffer FrameReply(InferReply* reply);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  // What to start after a state change, decided under mu_ and done without it (gRPC's
  // Start*/Finish are never called with mu_ held).
  struct Actions {
    bool read = false;
    bool write = false;
    bool write_more = false;  // more replies wait behind this write: gRPC need not flush it
    bool finish = false;
    grpc::Status status;
  };

  ~StreamInferReactor() override = default;

  // The job's done callback: queues the reply (or drops it once the stream is cancelled).
  void OnReply(InferReply reply);
  // Decides the next read / write / Finish. Requires mu_.
  Actions NextActions() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Run(Actions actions);
  // A request leaves the stream (its reply written or dropped). Requires mu_.
  void Retire(int count) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Stops everything after a cancellation or a failed write. Requires mu_.
  void CancelLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  ModelInferHandler* const handler_;
  const CallIdentity caller_;
  const absl::Time deadline_;
  std::atomic<int64_t>* const unsent_replies_;
  const int max_inflight_;
  // Shared by every job of the stream; set on cancellation.
  const CancelFlag cancelled_flag_;

  // The message being read (owned by the read in flight; handed to the handler after it).
  grpc::ByteBuffer request_;
  absl::Mutex mu_;
  // The reply being written (kept alive until OnWriteDone). Changed under mu_, and only while
  // no write is in flight.
  grpc::ByteBuffer writing_buffer_;
  std::deque<grpc::ByteBuffer> replies_ ABSL_GUARDED_BY(mu_);  // finished, not yet written
  int inflight_ ABSL_GUARDED_BY(mu_) = 0;      // read, reply not yet written or dropped
  int pending_jobs_ ABSL_GUARDED_BY(mu_) = 0;  // handed to the handler, done not yet returned
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool read_closed_ ABSL_GUARDED_BY(mu_) = false;  // half-close (or a failed read)
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;  // Finish called
  bool done_ ABSL_GUARDED_BY(mu_) = false;      // OnDone ran
};

}  // namespace sparkle
