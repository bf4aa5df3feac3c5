#include "server/sparkle_server.h"

#include <climits>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "base/status_macros.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/authenticator.h"
#include "server/call_auth.h"
#include "server/certificate_watcher.h"
#include "server/rest_service.h"
#include "server/control_service.h"
#include "server/drainer.h"
#include "server/inference_service.h"
#include "server/shared_memory_registry.h"
#include "server/tensor_buffer_pool.h"
#include "server/inference_stats.h"
#include "server/server_metrics.h"
#include "server/tls_credentials.h"
#include "server/unknown_method_service.h"
#include "spdlog/spdlog.h"

namespace sparkle {
namespace {

// host:port (or unix:/path) reachable from this machine only.
bool IsLoopback(absl::string_view address) {
  if (absl::StartsWith(address, "unix:") || absl::StartsWith(address, "unix-abstract:")) {
    return true;
  }
  const size_t colon = address.rfind(':');
  absl::string_view host = colon == absl::string_view::npos ? address : address.substr(0, colon);
  if (absl::StartsWith(host, "[") && absl::EndsWith(host, "]")) {
    host = host.substr(1, host.size() - 2);
  }
  return host == "localhost" || host == "::1" || absl::StartsWith(host, "127.");
}

// Every exposure an operator should know of; each is also logged at warn at start.
std::vector<std::string> SecurityWarnings(const ServerOptions& o) {
  std::vector<std::string> warnings;
  const bool tls = !o.tls_cert_file.empty();
  const bool tokens = !o.auth_token_file.empty();
  for (const std::string* address : {&o.listen_address, &o.admin_listen_address}) {
    if (address->empty() || IsLoopback(*address)) continue;
    const char* flag = address == &o.listen_address ? "--listen" : "--admin_listen";
    if (!tls) {
      warnings.push_back(absl::StrCat(flag, " ", *address,
                                      " is not loopback and TLS is off: tensors and tokens cross "
                                      "the network in plaintext (set --tls_cert_file/--tls_key_file)"));
    }
    if (!tokens) {
      warnings.push_back(absl::StrCat(flag, " ", *address,
                                      " is not loopback and --auth_token_file is not set: anyone "
                                      "who can reach it may call every RPC"));
    }
  }
  if (!o.metrics_address.empty() && !IsLoopback(o.metrics_address)) {
    warnings.push_back(absl::StrCat("--metrics_address ", o.metrics_address,
                                    " is not loopback: /metrics (plain HTTP, no authentication, "
                                    "counters only) is reachable from the network"));
  }
  return warnings;
}

}  // namespace

absl::Status ServerOptions::Validate() const {
  if (listen_address.empty()) return absl::InvalidArgumentError("--listen must not be empty");
  if (!admin_listen_address.empty() && admin_listen_address == listen_address) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--admin_listen must differ from --listen; both were \"", listen_address, "\""));
  }
  if (tls_cert_file.empty() != tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert_file and --tls_key_file must be given together (or neither)");
  }
  if (!tls_client_ca_file.empty() && tls_cert_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_client_ca_file needs --tls_cert_file and --tls_key_file");
  }
  if (tls_reload_interval < absl::Seconds(1) || tls_reload_interval > absl::Hours(1)) {
    return absl::InvalidArgumentError(absl::StrCat("--tls_reload_interval must be in [1s, 1h]; was ",
                                                   absl::FormatDuration(tls_reload_interval)));
  }
  if (max_message_bytes < 4096 || max_message_bytes > INT_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_message_bytes must be in [4096, 2147483647]; was ", max_message_bytes));
  }
  if (drain_timeout < absl::ZeroDuration() || drain_timeout > absl::Hours(1)) {
    return absl::InvalidArgumentError(absl::StrCat("--drain_timeout must be in [0, 1h]; was ",
                                                   absl::FormatDuration(drain_timeout)));
  }
  if (drain_delay < absl::ZeroDuration() || drain_delay > absl::Hours(1)) {
    return absl::InvalidArgumentError(absl::StrCat("--drain_delay must be in [0, 1h]; was ",
                                                   absl::FormatDuration(drain_delay)));
  }
  if (max_concurrent_streams < 1 || max_concurrent_streams > 65536) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_concurrent_streams must be in [1, 65536]; was ", max_concurrent_streams));
  }
  if (max_inflight_per_stream < 1 || max_inflight_per_stream > 4096) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_inflight_per_stream must be in [1, 4096]; was ", max_inflight_per_stream));
  }
  if (tensor_pool_bytes < 0 || tensor_pool_bytes > (int64_t{1} << 40)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tensor_pool_bytes must be in [0, 2^40]; was ", tensor_pool_bytes));
  }
  if (shared_memory != "local" && shared_memory != "any" && shared_memory != "off") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--shared_memory must be local, any or off; was '", shared_memory, "'"));
  }
  if (shm_max_regions < 1 || shm_max_regions > 65536) {
    return absl::InvalidArgumentError(
        absl::StrCat("--shm_max_regions must be in [1, 65536]; was ", shm_max_regions));
  }
  if (shm_max_bytes < (int64_t{1} << 20) || shm_max_bytes > (int64_t{1} << 50)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--shm_max_bytes must be in [1048576 (1 MiB), 2^50]; was ", shm_max_bytes));
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
  // Declared before the engine: the jobs it still holds point into these (pooled buffers,
  // mapped regions) and its done callbacks record into them until it is destroyed.
  std::unique_ptr<TensorBufferPool> pool;
  std::unique_ptr<SharedMemoryRegistry> shared_memory;  // null: --shared_memory=off
  InferenceStats stats;
  std::unique_ptr<ServerMetrics> metrics;  // null when --metrics_address is empty
  std::unique_ptr<Engine> engine;
  std::unique_ptr<InferenceService> inference;
  std::unique_ptr<RestService> rest;  // null without --http_listen
  std::unique_ptr<ControlService> control;
  std::unique_ptr<Authenticator> authenticator;     // null: tokens off
  std::unique_ptr<CertificateWatcher> certificate;  // null: TLS off
  std::unique_ptr<CallAuth> public_auth;
  std::unique_ptr<CallAuth> admin_auth;
  std::unique_ptr<ControlService> admin_control;    // null without --admin_listen
  // Answer methods no service has (UNIMPLEMENTED naming the method); one per grpc::Server,
  // declared before the servers so that they outlive them.
  UnknownMethodService unknown_methods, admin_unknown_methods;
  std::unique_ptr<grpc::Server> admin_server;       // null without --admin_listen
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<Drainer> drainer;

  // Guards the engine's destruction against Healthy() (the watchdog thread).
  mutable absl::Mutex engine_mu;
  bool engine_destroyed ABSL_GUARDED_BY(engine_mu) = false;

  absl::Mutex mu;
  bool shutdown_started ABSL_GUARDED_BY(mu) = false;  // monotonic
  absl::Status shutdown_status ABSL_GUARDED_BY(mu);
  absl::Notification shutdown_done;

  // The first half of every stop: --drain_delay, then health NOT_SERVING, admission stopped
  // and accepted work finished (or `deadline` passed), with the final counters logged.
  absl::Status DrainAcceptedWork(absl::Time deadline) {
    // Load balancers and health checkers see NOT_SERVING first; new inference requests get
    // UNAVAILABLE from the draining engine while accepted ones finish (the Drainer, shared with
    // Control.Drain). Then any Control.Drain still waiting returns before the engine goes.
    // --drain_delay (the preStop pattern): health NOT_SERVING while requests are still served,
    // so that load balancers move away before any is refused; the budget starts after it. Skipped
    // when a drain already runs (Control.Drain) or no budget was given (the destructor).
    const absl::Duration delay = options.drain_delay;
    if (delay > absl::ZeroDuration() && deadline > absl::Now() && !drainer->started()) {
      drainer->StopAdvertising();
      inference->StopAdvertisingReady();
      spdlog::info("shutdown: health NOT_SERVING, still serving for {} (--drain_delay)",
                   absl::FormatDuration(delay));
      absl::SleepFor(delay);
      deadline += delay;
    }
    spdlog::info("shutdown: draining accepted work (budget {})",
                 absl::FormatDuration(absl::Trunc(deadline - absl::Now(), absl::Milliseconds(1))));
    const DrainResult drain = drainer->Drain(deadline);
    drainer->Stop();
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
      const EngineStats stats = engine->Stats();
      spdlog::info("shutdown: jobs accepted {} succeeded {} failed {} rejected {}",
                   stats.jobs_accepted, stats.jobs_succeeded, stats.jobs_failed,
                   stats.jobs_rejected);
    }
    return status;
  }
};

absl::StatusOr<std::unique_ptr<SparkleServer>> SparkleServer::Start(
    const ServerOptions& options) {
  SPARKLE_RETURN_IF_ERROR(options.Validate());
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  // Security first: a bad certificate, key, CA or token file refuses to start before anything
  // heavy is built.
  TlsOptions tls;
  tls.cert_file = options.tls_cert_file;
  tls.key_file = options.tls_key_file;
  tls.client_ca_file = options.tls_client_ca_file;
  if (!options.tls_cert_file.empty()) {
    SPARKLE_ASSIGN_OR_RETURN(impl->certificate,
                             CertificateWatcher::Create({options.tls_cert_file,
                                                         options.tls_key_file,
                                                         options.tls_client_ca_file,
                                                         options.tls_reload_interval}));
  }
  SPARKLE_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                           MakeServerCredentials(tls, impl->certificate.get()));
  if (!options.auth_token_file.empty()) {
    SPARKLE_ASSIGN_OR_RETURN(impl->authenticator,
                             Authenticator::Create({options.auth_token_file, absl::Seconds(1)}));
  }
  impl->public_auth = std::make_unique<CallAuth>(CallAuth::Options{
      impl->authenticator.get(), options.admin_listen_address, /*is_admin_listener=*/false});
  impl->admin_auth = std::make_unique<CallAuth>(CallAuth::Options{
      impl->authenticator.get(), options.admin_listen_address, /*is_admin_listener=*/true});
  ControlService::Security security;
  security.certificate = impl->certificate.get();
  security.status.set_tls(!options.tls_cert_file.empty());
  security.status.set_mtls(!options.tls_client_ca_file.empty());
  security.status.set_auth_tokens(impl->authenticator != nullptr);
  security.status.set_admin_listener(!options.admin_listen_address.empty());
  for (const std::string& warning : SecurityWarnings(options)) {
    spdlog::warn("SECURITY: {}", warning);
    security.status.add_warnings(warning);
  }

  SPARKLE_ASSIGN_OR_RETURN(impl->engine, Engine::Create(options.engine));

  SPARKLE_ASSIGN_OR_RETURN(impl->pool, TensorBufferPool::Create(
                                           {.max_idle_bytes = options.tensor_pool_bytes}));
  InferenceService::Options inference_options;
  inference_options.pool = impl->pool.get();
  if (options.shared_memory != "off") {
    SPARKLE_ASSIGN_OR_RETURN(impl->shared_memory,
                             SharedMemoryRegistry::Create({.max_regions = options.shm_max_regions,
                                                           .max_bytes = options.shm_max_bytes}));
  }
  inference_options.shared_memory = impl->shared_memory.get();
  inference_options.shared_memory_allow_remote = options.shared_memory == "any";
  inference_options.limits.max_response_bytes = options.max_message_bytes;
  inference_options.limits.max_request_bytes = options.max_message_bytes;
  inference_options.retry_after_ms = options.retry_after_ms;
  inference_options.max_inflight_per_stream = options.max_inflight_per_stream;
  inference_options.auth = impl->public_auth.get();
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
  if (!options.http_address.empty()) {
    RestService::Options rest;
    rest.address = options.http_address;
    rest.threads = options.http_threads;
    rest.limits = inference_options.limits;
    rest.max_json_bytes = options.http_max_json_bytes;
    rest.retry_after_ms = options.retry_after_ms;
    rest.auth = impl->public_auth.get();
    rest.shared_memory = impl->shared_memory.get();
    rest.shared_memory_allow_remote = inference_options.shared_memory_allow_remote;
    rest.pool = impl->pool.get();
    rest.certificate = impl->certificate.get();
    rest.require_client_certificate = !options.tls_client_ca_file.empty();
    rest.ready = [inference = impl->inference.get()] { return inference->ready(); };
    SPARKLE_ASSIGN_OR_RETURN(impl->rest, RestService::Create(impl->engine.get(), &impl->stats,
                                                             impl->metrics.get(), rest));
    spdlog::info("KServe v2 REST on {}://{}", impl->certificate != nullptr ? "https" : "http",
                 impl->rest->address());
  }
  impl->control = std::make_unique<ControlService>(impl->engine.get(), options.listen_address);
  if (impl->metrics != nullptr) impl->control->SetMetricsAddress(impl->metrics->address());
  security.auth = impl->public_auth.get();
  impl->control->SetSecurity(security);

  grpc::EnableDefaultHealthCheckService(true);
  // gRPC itself refuses messages above twice the limit without reading them (a hard memory
  // bound); between the limit and twice it, ModelInfer answers RESOURCE_EXHAUSTED naming the
  // flag, which gRPC's own message cannot do.
  auto configure = [&options](grpc::ServerBuilder& builder) {
    builder.SetMaxReceiveMessageSize(
        static_cast<int>(std::min<int64_t>(INT_MAX, 2 * options.max_message_bytes)));
    builder.SetMaxSendMessageSize(static_cast<int>(options.max_message_bytes));
    builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_concurrent_streams);
  };
  // A UNIX socket is local: its access is the file's permissions, TLS adds nothing there.
  auto credentials_for = [&credentials](const std::string& address) {
    return absl::StartsWith(address, "unix:") ? grpc::InsecureServerCredentials() : credentials;
  };
  // The admin listener is a server of its own, with its own Control service that accepts admin
  // calls; the public one refuses them (CallAuth).
  if (!options.admin_listen_address.empty()) {
    impl->admin_control =
        std::make_unique<ControlService>(impl->engine.get(), options.listen_address);
    if (impl->metrics != nullptr) {
      impl->admin_control->SetMetricsAddress(impl->metrics->address());
    }
    security.auth = impl->admin_auth.get();
    impl->admin_control->SetSecurity(security);
    grpc::ServerBuilder admin_builder;
    int admin_port = 0;
    admin_builder.AddListeningPort(options.admin_listen_address,
                                   credentials_for(options.admin_listen_address), &admin_port);
    admin_builder.RegisterService(impl->admin_control.get());
    admin_builder.RegisterCallbackGenericService(&impl->admin_unknown_methods);
    configure(admin_builder);
    impl->admin_server = admin_builder.BuildAndStart();
    if (impl->admin_server == nullptr || admin_port == 0) {
      return absl::UnavailableError(absl::StrCat("cannot listen on --admin_listen ",
                                                 options.admin_listen_address,
                                                 " (address in use, or not a valid address?)"));
    }
    spdlog::info("admin calls (Drain, RegisterWeights, UnregisterWeights) on {} only{}",
                 options.admin_listen_address,
                 absl::StartsWith(options.admin_listen_address, "unix:") ? ""
                 : options.tls_cert_file.empty()                         ? " (plaintext)"
                                                                         : " (TLS)");
  }
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.listen_address, credentials_for(options.listen_address), &port);
  builder.RegisterService(impl->inference.get());
  builder.RegisterService(impl->control.get());
  builder.RegisterCallbackGenericService(&impl->unknown_methods);
  configure(builder);
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
  impl->drainer =
      std::make_unique<Drainer>(impl->engine.get(), health, options.on_drain_start);
  impl->control->EnableDrain(impl->drainer.get(), options.drain_timeout);
  if (impl->admin_control != nullptr) {
    impl->admin_control->EnableDrain(impl->drainer.get(), options.drain_timeout);
  }
  return std::unique_ptr<SparkleServer>(new SparkleServer(std::move(impl)));
}

SparkleServer::SparkleServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

SparkleServer::~SparkleServer() { Shutdown(absl::Now()).IgnoreError(); }

void SparkleServer::Wait() { impl_->shutdown_done.WaitForNotification(); }

const std::string& SparkleServer::address() const { return impl_->address; }

std::string SparkleServer::http_address() const {
  return impl_->rest != nullptr ? impl_->rest->address() : "";
}

std::shared_ptr<grpc::Channel> SparkleServer::InProcessChannel() const {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  return impl_->server->InProcessChannel(args);
}

bool SparkleServer::Healthy() const {
  absl::MutexLock lock(&impl_->engine_mu);
  if (impl_->engine_destroyed) return true;  // stopped: systemd's TimeoutStopSec takes over
  impl_->engine->Stats();  // blocks (and the watchdog stops pinging) if the engine lock is stuck
  return true;
}

absl::Status SparkleServer::DrainForExit(absl::Time deadline) {
  const absl::Status status = impl_->DrainAcceptedWork(deadline);
  // REST: stop listening; the replies still being written get the wait below (the workers
  // themselves are not waited for: the process exits, idle keep-alive connections close).
  if (impl_->rest != nullptr) impl_->rest->StopAccepting();
  // Replies of accepted calls still being sent: gRPC gets up to a second for them.
  const absl::Time flushed_by = absl::Now() + absl::Seconds(1);
  while (impl_->inference->unsent_replies() > 0 && absl::Now() < flushed_by) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  // Time for clients to read the last replies: a socket closed with unread requests in it is
  // reset, and a reset discards what it still had to send.
  absl::SleepFor(absl::Milliseconds(200));
  if (const int64_t unsent = impl_->inference->unsent_replies(); unsent > 0) {
    spdlog::warn("shutdown: {} accepted repl(ies) still unsent after 1 s", unsent);
  }
  impl_->certificate.reset();  // removes the private copies of the key and certificates
  return status;
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
  const absl::Status status = impl_->DrainAcceptedWork(deadline);
  // Every accepted RPC has its reply by now (or the budget is spent): gRPC gets a short grace
  // period to flush them, then cancels what is left.
  const auto grace = std::chrono::system_clock::now() + std::chrono::seconds(1);
  if (impl_->admin_server != nullptr) impl_->admin_server->Shutdown(grace);
  impl_->server->Shutdown(grace);
  if (impl_->admin_server != nullptr) impl_->admin_server->Wait();
  impl_->server->Wait();
  if (impl_->rest != nullptr) impl_->rest->Stop();
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
