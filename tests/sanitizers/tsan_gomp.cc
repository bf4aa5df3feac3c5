// Makes the fork, join and barriers of OpenMP parallel regions visible to ThreadSanitizer in the
// SPARKLE_SANITIZE=thread build (linked into every executable there, like tsan_absl_mutex.cc).
//
// Why: Debian's libgomp is not built with TSan: the threads of a parallel region start on, and
// are joined by, futexes and atomics TSan never sees. A buffer the calling thread allocates or
// writes and a team thread then writes (oneDNN's scratchpad memset in its worker threads, an
// `omp parallel for` of CpuBackend) looks like a data race.
//
// How: GOMP_parallel (what g++ emits for `#pragma omp parallel`, in our code and in libdnnl.so)
// and GOMP_barrier / GOMP_loop_end (the barriers of `omp barrier` and of a worksharing loop)
// are defined again here; ELF interposition makes every caller use these, and
// they call libgomp's through dlsym(RTLD_NEXT). The calling thread releases before the region
// starts and every team thread acquires that at its start (fork); every team thread releases
// at its end and the caller acquires after GOMP_parallel returns (join). A barrier is a release
// then an acquire of one address shared by all barriers (more order than the real one: false
// negatives at worst, never a false report). Memory accesses inside libgomp and libdnnl stay
// invisible; what these functions run is checked as usual.
#if !defined(__SANITIZE_THREAD__)
#error "tests/sanitizers/tsan_gomp.cc belongs in the -fsanitize=thread build only"
#endif

#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <cstdlib>

namespace {

void* Original(const char* name) {
  void* fn = dlsym(RTLD_NEXT, name);
  if (fn == nullptr) {
    std::fprintf(stderr, "tsan_gomp: dlsym(RTLD_NEXT, %s) failed: %s\n", name, dlerror());
    std::abort();
  }
  return fn;
}

// One parallel region: what it runs, and the addresses of its fork and join edges.
struct Region {
  void (*fn)(void*);
  void* data;
  char fork;
  char join;
};

void RunInTeam(void* arg) {
  auto* region = static_cast<Region*>(arg);
  __tsan_acquire(&region->fork);
  region->fn(region->data);
  __tsan_release(&region->join);
}

char g_barrier;  // the address every GOMP_barrier releases to and acquires from

}  // namespace

extern "C" void GOMP_parallel(void (*fn)(void*), void* data, unsigned num_threads,
                              unsigned flags) {
  static const auto real =
      reinterpret_cast<void (*)(void (*)(void*), void*, unsigned, unsigned)>(
          Original("GOMP_parallel"));
  Region region{fn, data, 0, 0};
  __tsan_release(&region.fork);
  real(RunInTeam, &region, num_threads, flags);
  __tsan_acquire(&region.join);
}

extern "C" void GOMP_barrier() {
  static const auto real = reinterpret_cast<void (*)()>(Original("GOMP_barrier"));
  __tsan_release(&g_barrier);
  real();
  __tsan_acquire(&g_barrier);
}

extern "C" void GOMP_loop_end() {
  static const auto real = reinterpret_cast<void (*)()>(Original("GOMP_loop_end"));
  __tsan_release(&g_barrier);
  real();
  __tsan_acquire(&g_barrier);
}
