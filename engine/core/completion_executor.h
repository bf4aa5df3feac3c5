// CompletionExecutor: the threads that complete jobs (run their done callbacks: for the server,
// serializing and sending the reply). Devices hand finished batches here and go back to work:
// no device thread (a CPU worker between batches, a GPU's drain thread) waits on a reply.
#pragma once

#include <memory>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"

namespace sparkle {

class CompletionExecutor {
 public:
  struct Options {
    // Threads running completions. Range [1, 64].
    int threads = 2;
  };

  // INVALID_ARGUMENT naming the field when out of range. Starts the threads.
  static absl::StatusOr<std::unique_ptr<CompletionExecutor>> Create(const Options& options);
  // Runs every task already posted, then joins the threads.
  ~CompletionExecutor();

  // Queues `task` (FIFO); some thread runs it soon. Never blocks on a running task. Tasks must
  // not call the destructor. Thread-safe.
  void Post(absl::AnyInvocable<void() &&> task);

 private:
  struct Impl;
  explicit CompletionExecutor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sparkle
