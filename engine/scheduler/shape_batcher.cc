#include "engine/scheduler/shape_batcher.h"

#include <algorithm>
#include <deque>
#include <set>
#include <tuple>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/status_macros.h"

namespace sparkle {
namespace {

constexpr int64_t kMaxBatchSizeLimit = 65536;
constexpr int64_t kMaxBatchBytesLimit = int64_t{1} << 40;
constexpr absl::Duration kMaxQueueDelayLimit = absl::Seconds(1);
constexpr int64_t kMaxQueuedJobsLimit = int64_t{1} << 31;
constexpr int64_t kMaxQueuedBytesLimit = int64_t{1} << 50;
constexpr int kMaxPriorityLevels = 16;
// Emptied queues kept for reuse: a key that drains and refills (the common case at a steady
// rate) then costs no allocation, and neither does a weight_key-0 job, which always gets a new
// queue. Bounded so that a burst of distinct keys does not pin memory forever.
constexpr size_t kMaxSpareQueues = 64;

absl::Status OutOfRange(const char* field, int64_t value, const char* range) {
  return absl::InvalidArgumentError(absl::StrCat(field, " must be in ", range, "; was ", value));
}

absl::Status ValidateOptions(const ShapeBatcher::Options& o) {
  if (o.max_batch_size < 1 || o.max_batch_size > kMaxBatchSizeLimit) {
    return OutOfRange("max_batch_size", o.max_batch_size, "[1, 65536]");
  }
  if (o.max_batch_bytes < 1 || o.max_batch_bytes > kMaxBatchBytesLimit) {
    return OutOfRange("max_batch_bytes", o.max_batch_bytes, "[1, 2^40]");
  }
  if (o.max_queue_delay < absl::ZeroDuration() || o.max_queue_delay > kMaxQueueDelayLimit) {
    return absl::InvalidArgumentError(absl::StrCat("max_queue_delay must be in [0, 1s]; was ",
                                                   absl::FormatDuration(o.max_queue_delay)));
  }
  if (o.max_queued_jobs < 1 || o.max_queued_jobs > kMaxQueuedJobsLimit) {
    return OutOfRange("max_queued_jobs", o.max_queued_jobs, "[1, 2^31]");
  }
  if (o.max_queued_bytes < 1 || o.max_queued_bytes > kMaxQueuedBytesLimit) {
    return OutOfRange("max_queued_bytes", o.max_queued_bytes, "[1, 2^50]");
  }
  if (o.priority_levels < 1 || o.priority_levels > kMaxPriorityLevels) {
    return OutOfRange("priority_levels", o.priority_levels, "[1, 16]");
  }
  if (o.clock == nullptr) return absl::InvalidArgumentError("clock must not be null");
  return absl::OkStatus();
}

// Identity of one queue. Hash and equality ignore geometry.n, so that jobs differing only in N
// share a queue. `solo` is 0 for jobs with a weight identity and a unique number for jobs
// without one (weight_key 0), which therefore never share a queue. Levels are part of the key
// so that each queue holds one level and the scheduling order is per level.
struct QueueKey {
  Conv2dParams geometry;
  uint64_t weight_key = 0;
  uint64_t solo = 0;
  int level = 0;
  DeviceRequest device;  // jobs asking for different devices never share a batch

  bool operator==(const QueueKey& o) const {
    return weight_key == o.weight_key && solo == o.solo && level == o.level &&
           device == o.device && geometry.SameGeometry(o.geometry);
  }

  template <typename H>
  friend H AbslHashValue(H h, const QueueKey& key) {
    const Conv2dParams& g = key.geometry;
    return H::combine(std::move(h), g.c, g.h, g.w, g.k, g.r, g.s, g.stride_h, g.stride_w, g.pad_h,
                      g.pad_w, g.dilation_h, g.dilation_w, g.groups, g.has_bias, g.layout,
                      key.weight_key, key.solo, key.level, key.device.kind, key.device.gpu);
  }
};

struct Entry {
  std::unique_ptr<Conv2dJob> job;
  int64_t bytes;  // job->bytes(), computed once at admission
  uint64_t seq;   // admission order, batcher-wide; breaks ties between equal enqueue times
};

struct Queue {
  QueueKey key;
  std::deque<Entry> entries;  // FIFO; never empty while the queue is in Impl::queues
  int64_t n = 0;              // sum of entries' params.n
  int64_t bytes = 0;          // sum of entries' bytes
  // The head entry's enqueue time and seq: the sort key of the level's sets. Only changed while
  // the queue is out of those sets (Unindex … Reindex), or a set would lose track of it.
  absl::Time head_time;
  uint64_t head_seq = 0;
  bool in_full = false;  // member of its level's `full` set
};

// Oldest head first; (time, seq) is a strict total order even if the clock stands still or
// steps back.
struct HeadOrder {
  bool operator()(const Queue* a, const Queue* b) const {
    return std::tie(a->head_time, a->head_seq) < std::tie(b->head_time, b->head_seq);
  }
};

struct Level {
  // Every non-empty queue of the level. Its first element decides whether any queue of the
  // level is due by delay: if the oldest head has not waited max_queue_delay, no head has.
  std::set<Queue*, HeadOrder> by_head;
  // The subset that reached max_batch_size or max_batch_bytes (due whatever their age).
  std::set<Queue*, HeadOrder> full;
};

// A job taken out of the queue without running, with the status to complete it with. The
// completion runs after the batcher's mutex is released: done may call back into the batcher.
struct Dropped {
  std::unique_ptr<Conv2dJob> job;
  absl::Status status;
};

}  // namespace

struct ShapeBatcher::Impl {
  explicit Impl(const Options& o) : options(o), levels(o.priority_levels + 1) {}

  const Options options;  // validated, immutable

  mutable absl::Mutex mu;
  // Signalled once per Enqueue (one consumer is enough for one job), by a consumer that leaves
  // another batch due, and for all on Close.
  absl::CondVar cv;

  bool closed ABSL_GUARDED_BY(mu) = false;  // monotonic: false → true once
  // Totals over every queue; equal to the sums of Queue::entries.size() and Queue::bytes.
  int64_t jobs ABSL_GUARDED_BY(mu) = 0;
  int64_t bytes ABSL_GUARDED_BY(mu) = 0;
  uint64_t next_seq ABSL_GUARDED_BY(mu) = 1;
  uint64_t next_solo ABSL_GUARDED_BY(mu) = 1;
  // Non-empty queues only: a queue is released as soon as its last entry leaves, so the map,
  // the level sets and Snapshot stay proportional to what is actually waiting.
  absl::flat_hash_map<QueueKey, std::unique_ptr<Queue>> queues ABSL_GUARDED_BY(mu);
  // Indexed by level, 1..priority_levels ([0] unused); each non-empty queue is in exactly one
  // level's by_head set, and in its `full` set iff in_full.
  std::vector<Level> levels ABSL_GUARDED_BY(mu);
  std::vector<std::unique_ptr<Queue>> spare ABSL_GUARDED_BY(mu);  // empty, for reuse

  bool IsFull(const Queue& q) const {
    return q.n >= options.max_batch_size || q.bytes >= options.max_batch_bytes;
  }

  void Push(std::unique_ptr<Conv2dJob> job, int64_t job_bytes, int level)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    QueueKey key{job->params, job->weight_key,
                 job->weight_key == 0 || !job->batchable ? next_solo++ : 0, level, job->device};
    auto [it, inserted] = queues.try_emplace(std::move(key));
    if (inserted) {
      if (spare.empty()) {
        it->second = std::make_unique<Queue>();
      } else {
        it->second = std::move(spare.back());
        spare.pop_back();
      }
      it->second->key = it->first;
    }
    Queue& q = *it->second;
    const uint64_t seq = next_seq++;
    const bool was_empty = q.entries.empty();
    q.n += job->params.n;
    q.bytes += job_bytes;
    jobs++;
    bytes += job_bytes;
    const absl::Time enqueued = job->timestamps.enqueued;
    q.entries.push_back(Entry{std::move(job), job_bytes, seq});
    Level& lv = levels[level];
    if (was_empty) {
      // A tail push never changes the head, so only a new queue enters by_head.
      q.head_time = enqueued;
      q.head_seq = seq;
      lv.by_head.insert(&q);
    }
    if (!q.in_full && IsFull(q)) {
      lv.full.insert(&q);
      q.in_full = true;
    }
  }

  // Takes q out of its level's sets, so that its head may change.
  void Unindex(Queue& q) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    Level& lv = levels[q.key.level];
    lv.by_head.erase(&q);
    if (q.in_full) {
      lv.full.erase(&q);
      q.in_full = false;
    }
  }

  // Undoes Unindex after the head changed; releases q (invalidating it) if it is now empty.
  void Reindex(Queue& q) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (q.entries.empty()) {
      auto it = queues.find(q.key);
      std::unique_ptr<Queue> owned = std::move(it->second);
      queues.erase(it);
      if (spare.size() < kMaxSpareQueues) {
        owned->n = owned->bytes = 0;
        spare.push_back(std::move(owned));
      }
      return;
    }
    const Entry& head = q.entries.front();
    q.head_time = head.job->timestamps.enqueued;
    q.head_seq = head.seq;
    Level& lv = levels[q.key.level];
    lv.by_head.insert(&q);
    if (IsFull(q)) {
      lv.full.insert(&q);
      q.in_full = true;
    }
  }

  // Removes q's head from the queue and the accounting. q must be unindexed.
  std::unique_ptr<Conv2dJob> PopFront(Queue& q) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    Entry& e = q.entries.front();
    std::unique_ptr<Conv2dJob> job = std::move(e.job);
    q.n -= job->params.n;
    q.bytes -= e.bytes;
    jobs--;
    bytes -= e.bytes;
    q.entries.pop_front();
    return job;
  }

  // If q's head is cancelled or expired at `now`, moves it to *dropped and returns true.
  bool DropHeadIfDead(Queue& q, absl::Time now, std::vector<Dropped>* dropped)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    const Conv2dJob& job = *q.entries.front().job;
    absl::Status status;
    if (job.IsCancelled()) {
      status = absl::CancelledError("cancelled by the client while queued");
    } else if (job.deadline <= now) {
      status = absl::DeadlineExceededError(
          absl::StrCat("deadline expired in the queue after ",
                       absl::FormatDuration(now - job.timestamps.enqueued)));
    } else {
      return false;
    }
    dropped->push_back(Dropped{PopFront(q), std::move(status)});
    return true;
  }

  // The best due queue at `now`: the lowest level that has one, then the oldest head. Null when
  // none is due, with *next_due = when the first partial batch becomes due (InfiniteFuture if
  // nothing is queued). O(levels · log queues).
  Queue* BestDue(absl::Time now, absl::Time* next_due) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    const absl::Duration delay = options.max_queue_delay;
    absl::Time earliest = absl::InfiniteFuture();
    for (int level = 1; level <= options.priority_levels; ++level) {
      Level& lv = levels[level];
      if (lv.by_head.empty()) continue;
      Queue* oldest = *lv.by_head.begin();
      // delay 0 is tested apart so that a clock stepping back cannot hold a batch.
      if (closed || delay == absl::ZeroDuration() || now - oldest->head_time >= delay) {
        return oldest;
      }
      // The oldest head is not due by age, so none of the level is: only full queues are due.
      if (!lv.full.empty()) return *lv.full.begin();
      earliest = std::min(earliest, oldest->head_time + delay);
    }
    *next_due = earliest;
    return nullptr;
  }

  // Takes a batch from the front of q (unindexed): FIFO while the sums of N and bytes stay
  // within the batch limits, the first job always. Dead jobs met on the way go to *dropped.
  // Null if q's head was dead: q then changed and must be judged due again before it batches,
  // or a live job behind an expired head would run before its own max_queue_delay.
  std::unique_ptr<Batch> Take(Queue& q, absl::Time now, std::vector<Dropped>* dropped)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    bool purged = false;
    while (!q.entries.empty() && DropHeadIfDead(q, now, dropped)) purged = true;
    if (purged || q.entries.empty()) return nullptr;

    auto batch = std::make_unique<Batch>();
    batch->params = q.entries.front().job->params;
    batch->params.n = 0;
    batch->formed = now;
    int64_t batch_bytes = 0;
    while (!q.entries.empty()) {
      if (DropHeadIfDead(q, now, dropped)) continue;
      const Entry& e = q.entries.front();
      const int64_t n = e.job->params.n;
      if (!batch->jobs.empty() && (batch->params.n + n > options.max_batch_size ||
                                   batch_bytes + e.bytes > options.max_batch_bytes)) {
        break;
      }
      batch->params.n += n;
      batch_bytes += e.bytes;
      std::unique_ptr<Conv2dJob> job = PopFront(q);
      job->timestamps.batch_formed = now;
      batch->jobs.push_back(std::move(job));
    }
    return batch;
  }

  std::unique_ptr<Batch> FormLocked(absl::Time now, absl::Time* next_due,
                                    std::vector<Dropped>* dropped)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    // Each round either returns or drops at least one job, so this ends.
    for (;;) {
      Queue* q = BestDue(now, next_due);
      if (q == nullptr) return nullptr;
      Unindex(*q);
      std::unique_ptr<Batch> batch = Take(*q, now, dropped);
      Reindex(*q);  // may release q
      if (batch != nullptr) {
        // "Call again": more may be due at the same instant.
        *next_due = jobs > 0 ? now : absl::InfiniteFuture();
        return batch;
      }
    }
  }

  // Runs the completions of dropped jobs. Must be called without mu held.
  void Complete(std::vector<Dropped>& dropped) ABSL_LOCKS_EXCLUDED(mu) {
    if (dropped.empty()) return;
    const absl::Time now = options.clock->Now();
    for (Dropped& d : dropped) {
      d.job->timestamps.done = now;
      std::move(d.job->done)(d.status, d.job->timestamps);
    }
    dropped.clear();
  }
};

absl::StatusOr<std::unique_ptr<ShapeBatcher>> ShapeBatcher::Create(const Options& options) {
  SPARKLE_RETURN_IF_ERROR(ValidateOptions(options));
  return std::unique_ptr<ShapeBatcher>(new ShapeBatcher(std::make_unique<Impl>(options)));
}

ShapeBatcher::ShapeBatcher(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ShapeBatcher::~ShapeBatcher() {
  std::vector<Dropped> left;
  {
    absl::MutexLock lock(&impl_->mu);
    impl_->closed = true;
    left.reserve(impl_->jobs);
    for (auto& [key, queue] : impl_->queues) {
      for (Entry& e : queue->entries) {
        left.push_back(Dropped{std::move(e.job), absl::UnavailableError("engine shut down")});
      }
    }
    impl_->queues.clear();
    impl_->levels.clear();
    impl_->jobs = impl_->bytes = 0;
  }
  impl_->Complete(left);
}

absl::Status ShapeBatcher::Enqueue(std::unique_ptr<Conv2dJob>* job_ptr) {
  Impl& im = *impl_;
  if (job_ptr == nullptr || *job_ptr == nullptr) {
    return absl::InvalidArgumentError("null job");
  }
  Conv2dJob& job = **job_ptr;
  if (!job.done) return absl::InvalidArgumentError("job has no done callback");
  const int levels = im.options.priority_levels;
  if (job.priority < 0 || job.priority > levels) {
    return absl::InvalidArgumentError(absl::StrCat("priority must be in [0, ", levels,
                                                   "] (1 is the highest, 0 the default); was ",
                                                   job.priority));
  }
  const absl::Time now = im.options.clock->Now();
  if (job.deadline <= now) {
    return absl::DeadlineExceededError(absl::StrCat("deadline already passed at admission, ",
                                                    absl::FormatDuration(now - job.deadline),
                                                    " ago"));
  }
  const int64_t job_bytes = job.bytes();
  const int level = job.priority == 0 ? levels : job.priority;
  {
    absl::MutexLock lock(&im.mu);
    if (im.closed) return absl::UnavailableError("draining: not accepting new jobs");
    if (im.jobs + 1 > im.options.max_queued_jobs) {
      return absl::ResourceExhaustedError(
          absl::StrCat("queue full: ", im.jobs, " jobs queued, at the max_queued_jobs limit of ",
                       im.options.max_queued_jobs));
    }
    if (job_bytes > im.options.max_queued_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "job needs ", job_bytes, " bytes, more than max_queued_bytes (",
          im.options.max_queued_bytes, "): it can never be queued; raise max_queued_bytes"));
    }
    if (im.bytes + job_bytes > im.options.max_queued_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "queue full: ", im.bytes, " bytes queued + ", job_bytes,
          " for this job would exceed max_queued_bytes (", im.options.max_queued_bytes, ")"));
    }
    job.timestamps.enqueued = now;
    im.Push(std::move(*job_ptr), job_bytes, level);
  }
  // Outside the lock so the woken consumer does not block on it at once. `job` may already be
  // taken by another consumer here; it is not touched again.
  im.cv.Signal();
  return absl::OkStatus();
}

std::unique_ptr<Batch> ShapeBatcher::NextBatch() {
  Impl& im = *impl_;
  std::vector<Dropped> dropped;
  for (;;) {
    std::unique_ptr<Batch> batch;
    bool finished = false;
    {
      absl::MutexLock lock(&im.mu);
      for (;;) {
        const absl::Time now = im.options.clock->Now();
        absl::Time next_due;
        batch = im.FormLocked(now, &next_due, &dropped);
        if (batch != nullptr) {
          // Another consumer may be asleep with a batch due now (e.g. several keys filled
          // while consumers were busy); Enqueue's one Signal per job does not cover that.
          absl::Time unused;
          if (im.BestDue(now, &unused) != nullptr) im.cv.Signal();
          break;
        }
        // Completions first: they must not wait for the next batch.
        if (!dropped.empty()) break;
        if (im.closed && im.jobs == 0) {
          finished = true;
          break;
        }
        // Real waiting for a clock delta: with a FakeClock this waits real time, which only
        // the Close/unblock path relies on.
        if (next_due == absl::InfiniteFuture()) {
          im.cv.Wait(&im.mu);
        } else {
          im.cv.WaitWithTimeout(&im.mu, next_due - now);
        }
      }
    }
    im.Complete(dropped);
    if (batch != nullptr || finished) return batch;
  }
}

std::unique_ptr<Batch> ShapeBatcher::TryFormBatch(absl::Time now, absl::Time* next_due) {
  std::vector<Dropped> dropped;
  std::unique_ptr<Batch> batch;
  absl::Time due;
  {
    absl::MutexLock lock(&impl_->mu);
    batch = impl_->FormLocked(now, &due, &dropped);
  }
  impl_->Complete(dropped);
  if (next_due != nullptr) *next_due = due;
  return batch;
}

void ShapeBatcher::Close() {
  {
    absl::MutexLock lock(&impl_->mu);
    impl_->closed = true;
  }
  impl_->cv.SignalAll();
}

QueueSnapshot ShapeBatcher::Snapshot() const {
  struct Row {
    Conv2dParams geometry;
    int64_t jobs;
    int64_t bytes;
  };
  QueueSnapshot snapshot;
  std::vector<Row> rows;
  {
    // Only copies under the lock; strings and merging happen after it.
    absl::MutexLock lock(&impl_->mu);
    snapshot.jobs = impl_->jobs;
    snapshot.bytes = impl_->bytes;
    rows.reserve(impl_->queues.size());
    for (const auto& [key, queue] : impl_->queues) {
      rows.push_back(Row{key.geometry, static_cast<int64_t>(queue->entries.size()), queue->bytes});
    }
  }
  // One entry per geometry, merged across weight keys and levels: the status report is about
  // shapes.
  absl::flat_hash_map<QueueKey, size_t> index;
  for (const Row& row : rows) {
    auto [it, inserted] = index.try_emplace(QueueKey{row.geometry, 0, 0, 0, {}}, snapshot.queues.size());
    if (inserted) snapshot.queues.push_back({row.geometry.ShapeClass(), 0, 0});
    QueueSnapshot::ShapeQueue& q = snapshot.queues[it->second];
    q.jobs += row.jobs;
    q.bytes += row.bytes;
  }
  std::sort(snapshot.queues.begin(), snapshot.queues.end(),
            [](const QueueSnapshot::ShapeQueue& a, const QueueSnapshot::ShapeQueue& b) {
              return a.jobs != b.jobs ? a.jobs > b.jobs : a.shape < b.shape;
            });
  return snapshot;
}

int64_t ShapeBatcher::NumQueuedJobs() const {
  absl::MutexLock lock(&impl_->mu);
  return impl_->jobs;
}

const ShapeBatcher::Options& ShapeBatcher::options() const { return impl_->options; }

}  // namespace sparkle
