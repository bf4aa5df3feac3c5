// server/logging: the journald line format (syslog priority prefix, no timestamp), the
// timestamped terminal format, $JOURNAL_STREAM detection and --log_level validation.
#include "server/logging.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "spdlog/logger.h"
#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/spdlog.h"

namespace sparkle {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;

std::string Format(bool journal, spdlog::level::level_enum level, const std::string& text) {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  spdlog::logger logger("test", sink);
  logger.set_formatter(MakeLogFormatter(journal));
  logger.set_level(spdlog::level::trace);
  logger.log(level, text);
  logger.flush();
  return out.str();
}

TEST(LoggingTest, JournalLinesCarryTheSyslogPriorityAndNoTimestamp) {
  EXPECT_EQ(Format(true, spdlog::level::info, "listening"), "<6>info listening\n");
  EXPECT_EQ(Format(true, spdlog::level::warn, "slow"), "<4>warning slow\n");
  EXPECT_EQ(Format(true, spdlog::level::err, "failed"), "<3>error failed\n");
  EXPECT_EQ(Format(true, spdlog::level::critical, "cannot start"), "<2>critical cannot start\n");
  EXPECT_EQ(Format(true, spdlog::level::debug, "detail"), "<7>debug detail\n");
}

TEST(LoggingTest, TerminalLinesAreTimestamped) {
  EXPECT_THAT(Format(false, spdlog::level::info, "listening"),
              MatchesRegex("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+ info listening\n"));
}

TEST(LoggingTest, JournalStreamMustNameStdout) {
  struct stat st;
  ASSERT_EQ(fstat(STDOUT_FILENO, &st), 0);
  const std::string mine = absl::StrCat(st.st_dev, ":", st.st_ino);
  ASSERT_EQ(setenv("JOURNAL_STREAM", mine.c_str(), 1), 0);
  EXPECT_TRUE(StdoutIsJournal());
  // Inherited from a parent whose stdout was the journal, while ours goes elsewhere.
  const std::string other = absl::StrCat(st.st_dev, ":", st.st_ino + 1);
  ASSERT_EQ(setenv("JOURNAL_STREAM", other.c_str(), 1), 0);
  EXPECT_FALSE(StdoutIsJournal());
  ASSERT_EQ(setenv("JOURNAL_STREAM", "garbage", 1), 0);
  EXPECT_FALSE(StdoutIsJournal());
  unsetenv("JOURNAL_STREAM");
  EXPECT_FALSE(StdoutIsJournal());
}

TEST(LoggingTest, LevelNamesAreCheckedAndApplied) {
  EXPECT_TRUE(ConfigureLogging("warn").ok());
  EXPECT_EQ(spdlog::default_logger()->level(), spdlog::level::warn);
  EXPECT_TRUE(ConfigureLogging("off").ok());
  EXPECT_EQ(spdlog::default_logger()->level(), spdlog::level::off);
  const absl::Status bad = ConfigureLogging("verbose");
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.message()), HasSubstr("--log_level"));
  EXPECT_TRUE(ConfigureLogging("info").ok());
}

}  // namespace
}  // namespace sparkle
