#include "server/authenticator.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace sparkle {
namespace {

absl::Status StatFile(const std::string& path, uint64_t* inode, uint64_t* size, int64_t* mtime_ns) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    return absl::ErrnoToStatus(err, absl::StrCat("cannot stat token file ", path));
  }
  *inode = st.st_ino;
  *size = static_cast<uint64_t>(st.st_size);
  *mtime_ns = int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open token file ", path));
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read token file ", path));
  return contents.str();
}

const absl::Status& Unauthenticated() {
  static const absl::Status* status = new absl::Status(absl::UnauthenticatedError(
      "a bearer token is needed: send metadata 'authorization: Bearer <token>' with a token "
      "from the daemon's --auth_token_file"));
  return *status;
}

}  // namespace

Authenticator::Digest Authenticator::Sha256(absl::string_view data) {
  Digest digest;
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest.data());
  return digest;
}

std::shared_ptr<const std::vector<Authenticator::Entry>> Authenticator::MakeTable(
    const std::vector<TokenEntry>& entries) {
  auto table = std::make_shared<std::vector<Entry>>();
  table->reserve(entries.size());
  for (const TokenEntry& e : entries) table->push_back({Sha256(e.token), {e.name, e.role}});
  return table;
}

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::Create(const Options& options) {
  if (options.token_file.empty()) {
    return absl::InvalidArgumentError("--auth_token_file must name a file");
  }
  if (options.poll_interval != absl::ZeroDuration() &&
      (options.poll_interval < absl::Milliseconds(10) || options.poll_interval > absl::Minutes(1))) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file poll interval must be 0 or in [10ms, 1m]; was ",
                     absl::FormatDuration(options.poll_interval)));
  }
  std::unique_ptr<Authenticator> auth(new Authenticator);
  auth->options_ = options;
  FileStamp stamp;
  if (absl::Status s = StatFile(options.token_file, &stamp.inode, &stamp.size, &stamp.mtime_ns);
      !s.ok()) {
    return s;
  }
  absl::StatusOr<std::string> contents = ReadFile(options.token_file);
  if (!contents.ok()) return contents.status();
  absl::StatusOr<std::vector<TokenEntry>> entries = ParseTokenFile(*contents);
  if (!entries.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--auth_token_file ", options.token_file, ": ", entries.status().message()));
  }
  {
    absl::MutexLock lock(&auth->mu_);
    auth->table_ = MakeTable(*entries);
    auth->stamp_ = stamp;
  }
  spdlog::info("auth: {} bearer token(s) loaded from {}", entries->size(), options.token_file);
  if (options.poll_interval > absl::ZeroDuration()) {
    auth->poller_ = std::thread([a = auth.get()] { a->PollLoop(); });
  }
  return auth;
}

std::unique_ptr<Authenticator> Authenticator::FromEntries(const std::vector<TokenEntry>& entries) {
  std::unique_ptr<Authenticator> auth(new Authenticator);
  absl::MutexLock lock(&auth->mu_);
  auth->table_ = MakeTable(entries);
  return auth;
}

Authenticator::~Authenticator() {
  stop_.Notify();
  if (poller_.joinable()) poller_.join();
}

void Authenticator::PollLoop() {
  while (!stop_.WaitForNotificationWithTimeout(options_.poll_interval)) {
    ReloadIfChanged().IgnoreError();  // logged inside
  }
}

absl::Status Authenticator::ReloadIfChanged() {
  if (options_.token_file.empty()) return absl::OkStatus();
  FileStamp stamp;
  absl::Status status = StatFile(options_.token_file, &stamp.inode, &stamp.size, &stamp.mtime_ns);
  {
    absl::MutexLock lock(&mu_);
    if (status.ok() && stamp == stamp_) return absl::OkStatus();
    if (!status.ok() && stamp_ == FileStamp{}) return status;  // already reported
    // Remember what was seen, so that a bad file is reported once, not every poll.
    stamp_ = stamp;
  }
  std::vector<TokenEntry> entries;
  if (status.ok()) {
    absl::StatusOr<std::string> contents = ReadFile(options_.token_file);
    if (!contents.ok()) {
      status = contents.status();
    } else if (absl::StatusOr<std::vector<TokenEntry>> parsed = ParseTokenFile(*contents);
               !parsed.ok()) {
      status = parsed.status();
    } else {
      entries = *std::move(parsed);
    }
  }
  if (!status.ok()) {
    spdlog::error("auth: keeping the previous token table: {} ({})", std::string(status.message()),
                  options_.token_file);
    return status;
  }
  auto table = MakeTable(entries);
  {
    absl::MutexLock lock(&mu_);
    table_ = std::move(table);
  }
  spdlog::info("auth: {} changed, {} bearer token(s) now accepted", options_.token_file,
               entries.size());
  return absl::OkStatus();
}

int Authenticator::size() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(table_->size());
}

absl::StatusOr<Caller> Authenticator::Authenticate(absl::string_view authorization) const {
  authorization = absl::StripAsciiWhitespace(authorization);
  constexpr absl::string_view kScheme = "bearer ";
  if (authorization.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(authorization.substr(0, kScheme.size()), kScheme)) {
    return Unauthenticated();
  }
  const absl::string_view token =
      absl::StripAsciiWhitespace(authorization.substr(kScheme.size()));
  if (token.empty()) return Unauthenticated();
  const Digest presented = Sha256(token);
  std::shared_ptr<const std::vector<Entry>> table;
  {
    absl::MutexLock lock(&mu_);
    table = table_;
  }
  // Every entry is compared, whatever matched: the time depends on the table's size only.
  const Entry* match = nullptr;
  for (const Entry& entry : *table) {
    const int differs = CRYPTO_memcmp(presented.data(), entry.digest.data(), presented.size());
    // Branch-free select: tokens are unique (the parser refuses duplicates), so at most one
    // entry matches.
    const uintptr_t mask = static_cast<uintptr_t>(0) - static_cast<uintptr_t>(differs == 0);
    match = reinterpret_cast<const Entry*>((reinterpret_cast<uintptr_t>(&entry) & mask) |
                                           (reinterpret_cast<uintptr_t>(match) & ~mask));
  }
  if (match == nullptr) return Unauthenticated();
  return match->caller;
}

}  // namespace sparkle
