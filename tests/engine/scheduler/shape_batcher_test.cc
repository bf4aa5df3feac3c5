#include "engine/scheduler/shape_batcher.h"

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fake_clock.h"

namespace sparkle {
namespace {

using ::testing::ElementsAre;
using testing::FakeClock;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// The batcher never reads the buffers; jobs only need non-null pointers.
float dummy_buffer[1];

// A 1x1 convolution on a 1x1 image: the smallest valid geometry.
Conv2dParams Tiny(int64_t n = 1) {
  Conv2dParams p;
  p.n = n;
  return p;
}

// Same as Tiny but with another geometry (more channels).
Conv2dParams Wide(int64_t n = 1) {
  Conv2dParams p = Tiny(n);
  p.c = 4;
  return p;
}

// Records each job's completion (id → status), in order, from any thread.
class Completions {
 public:
  JobDone Callback(int id) {
    return [this, id](const absl::Status& status, const ExecTimestamps&) {
      absl::MutexLock lock(&mu_);
      done_.push_back({id, status});
    };
  }
  std::vector<std::pair<int, absl::Status>> Get() const {
    absl::MutexLock lock(&mu_);
    return done_;
  }
  std::vector<absl::StatusCode> Codes() const {
    std::vector<absl::StatusCode> codes;
    for (const auto& [id, status] : Get()) codes.push_back(status.code());
    return codes;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<std::pair<int, absl::Status>> done_ ABSL_GUARDED_BY(mu_);
};

struct JobSpec {
  int64_t n = 1;
  uint64_t weight_key = 1;
  int priority = 0;
  Conv2dParams params = Tiny();
  std::string client = "";  // the anonymous client by default
};

class ShapeBatcherTest : public ::testing::Test {
 protected:
  ShapeBatcher::Options BaseOptions() {
    ShapeBatcher::Options options;
    options.clock = &clock_;
    return options;
  }

  void Init(ShapeBatcher::Options options) {
    auto batcher = ShapeBatcher::Create(options);
    ASSERT_TRUE(batcher.ok()) << batcher.status();
    batcher_ = *std::move(batcher);
  }

  // A job known by `id`: to Completions when it is completed, and through ids_ (by address)
  // when it comes out in a batch.
  std::unique_ptr<Conv2dJob> MakeJob(int id, JobSpec spec = {}) {
    auto job = std::make_unique<Conv2dJob>();
    job->params = spec.params;
    job->params.n = spec.n;
    job->input = job->weight = dummy_buffer;
    job->output = dummy_buffer;
    job->weight_key = spec.weight_key;
    job->priority = spec.priority;
    job->client = spec.client;
    job->done = completions_.Callback(id);
    ids_[job.get()] = id;
    return job;
  }

  absl::Status Enqueue(int id, JobSpec spec = {}) {
    std::unique_ptr<Conv2dJob> job = MakeJob(id, spec);
    return EnqueueJob(std::move(job));
  }

  absl::Status EnqueueJob(std::unique_ptr<Conv2dJob> job) {
    absl::Status status = batcher_->Enqueue(&job);
    EXPECT_EQ(status.ok(), job == nullptr) << "ownership moves iff OK";
    return status;
  }

  std::vector<int> Ids(const Batch& batch) {
    std::vector<int> ids;
    for (const auto& job : batch.jobs) ids.push_back(ids_.at(job.get()));
    return ids;
  }

  // The ids of every batch due now, in the order they come out.
  std::vector<std::vector<int>> DrainDue() {
    std::vector<std::vector<int>> batches;
    absl::Time next_due;
    while (auto batch = batcher_->TryFormBatch(clock_.Now(), &next_due)) {
      batches.push_back(Ids(*batch));
    }
    return batches;
  }

  FakeClock clock_;
  Completions completions_;
  std::map<const Conv2dJob*, int> ids_;
  std::unique_ptr<ShapeBatcher> batcher_;
};

// --- Options -------------------------------------------------------------------------------

struct OptionsCase {
  std::string name;
  std::function<void(ShapeBatcher::Options&)> mutate;
  std::string error;  // empty: valid
};

TEST_F(ShapeBatcherTest, OptionsValidation) {
  const OptionsCase cases[] = {
      {"defaults", [](auto&) {}, ""},
      {"batch size 0", [](auto& o) { o.max_batch_size = 0; },
       "max_batch_size must be in [1, 65536]; was 0"},
      {"batch size max", [](auto& o) { o.max_batch_size = 65536; }, ""},
      {"batch size over", [](auto& o) { o.max_batch_size = 65537; },
       "max_batch_size must be in [1, 65536]; was 65537"},
      {"batch bytes 0", [](auto& o) { o.max_batch_bytes = 0; },
       "max_batch_bytes must be in [1, 2^40]; was 0"},
      {"batch bytes over", [](auto& o) { o.max_batch_bytes = (int64_t{1} << 40) + 1; },
       "max_batch_bytes must be in [1, 2^40]"},
      {"delay negative", [](auto& o) { o.max_queue_delay = absl::Milliseconds(-1); },
       "max_queue_delay must be in [0, 1s]; was -1ms"},
      {"delay 1s", [](auto& o) { o.max_queue_delay = absl::Seconds(1); }, ""},
      {"delay over", [](auto& o) { o.max_queue_delay = absl::Milliseconds(1001); },
       "max_queue_delay must be in [0, 1s]; was 1.001s"},
      {"queued jobs 0", [](auto& o) { o.max_queued_jobs = 0; },
       "max_queued_jobs must be in [1, 2^31]; was 0"},
      {"queued jobs over", [](auto& o) { o.max_queued_jobs = (int64_t{1} << 31) + 1; },
       "max_queued_jobs must be in [1, 2^31]"},
      {"queued bytes 0", [](auto& o) { o.max_queued_bytes = 0; },
       "max_queued_bytes must be in [1, 2^50]; was 0"},
      {"queued bytes over", [](auto& o) { o.max_queued_bytes = (int64_t{1} << 50) + 1; },
       "max_queued_bytes must be in [1, 2^50]"},
      {"levels 0", [](auto& o) { o.priority_levels = 0; },
       "priority_levels must be in [1, 16]; was 0"},
      {"levels 16", [](auto& o) { o.priority_levels = 16; }, ""},
      {"levels 17", [](auto& o) { o.priority_levels = 17; },
       "priority_levels must be in [1, 16]; was 17"},
      {"aging off", [](auto& o) { o.priority_aging = absl::ZeroDuration(); }, ""},
      {"aging 1h", [](auto& o) { o.priority_aging = absl::Hours(1); }, ""},
      {"aging negative", [](auto& o) { o.priority_aging = absl::Seconds(-1); },
       "priority_aging must be in [0, 1h]; was -1s"},
      {"aging over", [](auto& o) { o.priority_aging = absl::Hours(1) + absl::Seconds(1); },
       "priority_aging must be in [0, 1h]; was 1h1s"},
      {"null clock", [](auto& o) { o.clock = nullptr; }, "clock must not be null"},
  };
  for (const OptionsCase& c : cases) {
    SCOPED_TRACE(c.name);
    ShapeBatcher::Options options = BaseOptions();
    c.mutate(options);
    auto batcher = ShapeBatcher::Create(options);
    if (c.error.empty()) {
      EXPECT_TRUE(batcher.ok()) << batcher.status();
    } else {
      EXPECT_EQ(batcher.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(batcher.status().message(), HasSubstr(c.error));
    }
  }
}

// --- Batch formation -------------------------------------------------------------------------

TEST_F(ShapeBatcherTest, FillsToMaxBatchSizeAlongN) {
  ShapeBatcher::Options options = BaseOptions();
  options.max_batch_size = 4;
  Init(options);
  ASSERT_TRUE(Enqueue(1, {.n = 1}).ok());
  ASSERT_TRUE(Enqueue(2, {.n = 3}).ok());
  ASSERT_TRUE(Enqueue(3, {.n = 1}).ok());
  ASSERT_TRUE(Enqueue(4, {.n = 2}).ok());

  const absl::Time now = clock_.Now();
  absl::Time next_due;
  auto batch = batcher_->TryFormBatch(now, &next_due);
  ASSERT_NE(batch, nullptr);
  EXPECT_THAT(Ids(*batch), ElementsAre(1, 2));
  EXPECT_EQ(batch->params.n, 4);
  EXPECT_TRUE(batch->params.SameGeometry(Tiny()));
  EXPECT_EQ(batch->formed, now);
  for (const auto& job : batch->jobs) {
    EXPECT_EQ(job->timestamps.enqueued, now);
    EXPECT_EQ(job->timestamps.batch_formed, now);
  }
  EXPECT_EQ(next_due, now) << "more is queued: call again";

  batch = batcher_->TryFormBatch(now, &next_due);
  ASSERT_NE(batch, nullptr);
  EXPECT_THAT(Ids(*batch), ElementsAre(3, 4));
  EXPECT_EQ(batch->params.n, 3);
  EXPECT_EQ(next_due, absl::InfiniteFuture());
  EXPECT_EQ(batcher_->TryFormBatch(now, &next_due), nullptr);
  EXPECT_EQ(next_due, absl::InfiniteFuture());
  EXPECT_THAT(completions_.Get(), IsEmpty()) << "the batcher completes only dropped jobs";
}

TEST_F(ShapeBatcherTest, RespectsMaxBatchBytes) {
  const int64_t job_bytes = MakeJob(0)->bytes();
  ShapeBatcher::Options options = BaseOptions();
  options.max_batch_bytes = 2 * job_bytes + 1;
  Init(options);
  for (int id = 1; id <= 5; ++id) ASSERT_TRUE(Enqueue(id).ok());
  EXPECT_THAT(DrainDue(), ElementsAre(ElementsAre(1, 2), ElementsAre(3, 4), ElementsAre(5)));
}

TEST_F(ShapeBatcherTest, OversizedJobRunsAlone) {
  ShapeBatcher::Options options = BaseOptions();
  options.max_batch_size = 2;
  options.max_batch_bytes = 2 * MakeJob(0)->bytes();  // two n=1 jobs, less than one n=5
  Init(options);
  ASSERT_TRUE(Enqueue(1, {.n = 5}).ok());  // over both limits
  ASSERT_TRUE(Enqueue(2, {.n = 1}).ok());
  ASSERT_TRUE(Enqueue(3, {.n = 1}).ok());
  auto batch = batcher_->TryFormBatch(clock_.Now(), nullptr);
  ASSERT_NE(batch, nullptr);
  EXPECT_THAT(Ids(*batch), ElementsAre(1));
  EXPECT_EQ(batch->params.n, 5);
  EXPECT_THAT(DrainDue(), ElementsAre(ElementsAre(2, 3)));
}

TEST_F(ShapeBatcherTest, DifferentGeometryOrWeightsDoNotMix) {
  Init(BaseOptions());
  ASSERT_TRUE(Enqueue(1, {.weight_key = 7}).ok());
  ASSERT_TRUE(Enqueue(2, {.weight_key = 7, .params = Wide()}).ok());
  ASSERT_TRUE(Enqueue(3, {.weight_key = 8}).ok());
  ASSERT_TRUE(Enqueue(4, {.weight_key = 7}).ok());
  ASSERT_TRUE(Enqueue(5, {.weight_key = 7, .params = Wide()}).ok());
  // Oldest head first: 1's queue, then 2's, then 3's.
  EXPECT_THAT(DrainDue(), ElementsAre(ElementsAre(1, 4), ElementsAre(2, 5), ElementsAre(3)));
}

TEST_F(ShapeBatcherTest, WeightKeyZeroNeverBatches) {
  Init(BaseOptions());
  for (int id = 1; id <= 3; ++id) ASSERT_TRUE(Enqueue(id, {.weight_key = 0}).ok());
  EXPECT_THAT(DrainDue(), ElementsAre(ElementsAre(1), ElementsAre(2), ElementsAre(3)));
}

// --- max_queue_delay -------------------------------------------------------------------------

TEST_F(ShapeBatcherTest, PartialBatchIsDueAfterMaxQueueDelay) {
  ShapeBatcher::Options options = BaseOptions();
  options.max_batch_size = 4;
  options.max_queue_delay = absl::Milliseconds(5);
  Init(options);
  const absl::Time t0 = clock_.Now();
  absl::Time next_due;
  EXPECT_EQ(batcher_->TryFormBatch(t0, &next_due), nullptr);
  EXPECT_EQ(next_due, absl::InfiniteFuture()) << "nothing queued";

  ASSERT_TRUE(Enqueue(1).ok());
  clock_.Advance(absl::Milliseconds(2));
  ASSERT_TRUE(Enqueue(2, {.weight_key = 2}).ok());  // another key, due 2 ms later
  EXPECT_EQ(batcher_->TryFormBatch(clock_.Now(), &next_due), nullptr);
  EXPECT_EQ(next_due, t0 + absl::Milliseconds(5));

  clock_.Advance(absl::Milliseconds(2) + absl::Microseconds(999));
  EXPECT_EQ(batcher_->TryFormBatch(clock_.Now(), &next_due), nullptr);
  EXPECT_EQ(next_due, t0 + absl::Milliseconds(5));

  clock_.Advance(absl::Microseconds(1));  // exactly 5 ms
  auto batch = batcher_->TryFormBatch(clock_.Now(), &next_due);
  ASSERT_NE(batch, nullptr);
  EXPECT_THAT(Ids(*batch), ElementsAre(1));
  EXPECT_EQ(batcher_->TryFormBatch(clock_.Now(), &next_due), nullptr);
  EXPECT_EQ(next_due, t0 + absl::Milliseconds(7));
}

TEST_F(ShapeBatcherTest, FullBatchIsDueImmediately) {
  ShapeBatcher::Options options = BaseOptions();
  options.max_batch_size = 4;
  options.max_queue_delay = absl::Milliseconds(5);
  Init(options);
  ASSERT_TRUE(Enqueue(1, {.weight_key = 9}).ok());  // an older partial batch, not due
  ASSERT_TRUE(Enqueue(2, {.n = 3}).ok());
  absl::Time next_due;
  EXPECT_EQ(batcher_->TryFormBatch(clock_.Now(), &next_due), nullptr);
  ASSERT_TRUE(Enqueue(3, {.n = 1}).ok());  // N reaches 4
  auto batch = batcher_->TryFormBatch(clock_.Now(), &next_due);
  ASSERT_NE(batch, nullptr);
  EXPECT_THAT(Ids(*batch), ElementsAre(2, 3));
  EXPECT_EQ(batcher_->TryFormBatch(clock_.Now(), &next_due), nullptr);
}

TEST_F(ShapeBatcherTest, FullByBytesIsDueImmediately) {
  ShapeBatcher::Options options = BaseOptions();
  options.max_batch_bytes = 2 * MakeJob(0)->bytes();
  options.max_queue_delay = absl::Milliseconds(5);
  Init(options);
  ASSERT_TRUE(Enqueue(1).ok());
  EXPECT_EQ(batcher_->TryFormBatch(clock_.Now(), nullptr), nullptr);
  ASSERT_TRUE(Enqueue(2).ok());
  EXPECT_THAT(DrainDue(), ElementsAre(ElementsAre(1, 2)));
}

// --- Priority --------------------------------------------------------------------------------

TEST_F(ShapeBatcherTest, HigherPriorityFirstThenFifo) {
  ShapeBatcher::Options options = BaseOptions();
  options.priority_levels = 3;
  Init(options);
  ASSERT_TRUE(Enqueue(1, {.weight_key = 1}).ok());                 // default: level 3
  ASSERT_TRUE(Enqueue(2, {.weight_key = 2, .priority = 2}).ok());  // level 2
  clock_.Advance(absl::Milliseconds(1));
  ASSERT_TRUE(Enqueue(3, {.weight_key = 3, .priority = 1}).ok());  // newest, best level
  ASSERT_TRUE(Enqueue(4, {.weight_key = 4, .priority = 3}).ok());  // level 3 explicitly
  ASSERT_TRUE(Enqueue(5, {.weight_key = 1, .priority = 1}).ok());  // same key as 1, level 1
  EXPECT_THAT(DrainDue(), ElementsAre(ElementsAre(3), ElementsAre(5), ElementsAre(2),
                                      ElementsAre(1), ElementsAre(4)));
}

TEST_F(ShapeBatcherTest, SameKeyDifferentLevelsDoNotMix) {
  Init(BaseOptions());
  ASSERT_TRUE(Enqueue(1, {.priority = 2}).ok());
  ASSERT_TRUE(Enqueue(2, {.priority = 1}).ok());
  ASSERT_TRUE(Enqueue(3, {.priority = 0}).ok());  // 0 is level 2
  ASSERT_TRUE(Enqueue(4, {.priority = 1}).ok());
  EXPECT_THAT(DrainDue(), ElementsAre(ElementsAre(2, 4), ElementsAre(1, 3)));
}

TEST_F(ShapeBatcherTest, InvalidPriorityRejected) {
  Init(BaseOptions());  // levels 1..2
  for (int priority : {-1, 3}) {
    SCOPED_TRACE(priority);
    auto job = MakeJob(1, {.priority = priority});
    absl::Status status = batcher_->Enqueue(&job);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(status.message(), HasSubstr("priority must be in [0, 2]"));
    EXPECT_NE(job, nullptr);
  }
  EXPECT_EQ(batcher_->NumQueuedJobs(), 0);
  EXPECT_THAT(completions_.Get(), IsEmpty());
}

// Aging: a low-level job waits behind a steady stream of level-1 work for one aging period per
// level it is promoted, then goes before it (it is older than every level-1 job then queued).
TEST_F(ShapeBatcherTest, AgingPromotesAStarvingLowLevelJob) {
  ShapeBatcher::Options options = BaseOptions();
  options.max_batch_size = 1;
  options.priority_aging = absl::Milliseconds(100);
  Init(options);
  // Level 2 (the default); one level-1 job arrives every 10 ms and is served at once.
  ASSERT_TRUE(Enqueue(1000, {.weight_key = 2}).ok());
  std::vector<int> served;
  for (int i = 0; i < 15; ++i) {
    ASSERT_TRUE(Enqueue(i, {.priority = 1}).ok());
    auto batch = batcher_->TryFormBatch(clock_.Now(), nullptr);
    ASSERT_NE(batch, nullptr);
    served.push_back(Ids(*batch)[0]);
    clock_.Advance(absl::Milliseconds(10));
  }
  // At 100 ms (step 10) the level-2 job counts as level 1, and its 100 ms wait beats the new
  // level-1 job's 0.
  EXPECT_THAT(served, ElementsAre(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1000, 10, 11, 12, 13));
}

TEST_F(ShapeBatcherTest, AgingOneLevelPerPeriodAndOffMeansStrict) {
  for (absl::Duration aging : {absl::Milliseconds(100), absl::ZeroDuration()}) {
    SCOPED_TRACE(aging);
    ShapeBatcher::Options options = BaseOptions();
    options.max_batch_size = 1;
    options.priority_levels = 3;
    options.priority_aging = aging;
    Init(options);
    ASSERT_TRUE(Enqueue(1000, {.weight_key = 3, .priority = 3}).ok());
    int low_at = -1;
    for (int i = 0; i < 30; ++i) {
      ASSERT_TRUE(Enqueue(i, {.priority = 1}).ok());
      auto batch = batcher_->TryFormBatch(clock_.Now(), nullptr);
      ASSERT_NE(batch, nullptr);
      if (Ids(*batch)[0] == 1000) low_at = i;
      clock_.Advance(absl::Milliseconds(10));
    }
    // Level 3 → 2 at 100 ms, → 1 at 200 ms (step 20); never without aging.
    EXPECT_EQ(low_at, aging == absl::ZeroDuration() ? -1 : 20);
  }
}

// --- Fairness between clients ------------------------------------------------------------------

TEST_F(ShapeBatcherTest, PoliteJobGoesInTheNextBatchDespiteAGreedyBacklog) {
  ShapeBatcher::Options options = BaseOptions();
  options.max_batch_size = 8;
  Init(options);
  for (int i = 0; i < 64; ++i) ASSERT_TRUE(Enqueue(i, {.client = "greedy"}).ok());
  absl::Time next_due;
  auto first = batcher_->TryFormBatch(clock_.Now(), &next_due);
  ASSERT_NE(first, nullptr);
  EXPECT_THAT(Ids(*first), ElementsAre(0, 1, 2, 3, 4, 5, 6, 7));

  // Same shape key: the polite job joins the next batch, first (oldest first would put it in
  // the 8th batch).
  ASSERT_TRUE(Enqueue(100, {.client = "polite"}).ok());
  auto second = batcher_->TryFormBatch(clock_.Now(), &next_due);
  ASSERT_NE(second, nullptr);
  EXPECT_THAT(Ids(*second), ElementsAre(100, 8, 9, 10, 11, 12, 13, 14));  // service order

  // Another shape key: its queue goes before the greedy one (oldest head first would not).
  ASSERT_TRUE(Enqueue(101, {.weight_key = 7, .client = "polite"}).ok());
  auto third = batcher_->TryFormBatch(clock_.Now(), &next_due);
  ASSERT_NE(third, nullptr);
  EXPECT_THAT(Ids(*third), ElementsAre(101));
  EXPECT_EQ(batcher_->NumQueuedJobs(), 64 - 15);
}

TEST_F(ShapeBatcherTest, ClientsSharingAKeyShareBatchesInTagOrder) {
  ShapeBatcher::Options options = BaseOptions();
  options.max_batch_size = 4;
  Init(options);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(Enqueue(i, {.client = "a"}).ok());
  for (int i = 10; i < 14; ++i) ASSERT_TRUE(Enqueue(i, {.client = "b"}).ok());
  // Each client is charged for its own jobs: two of each per batch, in tag order.
  EXPECT_THAT(DrainDue(), ElementsAre(ElementsAre(0, 10, 1, 11), ElementsAre(2, 12, 3, 13)));
}

TEST_F(ShapeBatcherTest, CostIsWeightedByFlop) {
  ShapeBatcher::Options options = BaseOptions();
  options.max_batch_size = 1;
  Init(options);
  ASSERT_EQ(Wide().flops(), 4 * Tiny().flops());
  // "big" sends jobs 4× the FLOP of "small"'s; both keep 10 queued.
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(Enqueue(100 + i, {.params = Wide(), .client = "big"}).ok());
    ASSERT_TRUE(Enqueue(i, {.client = "small"}).ok());
  }
  std::vector<int> order;
  for (const auto& batch : DrainDue()) order.push_back(batch[0]);
  // Start tags: big 0, 4, 8, ...; small 0, 1, 2, ... (in Tiny FLOP units); ties by admission.
  EXPECT_THAT(std::vector<int>(order.begin(), order.begin() + 12),
              ElementsAre(100, 0, 1, 2, 3, 101, 4, 5, 6, 7, 102, 8));
}

TEST_F(ShapeBatcherTest, IdleClientDoesNotBankCredit) {
  ShapeBatcher::Options options = BaseOptions();
  options.max_batch_size = 1;
  Init(options);
  // "a" runs alone for a while; "b" was idle all along. Then both keep jobs queued: they
  // alternate (b starts at V, one job behind a's next), b does not get back the 5 jobs a had
  // alone (with credit banked from t = 0, b's five would all go first).
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(Enqueue(i, {.client = "a"}).ok());
  for (int i = 0; i < 5; ++i) ASSERT_NE(batcher_->TryFormBatch(clock_.Now(), nullptr), nullptr);
  for (int i = 100; i < 105; ++i) ASSERT_TRUE(Enqueue(i, {.client = "b"}).ok());
  std::vector<int> order;
  for (const auto& batch : DrainDue()) order.push_back(batch[0]);
  EXPECT_THAT(order, ElementsAre(100, 5, 101, 6, 102, 7, 103, 8, 104, 9));
}

TEST_F(ShapeBatcherTest, SnapshotPerLevel) {
  ShapeBatcher::Options options = BaseOptions();
  options.priority_levels = 3;
  options.max_queue_delay = absl::Seconds(1);
  Init(options);
  ASSERT_TRUE(Enqueue(1, {.priority = 1}).ok());
  ASSERT_TRUE(Enqueue(2, {.priority = 1, .params = Wide()}).ok());
  ASSERT_TRUE(Enqueue(3, {.priority = 3}).ok());
  clock_.Advance(absl::Milliseconds(250));
  ASSERT_TRUE(Enqueue(4, {.priority = 1}).ok());
  clock_.Advance(absl::Milliseconds(50));
  ASSERT_TRUE(Enqueue(5, {.priority = 0}).ok());  // level 3

  const int64_t tiny = MakeJob(0)->bytes(), wide = MakeJob(0, {.params = Wide()})->bytes();
  QueueSnapshot snapshot = batcher_->Snapshot();
  ASSERT_EQ(snapshot.levels.size(), 3u);
  EXPECT_EQ(snapshot.levels[0].level, 1);
  EXPECT_EQ(snapshot.levels[0].jobs, 3);
  EXPECT_EQ(snapshot.levels[0].bytes, 2 * tiny + wide);
  EXPECT_EQ(snapshot.levels[0].oldest_wait, absl::Milliseconds(300));
  EXPECT_EQ(snapshot.levels[1].level, 2);
  EXPECT_EQ(snapshot.levels[1].jobs, 0);
  EXPECT_EQ(snapshot.levels[1].bytes, 0);
  EXPECT_EQ(snapshot.levels[1].oldest_wait, absl::ZeroDuration());
  EXPECT_EQ(snapshot.levels[2].level, 3);
  EXPECT_EQ(snapshot.levels[2].jobs, 2);
  EXPECT_EQ(snapshot.levels[2].oldest_wait, absl::Milliseconds(300));

  // Level 1's tiny queue is due (its oldest waited 1 s); its jobs carry their level.
  clock_.Advance(absl::Milliseconds(700));
  auto batch = batcher_->TryFormBatch(clock_.Now(), nullptr);
  ASSERT_NE(batch, nullptr);
  EXPECT_THAT(Ids(*batch), ElementsAre(1, 4));
  for (const auto& job : batch->jobs) EXPECT_EQ(job->timestamps.level, 1);
  snapshot = batcher_->Snapshot();
  EXPECT_EQ(snapshot.levels[0].jobs, 1);
  EXPECT_EQ(snapshot.levels[0].oldest_wait, absl::Seconds(1));  // job 2, from t = 0
}

// --- Admission -------------------------------------------------------------------------------

TEST_F(ShapeBatcherTest, MaxQueuedJobs) {
  ShapeBatcher::Options options = BaseOptions();
  options.max_queued_jobs = 2;
  Init(options);
  ASSERT_TRUE(Enqueue(1).ok());
  ASSERT_TRUE(Enqueue(2, {.weight_key = 0}).ok());
  absl::Status status = Enqueue(3);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(status.message(), HasSubstr("max_queued_jobs"));
  EXPECT_THAT(status.message(), HasSubstr("2"));
  EXPECT_EQ(batcher_->NumQueuedJobs(), 2);

  ASSERT_NE(batcher_->TryFormBatch(clock_.Now(), nullptr), nullptr);
  EXPECT_EQ(batcher_->NumQueuedJobs(), 1);
  EXPECT_TRUE(Enqueue(4).ok()) << "room again once a batch formed";
  EXPECT_THAT(completions_.Get(), IsEmpty()) << "a refused job's done is not called";
}

TEST_F(ShapeBatcherTest, MaxQueuedBytes) {
  const int64_t job_bytes = MakeJob(0)->bytes();
  ShapeBatcher::Options options = BaseOptions();
  options.max_queued_bytes = 2 * job_bytes;
  Init(options);
  ASSERT_TRUE(Enqueue(1).ok());
  ASSERT_TRUE(Enqueue(2).ok());
  absl::Status status = Enqueue(3);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(status.message(), HasSubstr("max_queued_bytes"));
  EXPECT_EQ(batcher_->Snapshot().bytes, 2 * job_bytes);

  // A job larger than the whole bound can never be admitted, and the message says so.
  status = Enqueue(4, {.n = 8});
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(status.message(), HasSubstr("max_queued_bytes"));
  EXPECT_THAT(status.message(), HasSubstr("never"));

  EXPECT_THAT(DrainDue(), ElementsAre(ElementsAre(1, 2)));
  EXPECT_EQ(batcher_->Snapshot().bytes, 0);
  EXPECT_TRUE(Enqueue(5).ok());
  EXPECT_TRUE(Enqueue(6).ok());
}

TEST_F(ShapeBatcherTest, ExpiredAtAdmission) {
  Init(BaseOptions());
  auto job = MakeJob(1);
  job->deadline = clock_.Now();
  absl::Status status = batcher_->Enqueue(&job);
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(job, nullptr);
  EXPECT_EQ(batcher_->NumQueuedJobs(), 0);
}

TEST_F(ShapeBatcherTest, NullJobOrNoCallbackRejected) {
  Init(BaseOptions());
  std::unique_ptr<Conv2dJob> job;
  EXPECT_EQ(batcher_->Enqueue(&job).code(), absl::StatusCode::kInvalidArgument);
  job = MakeJob(1);
  job->done = nullptr;
  EXPECT_EQ(batcher_->Enqueue(&job).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(job, nullptr);
}

// --- Expiry and cancellation in the queue ----------------------------------------------------

TEST_F(ShapeBatcherTest, ExpiredInQueueCompletedAtFormation) {
  ShapeBatcher::Options options = BaseOptions();
  options.max_queue_delay = absl::Milliseconds(5);
  Init(options);
  auto doomed = MakeJob(1);
  doomed->deadline = clock_.Now() + absl::Milliseconds(3);
  ASSERT_TRUE(EnqueueJob(std::move(doomed)).ok());
  ASSERT_TRUE(Enqueue(2).ok());
  clock_.Advance(absl::Milliseconds(5));

  auto batch = batcher_->TryFormBatch(clock_.Now(), nullptr);
  ASSERT_NE(batch, nullptr);
  EXPECT_THAT(Ids(*batch), ElementsAre(2));
  EXPECT_EQ(batch->params.n, 1);
  auto done = completions_.Get();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].first, 1);
  EXPECT_EQ(done[0].second.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(done[0].second.message(), HasSubstr("expired in the queue after 5ms"));
  EXPECT_EQ(batcher_->NumQueuedJobs(), 0);
  EXPECT_EQ(batcher_->Snapshot().bytes, 0);
}

TEST_F(ShapeBatcherTest, ExpiredHeadDoesNotMakeNewerJobDueEarly) {
  ShapeBatcher::Options options = BaseOptions();
  options.max_queue_delay = absl::Milliseconds(5);
  Init(options);
  const absl::Time t0 = clock_.Now();
  auto doomed = MakeJob(1);
  doomed->deadline = t0 + absl::Milliseconds(1);
  ASSERT_TRUE(EnqueueJob(std::move(doomed)).ok());
  clock_.Advance(absl::Milliseconds(4));
  ASSERT_TRUE(Enqueue(2).ok());
  clock_.Advance(absl::Milliseconds(1));

  absl::Time next_due;
  EXPECT_EQ(batcher_->TryFormBatch(clock_.Now(), &next_due), nullptr);
  EXPECT_THAT(completions_.Codes(), ElementsAre(absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ(next_due, t0 + absl::Milliseconds(9)) << "job 2's own delay";
}

TEST_F(ShapeBatcherTest, DeadJobsInsideTheQueueAreDropped) {
  Init(BaseOptions());
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  ASSERT_TRUE(Enqueue(1).ok());
  auto doomed = MakeJob(2);
  doomed->deadline = clock_.Now() + absl::Milliseconds(1);
  ASSERT_TRUE(EnqueueJob(std::move(doomed)).ok());
  auto cancelled = MakeJob(3);
  cancelled->cancelled = cancel;
  ASSERT_TRUE(EnqueueJob(std::move(cancelled)).ok());
  ASSERT_TRUE(Enqueue(4).ok());
  cancel->store(true);
  clock_.Advance(absl::Milliseconds(1));

  EXPECT_THAT(DrainDue(), ElementsAre(ElementsAre(1, 4)));
  auto done = completions_.Get();
  ASSERT_EQ(done.size(), 2u);
  EXPECT_EQ(done[0].first, 2);
  EXPECT_EQ(done[0].second.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(done[1].first, 3);
  EXPECT_EQ(done[1].second.code(), absl::StatusCode::kCancelled);
}

TEST_F(ShapeBatcherTest, CancelledJobAloneIsCompletedNotBatched) {
  Init(BaseOptions());
  auto job = MakeJob(1);
  job->cancelled = std::make_shared<std::atomic<bool>>(true);
  ASSERT_TRUE(EnqueueJob(std::move(job)).ok());
  absl::Time next_due;
  EXPECT_EQ(batcher_->TryFormBatch(clock_.Now(), &next_due), nullptr);
  EXPECT_EQ(next_due, absl::InfiniteFuture());
  EXPECT_THAT(completions_.Codes(), ElementsAre(absl::StatusCode::kCancelled));
  EXPECT_EQ(batcher_->NumQueuedJobs(), 0);
}

TEST_F(ShapeBatcherTest, DoneRunsWithoutTheBatcherLock) {
  Init(BaseOptions());
  auto job = MakeJob(1);
  job->cancelled = std::make_shared<std::atomic<bool>>(true);
  int64_t seen = -1;
  job->done = [this, &seen](const absl::Status&, const ExecTimestamps&) {
    seen = batcher_->NumQueuedJobs();  // would self-deadlock under the batcher's mutex
  };
  ASSERT_TRUE(EnqueueJob(std::move(job)).ok());
  EXPECT_EQ(batcher_->TryFormBatch(clock_.Now(), nullptr), nullptr);
  EXPECT_EQ(seen, 0);
}

// --- Close and destruction -------------------------------------------------------------------

TEST_F(ShapeBatcherTest, CloseDrainsThenReturnsNull) {
  ShapeBatcher::Options options = BaseOptions();
  options.max_queue_delay = absl::Seconds(1);
  Init(options);
  ASSERT_TRUE(Enqueue(1).ok());
  ASSERT_TRUE(Enqueue(2).ok());
  ASSERT_TRUE(Enqueue(3, {.weight_key = 2}).ok());
  EXPECT_EQ(batcher_->TryFormBatch(clock_.Now(), nullptr), nullptr);

  batcher_->Close();
  batcher_->Close();  // idempotent
  absl::Status status = Enqueue(4);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(status.message(), HasSubstr("draining"));

  auto batch = batcher_->NextBatch();  // due at once, no waiting on the fake clock
  ASSERT_NE(batch, nullptr);
  EXPECT_THAT(Ids(*batch), ElementsAre(1, 2));
  batch = batcher_->NextBatch();
  ASSERT_NE(batch, nullptr);
  EXPECT_THAT(Ids(*batch), ElementsAre(3));
  EXPECT_EQ(batcher_->NextBatch(), nullptr);
  EXPECT_EQ(batcher_->NextBatch(), nullptr);
}

TEST_F(ShapeBatcherTest, CloseReleasesBlockedConsumer) {
  Init(BaseOptions());
  absl::Notification returned;
  std::unique_ptr<Batch> result = std::make_unique<Batch>();
  std::thread consumer([&] {
    result = batcher_->NextBatch();
    returned.Notify();
  });
  EXPECT_FALSE(returned.WaitForNotificationWithTimeout(absl::Milliseconds(50)));
  batcher_->Close();
  EXPECT_TRUE(returned.WaitForNotificationWithTimeout(absl::Seconds(10)));
  consumer.join();
  EXPECT_EQ(result, nullptr);
}

TEST_F(ShapeBatcherTest, EnqueueWakesBlockedConsumer) {
  Init(BaseOptions());
  absl::Notification returned;
  std::unique_ptr<Batch> result;
  std::thread consumer([&] {
    result = batcher_->NextBatch();
    returned.Notify();
  });
  EXPECT_FALSE(returned.WaitForNotificationWithTimeout(absl::Milliseconds(20)));
  ASSERT_TRUE(Enqueue(1).ok());
  EXPECT_TRUE(returned.WaitForNotificationWithTimeout(absl::Seconds(10)));
  consumer.join();
  ASSERT_NE(result, nullptr);
  EXPECT_THAT(Ids(*result), ElementsAre(1));
}

TEST_F(ShapeBatcherTest, DestructorCompletesLeftoversUnavailable) {
  ShapeBatcher::Options options = BaseOptions();
  options.max_queue_delay = absl::Seconds(1);
  Init(options);
  ASSERT_TRUE(Enqueue(1).ok());
  ASSERT_TRUE(Enqueue(2, {.weight_key = 0, .priority = 1}).ok());
  batcher_.reset();
  auto done = completions_.Get();
  ASSERT_EQ(done.size(), 2u);
  for (const auto& [id, status] : done) {
    EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
    EXPECT_THAT(status.message(), HasSubstr("shut down"));
  }
}

// --- Snapshot --------------------------------------------------------------------------------

TEST_F(ShapeBatcherTest, SnapshotMergesShapesMostJobsFirst) {
  ShapeBatcher::Options options = BaseOptions();
  options.max_queue_delay = absl::Seconds(1);
  Init(options);
  ASSERT_TRUE(Enqueue(1, {.params = Tiny()}).ok());
  ASSERT_TRUE(Enqueue(2, {.n = 2, .params = Wide()}).ok());
  ASSERT_TRUE(Enqueue(3, {.weight_key = 5, .params = Wide()}).ok());
  ASSERT_TRUE(Enqueue(4, {.weight_key = 0, .priority = 1, .params = Wide()}).ok());

  QueueSnapshot snapshot = batcher_->Snapshot();
  const int64_t tiny_bytes = MakeJob(0, {.params = Tiny()})->bytes();
  const int64_t wide_bytes =
      MakeJob(0, {.n = 2, .params = Wide()})->bytes() + 2 * MakeJob(0, {.params = Wide()})->bytes();
  EXPECT_EQ(snapshot.jobs, 4);
  EXPECT_EQ(snapshot.bytes, tiny_bytes + wide_bytes);
  ASSERT_EQ(snapshot.queues.size(), 2u);
  EXPECT_EQ(snapshot.queues[0].shape, Wide().ShapeClass());
  EXPECT_EQ(snapshot.queues[0].jobs, 3);
  EXPECT_EQ(snapshot.queues[0].bytes, wide_bytes);
  EXPECT_EQ(snapshot.queues[1].shape, Tiny().ShapeClass());
  EXPECT_EQ(snapshot.queues[1].jobs, 1);
  EXPECT_EQ(snapshot.queues[1].bytes, tiny_bytes);
}

// --- Concurrency -----------------------------------------------------------------------------

TEST(ShapeBatcherConcurrencyTest, EveryJobComesOutExactlyOnce) {
  constexpr int kProducers = 4, kJobsPerProducer = 2000, kConsumers = 2;
  constexpr int kJobs = kProducers * kJobsPerProducer;
  ShapeBatcher::Options options;  // real clock
  options.max_batch_size = 8;
  options.max_queue_delay = absl::Microseconds(200);
  options.max_queued_jobs = 512;  // small enough that producers sometimes meet a full queue
  auto created = ShapeBatcher::Create(options);
  ASSERT_TRUE(created.ok()) << created.status();
  std::unique_ptr<ShapeBatcher> batcher = *std::move(created);

  std::vector<std::atomic<int>> seen(kJobs);
  std::atomic<int> batched{0}, dropped{0};
  std::vector<std::thread> consumers;
  for (int c = 0; c < kConsumers; ++c) {
    consumers.emplace_back([&] {
      while (auto batch = batcher->NextBatch()) {
        int64_t n = 0;
        for (auto& job : batch->jobs) {
          EXPECT_TRUE(job->params.SameGeometry(batch->jobs.front()->params));
          EXPECT_EQ(job->weight_key, batch->jobs.front()->weight_key);
          n += job->params.n;
          std::move(job->done)(absl::OkStatus(), job->timestamps);
        }
        EXPECT_EQ(n, batch->params.n);
        EXPECT_TRUE(batch->jobs.size() == 1 || n <= options.max_batch_size);
      }
    });
  }
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (int i = 0; i < kJobsPerProducer; ++i) {
        const int id = p * kJobsPerProducer + i;
        auto job = std::make_unique<Conv2dJob>();
        job->params = (id % 3 == 0) ? Wide(1 + id % 4) : Tiny(1 + id % 4);
        job->input = job->weight = dummy_buffer;
        job->output = dummy_buffer;
        job->weight_key = id % 5;  // includes weight_key 0
        job->priority = id % 3;
        if (id % 101 == 0) job->cancelled = std::make_shared<std::atomic<bool>>(true);
        job->done = [&seen, &batched, &dropped, id](const absl::Status& s, const ExecTimestamps&) {
          seen[id].fetch_add(1);
          (s.ok() ? batched : dropped).fetch_add(1);
        };
        for (;;) {
          absl::Status status = batcher->Enqueue(&job);
          if (status.ok()) break;
          ASSERT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
          std::this_thread::yield();
        }
      }
    });
  }
  for (auto& t : producers) t.join();
  batcher->Close();
  for (auto& t : consumers) t.join();

  EXPECT_EQ(batched.load() + dropped.load(), kJobs);
  EXPECT_EQ(dropped.load(), (kJobs + 100) / 101);  // the cancelled ones
  for (int id = 0; id < kJobs; ++id) ASSERT_EQ(seen[id].load(), 1) << "job " << id;
  EXPECT_EQ(batcher->NumQueuedJobs(), 0);
}

}  // namespace
}  // namespace sparkle
