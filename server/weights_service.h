// WeightsService: the weights-registry RPCs of sparkle.v1.Control (RegisterWeights,
// ListWeights, UnregisterWeights) and the registry part of GetStatus, over the engine's
// WeightRegistry. ControlService delegates to it; a thin adapter like the rest of server/.
#pragma once

#include <thread>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "engine/registry/weight_registry.h"
#include "sparkle/v1/control.grpc.pb.h"

namespace sparkle {

class WeightsService {
 public:
  // `registry` is not owned and must outlive every RPC; the service reads its options
  // (upload_idle_timeout) here and starts the idle watchdog thread, joined by the destructor.
  explicit WeightsService(WeightRegistry* registry);
  ~WeightsService();
  WeightsService(const WeightsService&) = delete;
  WeightsService& operator=(const WeightsService&) = delete;

  // Client streaming: the first message carries the header, every message may carry data
  // bytes (any chunk size up to the message limit; the total is bounded by the registry's
  // budget, not by the message limit, and reserved in it as the bytes arrive). Registration
  // happens when the client half-closes; a cancelled or incomplete stream registers nothing.
  // A stream that delivers no message for the registry's upload_idle_timeout
  // (--weights_upload_idle_timeout) is finished with DEADLINE_EXCEEDED and its reservation
  // returned.
  grpc::ServerReadReactor<sparkle::v1::RegisterWeightsRequest>* RegisterWeights(
      grpc::CallbackServerContext* context, sparkle::v1::RegisterWeightsResponse* response);
  grpc::ServerUnaryReactor* ListWeights(grpc::CallbackServerContext* context,
                                        const sparkle::v1::ListWeightsRequest* request,
                                        sparkle::v1::ListWeightsResponse* response);
  // Deferred release (WeightRegistry::Unregister); NOT_FOUND for an unknown id.
  grpc::ServerUnaryReactor* UnregisterWeights(grpc::CallbackServerContext* context,
                                              const sparkle::v1::UnregisterWeightsRequest* request,
                                              sparkle::v1::UnregisterWeightsResponse* response);

  // GetStatus's registry block. Cheap.
  void FillStatus(sparkle::v1::WeightRegistryStatus* status) const;

 private:
  class RegisterReactor;
  void Track(RegisterReactor* reactor);
  void Untrack(RegisterReactor* reactor);
  void WatchIdleUploads();  // the watchdog thread's loop

  WeightRegistry* const registry_;
  const absl::Duration idle_timeout_;
  absl::Mutex mu_;  // taken before any reactor's own lock
  absl::flat_hash_set<RegisterReactor*> uploads_ ABSL_GUARDED_BY(mu_);  // until OnDone
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread watchdog_;
};

// The wire form of one registered tensor.
void ToWeightInfo(const RegisteredWeight& weight, sparkle::v1::WeightInfo* info);

}  // namespace sparkle
