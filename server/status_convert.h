// The one conversion from the engine's absl::Status to the wire's grpc::Status.
#pragma once

#include "absl/status/status.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/server_callback.h"
#include "grpcpp/support/status.h"

namespace sparkle {

// Same code (absl and gRPC share the numbering); the message is truncated to 1 KiB so that an
// error about a huge request never makes a huge reply.
grpc::Status ToGrpcStatus(const absl::Status& status);

// Finishes a unary call at once with `status` (converted as above): the reactor a handler that
// answers without waiting returns.
grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context,
                                    const absl::Status& status);

}  // namespace sparkle
