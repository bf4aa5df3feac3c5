#include "server/tls_credentials.h"

#include <algorithm>

#include "absl/status/status.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "server/certificate_watcher.h"

namespace sparkle {

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsOptions& options, const CertificateWatcher* watcher) {
  if (options.cert_file.empty() != options.key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert_file and --tls_key_file must be given together (or neither)");
  }
  if (options.cert_file.empty()) {
    if (!options.client_ca_file.empty()) {
      return absl::InvalidArgumentError(
          "--tls_client_ca_file needs --tls_cert_file and --tls_key_file");
    }
    return grpc::InsecureServerCredentials();
  }
  if (absl::StatusOr<CertificateInfo> info = LoadCertificate(options.cert_file, options.key_file);
      !info.ok()) {
    return info.status();
  }
  if (!options.client_ca_file.empty()) {
    if (absl::Status s = CheckCaFile(options.client_ca_file); !s.ok()) return s;
  }
  if (watcher == nullptr) {
    return absl::InternalError("TLS credentials need the certificate watcher");
  }
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      watcher->key_path(), watcher->cert_path(), watcher->ca_path(), /*refresh_interval_sec=*/1);
  grpc::experimental::TlsServerCredentialsOptions tls(provider);
  tls.watch_identity_key_cert_pairs();
  if (!options.client_ca_file.empty()) {
    tls.watch_root_certs();
    tls.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  } else {
    tls.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  return grpc::experimental::TlsServerCredentials(tls);
}

}  // namespace sparkle
