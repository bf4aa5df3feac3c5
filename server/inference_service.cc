#include "server/inference_service.h"

#include <chrono>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/scheduling_client.h"
#include "server/status_convert.h"
#include "server/triton_messages.h"
#include "spdlog/spdlog.h"

namespace sparkle {
namespace {

// A unary reactor that turns the client going away into the job's cancel flag, and deletes
// itself once gRPC is done with the call.
class InferReactor final : public grpc::ServerUnaryReactor {
 public:
  InferReactor() : cancelled_(std::make_shared<std::atomic<bool>>(false)) {}
  const CancelFlag& cancelled() const { return cancelled_; }
  void OnCancel() override { cancelled_->store(true, std::memory_order_relaxed); }
  void OnDone() override {
    if (accepted != nullptr) accepted->fetch_sub(1, std::memory_order_relaxed);
    delete this;
  }
  // The job's share of the engine's in-flight budget, held until gRPC is done with the call
  // (the response sent), so that the budget covers the response buffer too.
  Engine::Admission admission;
  // InferenceService::unsent_replies_ once the engine accepted the job; counted down here.
  std::atomic<int64_t>* accepted = nullptr;

 private:
  CancelFlag cancelled_;
};

// The caller's identity, or the refusal (server/call_auth.h).
absl::StatusOr<CallIdentity> Authorize(const CallAuth* auth,
                                       grpc::CallbackServerContext* context,
                                       absl::string_view method) {
  if (auth == nullptr) return CallIdentity{context->peer()};
  return auth->Check(context, method, Access::kInfer);
}

absl::Time FromChrono(std::chrono::system_clock::time_point t) {
  if (t == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(t);
}

void AddTensorMetadata(const char* name, int rank,
                       google::protobuf::RepeatedPtrField<
                           inference::ModelMetadataResponse::TensorMetadata>* list) {
  auto* t = list->Add();
  t->set_name(name);
  t->set_datatype("FP32");
  for (int i = 0; i < rank; ++i) t->add_shape(-1);
}

}  // namespace

InferenceService::InferenceService(Engine* engine, const Options& options,
                                   InferenceStats* stats, ServerMetrics* metrics)
    : engine_(engine), options_(options), stats_(stats), metrics_(metrics) {}

void InferenceService::RecordRejection(const absl::Status& status, bool queue_full) {
  if (metrics_ != nullptr) {
    metrics_->RecordRejection(RejectReasonFor(status, queue_full, engine_->draining()));
  }
}

const absl::Status& InferenceService::Refuse(grpc::CallbackServerContext* context,
                                             const absl::Status& status) {
  const bool queue_full = IsQueueFull(status);
  RecordRejection(status, queue_full);
  if (queue_full) {
    // gRPC's standard pushback trailer (A6 retry design: stock retry policies wait this long
    // before their next attempt), and the older name as an alias.
    const std::string pushback = absl::StrCat(options_.retry_after_ms);
    context->AddTrailingMetadata("grpc-retry-pushback-ms", pushback);
    context->AddTrailingMetadata("retry-after-ms", pushback);
  }
  return status;
}

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
  response->set_name("sparkled");
  response->set_version(SPARKLE_VERSION);
  response->add_extensions("schedule_policy");  // priority and timeout parameters
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::ModelMetadata(
    grpc::CallbackServerContext* context, const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  if (auto caller = Authorize(options_.auth, context, "ModelMetadata"); !caller.ok()) {
    return FinishNow(context, caller.status());
  }
  absl::Status status = CheckModel(request->name(), request->version());
  if (status.ok()) {
    response->set_name(kModelName);
    response->add_versions(kModelVersion);
    response->set_platform("sparkle_conv2d");
    AddTensorMetadata("input", 4, response->mutable_inputs());
    AddTensorMetadata("weight", 4, response->mutable_inputs());
    AddTensorMetadata("bias", 1, response->mutable_inputs());
    AddTensorMetadata("output", 4, response->mutable_outputs());
  }
  return FinishNow(context, status);
}

grpc::ServerUnaryReactor* InferenceService::ModelInfer(grpc::CallbackServerContext* context,
                                                       const inference::ModelInferRequest* request,
                                                       inference::ModelInferResponse* response) {
  absl::StatusOr<CallIdentity> caller = Authorize(options_.auth, context, "ModelInfer");
  if (!caller.ok()) return FinishNow(context, caller.status());
  const absl::Time received = absl::Now();
  if (metrics_ != nullptr) {
    metrics_->RecordRequestBytes(static_cast<int64_t>(request->ByteSizeLong()));
  }
  absl::StatusOr<ParsedInferRequest> parsed =
      ParseInferRequest(*request, options_.limits, &engine_->registry());
  if (!parsed.ok()) {
    spdlog::debug("ModelInfer id='{}' rejected: {}", request->id(), parsed.status().ToString());
    RecordRejection(parsed.status(), /*queue_full=*/false);
    return FinishNow(context, parsed.status());
  }
  const Conv2dParams& p = parsed->params;
  // Admission (cost limits, in-flight budget) before the response buffer is allocated.
  absl::StatusOr<Engine::Admission> admission = engine_->Admit(p);
  if (!admission.ok()) return FinishNow(context, Refuse(context, admission.status()));

  response->set_model_name(kModelName);
  response->set_model_version(kModelVersion);
  response->set_id(request->id());
  auto* out = response->add_outputs();
  out->set_name("output");
  out->set_datatype("FP32");
  if (p.layout == Layout::kNHWC) {
    for (int64_t d : {p.n, p.p(), p.q(), p.k}) out->add_shape(d);
  } else {
    for (int64_t d : {p.n, p.k, p.p(), p.q()}) out->add_shape(d);
  }
  std::string* output = response->add_raw_output_contents();
  output->resize(static_cast<size_t>(p.output_elements()) * sizeof(float));

  auto* reactor = new InferReactor;
  reactor->admission = *std::move(admission);
  auto job = std::make_unique<Conv2dJob>();
  job->params = p;
  job->input = parsed->input;
  job->weight = parsed->weight;
  job->bias = parsed->bias;
  job->registered_weight = std::move(parsed->registered_weight);
  job->output = reinterpret_cast<float*>(output->data());
  job->priority = parsed->priority;
  job->device = parsed->device;
  job->deadline = std::min(FromChrono(context->deadline()), absl::Now() + parsed->queue_timeout);
  job->cancelled = reactor->cancelled();
  job->client = SchedulingClient(*caller);  // token name, or peer host without the port
  const int64_t response_bytes = static_cast<int64_t>(output->size());
  job->done = [reactor, received, n = p.n, response_bytes, stats = stats_, metrics = metrics_](
                  const absl::Status& status, const ExecTimestamps& timestamps) {
    // Recorded before the reply (< 1 us: sparkle_bench metrics_record), so that a client that
    // has its response also sees it counted in ModelStatistics and /metrics.
    RequestOutcome outcome;
    outcome.code = status.code();
    outcome.timestamps = timestamps;
    outcome.received = received;
    outcome.n = n;
    outcome.response_bytes = status.ok() ? response_bytes : 0;
    stats->Record(outcome);
    if (metrics != nullptr) metrics->RecordOutcome(outcome);
    reactor->Finish(ToGrpcStatus(status));
  };
  absl::Status status = engine_->Submit(&job, reactor->admission);
  if (status.ok()) {
    reactor->accepted = &unsent_replies_;
    unsent_replies_.fetch_add(1, std::memory_order_relaxed);
  } else {
    reactor->Finish(ToGrpcStatus(Refuse(context, status)));
  }
  return reactor;
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

}  // namespace sparkle
