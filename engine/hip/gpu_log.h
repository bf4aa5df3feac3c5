// GpuLog: logging for .hip files. nvcc 13 cannot compile Debian's spdlog (fmt 9's consteval
// format strings fail in C++20 device-aware compilation), so .hip files build their message
// with absl::StrCat and hand it to these functions, which the host compiler builds (gpu_log.cc).
#pragma once

#include <string>

namespace sparkle::hip {

void LogGpuInfo(const std::string& message);
void LogGpuWarning(const std::string& message);
void LogGpuError(const std::string& message);
void LogGpuCritical(const std::string& message);

}  // namespace sparkle::hip
