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
  // Optional second listener for admin calls (Drain, RegisterWeights, UnregisterWeights, ...): a
  // UNIX socket "unix:/path" (access by file permissions) or a TCP host:port (e.g. a loopback or
  // management-network address; TLS applies when on). When set, every admin call is refused
  // (PERMISSION_DENIED naming --admin_listen) on listen_address. Must differ from listen_address.
  // Empty: admin calls are accepted on listen_address like any other call.
  std::string admin_listen_address;
  // TLS on the listeners (server/tls_credentials.h): PEM certificate chain and unencrypted PEM
  // private key, both or neither (neither: plaintext). Re-read when they change.
  std::string tls_cert_file;
  std::string tls_key_file;
  // PEM CA bundle: when set (needs the two above), every client must present a certificate
  // signed by it (mTLS).
  std::string tls_client_ca_file;
  // How often the TLS files are checked for a rotated certificate. Range [1 s, 1 h], whole
  // seconds; a rotation reaches new connections within this interval (plus < 1 s).
  absl::Duration tls_reload_interval = absl::Seconds(5);
  // Bearer-token file `token,name,role` (server/token_file.h): when set, every RPC except
  // health, ServerLive and ServerReady needs `authorization: Bearer <token>`, and admin calls
  // role admin. Polled every second for changes. Empty: no authentication.
  std::string auth_token_file;
  // How long SIGTERM/SIGINT waits for accepted work to finish before exiting. [0, 1 h].
  absl::Duration drain_timeout = absl::Seconds(30);
  // On SIGTERM/SIGINT, how long health stays NOT_SERVING while requests are still admitted and
  // served, before admission stops and the drain_timeout budget starts (load balancers and
  // Kubernetes endpoints move away first). [0, 1 h]; 0: admission stops at once.
  absl::Duration drain_delay = absl::ZeroDuration();
  // Concurrent RPCs per HTTP/2 connection (bounds memory for large messages: see
  // grpc-transport.md, 64 × 16 MiB on one connection collapses). Range [1, 65536].
  int max_concurrent_streams = 8;
  // ModelStreamInfer flow control: requests of one stream read and not yet answered (in the
  // engine or waiting to be written); at the limit the daemon stops reading that stream.
  // Range [1, 4096].
  int max_inflight_per_stream = 64;
  // Idle tensor buffers (request copies, response outputs) kept for reuse, in bytes of capacity.
  // [0, 2^40]; 0: no pooling. Buffers in use are bounded by engine.max_inflight_bytes.
  int64_t tensor_pool_bytes = int64_t{256} << 20;
  // System shared memory (Triton's extension, docs/protocol.md "System shared memory"):
  // "local" (SystemSharedMemoryRegister accepted only from peers on this host: loopback or a
  // unix socket), "any" (from every peer; the object must still exist on this host), or "off"
  // (no registry; the RPCs answer FAILED_PRECONDITION).
  std::string shared_memory = "local";
  // Registered shared-memory regions, all callers together. Range [1, 65536].
  int shm_max_regions = 64;
  // Sum of the byte sizes of registered regions, bytes. Range [1 MiB, 2^50]. Mapped, not
  // allocated: the memory belongs to the clients' objects (tmpfs).
  int64_t shm_max_bytes = int64_t{64} << 30;
  // Trailing-metadata retry hint with a queue-full RESOURCE_EXHAUSTED, in ms. [0, 60000].
  int64_t retry_after_ms = 20;
  // Prometheus endpoint, host:port (GET /metrics; port 0 picks a free one). Empty: metrics
  // off (nothing recorded, no HTTP server). A port in use fails startup. Plain HTTP, no
  // authentication (counters only, no tensor data): loopback by default.
  std::string metrics_address = "127.0.0.1:8002";
  // KServe v2 HTTP/REST listener, host:port (server/rest_service.h; port 0 picks a free one).
  // Same authentication, limits and TLS certificate as gRPC. Empty: no REST.
  std::string http_address = "127.0.0.1:8000";
  // REST worker threads: REST requests served at once. Range [1, 1024].
  int http_threads = 16;
  // Largest JSON part of a REST infer request, bytes. Range [4 KiB, 2^31 - 1]; a smaller
  // max_message_bytes is the limit then.
  int64_t http_max_json_bytes = int64_t{16} << 20;
  EngineOptions engine;
  // Runs once when the first drain begins (SIGTERM or Control.Drain), after admission stopped;
  // main.cc reports it to systemd. May be empty. Runs on the draining thread; must not block.
  std::function<void()> on_drain_start;

  // INVALID_ARGUMENT naming the flag and value of the first option out of range.
  absl::Status Validate() const;
};

}  // namespace sparkle
