// ShapeBatcher: the dynamic batcher. Jobs wait in per-shape-key queues (key = geometry without N,
// plus weight_key, the job's device request and its priority level; weight_key 0 or
// batchable=false means "batch alone"); consumers take batches formed along N.
//
// Admission is bounded in jobs and bytes. A queue is due when its jobs reach max_batch_size (sum
// of N) or max_batch_bytes, when its oldest job has waited max_queue_delay, or when the batcher
// is closed. Expired (deadline) and cancelled jobs are taken out at batch formation and completed
// there (DEADLINE_EXCEEDED / CANCELLED), never handed to a consumer.
//
// Scheduling (docs/operations.md "Scheduling"):
//  - Levels. Priority level 1 is served first. Aging: a level is served as if one level higher
//    for every priority_aging its oldest queued job has waited (never above level 1), so a low
//    level cannot starve. Among due queues the best effective level wins; between levels of the
//    same effective level, the one whose oldest job is older.
//  - Clients, inside a level: start-time fair queueing by cost. Each job gets a virtual start tag
//    S = max(V, F_last(client)) and its client's finish tag becomes F = S + flops (so a client is
//    charged for its own jobs' FLOP, even in a batch shared with others); V, the level's virtual
//    time, is the largest start tag taken into a batch so far. Among the level's due queues the
//    one whose smallest tag is smallest goes first, and a batch takes its queue's jobs in tag
//    order (Batch::jobs lists them in that order). A client that keeps many jobs queued thus
//    runs ahead in virtual time, and a job of a client with nothing queued starts at V: it goes
//    into the next batch formed for its level (the next but one when its shape key differs
//    from a full queue that was already due). A level that empties starts over at V = 0 (no
//    client banks credit while idle).
// Every operation is O(levels · log n) (levels ≤ 16).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/core/batch.h"
#include "base/clock.h"
#include "engine/core/job.h"

namespace sparkle {

// What is waiting, for status reports.
struct QueueSnapshot {
  struct ShapeQueue {
    std::string shape;  // Conv2dParams::ShapeClass() of the key
    int64_t jobs = 0;
    int64_t bytes = 0;
  };
  int64_t jobs = 0;
  int64_t bytes = 0;
  std::vector<ShapeQueue> queues;  // one per non-empty key, most jobs first
  // One row per priority level, 1..priority_levels in order, empty levels included.
  struct LevelQueue {
    int level = 0;  // 1 is served first
    int64_t jobs = 0;
    int64_t bytes = 0;
    absl::Duration oldest_wait;  // how long the level's oldest job has waited; 0 when empty
  };
  std::vector<LevelQueue> levels;
};

class ShapeBatcher {
 public:
  struct Options {
    // Largest sum of N in one batch. Range [1, 65536]. A single job larger than this still runs,
    // alone.
    int64_t max_batch_size = 64;
    // Largest sum of job bytes (input + weight + bias + output, FP32) in one batch, in bytes.
    // Range [1, 2^40]. A single job larger than this still runs, alone.
    int64_t max_batch_bytes = int64_t{64} << 20;
    // How long the oldest job of a key may wait for its batch to fill before the partial batch
    // is due. Range [0, 1 s]. 0: a batch is due as soon as a job is queued (batches then form
    // from whatever accumulated while consumers were busy).
    absl::Duration max_queue_delay = absl::ZeroDuration();
    // Admission bounds: RESOURCE_EXHAUSTED once either would be exceeded. Ranges [1, 2^31] jobs,
    // [1, 2^50] bytes (job bytes as above).
    int64_t max_queued_jobs = 4096;
    int64_t max_queued_bytes = int64_t{2} << 30;
    // Priority levels 1..priority_levels (1 served first); a job's priority 0 means
    // priority_levels (the default, lowest level). Range [1, 16].
    int priority_levels = 2;
    // Aging: a queued job's level is served as if one level higher for every priority_aging
    // that the level's oldest job has waited (never above level 1). Range [0, 1 h]; 0: off.
    absl::Duration priority_aging = absl::Seconds(1);
    // Time source; tests pass a FakeClock. Not owned, must outlive the batcher.
    Clock* clock = Clock::Real();
  };

  // INVALID_ARGUMENT naming the field and value when an option is out of range.
  static absl::StatusOr<std::unique_ptr<ShapeBatcher>> Create(const Options& options);
  ~ShapeBatcher();  // completes any job still queued with UNAVAILABLE ("engine shut down")

  // Takes ownership of *job and nulls it iff OK. Errors leave *job with the caller, done not
  // called: RESOURCE_EXHAUSTED (queue full: the message says which bound, jobs or bytes, and the
  // option), DEADLINE_EXCEEDED (deadline already passed), INVALID_ARGUMENT (priority out of
  // range), UNAVAILABLE (closed). Thread-safe, never blocks on a consumer.
  absl::Status Enqueue(std::unique_ptr<Conv2dJob>* job);

  // Blocks until a batch is due and returns it, or returns null once the batcher is closed and
  // empty. Thread-safe; any number of consumers. Uses the clock's Now() and real waiting.
  std::unique_ptr<Batch> NextBatch();

  // The non-blocking core of NextBatch, for tests with a FakeClock: the best due batch at `now`,
  // or null with *next_due set to when the earliest partial batch becomes due
  // (InfiniteFuture if nothing is queued). Completes expired/cancelled jobs it meets.
  std::unique_ptr<Batch> TryFormBatch(absl::Time now, absl::Time* next_due);

  // Stops admission (UNAVAILABLE from then on) and makes every queued batch due at once, so
  // consumers drain the queue; NextBatch returns null when it is empty. Idempotent.
  void Close();

  QueueSnapshot Snapshot() const;
  int64_t NumQueuedJobs() const;
  const Options& options() const;

 private:
  // Implementation details follow; API users need not read.
  struct Impl;
  explicit ShapeBatcher(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sparkle
