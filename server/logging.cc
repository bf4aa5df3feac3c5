#include "server/logging.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "spdlog/pattern_formatter.h"
#include "spdlog/spdlog.h"

namespace sparkle {
namespace {

// %* in the pattern: the syslog priority of the message's level (sd-daemon(3): SD_DEBUG 7,
// SD_INFO 6, SD_WARNING 4, SD_ERR 3, SD_CRIT 2).
class SyslogPriorityFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    char priority = '6';
    switch (msg.level) {
      case spdlog::level::trace:
      case spdlog::level::debug:
        priority = '7';
        break;
      case spdlog::level::info:
        priority = '6';
        break;
      case spdlog::level::warn:
        priority = '4';
        break;
      case spdlog::level::err:
        priority = '3';
        break;
      case spdlog::level::critical:
        priority = '2';
        break;
      default:
        break;
    }
    const char text[3] = {'<', priority, '>'};
    dest.append(text, text + 3);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<SyslogPriorityFlag>();
  }
};

}  // namespace

bool StdoutIsJournal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  if (stream == nullptr || *stream == '\0') return false;
  std::pair<std::string, std::string> parts = absl::StrSplit(stream, ':');
  uint64_t dev = 0, ino = 0;
  if (!absl::SimpleAtoi(parts.first, &dev) || !absl::SimpleAtoi(parts.second, &ino)) return false;
  struct stat st;
  if (fstat(STDOUT_FILENO, &st) != 0) return false;
  return static_cast<uint64_t>(st.st_dev) == dev && static_cast<uint64_t>(st.st_ino) == ino;
}

std::unique_ptr<spdlog::formatter> MakeLogFormatter(bool journal) {
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  // The journal timestamps every line itself; a second timestamp would only add noise.
  formatter->add_flag<SyslogPriorityFlag>('*').set_pattern(
      journal ? "%*%l %v" : "%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  return formatter;
}

absl::Status ConfigureLogging(absl::string_view level) {
  const spdlog::level::level_enum parsed = spdlog::level::from_str(std::string(level));
  // from_str maps unknown names to "off"; only the real names are accepted here.
  if (parsed == spdlog::level::off && level != "off") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--log_level must be trace, debug, info, warn, error, critical or off; was \"", level,
        "\""));
  }
  spdlog::set_formatter(MakeLogFormatter(StdoutIsJournal()));
  spdlog::set_level(parsed);
  return absl::OkStatus();
}

}  // namespace sparkle
