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
#include "server/drainer.h"
#include "server/inference_service.h"
#include "server/inference_stats.h"
#include "server/server_metrics.h"
#include "spdlog/spdlog.h"

namespace sparkle {

absl::Status ServerOptions::Validate() const {
  if (listen_address.empty()) return absl::InvalidArgumentError("--listen must not be empty");
  if (!admin_listen_address.empty() && (!absl::StartsWith(admin_listen_address, "unix:") ||
                                        absl::StartsWith(listen_address, "unix:"))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--admin_listen must be a unix:/path socket and --listen a TCP address; were \"",
        admin_listen_address, "\" and \"", listen_address, "\""));
  }
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
  if (engine.gpu.slots < 1 || engine.gpu.slots > 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("--gpu_slots must be in [1, 8]; was ", engine.gpu.slots));
  }
  if (engine.gpu.emulated_devices < -1 || engine.gpu.emulated_devices > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("--emulated_gpus must be in [-1, 64]; was ", engine.gpu.emulated_devices));
  }
  return absl::OkStatus();
}

struct SparkleServer::Impl {
  ServerOptions options;
  std::string address;
  // Declared before the engine: its done callbacks record into these until it is destroyed.
  InferenceStats stats;
  std::unique_ptr<ServerMetrics> metrics;  // null when --metrics_address is empty
  std::unique_ptr<Engine> engine;
  std::unique_ptr<InferenceService> inference;
  std::unique_ptr<ControlService> control;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<Drainer> drainer;

  // Guards the engine's destruction against Healthy() (the watchdog thread).
  mutable absl::Mutex engine_mu;
  bool engine_destroyed ABSL_GUARDED_BY(engine_mu) = false;

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
  if (!options.metrics_address.empty()) {
    ServerMetrics::Sources sources;
    const Engine* engine = impl->engine.get();
    sources.engine = [engine] { return engine->Stats(); };
    sources.devices = [engine] { return engine->Devices(); };
    sources.registry = [engine] {
      const WeightRegistry::Snapshot r = engine->registry().snapshot();
      return ServerMetrics::RegistrySize{r.weights, r.bytes, r.budget_bytes};
    };
    sources.stats = &impl->stats;
    SPARKLE_ASSIGN_OR_RETURN(impl->metrics,
                             ServerMetrics::Create({options.metrics_address}, std::move(sources)));
    spdlog::info("metrics on http://{}/metrics", impl->metrics->address());
  }
  impl->inference = std::make_unique<InferenceService>(impl->engine.get(), inference_options,
                                                       &impl->stats, impl->metrics.get());
  impl->control = std::make_unique<ControlService>(impl->engine.get(), options.listen_address);
  if (impl->metrics != nullptr) impl->control->SetMetricsAddress(impl->metrics->address());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.listen_address, grpc::InsecureServerCredentials(), &port);
  int admin_port = 0;
  if (!options.admin_listen_address.empty()) {
    builder.AddListeningPort(options.admin_listen_address, grpc::InsecureServerCredentials(),
                             &admin_port);
  }
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
  if (!options.admin_listen_address.empty() && admin_port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on --admin_listen ",
                                               options.admin_listen_address));
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
  impl->drainer =
      std::make_unique<Drainer>(impl->engine.get(), health, options.on_drain_start);
  impl->control->EnableDrain(impl->drainer.get(), options.drain_timeout,
                             /*unix_socket_only=*/!options.admin_listen_address.empty());
  return std::unique_ptr<SparkleServer>(new SparkleServer(std::move(impl)));
}

SparkleServer::SparkleServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

SparkleServer::~SparkleServer() { Shutdown(absl::Now()).IgnoreError(); }

void SparkleServer::Wait() { impl_->shutdown_done.WaitForNotification(); }

const std::string& SparkleServer::address() const { return impl_->address; }

bool SparkleServer::Healthy() const {
  absl::MutexLock lock(&impl_->engine_mu);
  if (impl_->engine_destroyed) return true;  // stopped: systemd's TimeoutStopSec takes over
  impl_->engine->Stats();  // blocks (and the watchdog stops pinging) if the engine lock is stuck
  return true;
}

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
  // UNAVAILABLE from the draining engine while accepted ones finish (the Drainer, shared with
  // Control.Drain). Then any Control.Drain still waiting returns before the engine goes.
  spdlog::info("shutdown: draining accepted work (budget {})",
               absl::FormatDuration(absl::Trunc(deadline - absl::Now(), absl::Milliseconds(1))));
  const DrainResult drain = impl_->drainer->Drain(deadline);
  impl_->drainer->Stop();
  absl::Status status = absl::OkStatus();
  if (drain.drained) {
    spdlog::info("shutdown: all accepted work finished in {}",
                 absl::FormatDuration(absl::Trunc(drain.waited, absl::Milliseconds(1))));
  } else {
    status = absl::DeadlineExceededError(absl::StrCat(
        "drain deadline passed with ", drain.in_flight_jobs, " job(s) still in flight"));
    spdlog::warn("shutdown: {}", status.ToString());
  }
  {
    // One line with the final counters: what was accepted and how it ended (nothing lost means
    // accepted = succeeded + failed).
    const EngineStats stats = impl_->engine->Stats();
    spdlog::info("shutdown: jobs accepted {} succeeded {} failed {} rejected {}",
                 stats.jobs_accepted, stats.jobs_succeeded, stats.jobs_failed,
                 stats.jobs_rejected);
  }
  // Every accepted RPC has its reply by now (or the budget is spent): gRPC gets a short grace
  // period to flush them, then cancels what is left.
  impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  impl_->server->Wait();
  // /metrics reads the engine; recording goes on while late jobs complete.
  if (impl_->metrics != nullptr) impl_->metrics->StopEndpoint();
  {
    // Once set, Healthy() no longer touches the engine (and none is inside Stats: it holds the
    // lock); the engine's destructor, which may wait for running batches, runs unlocked.
    absl::MutexLock lock(&impl_->engine_mu);
    impl_->engine_destroyed = true;
  }
  impl_->engine.reset();
  {
    absl::MutexLock lock(&impl_->mu);
    impl_->shutdown_status = status;
  }
  impl_->shutdown_done.Notify();
  return status;
}

}  // namespace sparkle
