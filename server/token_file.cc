#include "server/token_file.h"

#include <cstddef>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace sparkle {

const char* RoleName(Role role) {
  switch (role) {
    case Role::kInfer:
      return "infer";
    case Role::kAdmin:
      return "admin";
  }
  return "unknown";
}

absl::StatusOr<std::vector<TokenEntry>> ParseTokenFile(absl::string_view contents) {
  std::vector<TokenEntry> entries;
  std::set<std::string> seen;
  std::size_t line_number = 0;
  for (absl::string_view raw : absl::StrSplit(contents, '\n')) {
    ++line_number;
    absl::string_view line = absl::StripAsciiWhitespace(raw);  // also drops a trailing '\r'
    if (line.empty() || line.front() == '#') continue;
    std::vector<absl::string_view> fields = absl::StrSplit(line, ',');
    if (fields.size() != 3) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token file line ", line_number, ": expected 3 comma-separated fields token,name,role, got ",
          fields.size()));
    }
    TokenEntry entry;
    entry.token = std::string(absl::StripAsciiWhitespace(fields[0]));
    entry.name = std::string(absl::StripAsciiWhitespace(fields[1]));
    const absl::string_view role = absl::StripAsciiWhitespace(fields[2]);
    if (entry.token.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("token file line ", line_number, ": empty token"));
    }
    if (entry.name.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("token file line ", line_number, ": empty name"));
    }
    if (role == "infer") {
      entry.role = Role::kInfer;
    } else if (role == "admin") {
      entry.role = Role::kAdmin;
    } else {
      // Not echoed: in a file whose columns were swapped, the third field is a token.
      return absl::InvalidArgumentError(absl::StrCat(
          "token file line ", line_number,
          ": unknown role in the third field (expected 'infer' or 'admin'; the line must read "
          "token,name,role)"));
    }
    if (!seen.insert(entry.token).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("token file line ", line_number, ": duplicate token (name '", entry.name, "')"));
    }
    entries.push_back(std::move(entry));
  }
  return entries;
}

}  // namespace sparkle
