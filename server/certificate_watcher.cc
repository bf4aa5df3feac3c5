#include "server/certificate_watcher.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <utility>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace sparkle {
namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

// The last OpenSSL error as text (and the queue cleared).
std::string OpensslError() {
  const unsigned long code = ERR_peek_last_error();
  ERR_clear_error();
  if (code == 0) return "no PEM data";
  char buf[256];
  ERR_error_string_n(code, buf, sizeof(buf));
  return buf;
}

absl::StatusOr<BioPtr> Open(const std::string& path, const char* what) {
  BioPtr bio(BIO_new_file(path.c_str(), "r"));
  if (bio == nullptr) {
    ERR_clear_error();
    return absl::NotFoundError(absl::StrCat("cannot open ", what, " ", path));
  }
  return bio;
}

std::string Subject(X509* cert) {
  BioPtr mem(BIO_new(BIO_s_mem()));
  X509_NAME_print_ex(mem.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  const long n = BIO_get_mem_data(mem.get(), &data);
  return std::string(data, n > 0 ? static_cast<size_t>(n) : 0);
}

absl::Time NotAfter(X509* cert) {
  struct tm t = {};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &t) != 1) return absl::InfinitePast();
  return absl::FromTimeT(timegm(&t));
}

void StampFile(const std::string& path, uint64_t* inode, uint64_t* size, int64_t* mtime_ns) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return;
  *inode ^= st.st_ino;
  *size += static_cast<uint64_t>(st.st_size);
  *mtime_ns ^= int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
}

absl::StatusOr<std::string> Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Writes `contents` to `path` (0600) by rename, so that a reader sees old or new, never half.
absl::Status Publish(const std::string& path, const std::string& contents) {
  const std::string tmp = path + ".new";
  // 0600 whatever the umask (the copy may be a private key; its directory is 0700 as well).
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  std::FILE* f = fd < 0 ? nullptr : ::fdopen(fd, "wb");
  if (f == nullptr) {
    if (fd >= 0) ::close(fd);
    return absl::InternalError(absl::StrCat("cannot write ", tmp));
  }
  const bool ok = std::fwrite(contents.data(), 1, contents.size(), f) == contents.size();
  if (std::fclose(f) != 0 || !ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot write ", path));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CertificateInfo> LoadCertificate(const std::string& cert_file,
                                                const std::string& key_file) {
  absl::StatusOr<BioPtr> cert_bio = Open(cert_file, "TLS certificate");
  if (!cert_bio.ok()) return cert_bio.status();
  X509Ptr cert(PEM_read_bio_X509(cert_bio->get(), nullptr, nullptr, nullptr));
  if (cert == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS certificate ", cert_file, " is not a PEM certificate: ", OpensslError()));
  }
  if (!key_file.empty()) {
    absl::StatusOr<BioPtr> key_bio = Open(key_file, "TLS key");
    if (!key_bio.ok()) return key_bio.status();
    PkeyPtr key(PEM_read_bio_PrivateKey(key_bio->get(), nullptr, nullptr, nullptr));
    if (key == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "TLS key ", key_file, " is not an unencrypted PEM private key: ", OpensslError()));
    }
    if (X509_check_private_key(cert.get(), key.get()) != 1) {
      ERR_clear_error();
      return absl::InvalidArgumentError(absl::StrCat("TLS key ", key_file,
                                                     " does not match the certificate ", cert_file));
    }
  }
  return CertificateInfo{Subject(cert.get()), NotAfter(cert.get())};
}

absl::Status CheckCaFile(const std::string& ca_file) {
  absl::StatusOr<BioPtr> bio = Open(ca_file, "TLS client CA file");
  if (!bio.ok()) return bio.status();
  int count = 0;
  while (X509Ptr cert{PEM_read_bio_X509(bio->get(), nullptr, nullptr, nullptr)}) ++count;
  ERR_clear_error();  // the end of the file reads as an error
  if (count == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS client CA file ", ca_file, " holds no PEM certificate"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CertificateWatcher>> CertificateWatcher::Create(
    const Options& options) {
  if (options.poll_interval < absl::Seconds(1) || options.poll_interval > absl::Hours(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls_reload_interval must be in [1s, 1h]; was ",
                     absl::FormatDuration(options.poll_interval)));
  }
  std::unique_ptr<CertificateWatcher> watcher(new CertificateWatcher);
  watcher->options_ = options;
  const char* tmpdir = std::getenv("TMPDIR");
  std::string dir = absl::StrCat(tmpdir != nullptr && *tmpdir ? tmpdir : "/tmp", "/sparkled-tls-XXXXXX");
  if (mkdtemp(dir.data()) == nullptr) {  // 0700
    return absl::InternalError(absl::StrCat("cannot create a private directory ", dir));
  }
  watcher->dir_ = dir;
  watcher->key_path_ = dir + "/key.pem";
  watcher->cert_path_ = dir + "/cert.pem";
  if (!options.ca_file.empty()) watcher->ca_path_ = dir + "/ca.pem";
  watcher->stamp_ = watcher->StampOf();
  absl::StatusOr<CertificateInfo> info = watcher->LoadAndPublish();
  if (!info.ok()) return info.status();
  spdlog::info("TLS certificate {}: subject {}, expires {}", options.cert_file, info->subject,
               absl::FormatTime(absl::RFC3339_sec, info->not_after, absl::UTCTimeZone()));
  if (info->not_after < absl::Now()) {
    spdlog::warn("TLS certificate {} has EXPIRED", options.cert_file);
  }
  {
    absl::MutexLock lock(&watcher->mu_);
    watcher->current_ = *std::move(info);
  }
  watcher->poller_ = std::thread([w = watcher.get()] { w->PollLoop(); });
  return watcher;
}

CertificateWatcher::~CertificateWatcher() {
  stop_.Notify();
  if (poller_.joinable()) poller_.join();
  for (const std::string* path : {&key_path_, &cert_path_, &ca_path_}) {
    if (!path->empty()) std::remove(path->c_str());
  }
  if (!dir_.empty()) rmdir(dir_.c_str());
}

absl::StatusOr<CertificateInfo> CertificateWatcher::LoadAndPublish() {
  absl::StatusOr<CertificateInfo> info = LoadCertificate(options_.cert_file, options_.key_file);
  if (!info.ok()) return info.status();
  if (!options_.ca_file.empty()) {
    if (absl::Status s = CheckCaFile(options_.ca_file); !s.ok()) return s;
  }
  // What passed (a change between the check and this read is caught by the next poll).
  absl::StatusOr<std::string> key = Slurp(options_.key_file);
  absl::StatusOr<std::string> cert = Slurp(options_.cert_file);
  absl::StatusOr<std::string> ca =
      options_.ca_file.empty() ? std::string() : Slurp(options_.ca_file);
  for (const auto* s : {&key, &cert, &ca}) {
    if (!s->ok()) return s->status();
  }
  if (!options_.ca_file.empty()) {
    if (absl::Status s = Publish(ca_path_, *ca); !s.ok()) return s;
  }
  // Key then certificate: gRPC re-reads both when either changed, and retries a read that
  // raced with a change.
  if (absl::Status s = Publish(key_path_, *key); !s.ok()) return s;
  if (absl::Status s = Publish(cert_path_, *cert); !s.ok()) return s;
  return info;
}

CertificateInfo CertificateWatcher::current() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

CertificateWatcher::Stamp CertificateWatcher::StampOf() const {
  Stamp s;
  StampFile(options_.cert_file, &s.inode, &s.size, &s.mtime_ns);
  StampFile(options_.key_file, &s.inode, &s.size, &s.mtime_ns);
  if (!options_.ca_file.empty()) StampFile(options_.ca_file, &s.inode, &s.size, &s.mtime_ns);
  return s;
}

void CertificateWatcher::PollLoop() {
  while (!stop_.WaitForNotificationWithTimeout(options_.poll_interval)) {
    const Stamp stamp = StampOf();
    if (stamp == stamp_) continue;
    stamp_ = stamp;
    absl::StatusOr<CertificateInfo> info = LoadAndPublish();
    if (!info.ok()) {
      spdlog::error("TLS files changed but do not load, the previous ones stay: {}",
                    std::string(info.status().message()));
      continue;
    }
    spdlog::info("TLS certificate {} reloaded: subject {}, expires {}", options_.cert_file,
                 info->subject,
                 absl::FormatTime(absl::RFC3339_sec, info->not_after, absl::UTCTimeZone()));
    absl::MutexLock lock(&mu_);
    current_ = *std::move(info);
  }
}

}  // namespace sparkle
