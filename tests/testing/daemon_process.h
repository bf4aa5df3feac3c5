// DaemonProcess: runs the real sparkled binary as a child process on a loopback port chosen by
// the kernel (--listen=127.0.0.1:0), reads the bound address from its log, and stops it with a
// signal. Used by the server tests and the benchmarks.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace sparkle::testing {

class DaemonProcess {
 public:
  // Starts `binary` with `args` (plus --listen=127.0.0.1:0 unless args set --listen, and
  // --metrics_address=127.0.0.1:0 unless args set it) and waits up to `timeout` for it to log
  // its address.
  static absl::StatusOr<std::unique_ptr<DaemonProcess>> Start(
      const std::string& binary, const std::vector<std::string>& args,
      absl::Duration timeout = absl::Seconds(30));
  ~DaemonProcess();  // SIGKILL if still running

  const std::string& address() const { return address_; }
  pid_t pid() const { return pid_; }

  // Sends `signal` and waits up to `timeout` for the exit; returns the exit code (or 128 +
  // signal number when a signal killed it), or DEADLINE_EXCEEDED.
  absl::StatusOr<int> Stop(int signal, absl::Duration timeout = absl::Seconds(60));

  // Everything the daemon printed so far.
  std::string Log() const;

 private:
  DaemonProcess() = default;
  void ReadLoop(int fd);

  pid_t pid_ = -1;
  bool exited_ = false;
  std::string address_;
  std::thread reader_;
  mutable absl::Mutex mu_;
  std::string log_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sparkle::testing
