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

// The gRPC service configs sparklectl puts on its channels (docs/operations.md "Scale-out: DNS,
// proxies"). Both carry the standard retry policy: an inference call (ModelInfer, and
// ModelStreamInfer before its first answer; not ServerLive, whose one fail-fast attempt
// diagnoses a connection that cannot be made: sparkle_client.cc WaitForReady) that ends
// UNAVAILABLE (a daemon that stopped admitting work while draining, a connection reset, a proxy's
// 502/503) is sent again, up to 5 attempts in all, after a randomized exponential backoff of at
// most 0.1 s, 0.2 s, 0.4 s, 0.8 s (1 s cap), always within the call's own deadline. Safe: the
// daemon's UNAVAILABLE answers are for work it did not run, and an inference has no side effects.
//
// One daemon (pick_first): the retry policy only.
inline constexpr absl::string_view kSingleTargetServiceConfig =
    R"({"methodConfig":[{"name":[{"service":"inference.GRPCInferenceService","method":"ModelInfer"},)"
    R"({"service":"inference.GRPCInferenceService","method":"ModelStreamInfer"}],)"
    R"("retryPolicy":{"maxAttempts":5,"initialBackoff":"0.1s","maxBackoff":"1s",)"
    R"("backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}}]})";
// Lists and dns: names: round_robin, the same retry policy, and client-side health checking
// (grpc.health.v1 Watch of the server's overall health, service ""): a daemon whose health turns
// NOT_SERVING (the start of a drain, during --drain_delay) leaves the rotation before it refuses
// anything. A server without grpc.health.v1 (UNIMPLEMENTED) is taken as healthy by gRPC.
inline constexpr absl::string_view kRoundRobinServiceConfig =
    R"({"loadBalancingConfig":[{"round_robin":{}}],"healthCheckConfig":{"serviceName":""},)"
    R"("methodConfig":[{"name":[{"service":"inference.GRPCInferenceService","method":"ModelInfer"},)"
    R"({"service":"inference.GRPCInferenceService","method":"ModelStreamInfer"}],)"
    R"("retryPolicy":{"maxAttempts":5,"initialBackoff":"0.1s","maxBackoff":"1s",)"
    R"("backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}}]})";

struct Target {
  // What grpc::CreateCustomChannel gets: the text as given, or "ipv4:a:p,b:p" /
  // "ipv6:[a]:p,[b]:p" for a list.
  std::string channel_target;
  // Use kRoundRobinServiceConfig on the channel (lists and dns: names); otherwise
  // kSingleTargetServiceConfig.
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
