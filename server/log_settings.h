// LogSettings: Triton's log-settings extension over spdlog's one threshold level, for the
// `LogSettings` RPC. sparkled logs by threshold (every message at or above the level), so
// Triton's separate switches are a view of that level:
//
//   spdlog level  log_error  log_warning  log_info  log_verbose_level
//   trace         true       true         true      2
//   debug         true       true         true      1
//   info          true       true         true      0
//   warn          true       true         false     0
//   err           true       false        false     0
//   critical/off  false      false        false     0
//
// An update overlays the keys it names on that view and takes the lowest enabled level:
// log_verbose_level >= 2 → trace, 1 → debug; else log_info → info, log_warning → warn,
// log_error → err; none → off. A combination a threshold cannot express (a level enabled while
// a more severe one is disabled, e.g. log_info true and log_error false, or a verbose level with
// log_info false) is INVALID_ARGUMENT, never approximated.
//
// log_format reports how lines look ("ISO8601": a local ISO 8601 timestamp and the level;
// "journal": "<N>" syslog-priority prefix under systemd, server/logging.h) and log_file ""
// (stdout). Neither can be changed: an update to the current value is accepted, any other
// valid Triton value (log_format "default" or "ISO8601", a log_file path) is UNIMPLEMENTED and
// anything else INVALID_ARGUMENT. Unknown keys and wrongly typed values are INVALID_ARGUMENT.
// An update is all or nothing: every key is checked before the level changes.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "inference/grpc_predict_v2.pb.h"
#include "spdlog/common.h"

namespace sparkle {

// Triton's four level switches (the two string keys are fixed, see above).
struct LogSwitches {
  bool error = false;
  bool warning = false;
  bool info = false;
  uint32_t verbose_level = 0;
};

// The view of `level` (table above).
LogSwitches SwitchesForLevel(spdlog::level::level_enum level);

// The threshold level that logs exactly `switches`, or INVALID_ARGUMENT naming the conflict.
absl::StatusOr<spdlog::level::level_enum> LevelForSwitches(const LogSwitches& switches);

// Every key, from the default logger's current level.
void ReadLogSettings(inference::LogSettingsResponse* response);

// Applies `request` to the default logger (all or nothing), logs who changed what at warn
// level when the level changes (`caller`: the token name or peer), and fills `response` with
// every key after the update. An empty request changes nothing.
absl::Status UpdateLogSettings(const inference::LogSettingsRequest& request,
                               absl::string_view caller, inference::LogSettingsResponse* response);

}  // namespace sparkle
