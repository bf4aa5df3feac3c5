// ControlService::Drain: Control.Drain over the shared Drainer (server/drainer.h).
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/control_service.h"
#include "server/drainer.h"
#include "spdlog/spdlog.h"

namespace sparkle {

ControlService::~ControlService() {
  absl::MutexLock lock(&drain_threads_mu_);
  for (std::thread& t : drain_threads_) t.join();
}

void ControlService::EnableDrain(Drainer* drainer, absl::Duration default_timeout,
                                 bool unix_socket_only) {
  drainer_ = drainer;
  default_drain_timeout_ = default_timeout;
  drain_unix_socket_only_ = unix_socket_only;
}

grpc::ServerUnaryReactor* ControlService::Drain(grpc::CallbackServerContext* context,
                                                const sparkle::v1::DrainRequest* request,
                                                sparkle::v1::DrainResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (drainer_ == nullptr) {
    reactor->Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "drain is not enabled"));
    return reactor;
  }
  if (drain_unix_socket_only_ && !absl::StartsWith(context->peer(), "unix:")) {
    reactor->Finish(grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                                 "Drain is only accepted on the --admin_listen UNIX socket"));
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
               context->peer(), absl::FormatDuration(timeout));
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
