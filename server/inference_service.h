// InferenceService: the KServe v2 `inference.GRPCInferenceService` over the engine. A thin
// adapter: parse and validate (request_parser.h), submit, and finish the RPC from the job's
// done callback on an engine thread. The client going away cancels the job wherever it is.
#pragma once

#include <atomic>
#include <cstdint>

#include "engine/engine.h"
#include "inference/grpc_predict_v2.grpc.pb.h"
#include "server/call_auth.h"
#include "server/inference_stats.h"
#include "server/request_parser.h"
#include "server/server_metrics.h"

namespace sparkle {

class InferenceService final : public inference::GRPCInferenceService::CallbackService {
 public:
  struct Options {
    ParseLimits limits;
    // Trailing-metadata hint sent with RESOURCE_EXHAUSTED for a full queue, in ms. [0, 60000].
    int64_t retry_after_ms = 20;
    // Access check run first by every RPC except ServerLive and ServerReady (not owned; outlives
    // the service). Null: every caller admitted, identified by its peer address.
    const CallAuth* auth = nullptr;
  };

  // `engine`, `stats` and `metrics` are not owned and must outlive every request (the engine's
  // done callbacks record into them). `metrics` may be null (metrics off); `stats` may not.
  InferenceService(Engine* engine, const Options& options, InferenceStats* stats,
                   ServerMetrics* metrics);

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* context,
                                       const inference::ServerLiveRequest* request,
                                       inference::ServerLiveResponse* response) override;
  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* context,
                                        const inference::ServerReadyRequest* request,
                                        inference::ServerReadyResponse* response) override;
  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* context,
                                       const inference::ModelReadyRequest* request,
                                       inference::ModelReadyResponse* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* context,
                                           const inference::ServerMetadataRequest* request,
                                           inference::ServerMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* context,
                                          const inference::ModelMetadataRequest* request,
                                          inference::ModelMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* context,
                                       const inference::ModelInferRequest* request,
                                       inference::ModelInferResponse* response) override;
  // Triton extensions: the model's configuration and its cumulative statistics.
  grpc::ServerUnaryReactor* ModelConfig(grpc::CallbackServerContext* context,
                                        const inference::ModelConfigRequest* request,
                                        inference::ModelConfigResponse* response) override;
  grpc::ServerUnaryReactor* ModelStatistics(grpc::CallbackServerContext* context,
                                            const inference::ModelStatisticsRequest* request,
                                            inference::ModelStatisticsResponse* response) override;

  // ServerReady and ModelReady answer false from now on, while requests are still served
  // (--drain_delay: load balancers move away before anything is refused).
  void StopAdvertisingReady() { advertise_ready_.store(false, std::memory_order_relaxed); }

  // Accepted ModelInfer calls whose reply gRPC has not finished sending (their reactor's OnDone
  // has not run). A draining server waits for 0 before the process exits.
  int64_t unsent_replies() const { return unsent_replies_.load(std::memory_order_relaxed); }

 private:
  bool Ready() const {
    return advertise_ready_.load(std::memory_order_relaxed) && !engine_->draining();
  }
  // Counts a request refused before reaching the engine's queue.
  void RecordRejection(const absl::Status& status, bool queue_full);
  // RecordRejection, plus the retry-pushback trailers when `status` is a retryable queue-full
  // refusal. Returns `status`.
  const absl::Status& Refuse(grpc::CallbackServerContext* context, const absl::Status& status);

  Engine* const engine_;
  const Options options_;
  InferenceStats* const stats_;
  ServerMetrics* const metrics_;
  std::atomic<int64_t> unsent_replies_{0};
  std::atomic<bool> advertise_ready_{true};
};

}  // namespace sparkle
