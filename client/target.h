// Target: what sparklectl's --target means. One daemon ("host:port", "unix:/path", any gRPC
// target), a list of daemons ("10.0.0.1:8001,10.0.0.2:8001", or gRPC's own "ipv4:"/"ipv6:"
// lists), or a DNS name with several addresses ("dns:///sparkled.example:8001"). Lists and DNS
// names become one gRPC channel with the round_robin load-balancing policy (infer and bench
// spread their requests over every daemon); per-daemon commands (status, devices, queue, drain)
// instead query each daemon on its own (DaemonTargets).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sparkle::client {

// The gRPC service config that selects round_robin.
inline constexpr absl::string_view kRoundRobinServiceConfig =
    R"({"loadBalancingConfig":[{"round_robin":{}}]})";

struct Target {
  // What grpc::CreateCustomChannel gets: the text as given, or "ipv4:a:p,b:p" /
  // "ipv6:[a]:p,[b]:p" for a list.
  std::string channel_target;
  // Use kRoundRobinServiceConfig on the channel (lists and dns: names).
  bool round_robin = false;
  // One gRPC target per daemon when known from the text alone (a single target or a list);
  // empty for a dns: name, whose addresses DaemonTargets resolves.
  std::vector<std::string> daemons;
  // The dns: name's "host:port" (empty otherwise).
  std::string dns_host_port;
};

// INVALID_ARGUMENT for an empty target, an empty list entry, a list entry that is not an IP
// literal with a port (names belong in dns:///name:port), or a list mixing IPv4 and IPv6.
absl::StatusOr<Target> ParseTarget(absl::string_view text);

// One gRPC target per daemon: `target.daemons`, or the addresses the dns: name resolves to
// (getaddrinfo; "ip:port" / "[ip6]:port", in resolver order, duplicates removed). UNAVAILABLE
// when the name does not resolve.
absl::StatusOr<std::vector<std::string>> DaemonTargets(const Target& target);

}  // namespace sparkle::client
