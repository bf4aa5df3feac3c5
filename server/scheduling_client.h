// SchedulingClient: the identity the batcher's per-client fair scheduling keys on
// (Conv2dJob::client, docs/operations.md "Scheduling"): the token's name when tokens are on, else
// the caller's host without the port, so that a client opening many connections (each with its
// own port) is still one client.
#pragma once

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "server/call_auth.h"

namespace sparkle {

// gRPC's peer string without its port: "ipv4:127.0.0.1:54321" → "ipv4:127.0.0.1",
// "ipv6:[::1]:54321" (or %5B…%5D) → "ipv6:[::1]". Anything else ("unix:/run/s.sock", a
// string without a numeric port) is returned whole.
inline std::string PeerHost(absl::string_view peer) {
  const bool ipv4 = absl::StartsWith(peer, "ipv4:");
  const bool ipv6 = absl::StartsWith(peer, "ipv6:");
  if (!ipv4 && !ipv6) return std::string(peer);
  const size_t colon = peer.rfind(':');
  if (colon <= 4 || colon + 1 == peer.size()) return std::string(peer);
  for (char c : peer.substr(colon + 1)) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return std::string(peer);
  }
  const absl::string_view host = peer.substr(0, colon);
  // An IPv6 address has colons of its own: only a port after the closing bracket is one.
  if (ipv6 && !absl::EndsWith(host, "]") && !absl::EndsWithIgnoreCase(host, "%5D")) {
    return std::string(peer);
  }
  return std::string(host);
}

inline std::string SchedulingClient(const CallIdentity& caller) {
  return caller.authenticated ? caller.name : PeerHost(caller.name);
}

}  // namespace sparkle
