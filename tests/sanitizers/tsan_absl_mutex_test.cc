// tests/sanitizers/tsan_absl_mutex.cc in the SPARKLE_SANITIZE=thread build: every absl::Mutex
// and absl::CondVar operation our code uses goes through the interposed, annotated definitions,
// and plain (non-atomic) data guarded by them, written by several threads, raises no TSan report
// (before tsan_absl_mutex.cc, each of these cases was a reported data race). Only built there.
// That an unguarded write is still reported was checked by hand (a two-thread counter: reported
// without the MutexLock, silent with it): a TSan report ends the process, no test case can
// expect one.
#include <cstdint>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

extern "C" uint64_t SparkleTsanAbslMutexAnnotatedCalls();

namespace {

constexpr int kThreads = 4;
constexpr int kIterations = 200;

// Runs `body(i)` on kThreads threads at once.
template <typename F>
void OnThreads(F body) {
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) threads.emplace_back([&body, i] { body(i); });
  for (auto& t : threads) t.join();
}

TEST(TsanAbslMutexTest, MutexLockIsInterposed) {
  absl::Mutex mu;
  const uint64_t before = SparkleTsanAbslMutexAnnotatedCalls();
  { absl::MutexLock lock(&mu); }
  EXPECT_EQ(SparkleTsanAbslMutexAnnotatedCalls(), before + 2);  // Lock + Unlock
}

TEST(TsanAbslMutexTest, ExclusiveLocksOrderWrites) {
  absl::Mutex mu;
  int64_t counter = 0;  // guarded by mu, deliberately not atomic
  OnThreads([&](int) {
    for (int n = 0; n < kIterations; ++n) {
      switch (n % 3) {
        case 0: {
          absl::MutexLock lock(&mu);
          ++counter;
          break;
        }
        case 1: {
          absl::WriterMutexLock lock(&mu);
          ++counter;
          break;
        }
        default:
          while (!mu.TryLock()) std::this_thread::yield();
          ++counter;
          mu.Unlock();
      }
    }
  });
  absl::MutexLock lock(&mu);
  EXPECT_EQ(counter, int64_t{kThreads} * kIterations);
}

TEST(TsanAbslMutexTest, ReaderLocksSeeWrites) {
  absl::Mutex mu;
  int64_t value = 0;
  int64_t sum = 0;
  OnThreads([&](int i) {
    for (int n = 0; n < kIterations; ++n) {
      if (i == 0) {
        absl::MutexLock lock(&mu);
        ++value;
      } else if (n % 2 == 0) {
        absl::ReaderMutexLock lock(&mu);
        EXPECT_GE(value, 0);
      } else if (mu.ReaderTryLock()) {
        EXPECT_GE(value, 0);
        mu.ReaderUnlock();
      }
    }
    absl::MutexLock lock(&mu);
    sum += i;
  });
  absl::ReaderMutexLock lock(&mu);
  EXPECT_EQ(value, kIterations);
  EXPECT_EQ(sum, 0 + 1 + 2 + 3);
}

// A producer hands items to consumers that wait with Await / AwaitWithTimeout /
// AwaitWithDeadline / LockWhen / LockWhenWithTimeout / ReaderLockWhen: each write before the
// producer's unlock must happen-before the consumer's reads after its wait.
TEST(TsanAbslMutexTest, ConditionWaitsOrderWrites) {
  absl::Mutex mu;
  int64_t produced = 0;  // guarded by mu
  int64_t payload = 0;   // guarded by mu
  const int64_t total = int64_t{kThreads - 1} * kIterations;
  OnThreads([&](int i) {
    if (i == 0) {
      for (int64_t n = 1; n <= total; ++n) {
        absl::MutexLock lock(&mu);
        payload = n * 10;
        produced = n;
      }
      return;
    }
    for (int n = 0; n < kIterations; ++n) {
      const int64_t want = (n * (total / kIterations)) / 2 + 1;
      auto ready = [&] { return produced >= want; };
      switch ((n + i) % 6) {
        case 0: {
          absl::MutexLock lock(&mu);
          mu.Await(absl::Condition(&ready));
          EXPECT_GE(payload, want * 10);
          break;
        }
        case 1: {
          absl::MutexLock lock(&mu);
          while (!mu.AwaitWithTimeout(absl::Condition(&ready), absl::Milliseconds(5))) {}
          EXPECT_GE(payload, want * 10);
          break;
        }
        case 2: {
          absl::MutexLock lock(&mu);
          while (!mu.AwaitWithDeadline(absl::Condition(&ready),
                                       absl::Now() + absl::Milliseconds(5))) {}
          EXPECT_GE(payload, want * 10);
          break;
        }
        case 3: {
          absl::MutexLock lock(&mu, absl::Condition(&ready));
          EXPECT_GE(payload, want * 10);
          break;
        }
        case 4: {
          while (!mu.LockWhenWithTimeout(absl::Condition(&ready), absl::Milliseconds(5))) {
            mu.Unlock();
          }
          EXPECT_GE(payload, want * 10);
          mu.Unlock();
          break;
        }
        default: {
          absl::ReaderMutexLock lock(&mu, absl::Condition(&ready));
          EXPECT_GE(payload, want * 10);
        }
      }
    }
  });
}

TEST(TsanAbslMutexTest, CondVarWaitsOrderWrites) {
  absl::Mutex mu;
  absl::CondVar cv;
  int64_t produced = 0;  // guarded by mu
  int64_t payload = 0;   // guarded by mu
  OnThreads([&](int i) {
    if (i == 0) {
      for (int64_t n = 1; n <= kIterations; ++n) {
        absl::MutexLock lock(&mu);
        payload = n * 10;
        produced = n;
        if (n % 2 == 0) {
          cv.SignalAll();
        } else {
          cv.Signal();
        }
      }
      absl::MutexLock lock(&mu);
      cv.SignalAll();
      return;
    }
    absl::MutexLock lock(&mu);
    for (int64_t want = 1; want <= kIterations; want += kThreads) {
      while (produced < want) {
        if (i % 2 == 0) {
          cv.Wait(&mu);
        } else {
          cv.WaitWithTimeout(&mu, absl::Milliseconds(5));
        }
      }
      EXPECT_GE(payload, want * 10);
    }
  });
}

// absl::Notification (in libabsl_synchronization.so) locks its mutex through the PLT, so it is
// annotated too: the write before Notify() happens-before the read after the wait.
TEST(TsanAbslMutexTest, NotificationOrdersWrites) {
  absl::Notification done;
  int64_t result = 0;
  std::thread t([&] {
    result = 42;
    done.Notify();
  });
  done.WaitForNotification();
  EXPECT_EQ(result, 42);
  t.join();
}

}  // namespace
