// SystemdNotifier: tells systemd (or any service manager speaking the sd_notify protocol) where
// sparkled is in its life: READY=1 once serving, STOPPING=1 when a drain starts, STATUS= lines
// for `systemctl status`, and WATCHDOG=1 pings while the daemon is healthy. It talks to the
// datagram socket named by $NOTIFY_SOCKET through libsystemd's sd_notify(3); with no
// $NOTIFY_SOCKET (not started by systemd with Type=notify) every call is a no-op.
//
// Watchdog: when systemd sets $WATCHDOG_USEC (WatchdogSec= in the unit), a thread sends
// WATCHDOG=1 every half interval, but only while `healthy` returns true. If the daemon stops
// being healthy, or `healthy` itself hangs (a stuck engine lock), the pings stop and systemd
// kills and restarts the service after WatchdogSec.
//
// Thread-safety: all methods may be called from any thread.
#pragma once

#include <functional>
#include <string>
#include <thread>

#include "absl/strings/string_view.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace sparkle {

class SystemdNotifier {
 public:
  // `healthy` is called from the watchdog thread before each ping; it must not block for long
  // in a healthy daemon.
  explicit SystemdNotifier(std::function<bool()> healthy);
  ~SystemdNotifier();  // stops the watchdog thread
  SystemdNotifier(const SystemdNotifier&) = delete;
  SystemdNotifier& operator=(const SystemdNotifier&) = delete;

  // True when $NOTIFY_SOCKET is set (messages go somewhere).
  bool enabled() const { return enabled_; }
  // systemd's watchdog interval ($WATCHDOG_USEC for this pid); zero when the watchdog is off.
  absl::Duration watchdog_interval() const { return watchdog_interval_; }

  // "READY=1", "MAINPID=<pid>" and "STATUS=<status>": the daemon accepts requests.
  void Ready(absl::string_view status);
  // "STOPPING=1" and "STATUS=<status>": a drain or shutdown has started.
  void Stopping(absl::string_view status);
  // "STATUS=<status>" alone.
  void Status(absl::string_view status);

  // Starts the watchdog thread if the watchdog is on (pings every watchdog_interval() / 2).
  // Call once, after Ready. No-op otherwise.
  void StartWatchdog();
  // Stops the watchdog thread (idempotent); the destructor calls it too.
  void StopWatchdog();

 private:
  void Send(const std::string& message);
  void WatchdogLoop();

  const std::function<bool()> healthy_;
  bool enabled_ = false;
  absl::Duration watchdog_interval_;
  absl::Notification stop_;
  std::thread watchdog_;
};

}  // namespace sparkle
