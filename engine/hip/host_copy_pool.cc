// See host_copy_pool.h.
#include "engine/hip/host_copy_pool.h"

#include <algorithm>
#include <cstring>

namespace sparkle::hip {

HostCopyPool::HostCopyPool(int threads) {
  const int helpers = std::clamp(threads, 1, 64) - 1;
  for (int i = 0; i < helpers; ++i) helpers_.emplace_back([this] { HelperLoop(); });
}

HostCopyPool::~HostCopyPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : helpers_) t.join();
}

void HostCopyPool::Run(const std::vector<Copy>& copies) {
  size_t total = 0;
  for (const Copy& c : copies) total += c.bytes;
  if (helpers_.empty() || total < 2 * kChunkBytes) {
    for (const Copy& c : copies) {
      if (c.bytes > 0) std::memcpy(c.dst, c.src, c.bytes);  // memcpy of null is UB even for 0
    }
    return;
  }
  Job job;
  for (const Copy& c : copies) {
    for (size_t off = 0; off < c.bytes; off += kChunkBytes) {
      job.chunks.push_back(Chunk{static_cast<char*>(c.dst) + off,
                                 static_cast<const char*>(c.src) + off,
                                 std::min(kChunkBytes, c.bytes - off)});
    }
  }
  job.remaining = job.chunks.size();
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(&job);
  }
  work_cv_.notify_all();
  Work(job);
  // Helpers may still be copying chunks they took; `job` must outlive them.
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [&] { return job.remaining == 0; });
}

void HostCopyPool::Work(Job& job) {
  for (;;) {
    Chunk c;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (job.next == job.chunks.size()) return;
      c = job.chunks[job.next++];
      if (job.next == job.chunks.size()) queue_.erase(std::find(queue_.begin(), queue_.end(), &job));
    }
    std::memcpy(c.dst, c.src, c.bytes);
    std::lock_guard<std::mutex> lock(mu_);
    if (--job.remaining == 0) done_cv_.notify_all();
  }
}

void HostCopyPool::HelperLoop() {
  for (;;) {
    Job* job;
    Chunk c;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping
      job = queue_.front();
      c = job->chunks[job->next++];
      if (job->next == job->chunks.size()) queue_.pop_front();
    }
    std::memcpy(c.dst, c.src, c.bytes);
    // Last touch of `job`, under the lock: its owner returns only once remaining is 0.
    std::lock_guard<std::mutex> lock(mu_);
    if (--job->remaining == 0) done_cv_.notify_all();
  }
}

}  // namespace sparkle::hip
