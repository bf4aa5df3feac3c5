// DeviceRequest: where a job asks to run (docs/protocol.md `device` parameter, or the server's
// default policy): "auto" (the router decides), "cpu", "gpu" (the best healthy GPU) or
// "gpu:<index>" (that GPU). An explicit device is never silently replaced by another.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sparkle {

struct DeviceRequest {
  enum class Kind { kAuto, kCpu, kAnyGpu, kGpu };
  Kind kind = Kind::kAuto;
  int gpu = -1;  // the GPU ordinal when kind == kGpu, else -1

  static DeviceRequest Auto() { return {}; }
  static DeviceRequest Cpu() { return {Kind::kCpu, -1}; }
  static DeviceRequest AnyGpu() { return {Kind::kAnyGpu, -1}; }
  static DeviceRequest Gpu(int index) { return {Kind::kGpu, index}; }

  bool is_auto() const { return kind == Kind::kAuto; }
  bool wants_gpu() const { return kind == Kind::kAnyGpu || kind == Kind::kGpu; }
  // "auto", "cpu", "gpu" or "gpu:3".
  std::string ToString() const;

  bool operator==(const DeviceRequest& o) const { return kind == o.kind && gpu == o.gpu; }
};

// Parses "auto" | "cpu" | "gpu" | "gpu:<index>" (index in [0, 1023]); INVALID_ARGUMENT naming the
// text otherwise. Whether the device exists is not checked here (the engine does, at Submit).
absl::StatusOr<DeviceRequest> ParseDeviceRequest(absl::string_view text);

}  // namespace sparkle
