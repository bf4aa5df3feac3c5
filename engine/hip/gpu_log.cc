// See gpu_log.h.
#include "engine/hip/gpu_log.h"

#include "spdlog/spdlog.h"

namespace sparkle::hip {

void LogGpuInfo(const std::string& message) { spdlog::info("{}", message); }
void LogGpuWarning(const std::string& message) { spdlog::warn("{}", message); }
void LogGpuError(const std::string& message) { spdlog::error("{}", message); }
void LogGpuCritical(const std::string& message) { spdlog::critical("{}", message); }

}  // namespace sparkle::hip
