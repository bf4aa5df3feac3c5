// WeightUpload: one weight tensor arriving in chunks (e.g. a client-streaming RPC), hashed as it
// comes. Begin validates the header, refuses a tensor larger than the budget's free room at that
// moment, and reserves only the bias bytes; Append reserves each chunk's bytes in the registry's
// budget as they arrive (so a header that declares a huge tensor and then sends nothing holds
// nothing of the budget), and checks that no more than the declared bytes arrive; Digest checks
// that all of them did. Dropping an upload that was not made into a RegisteredWeight registers
// nothing and returns its reservation.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "engine/core/data_type.h"
#include "engine/core/memory_budget.h"
#include "engine/registry/registered_weight.h"

namespace sparkle {

struct WeightHeader {
  std::string label;           // free text for operators, at most 1024 bytes
  std::vector<int64_t> shape;  // [K, C/groups, R, S], each in [1, 2^31]
  std::string datatype = "FP32";  // FP32, BF16 or FP16: the weight bytes' and the bias's type
  std::vector<float> bias;        // empty (none) or K values, exact in `datatype`
};

class WeightUpload {
 public:
  // INVALID_ARGUMENT for a bad header (rank, dims, datatype other than FP32/BF16/FP16, bias size,
  // label length); the bias is rounded to the datatype (exact for values that came from it); RESOURCE_EXHAUSTED (naming the registry option budget_bytes) when the declared bytes do not fit in
  // what `budget` has free now, or the bias bytes cannot be reserved.
  static absl::StatusOr<std::unique_ptr<WeightUpload>> Begin(WeightHeader header,
                                                             std::shared_ptr<MemoryBudget> budget);
  ~WeightUpload();
  WeightUpload(const WeightUpload&) = delete;
  WeightUpload& operator=(const WeightUpload&) = delete;

  // The next slice of the weight bytes (little-endian, of the header's datatype, row-major), any size (empty is a
  // no-op). INVALID_ARGUMENT when it would go past the declared size; RESOURCE_EXHAUSTED (naming
  // the budget flag) when its bytes do not fit in the budget (other uploads or registrations
  // took the room since Begin); the upload is unchanged after an error.
  absl::Status Append(absl::string_view bytes);

  // The content id, "sha256:" + 64 lowercase hex digits, over a version tag, the shape, the
  // datatype (when not FP32, so FP32 ids are those of earlier versions), the bias and the weight
  // bytes (the label is not part of it). INVALID_ARGUMENT while bytes are missing. Idempotent.
  absl::StatusOr<std::string> Digest();

  // Makes the registered tensor (after Digest succeeded), handing it this upload's bytes and
  // reservation; the upload is empty afterwards.
  std::shared_ptr<RegisteredWeight> Build(uint64_t weight_key, absl::Time registered_at);

  const WeightHeader& header() const { return header_; }
  int64_t total_bytes() const { return weight_bytes_; }  // declared weight bytes
  int64_t received_bytes() const { return received_; }
  int64_t reserved_bytes() const { return reserved_; }  // held in the budget now

 private:
  struct Hasher;
  WeightUpload(WeightHeader header, std::shared_ptr<MemoryBudget> budget, int64_t reserved);
  absl::Status NoRoom(int64_t bytes) const;  // RESOURCE_EXHAUSTED naming budget_bytes

  WeightHeader header_;
  std::shared_ptr<MemoryBudget> budget_;
  int64_t reserved_;  // bias + received weight bytes held in budget_ until Build or destruction
  DataType dtype_ = DataType::kFp32;
  std::vector<char> bias_;  // the bias in dtype_
  int64_t weight_bytes_;
  int64_t received_ = 0;
  AlignedFloats weight_;
  std::unique_ptr<Hasher> hasher_;
  std::string id_;  // set by Digest
};

}  // namespace sparkle
