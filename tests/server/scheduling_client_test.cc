#include "server/scheduling_client.h"

#include "gtest/gtest.h"

namespace sparkle {
namespace {

TEST(PeerHostTest, StripsThePortOfIpAddresses) {
  EXPECT_EQ(PeerHost("ipv4:127.0.0.1:54321"), "ipv4:127.0.0.1");
  EXPECT_EQ(PeerHost("ipv4:10.1.2.3:1"), "ipv4:10.1.2.3");
  EXPECT_EQ(PeerHost("ipv6:[::1]:54321"), "ipv6:[::1]");
  EXPECT_EQ(PeerHost("ipv6:%5B::1%5D:54321"), "ipv6:%5B::1%5D");
  EXPECT_EQ(PeerHost("ipv6:[fe80::1:2]:8001"), "ipv6:[fe80::1:2]");
}

TEST(PeerHostTest, KeepsWhatHasNoPort) {
  EXPECT_EQ(PeerHost("unix:/run/sparkled.sock"), "unix:/run/sparkled.sock");
  EXPECT_EQ(PeerHost("unix:"), "unix:");
  EXPECT_EQ(PeerHost("ipv6:::1"), "ipv6:::1");  // no brackets: the last group is no port
  EXPECT_EQ(PeerHost("ipv4:127.0.0.1:"), "ipv4:127.0.0.1:");
  EXPECT_EQ(PeerHost("ipv4:127.0.0.1:80a"), "ipv4:127.0.0.1:80a");
  EXPECT_EQ(PeerHost("ipv4:"), "ipv4:");
  EXPECT_EQ(PeerHost(""), "");
}

TEST(SchedulingClientTest, TokenNameOrPeerHost) {
  EXPECT_EQ(SchedulingClient({"greedy", /*authenticated=*/true, Role::kInfer}), "greedy");
  // Tokens off: two connections of one host are one client.
  EXPECT_EQ(SchedulingClient({"ipv4:127.0.0.1:40000", false, Role::kAdmin}),
            SchedulingClient({"ipv4:127.0.0.1:40001", false, Role::kAdmin}));
  EXPECT_EQ(SchedulingClient({"ipv4:127.0.0.1:40000", false, Role::kAdmin}), "ipv4:127.0.0.1");
}

}  // namespace
}  // namespace sparkle
