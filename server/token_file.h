// Bearer-token file format for --auth_token_file.
//
// One `token,name,role` per line; '#' starts a comment line; blank lines and surrounding spaces are
// ignored. `role` is `infer` or `admin` (admin includes infer). The parser never echoes a token in an
// error message (only line numbers), so its errors are safe to log.
#ifndef SPARKLE_SERVER_TOKEN_FILE_H_
#define SPARKLE_SERVER_TOKEN_FILE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sparkle {

enum class Role { kInfer, kAdmin };

struct TokenEntry {
  std::string token;
  std::string name;
  Role role = Role::kInfer;
};

// Parses the token file: one `token,name,role` per line; '#' starts a comment line; blank lines and
// surrounding spaces ignored. INVALID_ARGUMENT naming the line number (never echoing a token) for a bad line,
// an empty token or name, an unknown role, or a duplicate token.
absl::StatusOr<std::vector<TokenEntry>> ParseTokenFile(absl::string_view contents);

const char* RoleName(Role role);  // "infer" | "admin"

}  // namespace sparkle

#endif  // SPARKLE_SERVER_TOKEN_FILE_H_
