#include "server/stream_infer_reactor.h"

#include <chrono>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/slice.h"
#include "inference/grpc_predict_v2.pb.h"
#include "server/request_parser.h"
#include "server/status_convert.h"

namespace sparkle {
namespace {

// ModelStreamInferResponse.infer_response: field 2, length-delimited.
constexpr uint8_t kInferResponseTag = (2 << 3) | 2;

absl::Time FromChrono(std::chrono::system_clock::time_point t) {
  if (t == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(t);
}

// Finishes at once with a status, then deletes itself.
class RefusedStream final : public StreamInferReactor::Base {
 public:
  explicit RefusedStream(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace

StreamInferReactor::StreamInferReactor(grpc::CallbackServerContext* context,
                                       ModelInferHandler* handler, CallIdentity caller,
                                       std::atomic<int64_t>* unsent_replies, int max_inflight)
    : handler_(handler),
      caller_(std::move(caller)),
      deadline_(FromChrono(context->deadline())),
      unsent_replies_(unsent_replies),
      max_inflight_(max_inflight < 1 ? 1 : max_inflight),
      cancelled_flag_(std::make_shared<std::atomic<bool>>(false)) {
  {
    absl::MutexLock lock(&mu_);
    reading_ = true;
  }
  StartRead(&request_);
}

StreamInferReactor::Base* StreamInferReactor::Refused(const grpc::Status& status) {
  return new RefusedStream(status);
}

grpc::ByteBuffer StreamInferReactor::FrameReply(InferReply* reply_in) {
  const InferReply& reply = *reply_in;
  if (reply.status.ok()) {
    const grpc::ByteBuffer response = ToResponseBuffer(reply_in);
    std::vector<grpc::Slice> slices;
    if (!response.Dump(&slices).ok()) slices.clear();
    // 0x12 <varint length>: at most 1 + 10 bytes.
    uint8_t header[11];
    size_t n = 0;
    header[n++] = kInferResponseTag;
    uint64_t length = response.Length();
    while (length >= 0x80) {
      header[n++] = static_cast<uint8_t>(length | 0x80);
      length >>= 7;
    }
    header[n++] = static_cast<uint8_t>(length);
    slices.insert(slices.begin(), grpc::Slice(header, n));
    return grpc::ByteBuffer(slices.data(), slices.size());
  }
  inference::ModelStreamInferResponse message;
  const grpc::Status status = ToGrpcStatus(reply.status);
  message.set_error_message(absl::StrCat(
      "[", absl::StatusCodeToString(reply.status.code()), "] ", status.error_message()));
  inference::ModelInferResponse* response = message.mutable_infer_response();
  response->set_model_name(kModelName);
  response->set_model_version(kModelVersion);
  response->set_id(reply.id);
  const std::string bytes = message.SerializeAsString();
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

void StreamInferReactor::OnReadDone(bool ok) {
  if (!ok) {
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      reading_ = false;
      read_closed_ = true;
      actions = NextActions();
    }
    Run(std::move(actions));
    return;
  }
  // The message is taken out of request_ and the next read started before this one is handled,
  // so that the stream's requests are parsed and submitted while the next arrives.
  grpc::ByteBuffer request;
  request.Swap(&request_);
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    ++inflight_;
    ++pending_jobs_;
    if (unsent_replies_ != nullptr) unsent_replies_->fetch_add(1, std::memory_order_relaxed);
    reading_ = false;
    actions = NextActions();
  }
  Run(std::move(actions));
  // The handler keeps its own reference to the request's slices. Refusals call OnReply before
  // Handle returns; pending_jobs_ keeps the reactor alive until then.
  handler_->Handle(request, caller_, deadline_, cancelled_flag_,
                   [this](InferReply reply) { OnReply(std::move(reply)); });
}

void StreamInferReactor::OnReply(InferReply reply) {
  grpc::ByteBuffer framed = FrameReply(&reply);  // holds the output's slice now
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    if (cancelled_ || finished_) {
      Retire(1);  // nobody to write it to
    } else {
      replies_.push_back(std::move(framed));
    }
    actions = NextActions();
  }
  Run(std::move(actions));
  // Last: until this count drops, OnDone cannot delete the reactor under this thread.
  bool destroy = false;
  {
    absl::MutexLock lock(&mu_);
    --pending_jobs_;
    destroy = done_ && pending_jobs_ == 0;
  }
  if (destroy) delete this;
}

void StreamInferReactor::OnWriteDone(bool ok) {
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    writing_buffer_.Clear();  // releases the reply's pooled buffer and budget now
    Retire(1);
    if (!ok) CancelLocked();  // the client is gone: nobody will read the rest
    actions = NextActions();
  }
  Run(std::move(actions));
}

void StreamInferReactor::OnCancel() {
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    CancelLocked();
    actions = NextActions();
  }
  Run(std::move(actions));
}

void StreamInferReactor::OnDone() {
  bool destroy = false;
  {
    absl::MutexLock lock(&mu_);
    done_ = true;
    destroy = pending_jobs_ == 0;
  }
  if (destroy) delete this;
}

void StreamInferReactor::CancelLocked() {
  cancelled_flag_->store(true, std::memory_order_relaxed);
  if (cancelled_) return;
  cancelled_ = true;
  Retire(static_cast<int>(replies_.size()));
  replies_.clear();
}

void StreamInferReactor::Retire(int count) {
  inflight_ -= count;
  if (unsent_replies_ != nullptr && count > 0) {
    unsent_replies_->fetch_sub(count, std::memory_order_relaxed);
  }
}

StreamInferReactor::Actions StreamInferReactor::NextActions() {
  Actions actions;
  if (finished_) return actions;
  if (cancelled_) {
    // Reads and writes in flight fail promptly once the call is cancelled; Finish after them.
    if (!reading_ && !writing_) {
      finished_ = true;
      actions.finish = true;
      actions.status = grpc::Status(grpc::StatusCode::CANCELLED, "stream cancelled");
    }
    return actions;
  }
  if (!writing_ && !replies_.empty()) {
    writing_ = true;
    writing_buffer_ = std::move(replies_.front());
    replies_.pop_front();
    actions.write = true;
    actions.write_more = !replies_.empty();
  }
  if (!reading_ && !read_closed_ && inflight_ < max_inflight_) {
    reading_ = true;
    actions.read = true;
  }
  if (read_closed_ && !reading_ && !writing_ && inflight_ == 0) {
    finished_ = true;
    actions.finish = true;
    actions.status = grpc::Status::OK;
  }
  return actions;
}

void StreamInferReactor::Run(Actions actions) {
  if (actions.write) {
    grpc::WriteOptions options;
    if (actions.write_more) options.set_buffer_hint();
    StartWrite(&writing_buffer_, options);
  }
  if (actions.read) StartRead(&request_);
  if (actions.finish) Finish(actions.status);
}

}  // namespace sparkle
