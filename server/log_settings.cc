#include "server/log_settings.h"

#include <optional>
#include <string>

#include "absl/base/const_init.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/status_macros.h"
#include "server/logging.h"
#include "spdlog/spdlog.h"

namespace sparkle {
namespace {

using Value = inference::LogSettingsRequest::SettingValue;
using ResponseValue = inference::LogSettingsResponse::SettingValue;

constexpr char kLogInfo[] = "log_info";
constexpr char kLogWarning[] = "log_warning";
constexpr char kLogError[] = "log_error";
constexpr char kLogVerboseLevel[] = "log_verbose_level";
constexpr char kLogFormat[] = "log_format";
constexpr char kLogFile[] = "log_file";

// Serializes updates (read, overlay, set): two concurrent updates must not interleave.
absl::Mutex update_mu(absl::kConstInit);

std::string CurrentFormat() { return StdoutIsJournal() ? "journal" : "ISO8601"; }

std::string LevelName(spdlog::level::level_enum level) {
  const auto name = spdlog::level::to_string_view(level);
  return std::string(name.data(), name.size());
}

absl::StatusOr<bool> BoolValue(absl::string_view key, const Value& v) {
  if (v.parameter_choice_case() != Value::kBoolParam) {
    return absl::InvalidArgumentError(absl::StrCat("log setting ", key, " must be a bool_param"));
  }
  return v.bool_param();
}

absl::StatusOr<std::string> StringValue(absl::string_view key, const Value& v) {
  if (v.parameter_choice_case() != Value::kStringParam) {
    return absl::InvalidArgumentError(
        absl::StrCat("log setting ", key, " must be a string_param"));
  }
  return v.string_param();
}

}  // namespace

LogSwitches SwitchesForLevel(spdlog::level::level_enum level) {
  LogSwitches s;
  s.error = level <= spdlog::level::err;
  s.warning = level <= spdlog::level::warn;
  s.info = level <= spdlog::level::info;
  s.verbose_level = level == spdlog::level::trace ? 2 : level == spdlog::level::debug ? 1 : 0;
  return s;
}

absl::StatusOr<spdlog::level::level_enum> LevelForSwitches(const LogSwitches& s) {
  // From the most severe down: once a level is off, every less severe one must be off too.
  struct Step {
    bool on;
    const char* key;
  };
  const Step steps[] = {{s.error, kLogError},
                        {s.warning, kLogWarning},
                        {s.info, kLogInfo},
                        {s.verbose_level > 0, kLogVerboseLevel}};
  const char* off = nullptr;
  for (const Step& step : steps) {
    if (!step.on) {
      if (off == nullptr) off = step.key;
    } else if (off != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sparkled logs by threshold (every message at or above one level): ", step.key,
          " cannot be on while ", off,
          " is off; turn the less severe levels off too, or the more severe ones on"));
    }
  }
  if (s.verbose_level >= 2) return spdlog::level::trace;
  if (s.verbose_level == 1) return spdlog::level::debug;
  if (s.info) return spdlog::level::info;
  if (s.warning) return spdlog::level::warn;
  if (s.error) return spdlog::level::err;
  return spdlog::level::off;
}

void ReadLogSettings(inference::LogSettingsResponse* response) {
  const LogSwitches s = SwitchesForLevel(spdlog::get_level());
  auto& settings = *response->mutable_settings();
  settings[kLogInfo].set_bool_param(s.info);
  settings[kLogWarning].set_bool_param(s.warning);
  settings[kLogError].set_bool_param(s.error);
  settings[kLogVerboseLevel].set_uint32_param(s.verbose_level);
  settings[kLogFormat].set_string_param(CurrentFormat());
  settings[kLogFile].set_string_param("");
}

absl::Status UpdateLogSettings(const inference::LogSettingsRequest& request,
                               absl::string_view caller, inference::LogSettingsResponse* response) {
  absl::MutexLock lock(&update_mu);
  const spdlog::level::level_enum before = spdlog::get_level();
  LogSwitches s = SwitchesForLevel(before);
  for (const auto& [key, value] : request.settings()) {
    if (key == kLogInfo) {
      SPARKLE_ASSIGN_OR_RETURN(s.info, BoolValue(key, value));
    } else if (key == kLogWarning) {
      SPARKLE_ASSIGN_OR_RETURN(s.warning, BoolValue(key, value));
    } else if (key == kLogError) {
      SPARKLE_ASSIGN_OR_RETURN(s.error, BoolValue(key, value));
    } else if (key == kLogVerboseLevel) {
      if (value.parameter_choice_case() != Value::kUint32Param) {
        return absl::InvalidArgumentError(
            "log setting log_verbose_level must be a uint32_param");
      }
      s.verbose_level = value.uint32_param();
    } else if (key == kLogFormat) {
      SPARKLE_ASSIGN_OR_RETURN(std::string format, StringValue(key, value));
      if (format == CurrentFormat()) continue;
      if (format == "default" || format == "ISO8601") {
        return absl::UnimplementedError(absl::StrCat(
            "log_format cannot be changed at run time: sparkled writes '", CurrentFormat(),
            "' lines (an ISO 8601 timestamp on a terminal, a syslog priority under systemd)"));
      }
      return absl::InvalidArgumentError(absl::StrCat(
          "log_format must be 'default' or 'ISO8601' (Triton's values); was '", format, "'"));
    } else if (key == kLogFile) {
      SPARKLE_ASSIGN_OR_RETURN(std::string file, StringValue(key, value));
      if (file.empty()) continue;
      return absl::UnimplementedError(absl::StrCat(
          "log_file cannot be set: sparkled logs to stdout (the journal under systemd); was '",
          file, "'"));
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown log setting '", key,
          "' (known: log_info, log_warning, log_error, log_verbose_level, log_format, log_file)"));
    }
  }
  SPARKLE_ASSIGN_OR_RETURN(const spdlog::level::level_enum after, LevelForSwitches(s));
  if (after != before) {
    const std::string message =
        absl::StrCat("LogSettings from '", caller, "': log level ", LevelName(before), " -> ",
                     LevelName(after));
    // Logged at warn on whichever side of the change logs warnings, so that the change shows
    // whether it raised or lowered the level (a change to error or off is logged before it).
    const bool logged_before = spdlog::should_log(spdlog::level::warn);
    if (logged_before) spdlog::warn("{}", message);
    spdlog::set_level(after);
    if (!logged_before) spdlog::warn("{}", message);
  }
  ReadLogSettings(response);
  return absl::OkStatus();
}

}  // namespace sparkle
