// Authenticator: the bearer-token table of --auth_token_file (format: server/token_file.h), kept
// current while the daemon runs. Authenticate() maps an `authorization: Bearer <token>` header to
// the caller's name and role; it compares SHA-256 digests with CRYPTO_memcmp against EVERY stored
// token (no early exit), so its timing does not depend on how much of a token was right.
//
// The file is polled (inode, size, mtime) every `poll_interval`; a changed file that parses
// replaces the table at once, one that does not keeps the previous table and logs why (the parser
// never echoes a token). No token is ever logged.
//
// Thread-safety: Authenticate and ReloadIfChanged may be called concurrently.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "server/token_file.h"

namespace sparkle {

// Who is calling: the `name` column of the token file and its role.
struct Caller {
  std::string name;
  Role role = Role::kInfer;
};

class Authenticator {
 public:
  struct Options {
    // The token file (server/token_file.h). Required.
    std::string token_file;
    // How often the file is checked for changes. Range [10 ms, 1 min]; 0 turns polling off
    // (tests call ReloadIfChanged themselves).
    absl::Duration poll_interval = absl::Seconds(1);
  };

  // Reads and parses the file: INVALID_ARGUMENT (bad option or file content, with the line
  // number) or NOT_FOUND / PERMISSION_DENIED (cannot read it). Starts polling.
  static absl::StatusOr<std::unique_ptr<Authenticator>> Create(const Options& options);
  // A fixed table (no file, no polling), for tests.
  static std::unique_ptr<Authenticator> FromEntries(const std::vector<TokenEntry>& entries);
  ~Authenticator();  // stops polling

  // `authorization` is the header value, "Bearer <token>" (scheme case-insensitive).
  // UNAUTHENTICATED when it is missing, malformed or names no known token.
  absl::StatusOr<Caller> Authenticate(absl::string_view authorization) const;

  // Re-reads the file when its inode, size or mtime changed since the last look. OK when nothing
  // changed or the new table is in use; otherwise the error (the previous table stays).
  absl::Status ReloadIfChanged();

  // Tokens in the current table.
  int size() const;

 private:
  using Digest = std::array<uint8_t, 32>;
  struct Entry {
    Digest digest;
    Caller caller;
  };
  struct FileStamp {
    uint64_t inode = 0, size = 0;
    int64_t mtime_ns = 0;
    bool operator==(const FileStamp&) const = default;
  };

  Authenticator() = default;
  static Digest Sha256(absl::string_view data);
  static std::shared_ptr<const std::vector<Entry>> MakeTable(const std::vector<TokenEntry>& e);
  void PollLoop();

  Options options_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const std::vector<Entry>> table_ ABSL_GUARDED_BY(mu_);
  FileStamp stamp_ ABSL_GUARDED_BY(mu_);
  absl::Notification stop_;
  std::thread poller_;
};

}  // namespace sparkle
