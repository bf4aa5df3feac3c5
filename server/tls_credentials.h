// The gRPC server credentials of sparkled's listeners: insecure when TLS is off, otherwise TLS
// from gRPC's FileWatcherCertificateProvider over the copies that `watcher`
// (server/certificate_watcher.h) publishes once they pass its checks; gRPC re-reads them every
// second: a rotated certificate reaches new connections without a restart (within the watcher's
// interval + 1 s), and existing connections keep theirs. With a client CA, every client must
// present a certificate that CA signed (mTLS).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/security/server_credentials.h"
#include "server/certificate_watcher.h"

namespace sparkle {

struct TlsOptions {
  std::string cert_file;       // PEM certificate chain; empty (with key_file): TLS off
  std::string key_file;        // PEM private key, unencrypted
  std::string client_ca_file;  // PEM CA bundle; non-empty: clients need a certificate from it
};

// Validates the files at start-up (key matches certificate, the CA file parses): an
// INVALID_ARGUMENT / NOT_FOUND naming the file otherwise.
// `watcher` watches options' files (not owned; outlives the credentials); null when TLS is off.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsOptions& options, const CertificateWatcher* watcher);

}  // namespace sparkle
