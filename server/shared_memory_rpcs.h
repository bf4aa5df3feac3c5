// The bodies of Triton's shared-memory RPCs on inference.GRPCInferenceService, as functions the
// service calls after its access check (server/inference_service.cc). System shared memory goes
// to the SharedMemoryRegistry, scoped to the caller (SchedulingClient); CUDA shared memory is
// not supported yet and says so. docs/protocol.md "System shared memory".
#pragma once

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "inference/grpc_predict_v2.pb.h"
#include "server/call_auth.h"
#include "server/shared_memory_registry.h"

namespace sparkle {

// Whether gRPC's peer string names a client on this host: "ipv4:127.x.x.x:port",
// "ipv6:[::1]:port" (also %5B::1%5D, and ::ffff:127.x.x.x), or "unix:...". gRPC 1.51's
// in-process transport reports "unknown", which is not local: such callers need
// --shared_memory=any.
bool IsLocalPeer(absl::string_view peer);

// `registry` null: shared memory is off (FAILED_PRECONDITION naming --shared_memory).
// `peer` is context->peer(); unless `allow_remote`, a peer not on this host gets
// PERMISSION_DENIED (the daemon maps the caller's object: the caller must be on its host).
absl::Status SystemSharedMemoryRegister(
    SharedMemoryRegistry* registry, const CallIdentity& caller, absl::string_view peer,
    bool allow_remote, const inference::SystemSharedMemoryRegisterRequest& request);
// Empty name: all of the caller's regions. An unknown name is OK.
absl::Status SystemSharedMemoryUnregister(
    SharedMemoryRegistry* registry, const CallIdentity& caller,
    const inference::SystemSharedMemoryUnregisterRequest& request);
// Fills response->regions, keyed by name (empty request name: all of the caller's).
absl::Status SystemSharedMemoryStatus(SharedMemoryRegistry* registry, const CallIdentity& caller,
                                      const inference::SystemSharedMemoryStatusRequest& request,
                                      inference::SystemSharedMemoryStatusResponse* response);

// UNIMPLEMENTED for every CudaSharedMemory* RPC; `method` names it.
absl::Status CudaSharedMemoryUnsupported(absl::string_view method);

}  // namespace sparkle
