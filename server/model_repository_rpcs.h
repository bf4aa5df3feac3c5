// The bodies of Triton's model-repository RPCs on inference.GRPCInferenceService, as functions
// the service calls after its access check (server/inference_service.cc). sparkled has no model
// repository: it serves one built-in model, conv2d version 1, from start to exit. So the index
// lists that model, loading it is a no-op (it is always loaded), unloading it is refused, and
// any other name is NOT_FOUND. The repository name is not checked (there is one, built in).
// docs/protocol.md "Model repository".
#pragma once

#include "absl/status/status.h"
#include "inference/grpc_predict_v2.pb.h"

namespace sparkle {

// One entry, conv2d version "1": state "READY" when `model_ready` (the daemon is not draining),
// else "UNAVAILABLE" with reason "draining". With request.ready(), only a ready model is listed.
void ListModelRepository(bool model_ready, const inference::RepositoryIndexRequest& request,
                         inference::RepositoryIndexResponse* response);

// conv2d without parameters: OK, nothing to do. conv2d with parameters (Triton's `config`
// override, `file:` contents): INVALID_ARGUMENT naming the key (a built-in model cannot be
// reconfigured). Any other name: NOT_FOUND.
absl::Status LoadModel(const inference::RepositoryModelLoadRequest& request);

// conv2d: FAILED_PRECONDITION (the built-in model cannot be unloaded; drain the daemon to take
// it out of service). Any other name: NOT_FOUND.
absl::Status UnloadModel(const inference::RepositoryModelUnloadRequest& request);

}  // namespace sparkle
