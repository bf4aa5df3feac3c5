// RestService: the KServe v2 HTTP/REST endpoint (with Triton's binary tensor data extension,
// its model configuration and statistics, and its system shared-memory endpoints), a second thin
// adapter beside the gRPC one: the same CallAuth, request parser (through
// rest_infer_request.h), ModelInferHandler, limits, statistics and TLS certificate.
//
// HTTP is cpp-httplib (Debian's libcpp-httplib, built with OpenSSL): a fixed pool of `threads`
// workers, each serving one connection at a time; a worker waits while its request computes, so
// `threads` bounds the REST requests in flight and the request bodies held (each at most
// `limits.max_request_bytes`, the JSON part at most `max_json_bytes`). Binary tensors are read
// from the socket straight into pooled, aligned buffers the engine computes from; a binary
// output is written from the engine's output buffer without a copy.
//
// Routes (docs/protocol.md "KServe v2 REST"): GET /v2/health/live, /v2/health/ready, /v2,
// /v2/models/conv2d[/versions/1][/ready|/config|/stats], /v2/models/stats; POST
// /v2/models/conv2d[/versions/1]/infer; GET /v2/systemsharedmemory[/region/NAME]/status, POST
// /v2/systemsharedmemory/region/NAME/register, POST /v2/systemsharedmemory[/region/NAME]/unregister.
// Errors are {"error": "<message>"} with the HTTP status of the gRPC code (rest_reply.h).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "server/call_auth.h"
#include "server/inference_stats.h"
#include "server/request_parser.h"
#include "server/server_metrics.h"
#include "server/tensor_buffer_pool.h"

namespace sparkle {

class CertificateWatcher;
class SharedMemoryRegistry;

class RestService {
 public:
  struct Options {
    // host:port to listen on (IPv4 or [IPv6]; port 0 picks a free one). Required.
    std::string address = "127.0.0.1:8000";
    // Worker threads: REST requests served at once (more connections wait for a worker).
    // Range [1, 1024].
    int threads = 16;
    // The request limits gRPC uses; a body above max_request_bytes gets 413 without being read.
    ParseLimits limits;
    // Largest JSON part of an infer request (all of it without the binary extension), bytes.
    // Range [4 KiB, 2^31 - 1]; limits.max_request_bytes applies too (the smaller one counts). JSON data costs up to 12 bytes of memory per
    // value while it is parsed: large tensors belong in binary data.
    int64_t max_json_bytes = int64_t{16} << 20;
    // Seconds in Retry-After with a 429 (queue full): retry_after_ms rounded up, at least 1.
    int64_t retry_after_ms = 20;
    // Access check (not owned). Null: every caller admitted, identified by its address.
    const CallAuth* auth = nullptr;
    // Registered shared-memory regions (not owned); null: shared memory off.
    SharedMemoryRegistry* shared_memory = nullptr;
    bool shared_memory_allow_remote = false;
    // Pooled buffers for binary tensors and outputs (not owned). Required.
    TensorBufferPool* pool = nullptr;
    // TLS (not owned): the certificate and key the watcher publishes are loaded at every
    // handshake, so rotation reaches REST as it reaches gRPC; with require_client_certificate
    // the watcher's CA verifies client certificates (mTLS). Null: plain HTTP.
    const CertificateWatcher* certificate = nullptr;
    bool require_client_certificate = false;
    // Whether the server is ready (ServerReady's answer). Required.
    std::function<bool()> ready;
  };

  // Validates the options and starts listening. `engine`, `stats` and `metrics` (may be null)
  // are not owned and must outlive the service.
  static absl::StatusOr<std::unique_ptr<RestService>> Create(Engine* engine,
                                                             InferenceStats* stats,
                                                             ServerMetrics* metrics,
                                                             const Options& options);
  ~RestService();  // Stop()

  // Closes the listening socket and returns at once: requests being served finish, and each
  // worker ends after its connection's current request (an idle keep-alive connection holds
  // its worker for up to 5 s). For a process about to exit. Idempotent.
  void StopAccepting();
  // StopAccepting, then waits for every worker to end (at most ~5 s past the last reply).
  // Idempotent.
  void Stop();

  // The bound address, with the real port when the option asked for port 0.
  const std::string& address() const;

 private:
  struct Impl;
  explicit RestService(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sparkle
