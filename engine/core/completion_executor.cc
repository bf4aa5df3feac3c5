#include "engine/core/completion_executor.h"

#include <deque>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace sparkle {

struct CompletionExecutor::Impl {
  absl::Mutex mu;
  std::deque<absl::AnyInvocable<void() &&>> tasks ABSL_GUARDED_BY(mu);
  bool closing ABSL_GUARDED_BY(mu) = false;
  std::vector<std::thread> threads;

  void Loop() {
    for (;;) {
      absl::AnyInvocable<void() &&> task;
      {
        absl::MutexLock lock(&mu);
        auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
          return !tasks.empty() || closing;
        };
        mu.Await(absl::Condition(&ready));
        if (tasks.empty()) return;  // closing, and nothing left
        task = std::move(tasks.front());
        tasks.pop_front();
      }
      std::move(task)();
    }
  }
};

absl::StatusOr<std::unique_ptr<CompletionExecutor>> CompletionExecutor::Create(
    const Options& options) {
  if (options.threads < 1 || options.threads > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("completion threads must be in [1, 64]; was ", options.threads));
  }
  auto impl = std::make_unique<Impl>();
  for (int i = 0; i < options.threads; ++i) {
    impl->threads.emplace_back([raw = impl.get()] { raw->Loop(); });
  }
  return std::unique_ptr<CompletionExecutor>(new CompletionExecutor(std::move(impl)));
}

CompletionExecutor::CompletionExecutor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

CompletionExecutor::~CompletionExecutor() {
  {
    absl::MutexLock lock(&impl_->mu);
    impl_->closing = true;
  }
  for (std::thread& t : impl_->threads) t.join();
}

void CompletionExecutor::Post(absl::AnyInvocable<void() &&> task) {
  absl::MutexLock lock(&impl_->mu);
  impl_->tasks.push_back(std::move(task));
}

}  // namespace sparkle
