// SparkleServer: owns the engine, the gRPC server (inference, control and health services) and
// their lifecycle. Shutdown follows docs/operations.md, "Stop, drain and restart": health NOT_SERVING → stop admission →
// drain accepted work within the budget → stop the gRPC server → destroy the engine.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/server_options.h"

namespace grpc {
class Channel;
}  // namespace grpc

namespace sparkle {

class SparkleServer {
 public:
  // Validates options, creates the engine and starts listening. The bound address (with the
  // real port when the option asked for port 0) is address().
  static absl::StatusOr<std::unique_ptr<SparkleServer>> Start(const ServerOptions& options);
  ~SparkleServer();  // Shutdown(now) if not yet shut down

  // Blocks until Shutdown has completed.
  void Wait();

  // SIGTERM in the daemon (main.cc): the drain of Shutdown (--drain_delay, health NOT_SERVING,
  // admission stopped, accepted work finished by `deadline`), then at most 1 s more until gRPC
  // has sent every accepted call's reply; the gRPC server is NOT stopped, and the caller exits
  // the process right after. Calls arriving meanwhile are answered UNAVAILABLE by the draining
  // engine, and calls still in flight when the process exits see the connection close:
  // UNAVAILABLE as well. (gRPC 1.51's Server::Shutdown resets calls that reach it while it
  // runs with CANCELLED, a code clients do not retry; Shutdown below has that window.)
  // OK when all accepted work finished in time. Call at most once, and not with Shutdown.
  absl::Status DrainForExit(absl::Time deadline);

  // Graceful stop: OK when all accepted work finished before `deadline`. Thread-safe,
  // idempotent (later calls return the first result).
  absl::Status Shutdown(absl::Time deadline);

  // The health signal of the systemd watchdog: the engine answers a counter snapshot (its lock
  // is not stuck; if it is, this blocks). True while draining and once stopped.
  bool Healthy() const;

  const std::string& address() const;
  // The REST listener's bound address ("" without one).
  std::string http_address() const;

  // A channel into the main listener's services without any socket (gRPC's in-process
  // transport), for in-process tests: no credentials, no size limit on the client side. Its
  // calls see the same services, CallAuth and limits as remote ones. Valid until Shutdown.
  std::shared_ptr<grpc::Channel> InProcessChannel() const;

 private:
  // Implementation details follow; API users need not read.
  struct Impl;
  explicit SparkleServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sparkle
