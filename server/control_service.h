// ControlService: sparkle.v1.Control, the daemon's own status API for sparklectl and operators.
#pragma once

#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "server/call_auth.h"
#include "server/certificate_watcher.h"
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
  // request gives 0. Until then Drain answers UNIMPLEMENTED. Call before serving.
  void EnableDrain(Drainer* drainer, absl::Duration default_timeout);

  // Access control and GetStatus.security. Every RPC first passes `auth` (server/call_auth.h):
  // GetStatus and ListWeights need any valid caller, Drain, RegisterWeights and
  // UnregisterWeights are admin calls (refused on the public listener when an admin listener
  // exists). Without SetSecurity nothing is checked. Call before serving.
  struct Security {
    const CallAuth* auth = nullptr;                   // not owned; outlives the service
    const CertificateWatcher* certificate = nullptr;  // not owned; null when TLS is off
    sparkle::v1::SecurityStatus status;  // tls, mtls, auth_tokens, admin_listener, warnings
  };
  void SetSecurity(Security security) { security_ = std::move(security); }
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

  // The weights registry (server/weights_service.h), after the access check.
  grpc::ServerReadReactor<sparkle::v1::RegisterWeightsRequest>* RegisterWeights(
      grpc::CallbackServerContext* context,
      sparkle::v1::RegisterWeightsResponse* response) override;
  grpc::ServerUnaryReactor* ListWeights(grpc::CallbackServerContext* context,
                                        const sparkle::v1::ListWeightsRequest* request,
                                        sparkle::v1::ListWeightsResponse* response) override;
  grpc::ServerUnaryReactor* UnregisterWeights(
      grpc::CallbackServerContext* context, const sparkle::v1::UnregisterWeightsRequest* request,
      sparkle::v1::UnregisterWeightsResponse* response) override;

 private:
  // The caller, or the refusal (server/call_auth.h). Admits everyone without SetSecurity.
  absl::StatusOr<CallIdentity> Admit(grpc::CallbackServerContext* context,
                                     absl::string_view method, Access access) const;

  Engine* const engine_;
  const std::string listen_address_;
  std::string metrics_address_;
  const absl::Time start_ = absl::Now();
  WeightsService weights_;

  Security security_;

  Drainer* drainer_ = nullptr;
  absl::Duration default_drain_timeout_;
  absl::Mutex drain_threads_mu_;
  std::vector<std::thread> drain_threads_ ABSL_GUARDED_BY(drain_threads_mu_);
};

}  // namespace sparkle
