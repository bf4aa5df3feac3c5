// client/target: --target parsing into a gRPC channel target, the round_robin choice and the
// per-daemon targets.
#include "client/target.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sparkle::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(TargetTest, OneDaemonPassesThroughUnchanged) {
  for (const char* text : {"127.0.0.1:8001", "localhost:8001", "unix:/run/sparkled.sock",
                           "[::1]:8001"}) {
    absl::StatusOr<Target> t = ParseTarget(text);
    ASSERT_TRUE(t.ok()) << text << ": " << t.status();
    EXPECT_EQ(t->channel_target, text);
    EXPECT_FALSE(t->round_robin);
    EXPECT_THAT(t->daemons, ElementsAre(text));
  }
}

TEST(TargetTest, AListBecomesOneRoundRobinChannel) {
  absl::StatusOr<Target> t = ParseTarget("10.0.0.1:8001, 10.0.0.2:8002");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->channel_target, "ipv4:10.0.0.1:8001,10.0.0.2:8002");
  EXPECT_TRUE(t->round_robin);
  EXPECT_THAT(t->daemons, ElementsAre("10.0.0.1:8001", "10.0.0.2:8002"));

  t = ParseTarget("[::1]:8001,[fe80::1]:8001");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->channel_target, "ipv6:[::1]:8001,[fe80::1]:8001");
  EXPECT_THAT(t->daemons, ElementsAre("[::1]:8001", "[fe80::1]:8001"));

  t = ParseTarget("ipv4:127.0.0.1:1,127.0.0.1:2");  // gRPC's own syntax is accepted too
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE(t->round_robin);
  EXPECT_THAT(t->daemons, ElementsAre("127.0.0.1:1", "127.0.0.1:2"));
}

TEST(TargetTest, BadListsAreUsageErrors) {
  struct Bad {
    const char* text;
    const char* why;
  };
  for (const Bad& b : {Bad{"", "must not be empty"}, Bad{"1.2.3.4:1,,1.2.3.5:1", "empty entry"},
                       Bad{"host-a:8001,host-b:8001", "dns:///NAME:PORT"},
                       Bad{"1.2.3.4,1.2.3.5:80", "no port"},
                       Bad{"1.2.3.4:0,1.2.3.5:80", "port must be in [1, 65535]"},
                       Bad{"1.2.3.4:80,[::1]:80", "mixes IPv4 and IPv6"},
                       Bad{"[::1:80,[::2]:80", "[IPv6]:PORT"}, Bad{"dns:///noport", "NAME:PORT"}}) {
    absl::StatusOr<Target> t = ParseTarget(b.text);
    ASSERT_FALSE(t.ok()) << b.text;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << b.text;
    EXPECT_THAT(std::string(t.status().message()), HasSubstr(b.why)) << b.text;
  }
}

TEST(TargetTest, DnsNamesUseRoundRobinAndResolveToEveryAddress) {
  absl::StatusOr<Target> t = ParseTarget("dns:///localhost:8001");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->channel_target, "dns:///localhost:8001");
  EXPECT_TRUE(t->round_robin);
  EXPECT_TRUE(t->daemons.empty());
  absl::StatusOr<std::vector<std::string>> daemons = DaemonTargets(*t);
  ASSERT_TRUE(daemons.ok()) << daemons.status();
  // localhost resolves (from /etc/hosts) to 127.0.0.1 and/or ::1.
  ASSERT_FALSE(daemons->empty());
  for (const std::string& d : *daemons) {
    EXPECT_TRUE(d == "127.0.0.1:8001" || d == "[::1]:8001") << d;
  }

  t = ParseTarget("dns://8.8.8.8/localhost:9");  // with an authority
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->dns_host_port, "localhost:9");

  t = ParseTarget("dns:///no-such-host.invalid:8001");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(DaemonTargets(*t).status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace sparkle::client
