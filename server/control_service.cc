#include "server/control_service.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/drainer.h"
#include "server/status_convert.h"
#include "spdlog/spdlog.h"

namespace sparkle {
namespace {

// A client-streaming call refused before reading anything.
class RefusedRegisterReactor final
    : public grpc::ServerReadReactor<sparkle::v1::RegisterWeightsRequest> {
 public:
  explicit RefusedRegisterReactor(const absl::Status& status) { Finish(ToGrpcStatus(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

absl::StatusOr<CallIdentity> ControlService::Admit(grpc::CallbackServerContext* context,
                                                   absl::string_view method,
                                                   Access access) const {
  if (security_.auth == nullptr) return CallIdentity{context->peer()};
  return security_.auth->Check(context, method, access);
}

grpc::ServerReadReactor<sparkle::v1::RegisterWeightsRequest>* ControlService::RegisterWeights(
    grpc::CallbackServerContext* context, sparkle::v1::RegisterWeightsResponse* response) {
  if (absl::StatusOr<CallIdentity> caller =
          Admit(context, "Control.RegisterWeights", Access::kAdmin);
      !caller.ok()) {
    return new RefusedRegisterReactor(caller.status());
  }
  return weights_.RegisterWeights(context, response);
}

grpc::ServerUnaryReactor* ControlService::ListWeights(
    grpc::CallbackServerContext* context, const sparkle::v1::ListWeightsRequest* request,
    sparkle::v1::ListWeightsResponse* response) {
  if (absl::StatusOr<CallIdentity> caller = Admit(context, "Control.ListWeights", Access::kInfer);
      !caller.ok()) {
    return FinishNow(context, caller.status());
  }
  return weights_.ListWeights(context, request, response);
}

grpc::ServerUnaryReactor* ControlService::UnregisterWeights(
    grpc::CallbackServerContext* context, const sparkle::v1::UnregisterWeightsRequest* request,
    sparkle::v1::UnregisterWeightsResponse* response) {
  if (absl::StatusOr<CallIdentity> caller =
          Admit(context, "Control.UnregisterWeights", Access::kAdmin);
      !caller.ok()) {
    return FinishNow(context, caller.status());
  }
  return weights_.UnregisterWeights(context, request, response);
}

ControlService::ControlService(Engine* engine, std::string listen_address)
    : engine_(engine), listen_address_(std::move(listen_address)), weights_(&engine->registry()) {}

grpc::ServerUnaryReactor* ControlService::GetStatus(grpc::CallbackServerContext* context,
                                                    const sparkle::v1::GetStatusRequest*,
                                                    sparkle::v1::GetStatusResponse* response) {
  absl::StatusOr<CallIdentity> caller = Admit(context, "Control.GetStatus", Access::kInfer);
  if (!caller.ok()) return FinishNow(context, caller.status());
  sparkle::v1::SecurityStatus* security = response->mutable_security();
  *security = security_.status;
  if (security_.certificate != nullptr) {
    const CertificateInfo cert = security_.certificate->current();
    security->set_certificate_subject(cert.subject);
    security->set_certificate_not_after_unix_seconds(absl::ToDoubleSeconds(
        cert.not_after - absl::UnixEpoch()));
  }
  if (caller->authenticated) {
    security->set_caller(caller->name);
    security->set_caller_role(RoleName(caller->role));
  }
  const EngineStats stats = engine_->Stats();
  const bool draining = engine_->draining();

  response->set_version(SPARKLE_VERSION);
  response->set_build(SPARKLE_BUILD_INFO);
  response->set_uptime_seconds(absl::ToDoubleSeconds(absl::Now() - start_));
  response->set_ready(!draining);
  response->set_draining(draining);
  response->set_listen_address(listen_address_);
  response->set_metrics_address(metrics_address_);

  const DevicesSnapshot devices = engine_->Devices();
  for (const DeviceSnapshot& d : devices.devices) {
    auto* out = response->add_devices();
    out->set_name(d.name);
    out->set_kind(d.index < 0 ? "cpu" : "gpu");
    out->set_index(d.index);
    out->set_healthy(d.healthy);
    out->set_unhealthy_reason(d.unhealthy_reason);
    out->set_threads(d.threads);
    out->set_detail(d.detail);
    out->set_memory_bytes(static_cast<uint64_t>(d.memory_bytes));
    out->set_memory_used_bytes(static_cast<uint64_t>(d.memory_used_bytes));
    out->set_jobs_done(static_cast<uint64_t>(d.jobs_done));
    out->set_batches_done(static_cast<uint64_t>(d.batches_done));
    out->set_gflop_done(d.gflop_done);
    out->set_busy_seconds(d.busy_seconds);
    out->set_queued_batches(static_cast<uint64_t>(std::max<int64_t>(0, d.queued_batches)));
    out->set_measured_gflops(d.measured_gflops);
    out->set_measured_transfer_gbps(d.measured_transfer_gbps);
  }
  auto* router = response->mutable_router();
  router->set_policy(devices.router.policy);
  router->set_decisions_cpu(static_cast<uint64_t>(devices.router.decisions_cpu));
  router->set_decisions_gpu(static_cast<uint64_t>(devices.router.decisions_gpu));
  router->set_crossover_mflop(devices.router.crossover_mflop);
  router->set_gpu_fallback_reason(devices.router.gpu_fallback_reason);

  response->set_queued_jobs(stats.queue.jobs);
  response->set_queued_bytes(stats.queue.bytes);
  response->set_max_queued_jobs(engine_->options().batcher.max_queued_jobs);
  response->set_max_queued_bytes(engine_->options().batcher.max_queued_bytes);
  for (const auto& q : stats.queue.queues) {
    auto* c = response->add_queue();
    c->set_shape(q.shape);
    c->set_jobs(q.jobs);
    c->set_bytes(q.bytes);
  }
  response->set_jobs_accepted(stats.jobs_accepted);
  response->set_jobs_succeeded(stats.jobs_succeeded);
  response->set_jobs_failed(stats.jobs_failed);
  response->set_jobs_rejected(stats.jobs_rejected);
  response->set_in_flight_jobs(static_cast<uint64_t>(std::max<int64_t>(
      0, stats.jobs_accepted - stats.jobs_succeeded - stats.jobs_failed)));
  weights_.FillStatus(response->mutable_registry());
  response->set_mean_batch_size(
      stats.batches > 0 ? static_cast<double>(stats.batched_jobs) / stats.batches : 0.0);

  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

// Control.Drain over the shared Drainer (server/drainer.h).
ControlService::~ControlService() {
  absl::MutexLock lock(&drain_threads_mu_);
  for (std::thread& t : drain_threads_) t.join();
}

void ControlService::EnableDrain(Drainer* drainer, absl::Duration default_timeout) {
  drainer_ = drainer;
  default_drain_timeout_ = default_timeout;
}

grpc::ServerUnaryReactor* ControlService::Drain(grpc::CallbackServerContext* context,
                                                const sparkle::v1::DrainRequest* request,
                                                sparkle::v1::DrainResponse* response) {
  absl::StatusOr<CallIdentity> caller = Admit(context, "Control.Drain", Access::kAdmin);
  if (!caller.ok()) return FinishNow(context, caller.status());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (drainer_ == nullptr) {
    reactor->Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "drain is not enabled"));
    return reactor;
  }
  const double seconds = request->timeout_seconds();
  if (!(seconds >= 0 && seconds <= 3600)) {
    reactor->Finish(grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("timeout_seconds must be in [0, 3600] (0: the daemon's --drain_timeout); "
                     "was ",
                     seconds)));
    return reactor;
  }
  const absl::Duration timeout =
      seconds == 0 ? default_drain_timeout_ : absl::Seconds(seconds);
  spdlog::info("Control.Drain from {}: health NOT_SERVING, no new requests, draining (budget "
               "{}); stop the daemon with SIGTERM / systemctl stop",
               caller->name, absl::FormatDuration(timeout));
  absl::MutexLock lock(&drain_threads_mu_);
  drain_threads_.emplace_back([this, reactor, response, timeout] {
    const DrainResult result = drainer_->Drain(absl::Now() + timeout);
    if (result.stopping) {
      reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the daemon is stopping"));
      return;
    }
    response->set_drained(result.drained);
    response->set_in_flight_jobs(static_cast<uint64_t>(result.in_flight_jobs));
    response->set_waited_seconds(absl::ToDoubleSeconds(result.waited));
    spdlog::info("Control.Drain: {} after {}", result.drained
                     ? std::string("every accepted job finished")
                     : absl::StrCat(result.in_flight_jobs, " job(s) still in flight"),
                 absl::FormatDuration(absl::Trunc(result.waited, absl::Milliseconds(1))));
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

}  // namespace sparkle
