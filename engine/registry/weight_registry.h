// WeightRegistry: weight tensors registered once and named by a content id, so that inference
// requests can name a `weight_id` instead of sending the weights. Registering the same bytes
// (shape, bias and weights) again returns the same id and changes nothing.
//
// Memory: every tensor's bytes, and the copies backends prepack from it (PrepackedWeights), are
// drawn from one budget; a registration that does not fit is RESOURCE_EXHAUSTED naming the flag
// that raises it; a prepacked copy that does not fit is not kept (the backend then treats the
// weights like any request's).
//
// Unregister is deferred: the id is gone at once (new requests naming it get NOT_FOUND), and the
// memory is released when the last in-flight job that uses it completes.
//
// Persistence (Options::dir): each registration is written to the directory atomically before it
// is acknowledged, and removed on Unregister; Create loads the directory, logging and skipping
// any file that is corrupt (its content must hash to its name) or does not fit in the budget.
// Thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "engine/core/memory_budget.h"
#include "engine/registry/registered_weight.h"
#include "engine/registry/weight_upload.h"

namespace sparkle {

class WeightRegistry {
 public:
  struct Options {
    // Bytes all registered tensors and their prepacked copies may hold (plus uploads in
    // progress). Range [0, 2^50]; 0 refuses every registration.
    int64_t budget_bytes = int64_t{2} << 30;
    // Directory for persistence (created if missing); empty: registrations live in memory only.
    std::string dir;
    // How long an upload may receive nothing before whatever feeds it (the RegisterWeights RPC,
    // server/weights_service.h) cancels it, returning its reservation and its buffer. Range
    // [1 ms, 1 h]. The registry itself only validates it.
    absl::Duration upload_idle_timeout = absl::Seconds(30);
  };

  struct Registered {
    std::shared_ptr<const RegisteredWeight> weight;
    bool already_registered = false;  // the same bytes were registered before
  };

  struct Snapshot {
    int64_t weights = 0;       // registered tensors
    int64_t bytes = 0;         // budget used: tensors, prepacked copies, uploads in progress,
                               // and unregistered tensors still used by in-flight jobs
    int64_t budget_bytes = 0;
  };

  // INVALID_ARGUMENT for options out of range; INTERNAL when the directory cannot be created or
  // listed. Files that cannot be loaded are logged and skipped.
  static absl::StatusOr<std::unique_ptr<WeightRegistry>> Create(const Options& options);

  // Starts an upload (see WeightUpload::Begin for its errors).
  absl::StatusOr<std::unique_ptr<WeightUpload>> BeginUpload(WeightHeader header);
  // Registers a complete upload: INVALID_ARGUMENT while bytes are missing; INTERNAL when
  // persistence fails (nothing is registered then).
  absl::StatusOr<Registered> Finish(std::unique_ptr<WeightUpload> upload);
  // BeginUpload + one Append + Finish.
  absl::StatusOr<Registered> Register(WeightHeader header, absl::Span<const float> weight);

  // The tensor named `id`, counted in use until the returned pointer (and its copies) are
  // dropped, and counted as one use. NOT_FOUND for an unknown id.
  absl::StatusOr<std::shared_ptr<const RegisteredWeight>> Acquire(absl::string_view id);

  // Registered tensors, oldest first.
  std::vector<std::shared_ptr<const RegisteredWeight>> List() const;

  // NOT_FOUND for an unknown id. Deferred release, see above. INTERNAL when its file cannot be
  // removed (the tensor is unregistered anyway; the file would be loaded again at restart).
  absl::Status Unregister(absl::string_view id);

  Snapshot snapshot() const;  // cheap: one short lock
  const Options& options() const { return options_; }

 private:
  struct Lease;  // counts a tensor in use while a job holds it (Acquire)
  explicit WeightRegistry(const Options& options);
  absl::Status LoadDirectory();
  // Registers a complete upload (Digest done): the existing entry if its id is registered,
  // else a new one, written to the directory first when persistence is on.
  absl::StatusOr<Registered> Commit(std::unique_ptr<WeightUpload> upload, const std::string& id,
                                    absl::Time registered_at, bool persist);

  const Options options_;
  const std::shared_ptr<MemoryBudget> budget_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<RegisteredWeight>> weights_ ABSL_GUARDED_BY(mu_);
  uint64_t next_key_ ABSL_GUARDED_BY(mu_) = 2;  // even, see RegisteredWeight::weight_key
  // Serialises registrations and removals, so that a file is written before its entry is
  // visible and removed after it is gone. Taken before mu_, never while holding it.
  absl::Mutex file_mu_ ABSL_ACQUIRED_BEFORE(mu_);
};

}  // namespace sparkle
