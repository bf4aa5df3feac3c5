// Weight files: how the WeightRegistry persists a registration in its directory, one file per
// tensor, "<64 hex digits of the id>.weights":
//
//   sparkle-weights 1\n
//   label <C-escaped label>\n
//   shape <K> <C/groups> <R> <S>\n
//   bias <0|1>\n
//   registered <unix seconds>\n
//   \n
//   <K FP32 bias values if bias is 1><the weight bytes>     (little-endian FP32)
//
// Writes are atomic (a temporary file in the same directory, fsync, rename, fsync of the
// directory), so a crash leaves either the old state or the new one, never half a file.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/core/memory_budget.h"
#include "engine/registry/registered_weight.h"
#include "engine/registry/weight_upload.h"

namespace sparkle {

inline constexpr char kWeightFileSuffix[] = ".weights";

// "<dir>/<hex>.weights" for an id "sha256:<hex>".
std::string WeightFilePath(const std::string& dir, const std::string& id);

// INTERNAL (with the OS's reason) when the file cannot be written.
absl::Status WriteWeightFile(const std::string& path, const RegisteredWeight& weight);

struct LoadedWeightFile {
  std::unique_ptr<WeightUpload> upload;  // complete: every byte appended
  absl::Time registered_at;
};
// Reads a weight file into an upload reserved in `budget`. DATA_LOSS for a malformed or
// truncated file; RESOURCE_EXHAUSTED when it does not fit in the budget; NOT_FOUND / INTERNAL
// when it cannot be read. The caller checks that the upload's Digest matches the file name.
absl::StatusOr<LoadedWeightFile> ReadWeightFile(const std::string& path,
                                                std::shared_ptr<MemoryBudget> budget);

}  // namespace sparkle
