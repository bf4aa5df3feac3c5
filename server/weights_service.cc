#include "server/weights_service.h"

#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/status_convert.h"
#include "spdlog/spdlog.h"

namespace sparkle {
namespace {

using sparkle::v1::RegisterWeightsRequest;
using sparkle::v1::RegisterWeightsResponse;

absl::StatusOr<WeightHeader> FromProto(const sparkle::v1::WeightsHeader& h) {
  WeightHeader header;
  header.label = h.label();
  header.shape.assign(h.shape().begin(), h.shape().end());
  header.datatype = h.datatype().empty() ? "FP32" : h.datatype();
  if (h.bias().size() % sizeof(float) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "header.bias is ", h.bias().size(), " bytes, not a whole number of FP32 values"));
  }
  header.bias.resize(h.bias().size() / sizeof(float));
  std::memcpy(header.bias.data(), h.bias().data(), h.bias().size());
  return header;
}

// One RegisterWeights call: reads messages until the client half-closes, feeding an upload.
class RegisterReactor final : public grpc::ServerReadReactor<RegisterWeightsRequest> {
 public:
  RegisterReactor(WeightRegistry* registry, grpc::CallbackServerContext* context,
                  RegisterWeightsResponse* response)
      : registry_(registry), context_(context), response_(response) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client half-closed, or the call was cancelled
      End(Complete());
      return;
    }
    absl::Status status = Consume();
    if (!status.ok()) {
      End(status);
      return;
    }
    StartRead(&request_);
  }

  void OnDone() override { delete this; }

 private:
  absl::Status Consume() {
    if (upload_ == nullptr) {
      if (!request_.has_header()) {
        return absl::InvalidArgumentError(
            "the first RegisterWeights message must carry the header (shape, datatype, bias)");
      }
      absl::StatusOr<WeightHeader> header = FromProto(request_.header());
      if (!header.ok()) return header.status();
      absl::StatusOr<std::unique_ptr<WeightUpload>> upload =
          registry_->BeginUpload(*std::move(header));
      if (!upload.ok()) return upload.status();
      upload_ = *std::move(upload);
    } else if (request_.has_header()) {
      return absl::InvalidArgumentError("only the first RegisterWeights message may carry a header");
    }
    return upload_->Append(request_.data());
  }

  absl::Status Complete() {
    if (context_->IsCancelled()) {
      return absl::CancelledError("the client cancelled the registration; nothing registered");
    }
    if (upload_ == nullptr) {
      return absl::InvalidArgumentError("RegisterWeights got no messages (a header is required)");
    }
    absl::StatusOr<WeightRegistry::Registered> registered =
        registry_->Finish(std::move(upload_));
    if (!registered.ok()) return registered.status();
    ToWeightInfo(*registered->weight, response_->mutable_weight());
    response_->set_already_registered(registered->already_registered);
    return absl::OkStatus();
  }

  void End(const absl::Status& status) {
    upload_.reset();  // returns its reservation now, not when gRPC gets round to OnDone
    if (!status.ok()) spdlog::debug("RegisterWeights failed: {}", status.ToString());
    Finish(ToGrpcStatus(status));
  }

  WeightRegistry* const registry_;
  grpc::CallbackServerContext* const context_;
  RegisterWeightsResponse* const response_;
  RegisterWeightsRequest request_;
  std::unique_ptr<WeightUpload> upload_;
};

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context,
                                    const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace

void ToWeightInfo(const RegisteredWeight& weight, sparkle::v1::WeightInfo* info) {
  info->set_weight_id(weight.id());
  info->set_label(weight.label());
  for (int64_t d : weight.shape()) info->add_shape(d);
  info->set_has_bias(weight.has_bias());
  info->set_bytes(static_cast<uint64_t>(weight.bytes()));
  info->set_in_use(static_cast<uint64_t>(weight.in_use()));
  info->set_uses(static_cast<uint64_t>(weight.uses()));
  info->set_registered_unix_seconds(absl::ToDoubleSeconds(weight.registered_at() - absl::UnixEpoch()));
}

grpc::ServerReadReactor<RegisterWeightsRequest>* WeightsService::RegisterWeights(
    grpc::CallbackServerContext* context, RegisterWeightsResponse* response) {
  return new RegisterReactor(registry_, context, response);
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
