// Makes absl::Mutex, absl::CondVar and absl::Notification visible to ThreadSanitizer in the SPARKLE_SANITIZE=thread
// build (cmake/SparkleSanitize.cmake links this file into every executable of that build only).
//
// Why: Debian's libabsl_synchronization.so is not built with -fsanitize=thread, so its
// Mutex::Lock/Unlock never tell TSan anything, and every access guarded by an absl::Mutex that
// two threads make looks like a data race (false positives, e.g. ShapeBatcher::Close() vs
// NextBatch() on `closed`).
//
// How: the out-of-line member functions are defined again here, in the executable. ELF symbol
// interposition makes the executable's definition the one every caller binds to: our own code
// (static libraries, linked into the executable), the inline helpers of mutex.h (MutexLock,
// ReaderMutexLock, WriterMutexLock, ReleasableMutexLock, ...) and the other absl/gRPC shared
// libraries (Notification, BlockingCounter, Barrier call Lock/Unlock/LockWhen... through the
// PLT). Each definition calls the original in libabsl_synchronization.so, found with
// dlsym(RTLD_NEXT, "<mangled name>"), between the TSan mutex annotations of
// <sanitizer/tsan_interface.h>, as abseil's own sources do when abseil itself is built with TSan.
//
// Between __tsan_mutex_pre_* and __tsan_mutex_post_*, TSan ignores memory accesses and
// synchronization: the absl::Condition callbacks (our code, instrumented) that the original
// evaluates there are not checked (a false negative, never a false positive). Await* and
// CondVar::Wait* release the mutex and take it again inside: they are annotated as an unlock
// (release: the writes before it happen-before the next owner) followed by a lock (acquire).
//
// The symbols below are those of Debian 12's abseil 20220623 (inline namespace debian3); a
// different abseil makes dlsym fail, and the process stops at the first call with a message.
#if !defined(__SANITIZE_THREAD__)
#error "tests/sanitizers/tsan_absl_mutex.cc belongs in the -fsanitize=thread build only"
#endif

#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace {

// The original definition of `mangled` in the next object after the executable (the abseil
// shared library); aborts when there is none.
void* Original(const char* mangled) {
  void* fn = dlsym(RTLD_NEXT, mangled);
  if (fn == nullptr) {
    std::fprintf(stderr, "tsan_absl_mutex: dlsym(RTLD_NEXT, %s) failed: %s\n", mangled,
                 dlerror());
    std::abort();
  }
  return fn;
}

// The original member function `mangled`, resolved once, as a plain function taking `this`
// first (the Itanium C++ ABI of a non-virtual member function).
#define SPARKLE_ORIGINAL(type, mangled) \
  static const auto real = reinterpret_cast<type>(Original(mangled))

// Calls that went through this file (tests/sanitizers/tsan_absl_mutex_test.cc checks them).
std::atomic<uint64_t> g_annotated_calls{0};
void Count() { g_annotated_calls.fetch_add(1, std::memory_order_relaxed); }

// absl::Mutex keeps its whole state in one word (`std::atomic<intptr_t> mu_`, its only member);
// kMuWriter (0x8 in abseil's mutex.cc) is set while it is held exclusively. A thread that holds
// the mutex reads this to know in which mode it holds it (Await and CondVar::Wait accept both).
constexpr intptr_t kMuWriter = 0x0008;
static_assert(sizeof(absl::Mutex) == sizeof(std::atomic<intptr_t>));
unsigned HeldModeFlags(const absl::Mutex* mu) {
  const auto* word = reinterpret_cast<const std::atomic<intptr_t>*>(mu);
  return (word->load(std::memory_order_relaxed) & kMuWriter) != 0 ? 0u : __tsan_mutex_read_lock;
}

// Some originals call another interposed function through the PLT (AwaitWithTimeout jumps to
// AwaitWithDeadline, LockWhenWithTimeout to LockWhenWithDeadline, CondVar::WaitWithTimeout to
// WaitWithDeadline): only the outermost call of a thread is annotated, the inner one passes
// straight through. No user code but absl::Condition callbacks (which must not lock) runs inside.
thread_local int t_depth = 0;
struct Nested {
  Nested() { ++t_depth; }
  ~Nested() { --t_depth; }
  Nested(const Nested&) = delete;
  Nested& operator=(const Nested&) = delete;
};

// Exclusive or shared acquisition that always succeeds.
template <typename F>
void AnnotatedLock(absl::Mutex* mu, unsigned flags, F&& real_call) {
  if (t_depth > 0) return real_call();
  Nested nested;
  Count();
  __tsan_mutex_pre_lock(mu, flags);
  real_call();
  __tsan_mutex_post_lock(mu, flags, 0);
}

// Acquisition that may fail (TryLock).
template <typename F>
bool AnnotatedTryLock(absl::Mutex* mu, unsigned flags, F&& real_call) {
  if (t_depth > 0) return real_call();
  Nested nested;
  Count();
  flags |= __tsan_mutex_try_lock;
  __tsan_mutex_pre_lock(mu, flags);
  const bool ok = real_call();
  __tsan_mutex_post_lock(mu, ok ? flags : flags | __tsan_mutex_try_lock_failed, 0);
  return ok;
}

template <typename F>
void AnnotatedUnlock(absl::Mutex* mu, unsigned flags, F&& real_call) {
  if (t_depth > 0) return real_call();
  Nested nested;
  Count();
  __tsan_mutex_pre_unlock(mu, flags);
  real_call();
  __tsan_mutex_post_unlock(mu, flags);
}

// A wait that releases the held mutex and holds it again (in the same mode) on return.
template <typename F>
auto AnnotatedWait(absl::Mutex* mu, F&& real_call) {
  if (t_depth > 0) return real_call();
  Nested nested;
  Count();
  const unsigned flags = HeldModeFlags(mu);
  __tsan_mutex_pre_unlock(mu, flags);
  auto result = real_call();
  __tsan_mutex_post_unlock(mu, flags);
  __tsan_mutex_pre_lock(mu, flags);
  __tsan_mutex_post_lock(mu, flags, 0);
  return result;
}

}  // namespace

// For tests/sanitizers/tsan_absl_mutex_test.cc: how many annotated calls were made so far.
extern "C" uint64_t SparkleTsanAbslMutexAnnotatedCalls() {
  return g_annotated_calls.load(std::memory_order_relaxed);
}

namespace absl {
ABSL_NAMESPACE_BEGIN

using Cond = const Condition&;

Mutex::~Mutex() {
  SPARKLE_ORIGINAL(void (*)(Mutex*), "_ZN4absl7debian35MutexD1Ev");
  __tsan_mutex_destroy(this, 0);
  real(this);
}

// ---- exclusive ----
void Mutex::Lock() {
  SPARKLE_ORIGINAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex4LockEv");
  AnnotatedLock(this, 0, [&] { real(this); });
}
void Mutex::Unlock() {
  SPARKLE_ORIGINAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex6UnlockEv");
  AnnotatedUnlock(this, 0, [&] { real(this); });
}
bool Mutex::TryLock() {
  SPARKLE_ORIGINAL(bool (*)(Mutex*), "_ZN4absl7debian35Mutex7TryLockEv");
  return AnnotatedTryLock(this, 0, [&] { return real(this); });
}
void Mutex::LockWhen(Cond cond) {
  SPARKLE_ORIGINAL(void (*)(Mutex*, Cond), "_ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE");
  AnnotatedLock(this, 0, [&] { real(this, cond); });
}
// The *WithTimeout/*WithDeadline lock functions hold the mutex on return whatever they return.
bool Mutex::LockWhenWithTimeout(Cond cond, Duration timeout) {
  SPARKLE_ORIGINAL(bool (*)(Mutex*, Cond, Duration),
                   "_ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  bool result = false;
  AnnotatedLock(this, 0, [&] { result = real(this, cond, timeout); });
  return result;
}
bool Mutex::LockWhenWithDeadline(Cond cond, Time deadline) {
  SPARKLE_ORIGINAL(bool (*)(Mutex*, Cond, Time),
                   "_ZN4absl7debian35Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  bool result = false;
  AnnotatedLock(this, 0, [&] { result = real(this, cond, deadline); });
  return result;
}

// ---- shared ----
void Mutex::ReaderLock() {
  SPARKLE_ORIGINAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex10ReaderLockEv");
  AnnotatedLock(this, __tsan_mutex_read_lock, [&] { real(this); });
}
void Mutex::ReaderUnlock() {
  SPARKLE_ORIGINAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex12ReaderUnlockEv");
  AnnotatedUnlock(this, __tsan_mutex_read_lock, [&] { real(this); });
}
bool Mutex::ReaderTryLock() {
  SPARKLE_ORIGINAL(bool (*)(Mutex*), "_ZN4absl7debian35Mutex13ReaderTryLockEv");
  return AnnotatedTryLock(this, __tsan_mutex_read_lock, [&] { return real(this); });
}
void Mutex::ReaderLockWhen(Cond cond) {
  SPARKLE_ORIGINAL(void (*)(Mutex*, Cond),
                   "_ZN4absl7debian35Mutex14ReaderLockWhenERKNS0_9ConditionE");
  AnnotatedLock(this, __tsan_mutex_read_lock, [&] { real(this, cond); });
}
bool Mutex::ReaderLockWhenWithTimeout(Cond cond, Duration timeout) {
  SPARKLE_ORIGINAL(
      bool (*)(Mutex*, Cond, Duration),
      "_ZN4absl7debian35Mutex25ReaderLockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  bool result = false;
  AnnotatedLock(this, __tsan_mutex_read_lock, [&] { result = real(this, cond, timeout); });
  return result;
}
bool Mutex::ReaderLockWhenWithDeadline(Cond cond, Time deadline) {
  SPARKLE_ORIGINAL(
      bool (*)(Mutex*, Cond, Time),
      "_ZN4absl7debian35Mutex26ReaderLockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  bool result = false;
  AnnotatedLock(this, __tsan_mutex_read_lock, [&] { result = real(this, cond, deadline); });
  return result;
}

// ---- waits with the mutex held (released and reacquired inside) ----
void Mutex::Await(Cond cond) {
  SPARKLE_ORIGINAL(void (*)(Mutex*, Cond), "_ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE");
  AnnotatedWait(this, [&] {
    real(this, cond);
    return 0;
  });
}
bool Mutex::AwaitWithTimeout(Cond cond, Duration timeout) {
  SPARKLE_ORIGINAL(bool (*)(Mutex*, Cond, Duration),
                   "_ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  return AnnotatedWait(this, [&] { return real(this, cond, timeout); });
}
bool Mutex::AwaitWithDeadline(Cond cond, Time deadline) {
  SPARKLE_ORIGINAL(bool (*)(Mutex*, Cond, Time),
                   "_ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  return AnnotatedWait(this, [&] { return real(this, cond, deadline); });
}

// CondVar::Signal/SignalAll need nothing: the happens-before goes through the mutex.
void CondVar::Wait(Mutex* mu) {
  SPARKLE_ORIGINAL(void (*)(CondVar*, Mutex*), "_ZN4absl7debian37CondVar4WaitEPNS0_5MutexE");
  AnnotatedWait(mu, [&] {
    real(this, mu);
    return 0;
  });
}
bool CondVar::WaitWithTimeout(Mutex* mu, Duration timeout) {
  SPARKLE_ORIGINAL(bool (*)(CondVar*, Mutex*, Duration),
                   "_ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  return AnnotatedWait(mu, [&] { return real(this, mu, timeout); });
}
bool CondVar::WaitWithDeadline(Mutex* mu, Time deadline) {
  SPARKLE_ORIGINAL(bool (*)(CondVar*, Mutex*, Time),
                   "_ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  return AnnotatedWait(mu, [&] { return real(this, mu, deadline); });
}

// absl::Notification: Notify() stores `notified_yet_` (release) and the waits and the inline
// HasBeenNotified() load it (acquire) outside the mutex when it is already set; a store in the
// uninstrumented library is invisible to TSan, so the release is annotated here on the address
// of that atomic (after the 8-byte Mutex: `Mutex mutex_; std::atomic<bool> notified_yet_;`),
// where TSan's own instrumented acquire load in HasBeenNotified() and the annotated acquire of
// the out-of-line waits find it.
static_assert(sizeof(Notification) == 2 * sizeof(Mutex));
static const void* NotifiedYet(const Notification* n) {
  return reinterpret_cast<const char*>(n) + sizeof(Mutex);
}
void Notification::Notify() {
  SPARKLE_ORIGINAL(void (*)(Notification*), "_ZN4absl7debian312Notification6NotifyEv");
  __tsan_release(const_cast<void*>(NotifiedYet(this)));
  real(this);
}
void Notification::WaitForNotification() const {
  SPARKLE_ORIGINAL(void (*)(const Notification*),
                   "_ZNK4absl7debian312Notification19WaitForNotificationEv");
  real(this);
  __tsan_acquire(const_cast<void*>(NotifiedYet(this)));
}
bool Notification::WaitForNotificationWithTimeout(Duration timeout) const {
  SPARKLE_ORIGINAL(bool (*)(const Notification*, Duration),
                   "_ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE");
  const bool notified = real(this, timeout);
  if (notified) __tsan_acquire(const_cast<void*>(NotifiedYet(this)));
  return notified;
}
bool Notification::WaitForNotificationWithDeadline(Time deadline) const {
  SPARKLE_ORIGINAL(bool (*)(const Notification*, Time),
                   "_ZNK4absl7debian312Notification31WaitForNotificationWithDeadlineENS0_4TimeE");
  const bool notified = real(this, deadline);
  if (notified) __tsan_acquire(const_cast<void*>(NotifiedYet(this)));
  return notified;
}

ABSL_NAMESPACE_END
}  // namespace absl
