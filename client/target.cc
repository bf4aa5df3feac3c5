#include "client/target.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace sparkle::client {
namespace {

enum class Family { kIpv4, kIpv6 };

struct Endpoint {
  Family family;
  std::string host;  // without brackets
  std::string port;
  std::string Text() const {
    return family == Family::kIpv6 ? absl::StrCat("[", host, "]:", port)
                                   : absl::StrCat(host, ":", port);
  }
};

bool ValidPort(absl::string_view port) {
  int value = 0;
  return !port.empty() && absl::SimpleAtoi(port, &value) && value > 0 && value <= 65535;
}

// "1.2.3.4:80" or "[::1]:80".
absl::StatusOr<Endpoint> ParseEndpoint(absl::string_view text) {
  const auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--target list entry \"", text, "\": ", why,
        " (list entries are IP:PORT or [IPv6]:PORT; use dns:///NAME:PORT for a DNS name)"));
  };
  Endpoint e;
  if (absl::StartsWith(text, "[")) {
    const size_t close = text.find(']');
    if (close == absl::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return bad("expected [IPv6]:PORT");
    }
    e.family = Family::kIpv6;
    e.host = std::string(text.substr(1, close - 1));
    e.port = std::string(text.substr(close + 2));
  } else {
    const size_t colon = text.rfind(':');
    if (colon == absl::string_view::npos) return bad("no port");
    e.family = Family::kIpv4;
    e.host = std::string(text.substr(0, colon));
    e.port = std::string(text.substr(colon + 1));
  }
  if (!ValidPort(e.port)) return bad("the port must be in [1, 65535]");
  unsigned char buf[sizeof(struct in6_addr)];
  const int af = e.family == Family::kIpv6 ? AF_INET6 : AF_INET;
  if (inet_pton(af, e.host.c_str(), buf) != 1) {
    return bad(e.family == Family::kIpv6 ? "not an IPv6 address" : "not an IPv4 address");
  }
  return e;
}

}  // namespace

absl::StatusOr<Target> ParseTarget(absl::string_view text) {
  text = absl::StripAsciiWhitespace(text);
  if (text.empty()) return absl::InvalidArgumentError("--target must not be empty");
  Target target;
  if (absl::StartsWith(text, "dns:")) {
    absl::string_view rest = text.substr(4);
    if (absl::StartsWith(rest, "//")) {  // dns://[authority]/host:port
      const size_t slash = rest.find('/', 2);
      if (slash == absl::string_view::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat("--target \"", text, "\": expected dns:///NAME:PORT"));
      }
      rest = rest.substr(slash + 1);
    }
    const size_t colon = rest.rfind(':');
    if (rest.empty() || colon == absl::string_view::npos || !ValidPort(rest.substr(colon + 1))) {
      return absl::InvalidArgumentError(
          absl::StrCat("--target \"", text, "\": expected dns:///NAME:PORT"));
    }
    target.channel_target = std::string(text);
    target.round_robin = true;
    target.dns_host_port = std::string(rest);
    return target;
  }
  // gRPC's own address lists: "ipv4:a:p,b:p" / "ipv6:[a]:p,[b]:p".
  absl::string_view list = text;
  bool prefixed = false;
  if (absl::StartsWith(text, "ipv4:") || absl::StartsWith(text, "ipv6:")) {
    list = text.substr(5);
    prefixed = true;
  }
  if (!prefixed && !absl::StrContains(text, ',')) {
    target.channel_target = std::string(text);  // one daemon: any gRPC target, unchanged
    target.daemons = {target.channel_target};
    return target;
  }
  std::vector<Endpoint> endpoints;
  for (absl::string_view entry : absl::StrSplit(list, ',')) {
    entry = absl::StripAsciiWhitespace(entry);
    if (entry.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("--target \"", text, "\": empty entry"));
    }
    absl::StatusOr<Endpoint> e = ParseEndpoint(entry);
    if (!e.ok()) return e.status();
    if (!endpoints.empty() && e->family != endpoints.front().family) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--target \"", text, "\": mixes IPv4 and IPv6 addresses (gRPC's ipv4:/ipv6: "
          "lists hold one family; use dns:///NAME:PORT for both)"));
    }
    endpoints.push_back(*std::move(e));
  }
  std::vector<std::string> texts;
  for (const Endpoint& e : endpoints) texts.push_back(e.Text());
  target.channel_target =
      absl::StrCat(endpoints.front().family == Family::kIpv6 ? "ipv6:" : "ipv4:",
                   absl::StrJoin(texts, ","));
  target.round_robin = true;
  target.daemons = std::move(texts);
  return target;
}

absl::StatusOr<std::vector<std::string>> DaemonTargets(const Target& target) {
  if (target.dns_host_port.empty()) return target.daemons;
  const size_t colon = target.dns_host_port.rfind(':');
  std::string host = target.dns_host_port.substr(0, colon);
  const std::string port = target.dns_host_port.substr(colon + 1);
  if (absl::StartsWith(host, "[") && absl::EndsWith(host, "]")) {
    host = host.substr(1, host.size() - 2);
  }
  struct addrinfo hints;
  std::memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  struct addrinfo* found = nullptr;
  const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &found);
  if (rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot resolve ", target.dns_host_port, ": ", gai_strerror(rc)));
  }
  std::vector<std::string> daemons;
  for (const struct addrinfo* a = found; a != nullptr; a = a->ai_next) {
    char text[INET6_ADDRSTRLEN] = {};
    std::string address;
    if (a->ai_family == AF_INET) {
      const auto* in = reinterpret_cast<const struct sockaddr_in*>(a->ai_addr);
      inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
      address = absl::StrCat(text, ":", port);
    } else if (a->ai_family == AF_INET6) {
      const auto* in6 = reinterpret_cast<const struct sockaddr_in6*>(a->ai_addr);
      inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
      address = absl::StrCat("[", text, "]:", port);
    } else {
      continue;
    }
    if (std::find(daemons.begin(), daemons.end(), address) == daemons.end()) {
      daemons.push_back(std::move(address));
    }
  }
  freeaddrinfo(found);
  if (daemons.empty()) {
    return absl::UnavailableError(absl::StrCat(target.dns_host_port, " has no address"));
  }
  return daemons;
}

}  // namespace sparkle::client
