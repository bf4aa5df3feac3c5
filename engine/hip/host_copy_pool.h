// HostCopyPool: host memcpy of large buffers split across a few threads.
//
// The executor copies every job's input into pinned staging and every output back out. One
// thread copies ~10-20 GB/s on a server CPU, less than a PCIe 5 link moves (~50 GB/s), so a
// single-threaded copy would cap the pipeline below the link; the pool splits copies into
// chunks that its threads and the caller copy together. Small copies (under two chunks in all)
// are done by the caller alone, with no locking.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

namespace sparkle::hip {

class HostCopyPool {
 public:
  struct Copy {
    void* dst;
    const void* src;
    size_t bytes;
  };

  // `threads` copy in parallel, the caller of Run included: threads - 1 helpers are started.
  // Range [1, 64]; 1 = the caller copies alone.
  explicit HostCopyPool(int threads);
  ~HostCopyPool();  // joins the helpers (Run must not be running)

  HostCopyPool(const HostCopyPool&) = delete;
  HostCopyPool& operator=(const HostCopyPool&) = delete;

  // Copies every entry (regions must not overlap); returns when all are done. Thread-safe:
  // concurrent calls share the helpers.
  void Run(const std::vector<Copy>& copies);

  static constexpr size_t kChunkBytes = size_t{1} << 20;  // unit of work shared out

 private:
  struct Chunk {
    char* dst;
    const char* src;
    size_t bytes;
  };
  struct Job {
    std::vector<Chunk> chunks;
    size_t next = 0;       // first chunk nobody took yet (guarded by mu_)
    size_t remaining = 0;  // chunks not yet copied (guarded by mu_)
  };
  // A helper thread: copies chunks of the queued jobs until the pool stops.
  void HelperLoop();
  // Copies chunks of `job` until none is left to take; the caller then waits for the rest.
  void Work(Job& job);

  std::mutex mu_;
  std::condition_variable work_cv_;  // a job was queued, or stopping
  std::condition_variable done_cv_;  // some job's remaining reached 0
  std::deque<Job*> queue_;           // jobs with chunks not yet taken
  bool stopping_ = false;
  std::vector<std::thread> helpers_;
};

}  // namespace sparkle::hip
