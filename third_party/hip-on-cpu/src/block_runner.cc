#include "block_runner.h"

#include <sys/mman.h>
#include <unistd.h>

#include <boost/context/fiber.hpp>
#include <boost/context/stack_context.hpp>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <utility>
#include <vector>

namespace hipemu::detail {
namespace {

namespace ctx = boost::context;

// mmap'd fiber stacks with a PROT_NONE guard page, kept per OS thread and reused: a launch with
// 1024 threads per block and barriers needs 1024 stacks, every block.
class StackPool {
 public:
  ~StackPool() { Clear(); }

  ctx::stack_context Allocate(size_t usable_bytes) {
    if (usable_bytes != usable_bytes_) {
      Clear();
      usable_bytes_ = usable_bytes;
    }
    if (!free_.empty()) {
      ctx::stack_context sc = free_.back();
      free_.pop_back();
      return sc;
    }
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t total = (usable_bytes + page - 1) / page * page + page;
    void* base = mmap(nullptr, total, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (base == MAP_FAILED) {
      std::fprintf(stderr, "hip-on-cpu: cannot map a %zu-byte fiber stack\n", total);
      std::abort();
    }
    mprotect(base, page, PROT_NONE);  // stack overflow faults instead of corrupting memory
    ctx::stack_context sc;
    sc.size = total;
    sc.sp = static_cast<char*>(base) + total;
    return sc;
  }

  void Release(const ctx::stack_context& sc) {
    if (sc.size == Total()) {
      free_.push_back(sc);
    } else {
      munmap(static_cast<char*>(sc.sp) - sc.size, sc.size);
    }
  }

 private:
  size_t Total() const {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    return (usable_bytes_ + page - 1) / page * page + page;
  }
  void Clear() {
    for (const ctx::stack_context& sc : free_) {
      munmap(static_cast<char*>(sc.sp) - sc.size, sc.size);
    }
    free_.clear();
  }

  size_t usable_bytes_ = 0;
  std::vector<ctx::stack_context> free_;
};

thread_local StackPool t_stacks;

// Boost.Context StackAllocator over the pool.
struct PooledStack {
  size_t usable_bytes;
  ctx::stack_context allocate() { return t_stacks.Allocate(usable_bytes); }
  void deallocate(ctx::stack_context& sc) noexcept { t_stacks.Release(sc); }
};

// One GPU thread as the scheduler sees it. A runner fiber starts threads first, first+1, ...
// in this slot until one of them reaches a barrier; that thread then owns the fiber.
struct GpuThread {
  ctx::fiber scheduler;  // where __syncthreads() switches to
  dim3 idx{0, 0, 0};
  uint32_t linear = 0;
  bool suspended = false;  // reached a barrier: the runner stops after this thread
};

struct Block {
  const std::function<void()>* body;
  dim3 dim;
  uint32_t count;
  std::vector<GpuThread>* slots;
};

thread_local GpuThread* t_current = nullptr;
thread_local std::vector<GpuThread> t_slots;

dim3 Unlinear(uint32_t t, dim3 dim) {
  return dim3(t % dim.x, (t / dim.x) % dim.y, t / (dim.x * dim.y));
}

ctx::fiber RunThreadsFrom(const Block& block, uint32_t first, ctx::fiber&& scheduler) {
  GpuThread* me = &(*block.slots)[first];
  me->scheduler = std::move(scheduler);
  me->suspended = false;
  for (uint32_t t = first; t < block.count; ++t) {
    me->linear = t;
    me->idx = Unlinear(t, block.dim);
    t_thread_idx = me->idx;
    t_current = me;
    (*block.body)();
    if (me->suspended) break;  // the threads after t were started by other fibers
  }
  return std::move(me->scheduler);
}

}  // namespace

void SyncThreads() {
  GpuThread* me = t_current;
  if (me == nullptr) {
    std::fprintf(stderr, "hip-on-cpu: __syncthreads() called outside a kernel\n");
    std::abort();
  }
  me->suspended = true;
  me->scheduler = std::move(me->scheduler).resume();
}

void RunBlock(const std::function<void()>& body, dim3 block_dim, size_t stack_bytes,
              int64_t* switches) {
  const uint32_t count = block_dim.x * block_dim.y * block_dim.z;
  if (t_slots.size() < count) t_slots.resize(count);
  Block block{&body, block_dim, count, &t_slots};

  // Phase 1: start every thread. Each fiber returned suspended holds a thread at barrier 1.
  std::vector<std::pair<ctx::fiber, GpuThread*>> waiting;
  uint32_t next = 0;
  while (next < count) {
    const uint32_t first = next;
    ctx::fiber fiber(std::allocator_arg, PooledStack{stack_bytes},
                     [&block, first](ctx::fiber&& scheduler) {
                       return RunThreadsFrom(block, first, std::move(scheduler));
                     });
    fiber = std::move(fiber).resume();
    if (fiber) {
      GpuThread* at_barrier = t_current;
      waiting.emplace_back(std::move(fiber), at_barrier);
      next = at_barrier->linear + 1;
      ++*switches;
    } else {
      next = count;
    }
  }
  // Phase 2..n: every live thread is at a barrier; let each run to its next one (or its end).
  std::vector<std::pair<ctx::fiber, GpuThread*>> still;
  while (!waiting.empty()) {
    still.clear();
    for (auto& [fiber, thread] : waiting) {
      t_current = thread;
      t_thread_idx = thread->idx;
      fiber = std::move(fiber).resume();
      if (fiber) {
        still.emplace_back(std::move(fiber), thread);
        ++*switches;
      }
    }
    waiting.swap(still);
  }
  t_current = nullptr;
}

}  // namespace hipemu::detail
