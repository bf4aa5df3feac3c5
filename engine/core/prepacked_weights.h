// PrepackedWeights: a backend's copies of one immutable weight tensor in the layouts its kernels
// want (oneDNN-reordered or Winograd-transformed on the CPU; device-resident on a GPU). Owned by
// the tensor's owner (a registered weight, engine/registry), so the copies live exactly as long
// as the tensor does and no cache LRU evicts them. Their bytes are drawn from a MemoryBudget:
// a copy that does not fit is refused, and the backend then treats the weights as it would any
// caller's. Thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/synchronization/mutex.h"
#include "engine/core/memory_budget.h"

namespace sparkle {

class PrepackedWeights {
 public:
  // One backend's copy; each backend derives its own type and recognises it with `match`.
  struct Copy {
    virtual ~Copy() = default;
  };
  using Match = absl::FunctionRef<bool(const Copy&)>;

  // `budget` may be null (unbounded).
  explicit PrepackedWeights(std::shared_ptr<MemoryBudget> budget);
  ~PrepackedWeights();  // returns the copies' bytes to the budget
  PrepackedWeights(const PrepackedWeights&) = delete;
  PrepackedWeights& operator=(const PrepackedWeights&) = delete;

  // The first stored copy that `match` accepts, or null.
  std::shared_ptr<const Copy> Find(Match match) const;
  // Stores `copy` (`bytes` of memory) and returns it, unless a copy that `match` accepts is
  // already stored (another thread made it meanwhile: that one is returned and `copy` dropped)
  // or the budget refuses the bytes (null; nothing stored).
  std::shared_ptr<const Copy> Add(Match match, std::shared_ptr<const Copy> copy, int64_t bytes);

  int64_t bytes() const;    // of the stored copies
  int64_t refused() const;  // copies the budget refused so far

 private:
  const std::shared_ptr<MemoryBudget> budget_;
  mutable absl::Mutex mu_;
  std::vector<std::shared_ptr<const Copy>> copies_ ABSL_GUARDED_BY(mu_);
  int64_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t refused_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace sparkle
