// RegisteredWeight: one weight tensor (and optional bias) held by the WeightRegistry, immutable
// and content-addressed. Jobs hold it through a shared_ptr that WeightRegistry::Acquire returns,
// which keeps the bytes alive and the tensor counted in use while they are in flight.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/core/data_type.h"
#include "engine/core/job.h"
#include "engine/core/memory_budget.h"
#include "engine/core/prepacked_weights.h"

namespace sparkle {

// 64-byte-aligned floats (oneDNN and vector loads prefer it).
struct AlignedFree {
  void operator()(float* data) const;
};
using AlignedFloats = std::unique_ptr<float[], AlignedFree>;
// Null for 0 elements; throws std::bad_alloc when out of memory.
AlignedFloats AllocateAligned(int64_t elements);

class RegisteredWeight {
 public:
  // `plain_bytes` were reserved in `budget` for this tensor; they are returned on destruction.
  // `weight` and `bias` hold elements of `dtype` (bias: K of them, or none).
  RegisteredWeight(std::string id, std::string label, std::array<int64_t, 4> shape,
                   DataType dtype, AlignedFloats weight, std::vector<char> bias, uint64_t weight_key,
                   absl::Time registered_at, std::shared_ptr<MemoryBudget> budget,
                   int64_t plain_bytes);
  ~RegisteredWeight();
  RegisteredWeight(const RegisteredWeight&) = delete;
  RegisteredWeight& operator=(const RegisteredWeight&) = delete;

  // "sha256:" + 64 hex digits over the shape, bias and weight bytes (WeightUpload).
  const std::string& id() const { return id_; }
  const std::string& label() const { return label_; }
  const std::array<int64_t, 4>& shape() const { return shape_; }  // [K, C/groups, R, S]
  int64_t k() const { return shape_[0]; }
  int64_t weight_elements() const { return shape_[0] * shape_[1] * shape_[2] * shape_[3]; }
  DataType dtype() const { return dtype_; }  // of the weight and the bias
  bool has_bias() const { return !bias_.empty(); }
  const void* weight() const { return weight_.get(); }
  const void* bias() const { return has_bias() ? bias_.data() : nullptr; }  // K elements
  // This registration's key: unique in the process and never reused, so it never names other
  // bytes and needs no compare (the engine's WeightId::Registered). Even: the engine's key for
  // weights sent with a request is odd (engine.cc).
  uint64_t weight_key() const { return weight_key_; }
  absl::Time registered_at() const { return registered_at_; }

  // Backends' copies of the weights (kept while the tensor lives; their bytes count in the
  // registry's budget). Thread-safe.
  PrepackedWeights& prepacked() const { return prepacked_; }

  int64_t plain_bytes() const { return plain_bytes_; }  // weight + bias
  int64_t bytes() const { return plain_bytes_ + prepacked_.bytes(); }
  int64_t in_use() const { return in_use_.load(std::memory_order_relaxed); }  // jobs holding it
  int64_t uses() const { return uses_.load(std::memory_order_relaxed); }      // since registered

 private:
  friend class WeightRegistry;  // counts in_use_ and uses_ (Acquire)

  const std::string id_;
  const std::string label_;
  const std::array<int64_t, 4> shape_;
  const DataType dtype_;
  const AlignedFloats weight_;
  const std::vector<char> bias_;
  const uint64_t weight_key_;
  const absl::Time registered_at_;
  const std::shared_ptr<MemoryBudget> budget_;
  const int64_t plain_bytes_;
  mutable PrepackedWeights prepacked_;
  mutable std::atomic<int64_t> in_use_{0};
  mutable std::atomic<int64_t> uses_{0};
};

// Points job's weight, bias and weight_key at job->registered_weight (non-null).
// INVALID_ARGUMENT when the job's K, C/groups, R, S, has_bias or datatype do not match the
// registration.
absl::Status BindRegisteredWeight(Conv2dJob* job);

}  // namespace sparkle
