// The one conversion from the engine's absl::Status to the wire's grpc::Status.
#pragma once

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace sparkle {

// Same code (absl and gRPC share the numbering); the message is truncated to 1 KiB so that an
// error about a huge request never makes a huge reply.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace sparkle
