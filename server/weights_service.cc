#include "server/weights_service.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/status_convert.h"
#include "server/weights_header.h"
#include "spdlog/spdlog.h"

namespace sparkle {
namespace {

using sparkle::v1::RegisterWeightsRequest;
using sparkle::v1::RegisterWeightsResponse;


}  // namespace

// One RegisterWeights call: reads messages until the client half-closes, feeding an upload.
// mu_ serialises the reactions with ExpireIfIdle (the watchdog thread); Finish is called once, by
// whichever ends the call first. gRPC never runs OnDone inline from Finish or StartRead (1.51,
// server_callback_handlers.h), so calling them with locks held cannot re-enter Untrack.
class WeightsService::RegisterReactor final
    : public grpc::ServerReadReactor<RegisterWeightsRequest> {
 public:
  RegisterReactor(WeightsService* service, grpc::CallbackServerContext* context,
                  RegisterWeightsResponse* response)
      : service_(service), context_(context), response_(response) {
    service_->Track(this);
    absl::MutexLock lock(&mu_);
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    if (finished_) return;  // expired while this read was pending
    if (!ok) {  // the client half-closed, or the call was cancelled
      EndLocked(Complete());
      return;
    }
    absl::Status status = Consume();
    if (!status.ok()) {
      EndLocked(status);
      return;
    }
    last_activity_ = absl::Now();  // after the work: hashing a large chunk is not idleness
    StartRead(&request_);
  }

  void OnDone() override {
    service_->Untrack(this);
    delete this;
  }

  // Finishes the call with DEADLINE_EXCEEDED if no message arrived for `timeout`. Called by the
  // watchdog with the service's lock held (which keeps this reactor alive: OnDone waits for it).
  void ExpireIfIdle(absl::Time now, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    if (finished_ || now - last_activity_ < timeout) return;
    spdlog::warn("weights: RegisterWeights from {} sent nothing for {}; cancelled ({} bytes "
                 "received)",
                 context_->peer(), absl::FormatDuration(timeout),
                 upload_ == nullptr ? 0 : upload_->received_bytes());
    EndLocked(absl::DeadlineExceededError(absl::StrCat(
        "RegisterWeights: no message for ", absl::FormatDuration(timeout),
        " (--weights_upload_idle_timeout); the upload was cancelled and its bytes returned to "
        "the budget; nothing registered")));
  }

 private:
  absl::Status Consume() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (upload_ == nullptr) {
      if (!request_.has_header()) {
        return absl::InvalidArgumentError(
            "the first RegisterWeights message must carry the header (shape, datatype, bias)");
      }
      absl::StatusOr<WeightHeader> header = WeightHeaderFromProto(request_.header());
      if (!header.ok()) return header.status();
      absl::StatusOr<std::unique_ptr<WeightUpload>> upload =
          service_->registry_->BeginUpload(*std::move(header));
      if (!upload.ok()) return upload.status();
      upload_ = *std::move(upload);
    } else if (request_.has_header()) {
      return absl::InvalidArgumentError("only the first RegisterWeights message may carry a header");
    }
    return upload_->Append(request_.data());
  }

  absl::Status Complete() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (context_->IsCancelled()) {
      return absl::CancelledError("the client cancelled the registration; nothing registered");
    }
    if (upload_ == nullptr) {
      return absl::InvalidArgumentError("RegisterWeights got no messages (a header is required)");
    }
    absl::StatusOr<WeightRegistry::Registered> registered =
        service_->registry_->Finish(std::move(upload_));
    if (!registered.ok()) return registered.status();
    ToWeightInfo(*registered->weight, response_->mutable_weight());
    response_->set_already_registered(registered->already_registered);
    return absl::OkStatus();
  }

  void EndLocked(const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    finished_ = true;
    upload_.reset();  // returns its reservation now, not when gRPC gets round to OnDone
    if (!status.ok()) spdlog::debug("RegisterWeights failed: {}", status.ToString());
    Finish(ToGrpcStatus(status));
  }

  WeightsService* const service_;
  grpc::CallbackServerContext* const context_;
  RegisterWeightsResponse* const response_;
  absl::Mutex mu_;
  RegisterWeightsRequest request_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<WeightUpload> upload_ ABSL_GUARDED_BY(mu_);
  absl::Time last_activity_ ABSL_GUARDED_BY(mu_) = absl::Now();
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

void ToWeightInfo(const RegisteredWeight& weight, sparkle::v1::WeightInfo* info) {
  info->set_weight_id(weight.id());
  info->set_label(weight.label());
  for (int64_t d : weight.shape()) info->add_shape(d);
  info->set_has_bias(weight.has_bias());
  info->set_datatype(DataTypeName(weight.dtype()));
  info->set_bytes(static_cast<uint64_t>(weight.bytes()));
  info->set_in_use(static_cast<uint64_t>(weight.in_use()));
  info->set_uses(static_cast<uint64_t>(weight.uses()));
  info->set_registered_unix_seconds(absl::ToDoubleSeconds(weight.registered_at() - absl::UnixEpoch()));
}

WeightsService::WeightsService(WeightRegistry* registry)
    : registry_(registry), idle_timeout_(registry->options().upload_idle_timeout) {
  watchdog_ = std::thread([this] { WatchIdleUploads(); });
}

WeightsService::~WeightsService() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  watchdog_.join();
}

void WeightsService::Track(RegisterReactor* reactor) {
  absl::MutexLock lock(&mu_);
  uploads_.insert(reactor);
}

void WeightsService::Untrack(RegisterReactor* reactor) {
  absl::MutexLock lock(&mu_);
  uploads_.erase(reactor);
}

void WeightsService::WatchIdleUploads() {
  // An idle stream is finished between timeout and timeout + one period after its last message.
  const absl::Duration period =
      std::clamp(idle_timeout_ / 4, absl::Milliseconds(1), absl::Seconds(1));
  absl::MutexLock lock(&mu_);
  while (!mu_.AwaitWithTimeout(absl::Condition(&stop_), period)) {
    const absl::Time now = absl::Now();
    for (RegisterReactor* reactor : uploads_) reactor->ExpireIfIdle(now, idle_timeout_);
  }
}

grpc::ServerReadReactor<RegisterWeightsRequest>* WeightsService::RegisterWeights(
    grpc::CallbackServerContext* context, RegisterWeightsResponse* response) {
  return new RegisterReactor(this, context, response);
}

grpc::ServerUnaryReactor* WeightsService::ListWeights(grpc::CallbackServerContext* context,
                                                      const sparkle::v1::ListWeightsRequest*,
                                                      sparkle::v1::ListWeightsResponse* response) {
  for (const auto& weight : registry_->List()) ToWeightInfo(*weight, response->add_weights());
  const WeightRegistry::Snapshot snapshot = registry_->snapshot();
  response->set_bytes(static_cast<uint64_t>(snapshot.bytes));
  response->set_budget_bytes(static_cast<uint64_t>(snapshot.budget_bytes));
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* WeightsService::UnregisterWeights(
    grpc::CallbackServerContext* context, const sparkle::v1::UnregisterWeightsRequest* request,
    sparkle::v1::UnregisterWeightsResponse*) {
  return FinishNow(context, registry_->Unregister(request->weight_id()));
}

void WeightsService::FillStatus(sparkle::v1::WeightRegistryStatus* status) const {
  const WeightRegistry::Snapshot snapshot = registry_->snapshot();
  status->set_weights(static_cast<uint64_t>(snapshot.weights));
  status->set_bytes(static_cast<uint64_t>(snapshot.bytes));
  status->set_budget_bytes(static_cast<uint64_t>(snapshot.budget_bytes));
}

}  // namespace sparkle
