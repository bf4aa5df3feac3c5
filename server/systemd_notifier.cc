#include "server/systemd_notifier.h"

#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "spdlog/spdlog.h"

namespace sparkle {
namespace {

// STATUS= takes one line: a newline would start a new assignment.
std::string OneLine(absl::string_view text) {
  return absl::StrReplaceAll(text, {{"\n", " "}});
}

}  // namespace

SystemdNotifier::SystemdNotifier(std::function<bool()> healthy) : healthy_(std::move(healthy)) {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  enabled_ = socket != nullptr && *socket != '\0';
  uint64_t usec = 0;
  // > 0 only when $WATCHDOG_USEC is set and $WATCHDOG_PID (if set) is this process.
  if (enabled_ && sd_watchdog_enabled(/*unset_environment=*/0, &usec) > 0 && usec > 0) {
    watchdog_interval_ = absl::Microseconds(usec);
  }
}

SystemdNotifier::~SystemdNotifier() { StopWatchdog(); }

void SystemdNotifier::StopWatchdog() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (watchdog_.joinable()) watchdog_.join();
}

void SystemdNotifier::Send(const std::string& message) {
  if (!enabled_) return;
  // unset_environment=0: the watchdog thread keeps needing $NOTIFY_SOCKET.
  const int r = sd_notify(/*unset_environment=*/0, message.c_str());
  if (r < 0) spdlog::warn("sd_notify failed: {}", -r);
}

void SystemdNotifier::Ready(absl::string_view status) {
  Send(absl::StrCat("READY=1\nMAINPID=", getpid(), "\nSTATUS=", OneLine(status)));
}

void SystemdNotifier::Stopping(absl::string_view status) {
  Send(absl::StrCat("STOPPING=1\nSTATUS=", OneLine(status)));
}

void SystemdNotifier::Status(absl::string_view status) {
  Send(absl::StrCat("STATUS=", OneLine(status)));
}

void SystemdNotifier::StartWatchdog() {
  if (!enabled_ || watchdog_interval_ <= absl::ZeroDuration() || watchdog_.joinable()) return;
  spdlog::info("systemd watchdog on: WATCHDOG=1 every {} while healthy",
               absl::FormatDuration(watchdog_interval_ / 2));
  watchdog_ = std::thread([this] { WatchdogLoop(); });
}

void SystemdNotifier::WatchdogLoop() {
  bool was_healthy = true;
  do {
    const bool healthy = healthy_();
    if (healthy) Send("WATCHDOG=1");
    if (healthy != was_healthy) {
      // One line per change, not per ping.
      if (healthy) {
        spdlog::info("watchdog: healthy again, pinging systemd");
      } else {
        spdlog::error("watchdog: unhealthy, no longer pinging systemd (it restarts the "
                      "service after WatchdogSec)");
      }
      was_healthy = healthy;
    }
  } while (!stop_.WaitForNotificationWithTimeout(watchdog_interval_ / 2));
}

}  // namespace sparkle
