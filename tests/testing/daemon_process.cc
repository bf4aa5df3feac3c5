#include "tests/testing/daemon_process.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace sparkle::testing {

absl::StatusOr<std::unique_ptr<DaemonProcess>> DaemonProcess::Start(
    const std::string& binary, const std::vector<std::string>& args, absl::Duration timeout) {
  std::vector<std::string> argv_storage = {binary};
  bool has_listen = false;
  bool has_metrics = false;
  bool has_http = false;
  for (const std::string& a : args) {
    has_listen |= absl::StartsWith(a, "--listen");
    has_metrics |= absl::StartsWith(a, "--metrics_address");
    has_http |= absl::StartsWith(a, "--http_listen");
    argv_storage.push_back(a);
  }
  if (!has_listen) argv_storage.push_back("--listen=127.0.0.1:0");
  // Daemons started side by side must not compete for the default metrics port 8002.
  if (!has_metrics) argv_storage.push_back("--metrics_address=127.0.0.1:0");
  if (!has_http) argv_storage.push_back("--http_listen=127.0.0.1:0");  // nor for REST's 8000
  std::vector<char*> argv;
  for (std::string& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);

  int fds[2];
  if (pipe(fds) != 0) return absl::InternalError("pipe failed");
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    dup2(fds[1], STDERR_FILENO);
    close(fds[0]);
    close(fds[1]);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
  close(fds[1]);
  std::unique_ptr<DaemonProcess> d(new DaemonProcess);
  d->pid_ = pid;
  d->reader_ = std::thread([raw = d.get(), fd = fds[0]] { raw->ReadLoop(fd); });

  // "... listening on 127.0.0.1:PORT (..." is the daemon's ready line.
  const absl::Time give_up = absl::Now() + timeout;
  constexpr absl::string_view kMarker = "listening on ";
  while (absl::Now() < give_up) {
    const std::string log = d->Log();
    const size_t at = log.find(std::string(kMarker));
    if (at != std::string::npos) {
      const size_t start = at + kMarker.size();
      const size_t end = log.find(' ', start);
      if (end != std::string::npos) {
        d->address_ = log.substr(start, end - start);
        return d;
      }
    }
    int wstatus;
    if (waitpid(pid, &wstatus, WNOHANG) == pid) {
      d->exited_ = true;
      // Read again: the last lines may have been written after `log` was read.
      return absl::InternalError(absl::StrCat("sparkled exited before listening:\n", d->Log()));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("sparkled did not report its address in time:\n", d->Log()));
}

DaemonProcess::~DaemonProcess() {
  if (!exited_ && pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (reader_.joinable()) reader_.join();
}

void DaemonProcess::ReadLoop(int fd) {
  char buf[4096];
  while (true) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n > 0) {
      absl::MutexLock lock(&mu_);
      log_.append(buf, static_cast<size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  close(fd);
}

std::string DaemonProcess::Log() const {
  absl::MutexLock lock(&mu_);
  return log_;
}

absl::StatusOr<int> DaemonProcess::Stop(int signal, absl::Duration timeout) {
  if (exited_) return absl::FailedPreconditionError("already stopped");
  kill(pid_, signal);
  const absl::Time give_up = absl::Now() + timeout;
  while (absl::Now() < give_up) {
    int wstatus;
    if (waitpid(pid_, &wstatus, WNOHANG) == pid_) {
      exited_ = true;
      if (WIFEXITED(wstatus)) return WEXITSTATUS(wstatus);
      return 128 + WTERMSIG(wstatus);
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  return absl::DeadlineExceededError("sparkled did not exit in time");
}

}  // namespace sparkle::testing
