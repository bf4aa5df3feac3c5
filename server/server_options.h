// ServerOptions: everything sparkled is configured with. main.cc fills it from flags; nothing
// else reads flags.
#pragma once

#include <cstdint>
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
  // How long SIGTERM/SIGINT waits for accepted work to finish before exiting. [0, 1 h].
  absl::Duration drain_timeout = absl::Seconds(30);
  // Concurrent RPCs per HTTP/2 connection (bounds memory for large messages: see
  // grpc-transport.md, 64 × 16 MiB on one connection collapses). Range [1, 65536].
  int max_concurrent_streams = 64;
  // Trailing-metadata retry hint with a queue-full RESOURCE_EXHAUSTED, in ms. [0, 60000].
  int64_t retry_after_ms = 20;
  EngineOptions engine;

  // INVALID_ARGUMENT naming the flag and value of the first option out of range.
  absl::Status Validate() const;
};

}  // namespace sparkle
