#include "engine/core/completion_executor.h"

#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace sparkle {
namespace {

TEST(CompletionExecutorTest, RunsEveryTaskOffThePostingThreadAndDrainsOnDestruction) {
  std::atomic<int> ran{0}, on_poster{0};
  const std::thread::id poster = std::this_thread::get_id();
  {
    auto executor = CompletionExecutor::Create({.threads = 2});
    ASSERT_TRUE(executor.ok()) << executor.status();
    for (int i = 0; i < 1000; ++i) {
      (*executor)->Post([&] {
        if (std::this_thread::get_id() == poster) on_poster++;
        ran++;
      });
    }
  }  // the destructor runs what is still queued
  EXPECT_EQ(ran.load(), 1000);
  EXPECT_EQ(on_poster.load(), 0);
}

// A slow task (a reply to a slow client) does not hold the others: with two threads, the
// second task completes while the first still blocks.
TEST(CompletionExecutorTest, ASlowTaskDoesNotBlockTheNext) {
  // Declared before the executor: its destructor joins the thread that still waits on
  // `release`, so `release` must outlive it.
  absl::Notification release, second_ran;
  auto executor = CompletionExecutor::Create({.threads = 2});
  ASSERT_TRUE(executor.ok());
  (*executor)->Post([&] { release.WaitForNotification(); });
  (*executor)->Post([&] { second_ran.Notify(); });
  EXPECT_TRUE(second_ran.WaitForNotificationWithTimeout(absl::Seconds(30)));
  release.Notify();
}

TEST(CompletionExecutorTest, RejectsThreadCountsOutOfRange) {
  EXPECT_EQ(CompletionExecutor::Create({.threads = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CompletionExecutor::Create({.threads = 65}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sparkle
