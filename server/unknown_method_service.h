// UnknownMethodService: gRPC's generic callback service, registered on every sparkled listener,
// that answers any method no registered service implements (a Triton RPC sparkled does not
// have, a mistyped method name) with UNIMPLEMENTED and a message naming the method, instead of
// gRPC's default UNIMPLEMENTED with an empty message. gRPC routes a call here only when no
// registered service (inference, Control, health) has its method, so those are unaffected.
// No access check: the answer reveals nothing the published protos do not.
#pragma once

#include "grpcpp/generic/async_generic_service.h"

namespace sparkle {

class UnknownMethodService final : public grpc::CallbackGenericService {
 public:
  // Finishes at once with UNIMPLEMENTED "sparkled does not implement /pkg.Service/Method"
  // (the method cut at 256 bytes), without reading the request.
  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* context)
      override;
};

}  // namespace sparkle
