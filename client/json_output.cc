#include "client/json_output.h"

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"

namespace sparkle::client {

absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message, bool pretty) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = pretty;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string text;
  const auto converted = google::protobuf::util::MessageToJsonString(message, &text, options);
  if (!converted.ok()) {
    return absl::InternalError(absl::StrCat("cannot render JSON: ", converted.ToString()));
  }
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

absl::Status PrintJson(const google::protobuf::Message& message, std::ostream& out) {
  absl::StatusOr<std::string> text = ToJson(message, /*pretty=*/true);
  if (!text.ok()) return text.status();
  out << *text << '\n';
  return absl::OkStatus();
}

}  // namespace sparkle::client
