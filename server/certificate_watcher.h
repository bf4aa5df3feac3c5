// CertificateWatcher: the TLS files as served. It watches the operator's key, certificate and
// client CA files, checks each new version with OpenSSL (the key matches the certificate, the CA
// parses), logs the certificate's subject and expiry, and publishes the version that passed as
// private copies (a 0700 directory of its own) that gRPC's FileWatcherCertificateProvider
// (server/tls_credentials.h) serves from. So a version that fails to load is logged with the
// reason and the previous certificate stays in service (gRPC alone would drop it and fail every
// new handshake). Reports the current certificate for Control.GetStatus.
//
// Thread-safety: all methods may be called concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace sparkle {

struct CertificateInfo {
  std::string subject;  // RFC 2253, e.g. "CN=sparkled,O=example"
  absl::Time not_after;
};

// Reads the PEM certificate (the first of a chain) at `cert_file` and, when `key_file` is not
// empty, checks that the PEM private key there matches it. INVALID_ARGUMENT / NOT_FOUND naming
// the file and OpenSSL's reason.
absl::StatusOr<CertificateInfo> LoadCertificate(const std::string& cert_file,
                                                const std::string& key_file);

// Checks that `ca_file` holds at least one PEM certificate. INVALID_ARGUMENT otherwise.
absl::Status CheckCaFile(const std::string& ca_file);

class CertificateWatcher {
 public:
  struct Options {
    std::string cert_file;  // PEM certificate chain, required
    std::string key_file;   // PEM private key, required
    std::string ca_file;    // PEM CA bundle for client certificates; optional
    // How often the files are checked. Range [1 s, 1 h].
    absl::Duration poll_interval = absl::Seconds(5);
  };

  // Loads and logs the certificate (an error when it does not load: the daemon refuses to
  // start), then polls.
  static absl::StatusOr<std::unique_ptr<CertificateWatcher>> Create(const Options& options);
  ~CertificateWatcher();

  CertificateInfo current() const;

  // The published copies, for gRPC's file watcher (ca_path() is "" without a CA file).
  const std::string& key_path() const { return key_path_; }
  const std::string& cert_path() const { return cert_path_; }
  const std::string& ca_path() const { return ca_path_; }

 private:
  struct Stamp {
    uint64_t inode = 0, size = 0;
    int64_t mtime_ns = 0;
    bool operator==(const Stamp&) const = default;
  };
  CertificateWatcher() = default;
  Stamp StampOf() const;  // of the files together
  void PollLoop();
  // Checks the operator's files and, when they pass, publishes them.
  absl::StatusOr<CertificateInfo> LoadAndPublish();

  std::string dir_, key_path_, cert_path_, ca_path_;

  Options options_;
  Stamp stamp_;  // poller thread only (after Create)
  mutable absl::Mutex mu_;
  CertificateInfo current_ ABSL_GUARDED_BY(mu_);
  absl::Notification stop_;
  std::thread poller_;
};

}  // namespace sparkle
