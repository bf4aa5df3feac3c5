#include "server/sparkle_server.h"

#include <climits>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "engine/core/status_macros.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/control_service.h"
#include "server/inference_service.h"
#include "spdlog/spdlog.h"

namespace sparkle {

absl::Status ServerOptions::Validate() const {
  if (listen_address.empty()) return absl::InvalidArgumentError("--listen must not be empty");
  if (max_message_bytes < 4096 || max_message_bytes > INT_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_message_bytes must be in [4096, 2147483647]; was ", max_message_bytes));
  }
  if (drain_timeout < absl::ZeroDuration() || drain_timeout > absl::Hours(1)) {
    return absl::InvalidArgumentError(absl::StrCat("--drain_timeout must be in [0, 1h]; was ",
                                                   absl::FormatDuration(drain_timeout)));
  }
  if (max_concurrent_streams < 1 || max_concurrent_streams > 65536) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_concurrent_streams must be in [1, 65536]; was ", max_concurrent_streams));
  }
  if (retry_after_ms < 0 || retry_after_ms > 60000) {
    return absl::InvalidArgumentError(
        absl::StrCat("--retry_after_ms must be in [0, 60000]; was ", retry_after_ms));
  }
  return absl::OkStatus();
}

struct SparkleServer::Impl {
  ServerOptions options;
  std::string address;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<InferenceService> inference;
  std::unique_ptr<ControlService> control;
  std::unique_ptr<grpc::Server> server;

  absl::Mutex mu;
  bool shutdown_started ABSL_GUARDED_BY(mu) = false;  // monotonic
  absl::Status shutdown_status ABSL_GUARDED_BY(mu);
  absl::Notification shutdown_done;
};

absl::StatusOr<std::unique_ptr<SparkleServer>> SparkleServer::Start(
    const ServerOptions& options) {
  SPARKLE_RETURN_IF_ERROR(options.Validate());
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  SPARKLE_ASSIGN_OR_RETURN(impl->engine, Engine::Create(options.engine));

  InferenceService::Options inference_options;
  inference_options.limits.max_response_bytes = options.max_message_bytes;
  inference_options.limits.max_request_bytes = options.max_message_bytes;
  inference_options.retry_after_ms = options.retry_after_ms;
  impl->inference = std::make_unique<InferenceService>(impl->engine.get(), inference_options);
  impl->control = std::make_unique<ControlService>(impl->engine.get(), options.listen_address);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.listen_address, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(impl->inference.get());
  builder.RegisterService(impl->control.get());
  // gRPC itself refuses messages above twice the limit without reading them (a hard memory
  // bound); between the limit and twice it, ModelInfer answers RESOURCE_EXHAUSTED naming the
  // flag, which gRPC's own message cannot do.
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(std::min<int64_t>(INT_MAX, 2 * options.max_message_bytes)));
  builder.SetMaxSendMessageSize(static_cast<int>(options.max_message_bytes));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_concurrent_streams);
  impl->server = builder.BuildAndStart();
  if (impl->server == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen_address,
                                               " (address in use, or not a valid address?)"));
  }
  impl->address = options.listen_address;
  if (!absl::StartsWith(options.listen_address, "unix:")) {
    impl->address = absl::StrCat(
        options.listen_address.substr(0, options.listen_address.rfind(':')), ":", port);
  }
  grpc::HealthCheckServiceInterface* health = impl->server->GetHealthCheckService();
  for (const char* service : {"", "inference.GRPCInferenceService", "sparkle.v1.Control"}) {
    health->SetServingStatus(service, true);
  }
  return std::unique_ptr<SparkleServer>(new SparkleServer(std::move(impl)));
}

SparkleServer::SparkleServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

SparkleServer::~SparkleServer() { Shutdown(absl::Now()).IgnoreError(); }

void SparkleServer::Wait() { impl_->shutdown_done.WaitForNotification(); }

const std::string& SparkleServer::address() const { return impl_->address; }

absl::Status SparkleServer::Shutdown(absl::Time deadline) {
  bool first;
  {
    absl::MutexLock lock(&impl_->mu);
    first = !impl_->shutdown_started;
    impl_->shutdown_started = true;
  }
  if (!first) {
    impl_->shutdown_done.WaitForNotification();
    absl::MutexLock lock(&impl_->mu);
    return impl_->shutdown_status;
  }
  // Load balancers and health checkers see NOT_SERVING first; new inference requests get
  // UNAVAILABLE from the draining engine while accepted ones finish.
  impl_->server->GetHealthCheckService()->Shutdown();
  spdlog::info("shutdown: draining accepted work (budget {})",
               absl::FormatDuration(absl::Trunc(deadline - absl::Now(), absl::Milliseconds(1))));
  absl::Status status = impl_->engine->Drain(deadline);
  if (status.ok()) {
    spdlog::info("shutdown: all accepted work finished");
  } else {
    spdlog::warn("shutdown: {}", status.ToString());
  }
  // Every accepted RPC has its reply by now (or the budget is spent): gRPC gets a short grace
  // period to flush them, then cancels what is left.
  impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  impl_->server->Wait();
  impl_->engine.reset();
  {
    absl::MutexLock lock(&impl_->mu);
    impl_->shutdown_status = status;
  }
  impl_->shutdown_done.Notify();
  return status;
}

}  // namespace sparkle
