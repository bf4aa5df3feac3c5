// Small text helpers shared by sparklectl's human-readable outputs.
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace sparkle::client {

std::string YesNo(bool b);
// 1536 → "1.5 KiB"; below 1 KiB "512 B".
std::string HumanBytes(double bytes);
// "1h2m3s" at one-second resolution (sub-second uptime is noise to an operator).
std::string HumanUptime(double seconds);
// `text` as a JSON string literal, quotes included.
std::string JsonQuote(absl::string_view text);

}  // namespace sparkle::client
