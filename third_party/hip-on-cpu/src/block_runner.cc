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

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#endif

namespace hipemu::detail {
namespace {

namespace ctx = boost::context;

// Sanitizer annotations of the fiber switches (SPARKLE_SANITIZE, cmake/SparkleSanitize.cmake).
// Without them ASan takes a fiber stack for a wild one and TSan sees one thread's call stacks
// and happens-before order scrambled. Boost.Context's fcontext fibers have no annotations of
// their own, so every switch below is bracketed by hand:
//   ASan: __sanitizer_start_switch_fiber(save, bottom, size) right before a switch, and
//         __sanitizer_finish_switch_fiber(save, ...) right after arriving; a fiber that ends
//         passes a null save (its fake stack dies with it).
//   TSan: a TSan fiber per Boost fiber, __tsan_switch_to_fiber right before each switch. A
//         fiber that ends does NOT switch before returning: the Boost frames that unwind after
//         the lambda returns (and fiber_exit) then pop the ending fiber's shadow stack, not
//         the scheduler's; the scheduler switches back when it sees the fiber has ended.
//         TSan fibers are kept in the slots and reused (creating one per Boost fiber made a
//         40-block, 256-thread barrier kernel take minutes), but renewed after
//         kTsanFiberUses uses: Boost's fiber_entry never returns, so each use may leave one
//         frame on the TSan fiber's shadow stack. Those of a worker thread that exits leak.
// The fiber constructor's first jump (Boost's fiber_entry prologue) runs under the new TSan
// fiber too; ASan needs nothing there (no frame with redzones is left except fiber_entry's,
// and reused stacks are unpoisoned in StackPool::Allocate).
struct FiberSan {
  const void* stack_bottom = nullptr;  // ASan: the fiber's stack (guard page included)
  size_t stack_size = 0;
  void* fake_stack = nullptr;  // ASan: the fiber's fake stack while it is switched out
  void* tsan_fiber = nullptr;  // TSan: the fiber's context, reused (see above)
  int tsan_uses = 0;
};
[[maybe_unused]] constexpr int kTsanFiberUses = 1000;

// The scheduler side (the worker's own OS-thread stack), per OS thread.
[[maybe_unused]] thread_local const void* t_scheduler_bottom = nullptr;
[[maybe_unused]] thread_local size_t t_scheduler_size = 0;
[[maybe_unused]] thread_local void* t_scheduler_fake_stack = nullptr;
[[maybe_unused]] thread_local void* t_scheduler_tsan = nullptr;

// Scheduler -> fiber `to`.
inline void SanEnterFiber(FiberSan& to) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_start_switch_fiber(&t_scheduler_fake_stack, to.stack_bottom, to.stack_size);
#endif
#if defined(__SANITIZE_THREAD__)
  __tsan_switch_to_fiber(to.tsan_fiber, 0);
#endif
  (void)to;
}
// Back on the scheduler after resuming `from`, which is suspended or (`ended`) finished.
inline void SanBackOnScheduler(FiberSan& from, bool ended) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(t_scheduler_fake_stack, nullptr, nullptr);
#endif
#if defined(__SANITIZE_THREAD__)
  if (ended) __tsan_switch_to_fiber(t_scheduler_tsan, 0);
#endif
  (void)from;
  (void)ended;
}
// First instructions of a new fiber (its first resume).
inline void SanFiberStarted() {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(nullptr, &t_scheduler_bottom, &t_scheduler_size);
#endif
}
// Fiber -> scheduler at a barrier; SanFiberResumed when the scheduler resumes it.
inline void SanFiberSuspend(FiberSan& me) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_start_switch_fiber(&me.fake_stack, t_scheduler_bottom, t_scheduler_size);
#endif
#if defined(__SANITIZE_THREAD__)
  __tsan_switch_to_fiber(t_scheduler_tsan, 0);
#endif
  (void)me;
}
inline void SanFiberResumed(FiberSan& me) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(me.fake_stack, &t_scheduler_bottom, &t_scheduler_size);
#endif
  (void)me;
}
// The fiber's last switch (its lambda returns next): ASan drops its fake stack.
inline void SanFiberEnding() {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_start_switch_fiber(nullptr, t_scheduler_bottom, t_scheduler_size);
#endif
}

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
#if defined(__SANITIZE_ADDRESS__)
      // A finished fiber never returns from Boost's fiber_entry: its redzones stay poisoned.
      ASAN_UNPOISON_MEMORY_REGION(static_cast<char*>(sc.sp) - sc.size, sc.size);
#endif
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

// Boost.Context StackAllocator over the pool; `san` (if set) learns the stack's bounds.
struct PooledStack {
  size_t usable_bytes;
  FiberSan* san = nullptr;
  ctx::stack_context allocate() {
    ctx::stack_context sc = t_stacks.Allocate(usable_bytes);
    if (san != nullptr) {
      san->stack_bottom = static_cast<char*>(sc.sp) - sc.size;
      san->stack_size = sc.size;
    }
    return sc;
  }
  void deallocate(ctx::stack_context& sc) noexcept { t_stacks.Release(sc); }
};

// One GPU thread as the scheduler sees it. A runner fiber starts threads first, first+1, ...
// in this slot until one of them reaches a barrier; that thread then owns the fiber.
struct GpuThread {
  ctx::fiber scheduler;  // where __syncthreads() switches to
  dim3 idx{0, 0, 0};
  uint32_t linear = 0;
  bool suspended = false;  // reached a barrier: the runner stops after this thread
  FiberSan san;            // of the fiber that runs from this slot
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
  SanFiberStarted();
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
  SanFiberEnding();
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
  SanFiberSuspend(me->san);
  me->scheduler = std::move(me->scheduler).resume();
  SanFiberResumed(me->san);
}

void RunBlock(const std::function<void()>& body, dim3 block_dim, size_t stack_bytes,
              int64_t* switches) {
  const uint32_t count = block_dim.x * block_dim.y * block_dim.z;
  if (t_slots.size() < count) t_slots.resize(count);
  Block block{&body, block_dim, count, &t_slots};
#if defined(__SANITIZE_THREAD__)
  t_scheduler_tsan = __tsan_get_current_fiber();
#endif

  // Phase 1: start every thread. Each fiber returned suspended holds a thread at barrier 1.
  std::vector<std::pair<ctx::fiber, GpuThread*>> waiting;
  uint32_t next = 0;
  while (next < count) {
    const uint32_t first = next;
    FiberSan& san = t_slots[first].san;
#if defined(__SANITIZE_THREAD__)
    if (san.tsan_fiber == nullptr || ++san.tsan_uses > kTsanFiberUses) {
      if (san.tsan_fiber != nullptr) __tsan_destroy_fiber(san.tsan_fiber);
      san.tsan_fiber = __tsan_create_fiber(0);
      san.tsan_uses = 1;
    }
    __tsan_switch_to_fiber(san.tsan_fiber, 0);  // the constructor enters the new stack once
#endif
    ctx::fiber fiber(std::allocator_arg, PooledStack{stack_bytes, &san},
                     [&block, first](ctx::fiber&& scheduler) {
                       return RunThreadsFrom(block, first, std::move(scheduler));
                     });
#if defined(__SANITIZE_THREAD__)
    __tsan_switch_to_fiber(t_scheduler_tsan, 0);
#endif
    SanEnterFiber(san);
    fiber = std::move(fiber).resume();
    SanBackOnScheduler(san, !fiber);
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
      SanEnterFiber(thread->san);
      fiber = std::move(fiber).resume();
      SanBackOnScheduler(thread->san, !fiber);
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
