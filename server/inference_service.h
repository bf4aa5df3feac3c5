// InferenceService: the KServe v2 `inference.GRPCInferenceService` over the engine. A thin
// adapter: ModelInfer and ModelStreamInfer take the request's raw bytes (gRPC's ByteBuffer, no
// generated-message copy) to ModelInferHandler, which parses, submits, and builds the reply from
// pooled buffers; the RPC finishes from the job's done callback on an engine thread. The client
// going away cancels the job wherever it is.
#pragma once

#include <atomic>
#include <cstdint>

#include "engine/engine.h"
#include "inference/grpc_predict_v2.grpc.pb.h"
#include "server/call_auth.h"
#include "server/inference_stats.h"
#include "server/model_infer_handler.h"
#include "server/request_parser.h"
#include "server/server_metrics.h"
#include "server/tensor_buffer_pool.h"

namespace sparkle {

class SharedMemoryRegistry;

// Every RPC with the callback API; ModelInfer and ModelStreamInfer raw (ByteBuffer in and out).
// (CallbackService cannot be the base: it already binds the two to generated messages.)
// An RPC of the proto missing from this chain stays a synchronous method of Rpcs::Service that
// answers UNIMPLEMENTED with an empty message: every RPC must be listed here.
namespace internal {
using Rpcs = inference::GRPCInferenceService;
using RepositoryAndLogRpcs = Rpcs::WithCallbackMethod_RepositoryIndex<
    Rpcs::WithCallbackMethod_RepositoryModelLoad<Rpcs::WithCallbackMethod_RepositoryModelUnload<
        Rpcs::WithCallbackMethod_TraceSetting<Rpcs::WithCallbackMethod_LogSettings<
            Rpcs::Service>>>>>;
using InferenceServiceBase = Rpcs::WithCallbackMethod_ServerLive<
    Rpcs::WithCallbackMethod_ServerReady<Rpcs::WithCallbackMethod_ModelReady<
        Rpcs::WithCallbackMethod_ServerMetadata<Rpcs::WithCallbackMethod_ModelMetadata<
            Rpcs::WithRawCallbackMethod_ModelInfer<Rpcs::WithCallbackMethod_ModelConfig<
                Rpcs::WithCallbackMethod_ModelStatistics<Rpcs::WithRawCallbackMethod_ModelStreamInfer<
                    Rpcs::WithCallbackMethod_SystemSharedMemoryStatus<
                        Rpcs::WithCallbackMethod_SystemSharedMemoryRegister<
                            Rpcs::WithCallbackMethod_SystemSharedMemoryUnregister<
                                Rpcs::WithCallbackMethod_CudaSharedMemoryStatus<
                                    Rpcs::WithCallbackMethod_CudaSharedMemoryRegister<
                                        Rpcs::WithCallbackMethod_CudaSharedMemoryUnregister<
                                            RepositoryAndLogRpcs>>>>>>>>>>>>>>>;
}  // namespace internal

class InferenceService final : public internal::InferenceServiceBase {
 public:
  struct Options {
    ParseLimits limits;
    // Trailing-metadata hint sent with RESOURCE_EXHAUSTED for a full queue, in ms. [0, 60000].
    int64_t retry_after_ms = 20;
    // Access check run first by every RPC except ServerLive and ServerReady (not owned; outlives
    // the service). Null: every caller admitted, identified by its peer address.
    const CallAuth* auth = nullptr;
    // Registered system shared-memory regions (not owned; outlives the service). Null: shared
    // memory off (--shared_memory=off).
    SharedMemoryRegistry* shared_memory = nullptr;
    // Register accepted from peers on other hosts too (--shared_memory=any).
    bool shared_memory_allow_remote = false;
    // Pooled buffers for tensor copies and response outputs (not owned; outlives the service and
    // every response gRPC still holds, i.e. the gRPC server).
    TensorBufferPool* pool = nullptr;
    // ModelStreamInfer: requests of one stream read but not yet answered. [1, 4096].
    int max_inflight_per_stream = 64;
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
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* ModelStreamInfer(
      grpc::CallbackServerContext* context) override;
  // Triton extensions: the model's configuration and its cumulative statistics.
  grpc::ServerUnaryReactor* ModelConfig(grpc::CallbackServerContext* context,
                                        const inference::ModelConfigRequest* request,
                                        inference::ModelConfigResponse* response) override;
  grpc::ServerUnaryReactor* ModelStatistics(grpc::CallbackServerContext* context,
                                            const inference::ModelStatisticsRequest* request,
                                            inference::ModelStatisticsResponse* response) override;
  // Triton's system shared-memory extension (server/shared_memory_rpcs.h) and the CUDA one
  // (UNIMPLEMENTED with a message).
  grpc::ServerUnaryReactor* SystemSharedMemoryStatus(
      grpc::CallbackServerContext* context,
      const inference::SystemSharedMemoryStatusRequest* request,
      inference::SystemSharedMemoryStatusResponse* response) override;
  grpc::ServerUnaryReactor* SystemSharedMemoryRegister(
      grpc::CallbackServerContext* context,
      const inference::SystemSharedMemoryRegisterRequest* request,
      inference::SystemSharedMemoryRegisterResponse* response) override;
  grpc::ServerUnaryReactor* SystemSharedMemoryUnregister(
      grpc::CallbackServerContext* context,
      const inference::SystemSharedMemoryUnregisterRequest* request,
      inference::SystemSharedMemoryUnregisterResponse* response) override;
  grpc::ServerUnaryReactor* CudaSharedMemoryStatus(
      grpc::CallbackServerContext* context, const inference::CudaSharedMemoryStatusRequest* request,
      inference::CudaSharedMemoryStatusResponse* response) override;
  grpc::ServerUnaryReactor* CudaSharedMemoryRegister(
      grpc::CallbackServerContext* context,
      const inference::CudaSharedMemoryRegisterRequest* request,
      inference::CudaSharedMemoryRegisterResponse* response) override;
  grpc::ServerUnaryReactor* CudaSharedMemoryUnregister(
      grpc::CallbackServerContext* context,
      const inference::CudaSharedMemoryUnregisterRequest* request,
      inference::CudaSharedMemoryUnregisterResponse* response) override;

  // Triton's model-repository extension (server/model_repository_rpcs.h): the index needs the
  // infer role, Load and Unload the admin role.
  grpc::ServerUnaryReactor* RepositoryIndex(grpc::CallbackServerContext* context,
                                            const inference::RepositoryIndexRequest* request,
                                            inference::RepositoryIndexResponse* response) override;
  grpc::ServerUnaryReactor* RepositoryModelLoad(
      grpc::CallbackServerContext* context, const inference::RepositoryModelLoadRequest* request,
      inference::RepositoryModelLoadResponse* response) override;
  grpc::ServerUnaryReactor* RepositoryModelUnload(
      grpc::CallbackServerContext* context,
      const inference::RepositoryModelUnloadRequest* request,
      inference::RepositoryModelUnloadResponse* response) override;
  // Triton's trace extension: UNIMPLEMENTED with a message (no request tracing).
  grpc::ServerUnaryReactor* TraceSetting(grpc::CallbackServerContext* context,
                                         const inference::TraceSettingRequest* request,
                                         inference::TraceSettingResponse* response) override;
  // Triton's log-settings extension (server/log_settings.h): an empty request reads (infer
  // role), a request with settings changes them (admin role).
  grpc::ServerUnaryReactor* LogSettings(grpc::CallbackServerContext* context,
                                        const inference::LogSettingsRequest* request,
                                        inference::LogSettingsResponse* response) override;

  // ServerReady and ModelReady answer false from now on, while requests are still served
  // (--drain_delay: load balancers move away before anything is refused).
  void StopAdvertisingReady() { advertise_ready_.store(false, std::memory_order_relaxed); }
  // ServerReady's answer: advertising, and the engine not draining (REST's /v2/health/ready).
  bool ready() const { return Ready(); }

  // ModelInfer calls whose reply gRPC has not finished sending (their reactor's OnDone has not
  // run), and stream requests whose reply has not been written. A draining server waits for 0
  // before the process exits.
  int64_t unsent_replies() const { return unsent_replies_.load(std::memory_order_relaxed); }

 private:
  bool Ready() const {
    return advertise_ready_.load(std::memory_order_relaxed) && !engine_->draining();
  }
  Engine* const engine_;
  const Options options_;
  InferenceStats* const stats_;
  ModelInferHandler handler_;
  std::atomic<int64_t> unsent_replies_{0};
  std::atomic<bool> advertise_ready_{true};
};

}  // namespace sparkle
