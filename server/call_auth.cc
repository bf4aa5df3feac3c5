#include "server/call_auth.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "grpcpp/server_context.h"
#include "spdlog/spdlog.h"

namespace sparkle {

absl::StatusOr<CallIdentity> CallAuth::Check(grpc::ServerContextBase* context,
                                             absl::string_view method, Access access) const {
  absl::string_view header;
  if (options_.authenticator != nullptr) {
    const auto& metadata = context->client_metadata();
    if (auto it = metadata.find("authorization"); it != metadata.end()) {
      header = absl::string_view(it->second.data(), it->second.size());
    }
  }
  return Check(header, context->peer(), method, access);
}

absl::StatusOr<CallIdentity> CallAuth::Check(absl::string_view authorization,
                                             absl::string_view peer, absl::string_view method,
                                             Access access) const {
  CallIdentity identity;
  if (options_.authenticator != nullptr) {
    absl::StatusOr<Caller> caller = options_.authenticator->Authenticate(authorization);
    if (!caller.ok()) {
      spdlog::debug("refused {} from {} (no valid bearer token): {}", std::string(method),
                    std::string(peer), caller.status().ToString());
      return caller.status();
    }
    identity.name = std::move(caller->name);
    identity.role = caller->role;
    identity.authenticated = true;
  } else {
    identity.name = std::string(peer);
  }
  if (access == Access::kAdmin) {
    absl::Status refused;
    if (!options_.admin_listen_address.empty() && !options_.is_admin_listener) {
      refused = absl::PermissionDeniedError(
          absl::StrCat(method, " is an admin call: it is only accepted on the --admin_listen ",
                       "listener (", options_.admin_listen_address, ")"));
    } else if (identity.role != Role::kAdmin) {
      refused = absl::PermissionDeniedError(absl::StrCat(
          method, " is an admin call: it needs a token with role admin; '", identity.name,
          "' has role ", RoleName(identity.role)));
    }
    if (!refused.ok()) {
      spdlog::debug("refused {} from '{}' ({}): {}", std::string(method), identity.name,
                    std::string(peer),
                    refused.ToString());
      return refused;
    }
  }
  return identity;
}

}  // namespace sparkle
