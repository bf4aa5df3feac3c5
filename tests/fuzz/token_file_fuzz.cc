// libFuzzer target: the bearer-token file (--auth_token_file) through ParseTokenFile
// (server/token_file.h).
//
// Invariants: an error is INVALID_ARGUMENT naming a line ("token file line N: ...") and does not
// echo that line's token (checked for tokens of 8 bytes or more that do not also appear in the
// line's other fields, which the messages may quote); a parsed file has one entry per line that is
// neither blank nor a comment, each with a non-empty token and name without surrounding spaces or
// commas, and no token twice.
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "server/token_file.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

bool Stripped(const std::string& s) {
  return !s.empty() && !absl::ascii_isspace(static_cast<unsigned char>(s.front())) &&
         !absl::ascii_isspace(static_cast<unsigned char>(s.back()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sparkle;
  const absl::string_view contents(reinterpret_cast<const char*>(data), size);
  const std::vector<absl::string_view> lines = absl::StrSplit(contents, '\n');
  absl::StatusOr<std::vector<TokenEntry>> entries = ParseTokenFile(contents);
  if (!entries.ok()) {
    const std::string message(entries.status().message());
    FUZZ_CHECK(absl::IsInvalidArgument(entries.status()), entries.status().ToString());
    absl::string_view rest = message;
    FUZZ_CHECK(absl::ConsumePrefix(&rest, "token file line "), message);
    size_t line_number = 0;
    FUZZ_CHECK(absl::SimpleAtoi(rest.substr(0, rest.find(':')), &line_number) &&
                   line_number >= 1 && line_number <= lines.size(),
               message);
    const std::vector<absl::string_view> fields = absl::StrSplit(lines[line_number - 1], ',');
    const absl::string_view token = absl::StripAsciiWhitespace(fields[0]);
    bool quoted_elsewhere = false;
    for (size_t i = 1; i < fields.size(); ++i) {
      quoted_elsewhere = quoted_elsewhere || absl::StrContains(fields[i], token);
    }
    // The messages' own words are cut out first (a token may be "expected 3 comma").
    std::string echoed = message;
    for (const char* words :
         {"token file line ", ": expected 3 comma-separated fields token,name,role, got ",
          ": empty token", ": empty name",
          ": unknown role in the third field (expected 'infer' or 'admin'; the line must read "
          "token,name,role)",
          ": duplicate token (name '", "')"}) {
      echoed = absl::StrReplaceAll(echoed, {{words, "\x01"}});
    }
    if (token.size() >= 8 && !quoted_elsewhere) {
      FUZZ_CHECK(!absl::StrContains(echoed, token), "the error message echoes the token");
    }
    return 0;
  }
  size_t expected = 0;
  for (absl::string_view line : lines) {
    line = absl::StripAsciiWhitespace(line);
    if (!line.empty() && line.front() != '#') ++expected;
  }
  FUZZ_CHECK(entries->size() == expected, absl::StrCat(entries->size(), " entries, ", expected,
                                                       " lines"));
  std::set<std::string> tokens;
  for (const TokenEntry& e : *entries) {
    FUZZ_CHECK(Stripped(e.token) && Stripped(e.name), "empty or unstripped field");
    FUZZ_CHECK(!absl::StrContains(e.token, ',') && !absl::StrContains(e.name, ','), "comma");
    FUZZ_CHECK(!absl::StrContains(e.token, '\n'), "newline in a token");
    FUZZ_CHECK(e.role == Role::kInfer || e.role == Role::kAdmin, "role");
    FUZZ_CHECK(tokens.insert(e.token).second, "duplicate token accepted");
  }
  return 0;
}
