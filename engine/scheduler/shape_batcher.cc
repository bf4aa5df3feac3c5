#include "engine/scheduler/shape_batcher.h"

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/node_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/status_macros.h"
#include "engine/core/job_lifecycle.h"

namespace sparkle {
namespace {

constexpr int64_t kMaxBatchSizeLimit = 65536;
constexpr int64_t kMaxBatchBytesLimit = int64_t{1} << 40;
constexpr absl::Duration kMaxQueueDelayLimit = absl::Seconds(1);
constexpr int64_t kMaxQueuedJobsLimit = int64_t{1} << 31;
constexpr int64_t kMaxQueuedBytesLimit = int64_t{1} << 50;
constexpr int kMaxPriorityLevels = 16;
constexpr absl::Duration kMaxPriorityAgingLimit = absl::Hours(1);
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
  if (o.priority_aging < absl::ZeroDuration() || o.priority_aging > kMaxPriorityAgingLimit) {
    return absl::InvalidArgumentError(absl::StrCat("priority_aging must be in [0, 1h]; was ",
                                                   absl::FormatDuration(o.priority_aging)));
  }
  if (o.clock == nullptr) return absl::InvalidArgumentError("clock must not be null");
  return absl::OkStatus();
}

// Identity of one queue. Hash and equality ignore geometry.n, so that jobs differing only in N
// share a queue. `solo` is 0 for jobs with a weight identity and a unique number for jobs
// without one (weight_key 0), which therefore never share a queue. Levels are part of the key
// so that each queue holds one level and the scheduling order is per level. Clients are not:
// jobs of different clients with the same key share a queue, and so a batch.
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
    return H::combine(HashWithoutN(std::move(h), key.geometry), key.weight_key, key.solo,
                      key.level, key.device.kind, key.device.gpu);
  }
};

// Fair-queueing state of one client at one level. Lives in Level::clients while the client has
// a job queued at the level, or its finish tag is ahead of the level's virtual time (it would
// otherwise start at V anyway, so forgetting it changes nothing).
struct Client {
  const std::string* name = nullptr;  // its key in Level::clients
  double finish = 0;                  // F_last: the finish tag of its latest job at this level
  int64_t queued = 0;                 // its jobs queued at this level
  bool idle = false;                  // member of Level::idle (queued == 0, finish > V)
};

// Where a job sorts in its queue: virtual start tag, then admission order (seq is unique, so
// this is a strict total order even with equal tags).
struct TagKey {
  double start = 0;
  uint64_t seq = 0;
  bool operator<(const TagKey& o) const {
    return std::tie(start, seq) < std::tie(o.start, o.seq);
  }
};

// A job in admission order (seq only), with what it takes to find its entry.
struct AgeKey {
  uint64_t seq = 0;
  absl::Time enqueued;
  double start = 0;
  bool operator<(const AgeKey& o) const { return seq < o.seq; }
};

struct Entry {
  std::unique_ptr<Conv2dJob> job;
  int64_t bytes;   // job->bytes(), computed once at admission
  Client* client;  // stable: Level::clients is a node map, and the client outlives its entries
};

struct Queue {
  QueueKey key;
  // Service order (smallest start tag first); never empty while the queue is in Impl::queues.
  std::map<TagKey, Entry> entries;
  std::set<AgeKey> ages;  // the same jobs in admission order: begin() is the oldest
  int64_t n = 0;          // sum of entries' params.n
  int64_t bytes = 0;      // sum of entries' bytes
  // Sort keys of the level's sets: entries.begin()'s tag and ages.begin()'s time and seq. Only
  // changed while the queue is out of the sets that order by them (Unindex … Reindex), or a set
  // would lose track of it.
  TagKey head;
  absl::Time oldest_time;
  uint64_t oldest_seq = 0;
  bool due = false;  // member of its level's `due` set, else of its `pending` set
};

// Smallest head tag first.
struct HeadTagOrder {
  bool operator()(const Queue* a, const Queue* b) const { return a->head < b->head; }
};

// Oldest job first; (time, seq) is a strict total order even if the clock stands still or
// steps back.
struct OldestOrder {
  bool operator()(const Queue* a, const Queue* b) const {
    return std::tie(a->oldest_time, a->oldest_seq) < std::tie(b->oldest_time, b->oldest_seq);
  }
};

struct Level {
  // Every non-empty queue of the level is in by_age, and in exactly one of due / pending.
  // `due`: full, or found due by age or Close (a queue stays due until a batch is taken from
  // it); `pending`: the others, whose first element decides whether any becomes due by delay
  // (if the oldest has not waited max_queue_delay, none has).
  std::set<Queue*, HeadTagOrder> due;
  std::set<Queue*, OldestOrder> pending;
  std::set<Queue*, OldestOrder> by_age;  // begin(): the queue holding the level's oldest job
  // Fair queueing: V, and the clients (see Client). Both start over when the level empties.
  double virtual_time = 0;
  absl::node_hash_map<std::string, Client> clients;
  std::set<std::pair<double, Client*>> idle;  // by finish tag; forgotten once V reaches it
  // Sums over the level's queues of entries.size() and bytes.
  int64_t jobs = 0;
  int64_t bytes = 0;
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
  // Indexed by level, 1..priority_levels ([0] unused); each non-empty queue is in its level's
  // sets as Level describes.
  std::vector<Level> levels ABSL_GUARDED_BY(mu);
  std::vector<std::unique_ptr<Queue>> spare ABSL_GUARDED_BY(mu);  // empty, for reuse

  bool IsFull(const Queue& q) const {
    return q.n >= options.max_batch_size || q.bytes >= options.max_batch_bytes;
  }

  void Push(std::unique_ptr<Conv2dJob> job, int64_t job_bytes, int level)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    Level& lv = levels[level];
    // Fair queueing: the job's start tag, and its client charged with its cost.
    auto [cit, new_client] = lv.clients.try_emplace(job->client);
    Client& client = cit->second;
    client.name = &cit->first;
    if (client.idle) {
      lv.idle.erase({client.finish, &client});
      client.idle = false;
    }
    const double start = std::max(lv.virtual_time, client.finish);
    client.finish = start + std::max(1.0, job->params.flops());
    client.queued++;

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
    const TagKey tag{start, next_seq++};
    const bool was_empty = q.entries.empty();
    q.n += job->params.n;
    q.bytes += job_bytes;
    jobs++;
    bytes += job_bytes;
    lv.jobs++;
    lv.bytes += job_bytes;
    const absl::Time enqueued = job->timestamps.enqueued;
    job->timestamps.level = level;
    q.entries.emplace(tag, Entry{std::move(job), job_bytes, &client});
    q.ages.insert(AgeKey{tag.seq, enqueued, start});
    if (was_empty) {
      q.head = tag;
      q.oldest_time = enqueued;
      q.oldest_seq = tag.seq;
      q.due = false;
      lv.by_age.insert(&q);
      lv.pending.insert(&q);
    } else if (tag < q.head) {
      // A job with an earlier tag than the head (a client behind in virtual time) becomes the
      // head; the oldest job never changes on a push (seq grows).
      if (q.due) lv.due.erase(&q);
      q.head = tag;
      if (q.due) lv.due.insert(&q);
    }
    if (!q.due && IsFull(q)) {
      lv.pending.erase(&q);
      q.due = true;
      lv.due.insert(&q);
    }
  }

  // Takes q out of its level's sets, so that its head and oldest job may change.
  void Unindex(Queue& q) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    Level& lv = levels[q.key.level];
    lv.by_age.erase(&q);
    if (q.due) {
      lv.due.erase(&q);
    } else {
      lv.pending.erase(&q);
    }
  }

  // Undoes Unindex after the queue changed; releases q (invalidating it) if it is now empty.
  // A queue that is not full goes back to pending: BestDue judges it due again by its (new)
  // oldest job.
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
    q.head = q.entries.begin()->first;
    q.oldest_time = q.ages.begin()->enqueued;
    q.oldest_seq = q.ages.begin()->seq;
    Level& lv = levels[q.key.level];
    lv.by_age.insert(&q);
    q.due = IsFull(q);
    if (q.due) {
      lv.due.insert(&q);
    } else {
      lv.pending.insert(&q);
    }
  }

  // V only grows; clients it overtakes while idle are forgotten.
  void AdvanceVirtualTime(Level& lv, double start) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (start <= lv.virtual_time) return;
    lv.virtual_time = start;
    while (!lv.idle.empty() && lv.idle.begin()->first <= lv.virtual_time) {
      const std::string* name = lv.idle.begin()->second->name;
      lv.idle.erase(lv.idle.begin());
      lv.clients.erase(*name);
    }
  }

  // Removes the entry at `it` from q (unindexed) and the accounting; forgets its client if that
  // changes nothing, and the whole level's fair-queueing state when the level empties.
  std::unique_ptr<Conv2dJob> PopEntry(Queue& q, std::map<TagKey, Entry>::iterator it)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    Level& lv = levels[q.key.level];
    Entry& e = it->second;
    std::unique_ptr<Conv2dJob> job = std::move(e.job);
    Client& client = *e.client;
    q.ages.erase(AgeKey{it->first.seq, {}, 0});
    q.n -= job->params.n;
    q.bytes -= e.bytes;
    jobs--;
    bytes -= e.bytes;
    lv.jobs--;
    lv.bytes -= e.bytes;
    q.entries.erase(it);
    if (--client.queued == 0) {
      if (client.finish <= lv.virtual_time) {
        lv.clients.erase(*client.name);
      } else {
        client.idle = true;
        lv.idle.insert({client.finish, &client});
      }
    }
    if (lv.jobs == 0) {
      lv.virtual_time = 0;
      lv.idle.clear();
      lv.clients.clear();
    }
    return job;
  }

  // If the job at `it` is cancelled or expired at `now`, moves it to *dropped and returns true.
  bool DropIfDead(Queue& q, std::map<TagKey, Entry>::iterator it, absl::Time now,
                  std::vector<Dropped>* dropped) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    absl::Status status = StillWorthRunning(*it->second.job, now, "in the queue");
    if (status.ok()) return false;
    dropped->push_back(Dropped{PopEntry(q, it), std::move(status)});
    return true;
  }

  // The best due queue at `now`: of each level, the due queue with the smallest head tag;
  // between levels, the best effective level (aging), then the older oldest job. Null when none
  // is due, with *next_due = when the first partial batch becomes due (InfiniteFuture if
  // nothing is queued). Moves the queues it finds due from pending to due. O(levels · log
  // queues), amortized.
  Queue* BestDue(absl::Time now, absl::Time* next_due) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    const absl::Duration delay = options.max_queue_delay;
    const absl::Duration aging = options.priority_aging;
    absl::Time earliest = absl::InfiniteFuture();
    Queue* best = nullptr;
    int best_level = 0;
    const Queue* best_oldest = nullptr;
    for (int level = 1; level <= options.priority_levels; ++level) {
      Level& lv = levels[level];
      if (lv.by_age.empty()) continue;
      while (!lv.pending.empty()) {
        Queue* q = *lv.pending.begin();
        // delay 0 is tested apart so that a clock stepping back cannot hold a batch.
        if (!closed && delay != absl::ZeroDuration() && now - q->oldest_time < delay) {
          earliest = std::min(earliest, q->oldest_time + delay);
          break;
        }
        lv.pending.erase(lv.pending.begin());
        q->due = true;
        lv.due.insert(q);
      }
      if (lv.due.empty()) continue;
      const Queue* oldest = *lv.by_age.begin();
      int effective = level;
      if (aging > absl::ZeroDuration() && level > 1) {
        const absl::Duration waited = now - oldest->oldest_time;
        if (waited >= aging) {
          absl::Duration remainder;
          const int64_t steps = absl::IDivDuration(waited, aging, &remainder);
          effective = steps >= level - 1 ? 1 : level - static_cast<int>(steps);
        }
      }
      if (best == nullptr || effective < best_level ||
          (effective == best_level && OldestOrder()(oldest, best_oldest))) {
        best = *lv.due.begin();
        best_level = effective;
        best_oldest = oldest;
      }
    }
    if (best == nullptr) *next_due = earliest;
    return best;
  }

  // Takes a batch from q (unindexed) in tag order while the sums of N and bytes stay within the
  // batch limits, the first job always. The batch lists its jobs in that (service) order, which
  // for one client is admission order: the engine completes them in it, so a job of a client
  // behind in virtual time is also answered first. Dead jobs
  // met on the way go to *dropped. Null if q's head or oldest job was dead: q then changed and
  // must be judged due again before it batches, or a live job behind an expired one would run
  // before its own max_queue_delay.
  std::unique_ptr<Batch> Take(Queue& q, absl::Time now, std::vector<Dropped>* dropped)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    Level& lv = levels[q.key.level];
    bool purged = false;
    while (!q.entries.empty()) {
      if (DropIfDead(q, q.entries.begin(), now, dropped)) {
        purged = true;
        continue;
      }
      const AgeKey& oldest = *q.ages.begin();
      if (DropIfDead(q, q.entries.find(TagKey{oldest.start, oldest.seq}), now, dropped)) {
        purged = true;
        continue;
      }
      break;
    }
    if (purged || q.entries.empty()) return nullptr;

    auto batch = std::make_unique<Batch>();
    batch->params = q.entries.begin()->second.job->params;
    batch->params.n = 0;
    batch->formed = now;
    int64_t batch_bytes = 0;
    while (!q.entries.empty()) {
      auto it = q.entries.begin();
      if (DropIfDead(q, it, now, dropped)) continue;
      const Entry& e = it->second;
      const int64_t n = e.job->params.n;
      if (!batch->jobs.empty() && (batch->params.n + n > options.max_batch_size ||
                             batch_bytes + e.bytes > options.max_batch_bytes)) {
        break;
      }
      batch->params.n += n;
      batch_bytes += e.bytes;
      AdvanceVirtualTime(lv, it->first.start);
      std::unique_ptr<Conv2dJob> job = PopEntry(q, it);
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
      for (auto& [tag, e] : queue->entries) {
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
  const absl::Time now = impl_->options.clock->Now();
  {
    // Only copies under the lock; strings and merging happen after it.
    absl::MutexLock lock(&impl_->mu);
    snapshot.jobs = impl_->jobs;
    snapshot.bytes = impl_->bytes;
    snapshot.levels.reserve(impl_->options.priority_levels);
    for (int level = 1; level <= impl_->options.priority_levels; ++level) {
      const Level& lv = impl_->levels[level];
      QueueSnapshot::LevelQueue row{level, lv.jobs, lv.bytes, absl::ZeroDuration()};
      if (!lv.by_age.empty()) {
        row.oldest_wait = std::max(absl::ZeroDuration(), now - (*lv.by_age.begin())->oldest_time);
      }
      snapshot.levels.push_back(row);
    }
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
