#include "client/connection_security.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/client_context.h"

namespace sparkle::client {
namespace {

absl::StatusOr<std::string> ReadFile(absl::string_view flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("--", flag, ": cannot read ", path));
  std::stringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return absl::InvalidArgumentError(absl::StrCat("--", flag, ": cannot read ", path));
  return contents.str();
}

absl::StatusOr<std::string> ReadPem(absl::string_view flag, const std::string& path) {
  absl::StatusOr<std::string> pem = ReadFile(flag, path);
  if (pem.ok() && !absl::StrContains(*pem, "-----BEGIN ")) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": ", path, " holds no PEM block (-----BEGIN ...)"));
  }
  return pem;
}

// Visible ASCII, as a metadata value and an RFC 6750 b64token allow.
absl::Status CheckToken(absl::string_view token, absl::string_view source) {
  if (token.empty()) return absl::InvalidArgumentError(absl::StrCat(source, " holds no token"));
  if (token.size() > kMaxTokenBytes) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": the token exceeds ",
                                                   kMaxTokenBytes, " bytes"));
  }
  for (const char c : token) {
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": the token may hold visible ASCII characters only (no spaces, no control "
                  "characters, no second line)"));
    }
  }
  return absl::OkStatus();
}

// gRPC 1.51 wraps the cause: "failed to connect to all addresses; last error: UNAVAILABLE:
// ipv4:127.0.0.1:8001: Socket closed". The part after the address.
absl::string_view Cause(absl::string_view message) {
  const size_t at = message.rfind(": ");
  return at == absl::string_view::npos ? message : message.substr(at + 2);
}

bool Contains(absl::string_view text, absl::string_view needle) {
  return absl::StrContains(absl::AsciiStrToLower(text), absl::AsciiStrToLower(needle));
}

}  // namespace

absl::StatusOr<std::string> LoadBearerToken(absl::string_view token_file,
                                            const char* environment_value) {
  if (!token_file.empty()) {
    const std::string path(token_file);
    absl::StatusOr<std::string> token = ReadFile("token_file", path);
    if (!token.ok()) return token.status();
    while (!token->empty() && (token->back() == '\n' || token->back() == '\r')) {
      token->pop_back();
    }
    if (absl::Status s = CheckToken(*token, absl::StrCat("--token_file ", path)); !s.ok()) {
      return s;
    }
    return token;
  }
  if (environment_value == nullptr || *environment_value == '\0') return std::string();
  std::string token = environment_value;
  if (absl::Status s = CheckToken(token, absl::StrCat("$", kTokenEnvironmentVariable));
      !s.ok()) {
    return s;
  }
  return token;
}

absl::Status ValidateConnectionSecurity(const ConnectionSecurity& security) {
  if (security.tls_cert_file.empty() != security.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert_file and --tls_key_file go together (the client certificate and its key)");
  }
  if (!security.bearer_token.empty()) {
    if (absl::Status s = CheckToken(security.bearer_token, "bearer token"); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const ConnectionSecurity& security, grpc::ChannelArguments* args) {
  if (absl::Status s = ValidateConnectionSecurity(security); !s.ok()) return s;
  if (!security.UsesTls()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  if (!security.tls_ca_file.empty()) {
    absl::StatusOr<std::string> pem = ReadPem("tls_ca_file", security.tls_ca_file);
    if (!pem.ok()) return pem.status();
    ssl.pem_root_certs = *std::move(pem);
  }
  if (!security.tls_cert_file.empty()) {
    absl::StatusOr<std::string> cert = ReadPem("tls_cert_file", security.tls_cert_file);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPem("tls_key_file", security.tls_key_file);
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = *std::move(cert);
    ssl.pem_private_key = *std::move(key);
  }
  if (!security.tls_server_name.empty()) {
    args->SetSslTargetNameOverride(security.tls_server_name);
  }
  return grpc::SslCredentials(ssl);
}

void AddCallCredentials(const ConnectionSecurity& security, grpc::ClientContext* context) {
  if (!security.bearer_token.empty()) {
    context->AddMetadata("authorization", absl::StrCat("Bearer ", security.bearer_token));
  }
}

std::optional<std::string> DescribeHandshakeFailure(const ConnectionSecurity& security,
                                                    const grpc::Status& status) {
  if (status.error_code() != grpc::StatusCode::UNAVAILABLE) return std::nullopt;
  const std::string& m = status.error_message();
  // What gRPC 1.51 (OpenSSL 3) reports, tried against a TLS server
  // (tests/client/connection_security_test.cc pins each case):
  //   plaintext client, TLS server          "... Socket closed"
  //   TLS client, plaintext server          "... wrong version number" (SSL_ERROR_SSL)
  //   CA that did not sign the server cert  "... certificate verify failed"
  //   name not in the server's certificate  "... Peer name X is not in peer certificate"
  //   mTLS server, no or untrusted client
  //   certificate (TLS 1.3: the server's alert ends the connection after the client's
  //   handshake)                            "... Socket closed"
  const bool closed = Contains(m, "Socket closed") || Contains(m, "Connection reset by peer") ||
                      Contains(m, "Broken pipe");
  if (!security.UsesTls()) {
    // The server drops the HTTP/2 preface it cannot parse as a TLS record.
    if (closed) {
      return absl::StrCat("server speaks TLS: pass --tls_ca_file (the connection was closed: ",
                          Cause(m), ")");
    }
    return std::nullopt;
  }
  if (Contains(m, "WRONG_VERSION_NUMBER") || Contains(m, "wrong version number") ||
      Contains(m, "packet length too long") || Contains(m, "record layer failure")) {
    return std::string("server is not speaking TLS (drop the --tls_* flags?)");
  }
  if (Contains(m, "certificate verify failed") || Contains(m, "CERTIFICATE_VERIFY_FAILED")) {
    return security.tls_ca_file.empty()
               ? std::string("server certificate not trusted by the system's roots: pass "
                             "--tls_ca_file with the CA that signed it")
               : std::string("server certificate not trusted by --tls_ca_file");
  }
  if (Contains(m, "Peer name") && Contains(m, "is not in peer certificate")) {
    return absl::StrCat(
        "server certificate is not for this name: pass --tls_server_name with a name it "
        "carries (",
        Cause(m), ")");
  }
  if (closed || Contains(m, "certificate required") || Contains(m, "CERTIFICATE_REQUIRED") ||
      Contains(m, "handshake failure") || Contains(m, "alert bad certificate") ||
      Contains(m, "unknown ca") || Contains(m, "UNKNOWN_CA")) {
    return security.tls_cert_file.empty()
               ? std::string("server requires a client certificate (--tls_cert_file/"
                             "--tls_key_file)")
               : std::string("server refused the client certificate of --tls_cert_file (not "
                             "signed by a CA it trusts?)");
  }
  return std::nullopt;
}

absl::string_view AuthHint(absl::StatusCode code, bool has_token) {
  if (code == absl::StatusCode::kUnauthenticated) {
    return has_token ? " (the token was refused: check --token_file or SPARKLE_TOKEN)"
                     : " (pass --token_file or set SPARKLE_TOKEN)";
  }
  if (code == absl::StatusCode::kPermissionDenied) return " (this call needs an admin token)";
  return "";
}

}  // namespace sparkle::client
