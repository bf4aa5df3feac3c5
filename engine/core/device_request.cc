#include "engine/core/device_request.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace sparkle {

std::string DeviceRequest::ToString() const {
  switch (kind) {
    case Kind::kAuto:
      return "auto";
    case Kind::kCpu:
      return "cpu";
    case Kind::kAnyGpu:
      return "gpu";
    case Kind::kGpu:
      return absl::StrCat("gpu:", gpu);
  }
  return "auto";
}

absl::StatusOr<DeviceRequest> ParseDeviceRequest(absl::string_view text) {
  if (text == "auto") return DeviceRequest::Auto();
  if (text == "cpu") return DeviceRequest::Cpu();
  if (text == "gpu") return DeviceRequest::AnyGpu();
  int index = -1;
  if (absl::StartsWith(text, "gpu:") && text.size() > 4 && text[4] >= '0' && text[4] <= '9' &&
      absl::SimpleAtoi(text.substr(4), &index) && index >= 0 && index < 1024) {
    return DeviceRequest::Gpu(index);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "device must be auto, cpu, gpu or gpu:<index> (index in [0, 1023]); was '", text, "'"));
}

}  // namespace sparkle
