// WeightCache: gives weights sent with a request a confirmed identity (WeightId), so that jobs
// with the same weights batch together and share reordered (CPU) or resident (GPU) copies.
//
// Identify reads the weights once to hash them (XXH3-128, libxxhash) and, when an entry with
// that hash is cached, once more to compare them with the entry's copy; only equal bytes get the
// entry's id. A new hash copies the bytes into a new entry with a new id. The hash only finds a
// candidate: weights crafted to collide with another client's get no identity (they run alone,
// uncached), never the other's id. Ids are never reused: an evicted entry's id names nothing
// again, so caches downstream keyed by id (CpuBackend, GPUs) cannot serve stale bytes.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/core/data_type.h"
#include "engine/core/weight_id.h"

namespace sparkle {

class WeightCache {
 public:
  struct Options {
    // Bytes of weight + bias copies kept (LRU) to confirm identities. Range [0, 2^40]; 0: weights
    // sent with requests never get an identity (never batched, never cached downstream).
    int64_t max_bytes = int64_t{256} << 20;
    // Test seam: replaces XXH3-128 (e.g. by a constant, to make every pair of weights
    // collide). Null in production.
    std::function<std::pair<uint64_t, uint64_t>(absl::Span<const char>, absl::Span<const char>)>
        hash_for_testing;
  };

  struct Stats {
    int64_t hits = 0;        // identified as a cached entry (hash and bytes equal)
    int64_t inserts = 0;     // new entries
    int64_t collisions = 0;  // hash equal, bytes different: no identity given
    int64_t races = 0;       // another thread inserted the same hash meanwhile: none given
    int64_t no_room = 0;     // larger than max_bytes: no identity given
    int64_t entries = 0;
    int64_t bytes = 0;
  };

  // INVALID_ARGUMENT naming the field when out of range.
  static absl::StatusOr<std::unique_ptr<WeightCache>> Create(const Options& options);
  ~WeightCache();

  // The confirmed identity of the bytes of `weight` followed by `bias` (empty for no bias) as
  // elements of `type` (part of the identity: equal bytes of two datatypes are two weights),
  // or an empty id (see the header comment). Thread-safe; hashing, comparing and copying run
  // outside the lock.
  WeightId Identify(DataType type, absl::Span<const char> weight, absl::Span<const char> bias);
  // FP32 weights.
  WeightId Identify(absl::Span<const float> weight, absl::Span<const float> bias) {
    return Identify(DataType::kFp32, AsBytes(weight), AsBytes(bias));
  }
  static absl::Span<const char> AsBytes(absl::Span<const float> values) {
    return {reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float)};
  }

  Stats stats() const;

 private:
  struct Impl;
  explicit WeightCache(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sparkle
