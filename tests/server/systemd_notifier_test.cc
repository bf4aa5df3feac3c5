// The sd_notify protocol of the real sparkled, against a datagram socket this test owns (the
// test machine runs no systemd for us; $NOTIFY_SOCKET is all a Type=notify service sees of it):
// READY=1 once the port answers, WATCHDOG=1 pings when $WATCHDOG_USEC is set, STOPPING=1 after
// SIGTERM, then exit 0. Without $NOTIFY_SOCKET the daemon runs as before.
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "inference/grpc_predict_v2.grpc.pb.h"
#include "tests/testing/daemon_process.h"

namespace sparkle {
namespace {

using ::sparkle::testing::DaemonProcess;
using ::testing::HasSubstr;
using ::testing::Not;

// A unix datagram socket in a fresh temporary directory: the service manager's end.
class NotifySocket {
 public:
  NotifySocket() {
    char dir_template[] = "/tmp/sparkle_notify_XXXXXX";
    dir_ = mkdtemp(dir_template);
    path_ = dir_ + "/notify.sock";
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
    ok_ = fd_ >= 0 && bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~NotifySocket() {
    if (fd_ >= 0) close(fd_);
    unlink(path_.c_str());
    rmdir(dir_.c_str());
  }
  bool ok() const { return ok_; }
  const std::string& path() const { return path_; }

  // The next datagram, or "" after `timeout`.
  std::string Receive(absl::Duration timeout) {
    timeval tv = absl::ToTimeval(timeout);
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char buf[4096];
    const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  }

  // Datagrams until one contains `needle` (returned) or `timeout` passes (""); every datagram
  // seen is appended to `seen`.
  std::string ReceiveUntil(absl::string_view needle, absl::Duration timeout,
                           std::vector<std::string>* seen) {
    const absl::Time give_up = absl::Now() + timeout;
    while (absl::Now() < give_up) {
      std::string message = Receive(give_up - absl::Now());
      if (message.empty()) continue;
      seen->push_back(message);
      if (absl::StrContains(message, needle)) return message;
    }
    return "";
  }

 private:
  std::string dir_, path_;
  int fd_ = -1;
  bool ok_ = false;
};

// Sets environment variables for the daemon DaemonProcess forks next; restores on destruction.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() { unsetenv(name_); }

 private:
  const char* name_;
};

bool ServerLive(const std::string& address) {
  auto stub = inference::GRPCInferenceService::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  inference::ServerLiveResponse response;
  return stub->ServerLive(&ctx, {}, &response).ok() && response.live();
}

TEST(SystemdNotifierTest, ReadyWatchdogAndStoppingReachTheNotifySocket) {
  NotifySocket notify;
  ASSERT_TRUE(notify.ok()) << std::strerror(errno);
  std::unique_ptr<DaemonProcess> daemon;
  {
    ScopedEnv socket_env("NOTIFY_SOCKET", notify.path());
    ScopedEnv watchdog_env("WATCHDOG_USEC", "200000");  // 200 ms: a ping every 100 ms
    auto d = DaemonProcess::Start(SPARKLED_PATH, {"--threads=1", "--metrics_address="});
    ASSERT_TRUE(d.ok()) << d.status();
    daemon = *std::move(d);
  }
  std::vector<std::string> seen;
  const std::string ready = notify.ReceiveUntil("READY=1", absl::Seconds(30), &seen);
  ASSERT_THAT(ready, HasSubstr("READY=1"));
  // Sent once serving: the port answers as soon as READY=1 has arrived.
  EXPECT_TRUE(ServerLive(daemon->address()));
  EXPECT_THAT(ready, HasSubstr(absl::StrCat("MAINPID=", daemon->pid())));
  EXPECT_THAT(ready, HasSubstr(absl::StrCat("STATUS=serving on ", daemon->address())));

  int pings = 0;
  for (int i = 0; i < 3; ++i) {
    pings += notify.ReceiveUntil("WATCHDOG=1", absl::Seconds(10), &seen) == "WATCHDOG=1";
  }
  EXPECT_EQ(pings, 3);

  // STOPPING=1 comes after SIGTERM, and the process then exits 0.
  ASSERT_EQ(kill(daemon->pid(), SIGTERM), 0);
  const std::string stopping = notify.ReceiveUntil("STOPPING=1", absl::Seconds(30), &seen);
  EXPECT_THAT(stopping, HasSubstr("STOPPING=1"));
  EXPECT_THAT(stopping, HasSubstr("STATUS=stopping: draining"));
  absl::StatusOr<int> code = daemon->Stop(SIGTERM);
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << daemon->Log();
  EXPECT_THAT(daemon->Log(), HasSubstr("systemd watchdog on"));
}

TEST(SystemdNotifierTest, NoWatchdogPingsWithoutWatchdogUsec) {
  NotifySocket notify;
  ASSERT_TRUE(notify.ok());
  std::unique_ptr<DaemonProcess> daemon;
  {
    ScopedEnv socket_env("NOTIFY_SOCKET", notify.path());
    auto d = DaemonProcess::Start(SPARKLED_PATH, {"--threads=1", "--metrics_address="});
    ASSERT_TRUE(d.ok()) << d.status();
    daemon = *std::move(d);
  }
  std::vector<std::string> seen;
  ASSERT_THAT(notify.ReceiveUntil("READY=1", absl::Seconds(30), &seen), HasSubstr("READY=1"));
  EXPECT_EQ(notify.ReceiveUntil("WATCHDOG=1", absl::Milliseconds(500), &seen), "");
  EXPECT_EQ(daemon->Stop(SIGTERM).value_or(-1), 0);
  EXPECT_THAT(daemon->Log(), Not(HasSubstr("systemd watchdog on")));
}

}  // namespace
}  // namespace sparkle
