// ControlService: sparkle.v1.Control, the daemon's own status API for sparklectl and operators.
#pragma once

#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "server/weights_service.h"
#include "sparkle/v1/control.grpc.pb.h"

namespace sparkle {

class Drainer;

class ControlService final : public sparkle::v1::Control::CallbackService {
 public:
  // `engine` is not owned and must outlive the service.
  ControlService(Engine* engine, std::string listen_address);
  ~ControlService();  // joins the threads of finished Drain calls

  // Makes Drain use `drainer` (not owned; outlives the service), with `default_timeout` when a
  // request gives 0. With `unix_socket_only`, Drain from any peer that is not on a UNIX socket
  // (--admin_listen) gets PERMISSION_DENIED. Until then Drain answers UNIMPLEMENTED. Call
  // before serving.
  void EnableDrain(Drainer* drainer, absl::Duration default_timeout, bool unix_socket_only);
  // GetStatus.metrics_address: where /metrics is served (empty: metrics off). Call before
  // serving.
  void SetMetricsAddress(std::string address) { metrics_address_ = std::move(address); }

  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* context,
                                      const sparkle::v1::GetStatusRequest* request,
                                      sparkle::v1::GetStatusResponse* response) override;

  // Control.Drain: the first half of SIGTERM, without exiting. Waits
  // on its own thread so that no gRPC callback thread blocks for the drain.
  grpc::ServerUnaryReactor* Drain(grpc::CallbackServerContext* context,
                                  const sparkle::v1::DrainRequest* request,
                                  sparkle::v1::DrainResponse* response) override;

  // The weights registry (server/weights_service.h).
  grpc::ServerReadReactor<sparkle::v1::RegisterWeightsRequest>* RegisterWeights(
      grpc::CallbackServerContext* context,
      sparkle::v1::RegisterWeightsResponse* response) override {
    return weights_.RegisterWeights(context, response);
  }
  grpc::ServerUnaryReactor* ListWeights(grpc::CallbackServerContext* context,
                                        const sparkle::v1::ListWeightsRequest* request,
                                        sparkle::v1::ListWeightsResponse* response) override {
    return weights_.ListWeights(context, request, response);
  }
  grpc::ServerUnaryReactor* UnregisterWeights(
      grpc::CallbackServerContext* context, const sparkle::v1::UnregisterWeightsRequest* request,
      sparkle::v1::UnregisterWeightsResponse* response) override {
    return weights_.UnregisterWeights(context, request, response);
  }

 private:
  Engine* const engine_;
  const std::string listen_address_;
  std::string metrics_address_;
  const absl::Time start_ = absl::Now();
  WeightsService weights_;

  Drainer* drainer_ = nullptr;
  absl::Duration default_drain_timeout_;
  bool drain_unix_socket_only_ = false;
  absl::Mutex drain_threads_mu_;
  std::vector<std::thread> drain_threads_ ABSL_GUARDED_BY(drain_threads_mu_);
};

}  // namespace sparkle
