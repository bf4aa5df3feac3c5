// ServerOptions: everything sparkled is configured with. main.cc fills it from flags; nothing
// else reads flags.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/engine.h"

namespace sparkle {

struct ServerOptions {
  // gRPC listen address, host:port (or unix:/path). Default loopback only.
  std::string listen_address = "127.0.0.1:8001";
  // Largest request and response message, in bytes. Range [4 KiB, 2 GiB - 1] (protobuf's
  // ceiling). Requests above it get RESOURCE_EXHAUSTED naming --max_message_bytes.
  int64_t max_message_bytes = int64_t{256} << 20;
  // Optional second listener for admin calls, a UNIX socket "unix:/path". When set, Control.Drain
  // is refused (PERMISSION_DENIED) on every other connection, so only local users allowed to
  // open the socket (file permissions) can drain. Requires a TCP listen_address. Empty: admin
  // calls are accepted on listen_address like any other call.
  std::string admin_listen_address;
  // How long SIGTERM/SIGINT waits for accepted work to finish before exiting. [0, 1 h].
  absl::Duration drain_timeout = absl::Seconds(30);
  // Concurrent RPCs per HTTP/2 connection (bounds memory for large messages: see
  // grpc-transport.md, 64 × 16 MiB on one connection collapses). Range [1, 65536].
  int max_concurrent_streams = 64;
  // Trailing-metadata retry hint with a queue-full RESOURCE_EXHAUSTED, in ms. [0, 60000].
  int64_t retry_after_ms = 20;
  // Prometheus endpoint, host:port (GET /metrics; port 0 picks a free one). Empty: metrics
  // off (nothing recorded, no HTTP server). A port in use fails startup.
  std::string metrics_address = "0.0.0.0:8002";
  EngineOptions engine;
  // Runs once when the first drain begins (SIGTERM or Control.Drain), after admission stopped;
  // main.cc reports it to systemd. May be empty. Runs on the draining thread; must not block.
  std::function<void()> on_drain_start;

  // INVALID_ARGUMENT naming the flag and value of the first option out of range.
  absl::Status Validate() const;
};

}  // namespace sparkle
