// ConnectionSecurity: how sparklectl secures and authenticates its connections to sparkled:
// TLS (server authentication against a CA), mTLS (a client certificate), and a bearer token
// sent as `authorization: Bearer <token>` metadata on every call. Also the translation of
// gRPC's raw handshake errors into sentences that say what to change.
//
// The token is per-call metadata added to each grpc::ClientContext (SparkleClient::NewContext),
// not call credentials: gRPC refuses call credentials on a plaintext channel, and loopback dev
// setups use tokens without TLS. The token is never printed nor put into an error message.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "grpcpp/support/status.h"

namespace sparkle::client {

// The environment variable that holds the token when no token file is given.
inline constexpr char kTokenEnvironmentVariable[] = "SPARKLE_TOKEN";

struct ConnectionSecurity {
  // PEM file of the CA certificate(s) the server's certificate must chain to; empty: the
  // system's roots. Setting any tls_* field turns TLS on.
  std::string tls_ca_file;
  // PEM files of the client certificate (chain) and its private key, for a server that requires
  // client certificates (mTLS). Both or neither.
  std::string tls_cert_file;
  std::string tls_key_file;
  // The name the server's certificate must carry when it differs from the target's host (an IP
  // target, a certificate for another name): GRPC_SSL_TARGET_NAME_OVERRIDE_ARG. Empty: the
  // target's host.
  std::string tls_server_name;
  // Sent as `authorization: Bearer <token>` on every call; empty: none. Visible ASCII only
  // (LoadBearerToken checks), at most kMaxTokenBytes.
  std::string bearer_token;

  bool UsesTls() const {
    return !tls_ca_file.empty() || !tls_cert_file.empty() || !tls_key_file.empty() ||
           !tls_server_name.empty();
  }
};

// Largest token accepted, bytes.
inline constexpr size_t kMaxTokenBytes = 4096;

// The token: the contents of `token_file` with trailing CR/LF removed when the path is not
// empty, else `environment_value` (the value of $SPARKLE_TOKEN, nullptr when unset; an empty
// value counts as unset), else "" (no token). INVALID_ARGUMENT for an unreadable or empty file
// or a token with characters outside visible ASCII (spaces, control characters) or over
// kMaxTokenBytes; the message names the source, never the token.
absl::StatusOr<std::string> LoadBearerToken(absl::string_view token_file,
                                            const char* environment_value);

// INVALID_ARGUMENT naming the flag: a cert without its key (or the reverse), or a token that
// LoadBearerToken would refuse.
absl::Status ValidateConnectionSecurity(const ConnectionSecurity& security);

// The channel credentials: grpc::InsecureChannelCredentials() without TLS, else
// grpc::SslCredentials with the files' PEM contents; sets the target name override in *args.
// INVALID_ARGUMENT naming the flag when a file cannot be read or holds no PEM block.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const ConnectionSecurity& security, grpc::ChannelArguments* args);

// Adds the bearer token (if any) to `context`'s metadata.
void AddCallCredentials(const ConnectionSecurity& security, grpc::ClientContext* context);

// When `status` (a failed call or connection attempt) is a TLS handshake failure or a TLS /
// plaintext mismatch, a sentence saying what failed and which flag to change, e.g. "server
// certificate not trusted by --tls_ca_file"; nullopt for every other failure.
std::optional<std::string> DescribeHandshakeFailure(const ConnectionSecurity& security,
                                                    const grpc::Status& status);

// The hint appended to an UNAUTHENTICATED or PERMISSION_DENIED answer ("" for other codes).
absl::string_view AuthHint(absl::StatusCode code, bool has_token);

}  // namespace sparkle::client
