// Logging setup for sparkled: one spdlog line per event, in a format journald understands.
//
// Under systemd (stdout is the journal stream named by $JOURNAL_STREAM), each line is
// "<N>message": N is the syslog priority (sd-daemon(3)), which journald parses into PRIORITY=
// (so `journalctl -p warning` works) and strips; journald adds its own timestamp. Otherwise
// (a terminal, a pipe, a test) each line is "2026-11-24T20:44:40.123 info message".
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "spdlog/formatter.h"

namespace sparkle {

// True when stdout is the journal stream that systemd named in $JOURNAL_STREAM
// ("<st_dev>:<st_ino>" of the stream; compared with fstat(stdout) as sd-daemon(3) advises, so a
// child whose stdout was redirected elsewhere does not print priority prefixes).
bool StdoutIsJournal();

// The formatter ConfigureLogging installs: "<N>level message" for the journal, else
// "timestamp level message" (exposed for tests).
std::unique_ptr<spdlog::formatter> MakeLogFormatter(bool journal);

// Sets the default logger's pattern and level. `level` is one of trace, debug, info, warn,
// error, critical, off; anything else is INVALID_ARGUMENT naming --log_level.
absl::Status ConfigureLogging(absl::string_view level);

}  // namespace sparkle
