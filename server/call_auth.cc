#include "server/call_auth.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "grpcpp/server_context.h"
#include "spdlog/spdlog.h"

namespace sparkle {

absl::StatusOr<CallIdentity> CallAuth::Check(grpc::ServerContextBase* context,
                                             absl::string_view method, Access access) const {
  CallIdentity identity;
  if (options_.authenticator != nullptr) {
    absl::string_view header;
    const auto& metadata = context->client_metadata();
    if (auto it = metadata.find("authorization"); it != metadata.end()) {
      header = absl::string_view(it->second.data(), it->second.size());
    }
    absl::StatusOr<Caller> caller = options_.authenticator->Authenticate(header);
    if (!caller.ok()) {
      spdlog::debug("refused {} from {} (no valid bearer token): {}", std::string(method),
                    context->peer(),
                    caller.status().ToString());
      return caller.status();
    }
    identity.name = std::move(caller->name);
    identity.role = caller->role;
    identity.authenticated = true;
  } else {
    identity.name = context->peer();
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
                    context->peer(),
                    refused.ToString());
      return refused;
    }
  }
  return identity;
}

}  // namespace sparkle
