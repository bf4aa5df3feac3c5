#include "server/control_service.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace sparkle {

ControlService::ControlService(Engine* engine, std::string listen_address)
    : engine_(engine), listen_address_(std::move(listen_address)) {}

grpc::ServerUnaryReactor* ControlService::GetStatus(grpc::CallbackServerContext* context,
                                                    const sparkle::v1::GetStatusRequest*,
                                                    sparkle::v1::GetStatusResponse* response) {
  const EngineStats stats = engine_->Stats();
  const bool draining = engine_->draining();

  response->set_version(SPARKLE_VERSION);
  response->set_build(SPARKLE_BUILD_INFO);
  response->set_uptime_seconds(absl::ToDoubleSeconds(absl::Now() - start_));
  response->set_ready(!draining);
  response->set_draining(draining);
  response->set_listen_address(listen_address_);

  auto* cpu = response->add_devices();
  cpu->set_name("cpu");
  cpu->set_kind("cpu");
  cpu->set_healthy(true);
  cpu->set_threads(engine_->cpu().threads());
  cpu->set_jobs_done(stats.jobs_succeeded);
  cpu->set_batches_done(stats.batches);
  cpu->set_gflop_done(stats.gflop);
  cpu->set_busy_seconds(stats.busy_seconds);
  cpu->set_detail(absl::StrCat("oneDNN ", engine_->cpu().Isa()));

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
  response->set_mean_batch_size(
      stats.batches > 0 ? static_cast<double>(stats.batched_jobs) / stats.batches : 0.0);

  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace sparkle
