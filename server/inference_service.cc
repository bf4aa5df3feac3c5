#include "server/inference_service.h"

#include <chrono>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/log_settings.h"
#include "server/model_repository_rpcs.h"
#include "server/scheduling_client.h"
#include "server/shared_memory_rpcs.h"
#include "server/status_convert.h"
#include "server/stream_infer_reactor.h"
#include "server/triton_messages.h"
#include "spdlog/spdlog.h"

namespace sparkle {
namespace {

// A unary reactor that turns the client going away into the job's cancel flag, and deletes
// itself once gRPC is done with the call (the response sent).
class InferReactor final : public grpc::ServerUnaryReactor {
 public:
  explicit InferReactor(std::atomic<int64_t>* unsent)
      : cancelled_(std::make_shared<std::atomic<bool>>(false)), unsent_(unsent) {
    unsent_->fetch_add(1, std::memory_order_relaxed);
  }
  const CancelFlag& cancelled() const { return cancelled_; }
  void OnCancel() override { cancelled_->store(true, std::memory_order_relaxed); }
  void OnDone() override {
    unsent_->fetch_sub(1, std::memory_order_relaxed);
    delete this;
  }

 private:
  CancelFlag cancelled_;
  std::atomic<int64_t>* const unsent_;  // InferenceService::unsent_replies_
};

// The caller's identity, or the refusal (server/call_auth.h).
absl::StatusOr<CallIdentity> Authorize(const CallAuth* auth,
                                       grpc::CallbackServerContext* context,
                                       absl::string_view method,
                                       Access access = Access::kInfer) {
  if (auth == nullptr) return CallIdentity{context->peer()};
  return auth->Check(context, method, access);
}

absl::Time FromChrono(std::chrono::system_clock::time_point t) {
  if (t == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(t);
}

}  // namespace

InferenceService::InferenceService(Engine* engine, const Options& options,
                                   InferenceStats* stats, ServerMetrics* metrics)
    : engine_(engine),
      options_(options),
      stats_(stats),
      handler_(engine, options.pool, options.shared_memory, stats, metrics,
               ModelInferHandler::Options{options.limits}) {}

grpc::ServerUnaryReactor* InferenceService::ServerLive(grpc::CallbackServerContext* context,
                                                       const inference::ServerLiveRequest*,
                                                       inference::ServerLiveResponse* response) {
  response->set_live(true);
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::ServerReady(grpc::CallbackServerContext* context,
                                                        const inference::ServerReadyRequest*,
                                                        inference::ServerReadyResponse* response) {
  response->set_ready(Ready());
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::ModelReady(grpc::CallbackServerContext* context,
                                                       const inference::ModelReadyRequest* request,
                                                       inference::ModelReadyResponse* response) {
  if (auto caller = Authorize(options_.auth, context, "ModelReady"); !caller.ok()) {
    return FinishNow(context, caller.status());
  }
  absl::Status status = CheckModel(request->name(), request->version());
  if (status.ok()) response->set_ready(Ready());
  return FinishNow(context, status);
}

grpc::ServerUnaryReactor* InferenceService::ServerMetadata(
    grpc::CallbackServerContext* context, const inference::ServerMetadataRequest*,
    inference::ServerMetadataResponse* response) {
  if (auto caller = Authorize(options_.auth, context, "ServerMetadata"); !caller.ok()) {
    return FinishNow(context, caller.status());
  }
  FillServerMetadata(options_.shared_memory != nullptr, response);
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::ModelMetadata(
    grpc::CallbackServerContext* context, const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  if (auto caller = Authorize(options_.auth, context, "ModelMetadata"); !caller.ok()) {
    return FinishNow(context, caller.status());
  }
  absl::Status status = CheckModel(request->name(), request->version());
  if (status.ok()) FillModelMetadata(response);
  return FinishNow(context, status);
}

grpc::ServerUnaryReactor* InferenceService::ModelInfer(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request,
                                                       grpc::ByteBuffer* response) {
  absl::StatusOr<CallIdentity> caller = Authorize(options_.auth, context, "ModelInfer");
  if (!caller.ok()) return FinishNow(context, caller.status());
  auto* reactor = new InferReactor(&unsent_replies_);
  handler_.Handle(*request, *caller, FromChrono(context->deadline()), reactor->cancelled(),
                  [this, context, reactor, response](InferReply reply) {
                    if (reply.queue_full) {
                      // gRPC's standard pushback trailer (A6 retry design: stock retry policies
                      // wait this long before their next attempt), and the older name as an
                      // alias. A queue-full refusal comes inline, before Finish.
                      const std::string pushback = absl::StrCat(options_.retry_after_ms);
                      context->AddTrailingMetadata("grpc-retry-pushback-ms", pushback);
                      context->AddTrailingMetadata("retry-after-ms", pushback);
                    }
                    if (reply.status.ok()) *response = ToResponseBuffer(&reply);
                    reactor->Finish(ToGrpcStatus(reply.status));
                  });
  return reactor;
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* InferenceService::ModelStreamInfer(
    grpc::CallbackServerContext* context) {
  absl::StatusOr<CallIdentity> caller = Authorize(options_.auth, context, "ModelStreamInfer");
  if (!caller.ok()) return StreamInferReactor::Refused(ToGrpcStatus(caller.status()));
  return new StreamInferReactor(context, &handler_, *std::move(caller), &unsent_replies_,
                                options_.max_inflight_per_stream);
}

grpc::ServerUnaryReactor* InferenceService::ModelConfig(
    grpc::CallbackServerContext* context, const inference::ModelConfigRequest* request,
    inference::ModelConfigResponse* response) {
  if (auto caller = Authorize(options_.auth, context, "ModelConfig"); !caller.ok()) {
    return FinishNow(context, caller.status());
  }
  absl::Status status = CheckModel(request->name(), request->version());
  if (status.ok()) FillModelConfig(*engine_, response->mutable_config());
  return FinishNow(context, status);
}

grpc::ServerUnaryReactor* InferenceService::ModelStatistics(
    grpc::CallbackServerContext* context, const inference::ModelStatisticsRequest* request,
    inference::ModelStatisticsResponse* response) {
  if (auto caller = Authorize(options_.auth, context, "ModelStatistics"); !caller.ok()) {
    return FinishNow(context, caller.status());
  }
  // Triton: an empty name means every model (here, the one).
  absl::Status status = request->name().empty() && request->version().empty()
                            ? absl::OkStatus()
                            : CheckModel(request->name(), request->version());
  if (status.ok()) FillModelStatistics(stats_->Get(), response->add_model_stats());
  return FinishNow(context, status);
}

grpc::ServerUnaryReactor* InferenceService::SystemSharedMemoryStatus(
    grpc::CallbackServerContext* context,
    const inference::SystemSharedMemoryStatusRequest* request,
    inference::SystemSharedMemoryStatusResponse* response) {
  absl::StatusOr<CallIdentity> caller =
      Authorize(options_.auth, context, "SystemSharedMemoryStatus");
  if (!caller.ok()) return FinishNow(context, caller.status());
  return FinishNow(context, sparkle::SystemSharedMemoryStatus(options_.shared_memory, *caller,
                                                              *request, response));
}

grpc::ServerUnaryReactor* InferenceService::SystemSharedMemoryRegister(
    grpc::CallbackServerContext* context,
    const inference::SystemSharedMemoryRegisterRequest* request,
    inference::SystemSharedMemoryRegisterResponse*) {
  absl::StatusOr<CallIdentity> caller =
      Authorize(options_.auth, context, "SystemSharedMemoryRegister");
  if (!caller.ok()) return FinishNow(context, caller.status());
  return FinishNow(context, sparkle::SystemSharedMemoryRegister(
                                options_.shared_memory, *caller, context->peer(),
                                options_.shared_memory_allow_remote, *request));
}

grpc::ServerUnaryReactor* InferenceService::SystemSharedMemoryUnregister(
    grpc::CallbackServerContext* context,
    const inference::SystemSharedMemoryUnregisterRequest* request,
    inference::SystemSharedMemoryUnregisterResponse*) {
  absl::StatusOr<CallIdentity> caller =
      Authorize(options_.auth, context, "SystemSharedMemoryUnregister");
  if (!caller.ok()) return FinishNow(context, caller.status());
  return FinishNow(context, sparkle::SystemSharedMemoryUnregister(options_.shared_memory,
                                                                  *caller, *request));
}

grpc::ServerUnaryReactor* InferenceService::CudaSharedMemoryStatus(
    grpc::CallbackServerContext* context, const inference::CudaSharedMemoryStatusRequest*,
    inference::CudaSharedMemoryStatusResponse*) {
  if (auto c = Authorize(options_.auth, context, "CudaSharedMemoryStatus"); !c.ok()) {
    return FinishNow(context, c.status());
  }
  return FinishNow(context, CudaSharedMemoryUnsupported("CudaSharedMemoryStatus"));
}

grpc::ServerUnaryReactor* InferenceService::CudaSharedMemoryRegister(
    grpc::CallbackServerContext* context, const inference::CudaSharedMemoryRegisterRequest*,
    inference::CudaSharedMemoryRegisterResponse*) {
  if (auto c = Authorize(options_.auth, context, "CudaSharedMemoryRegister"); !c.ok()) {
    return FinishNow(context, c.status());
  }
  return FinishNow(context, CudaSharedMemoryUnsupported("CudaSharedMemoryRegister"));
}

grpc::ServerUnaryReactor* InferenceService::CudaSharedMemoryUnregister(
    grpc::CallbackServerContext* context, const inference::CudaSharedMemoryUnregisterRequest*,
    inference::CudaSharedMemoryUnregisterResponse*) {
  if (auto c = Authorize(options_.auth, context, "CudaSharedMemoryUnregister"); !c.ok()) {
    return FinishNow(context, c.status());
  }
  return FinishNow(context, CudaSharedMemoryUnsupported("CudaSharedMemoryUnregister"));
}

grpc::ServerUnaryReactor* InferenceService::RepositoryIndex(
    grpc::CallbackServerContext* context, const inference::RepositoryIndexRequest* request,
    inference::RepositoryIndexResponse* response) {
  if (auto c = Authorize(options_.auth, context, "RepositoryIndex"); !c.ok()) {
    return FinishNow(context, c.status());
  }
  ListModelRepository(Ready(), *request, response);
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::RepositoryModelLoad(
    grpc::CallbackServerContext* context, const inference::RepositoryModelLoadRequest* request,
    inference::RepositoryModelLoadResponse*) {
  auto caller = Authorize(options_.auth, context, "RepositoryModelLoad", Access::kAdmin);
  if (!caller.ok()) return FinishNow(context, caller.status());
  absl::Status status = LoadModel(*request);
  spdlog::info("RepositoryModelLoad '{}' from '{}': {}", request->model_name(), caller->name,
               status.ok() ? "built in, nothing to load" : status.ToString());
  return FinishNow(context, status);
}

grpc::ServerUnaryReactor* InferenceService::RepositoryModelUnload(
    grpc::CallbackServerContext* context, const inference::RepositoryModelUnloadRequest* request,
    inference::RepositoryModelUnloadResponse*) {
  auto caller = Authorize(options_.auth, context, "RepositoryModelUnload", Access::kAdmin);
  if (!caller.ok()) return FinishNow(context, caller.status());
  absl::Status status = UnloadModel(*request);
  spdlog::info("RepositoryModelUnload '{}' from '{}': {}", request->model_name(), caller->name,
               status.ToString());
  return FinishNow(context, status);
}

grpc::ServerUnaryReactor* InferenceService::TraceSetting(
    grpc::CallbackServerContext* context, const inference::TraceSettingRequest*,
    inference::TraceSettingResponse*) {
  if (auto c = Authorize(options_.auth, context, "TraceSetting"); !c.ok()) {
    return FinishNow(context, c.status());
  }
  return FinishNow(context,
                   absl::UnimplementedError(
                       "sparkled has no request tracing; use the Prometheus metrics at "
                       "--metrics_address (GET /metrics) and sparklectl stats (ModelStatistics)"));
}

grpc::ServerUnaryReactor* InferenceService::LogSettings(
    grpc::CallbackServerContext* context, const inference::LogSettingsRequest* request,
    inference::LogSettingsResponse* response) {
  // Reading is an infer call; changing anything is an admin call.
  const bool update = !request->settings().empty();
  auto caller = Authorize(options_.auth, context, "LogSettings",
                          update ? Access::kAdmin : Access::kInfer);
  if (!caller.ok()) return FinishNow(context, caller.status());
  if (!update) {
    ReadLogSettings(response);
    return FinishNow(context, absl::OkStatus());
  }
  return FinishNow(context, UpdateLogSettings(*request, caller->name, response));
}

}  // namespace sparkle
