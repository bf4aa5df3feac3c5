// CallAuth: the one access check every handler (gRPC or REST) runs first. It authenticates the call
// (bearer token, server/authenticator.h) when tokens are on, enforces the role the RPC needs, and
// refuses admin calls on the public listener when a separate --admin_listen listener exists.
// Refusals are logged at debug level with the caller's identity (never the token).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/support/server_callback.h"
#include "server/authenticator.h"

namespace grpc {
class ServerContextBase;
}

namespace sparkle {

// What an RPC needs.
enum class Access {
  kInfer,  // any valid token (inference, metadata, status, ListWeights)
  kAdmin,  // role admin, and the admin listener when there is one (Drain, weights changes)
};

// The identity of an admitted call.
struct CallIdentity {
  // The token's name when tokens are on; otherwise the peer address (context->peer()).
  std::string name;
  // Whether `name` and `role` come from a token (false: tokens are off).
  bool authenticated = false;
  Role role = Role::kAdmin;  // kAdmin when tokens are off (everything allowed)
};

class CallAuth {
 public:
  struct Options {
    // Null: tokens off, every caller is admitted (subject to the listener check).
    const Authenticator* authenticator = nullptr;
    // --admin_listen as given; empty when there is no admin listener.
    std::string admin_listen_address;
    // This CallAuth guards the admin listener (admin calls allowed here).
    bool is_admin_listener = false;
  };

  explicit CallAuth(Options options) : options_(std::move(options)) {}

  // `method` names the RPC for messages and logs ("Control.Drain"). UNAUTHENTICATED (no or
  // unknown token), PERMISSION_DENIED (role infer on an admin call, or an admin call on the
  // public listener while --admin_listen is set), else the caller.
  absl::StatusOr<CallIdentity> Check(grpc::ServerContextBase* context, absl::string_view method,
                                     Access access) const;
  // The same for a call another transport carried (REST): `authorization` is the header's
  // value ("" when absent), `peer` the caller's address in gRPC's form ("ipv4:10.0.0.1:5555").
  absl::StatusOr<CallIdentity> Check(absl::string_view authorization, absl::string_view peer,
                                     absl::string_view method, Access access) const;

  bool tokens_on() const { return options_.authenticator != nullptr; }

 private:
  const Options options_;
};

}  // namespace sparkle
