// JSON renderings of sparklectl's protobuf answers (`--json`): proto field names, every field
// printed (zeros included), so that scripts can rely on a key being present.
#pragma once

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/message.h"

namespace sparkle::client {

// One JSON object; `pretty` spreads it over indented lines. No trailing newline.
absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message, bool pretty);

// The pretty form followed by a newline.
absl::Status PrintJson(const google::protobuf::Message& message, std::ostream& out);

}  // namespace sparkle::client
