// WeightsService: the weights-registry RPCs of sparkle.v1.Control (RegisterWeights,
// ListWeights, UnregisterWeights) and the registry part of GetStatus, over the engine's
// WeightRegistry. ControlService delegates to it; a thin adapter like the rest of server/.
#pragma once

#include "engine/registry/weight_registry.h"
#include "sparkle/v1/control.grpc.pb.h"

namespace sparkle {

class WeightsService {
 public:
  // `registry` is not owned and must outlive the service.
  explicit WeightsService(WeightRegistry* registry) : registry_(registry) {}

  // Client streaming: the first message carries the header, every message may carry data
  // bytes (any chunk size up to the message limit; the total is bounded by the registry's
  // budget, not by the message limit). Registration happens when the client half-closes; a
  // cancelled or incomplete stream registers nothing.
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
  WeightRegistry* const registry_;
};

// The wire form of one registered tensor.
void ToWeightInfo(const RegisteredWeight& weight, sparkle::v1::WeightInfo* info);

}  // namespace sparkle
