// Helpers shared by the libFuzzer targets in tests/fuzz/: invariant checks that abort (so that
// libFuzzer records the input), a private scratch directory for the parsers that read files, and
// a read of every byte of a view (so that ASan reports a view that leaves its buffer).
#pragma once

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "absl/strings/string_view.h"

// Aborts with the condition and a message when `cond` is false: an invariant of the parser under
// test was broken by this input.
#define FUZZ_CHECK(cond, msg)                                                             \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      std::fprintf(stderr, "%s:%d: invariant failed: %s: %s\n", __FILE__, __LINE__, #cond, \
                   std::string(msg).c_str());                                             \
      std::abort();                                                                       \
    }                                                                                     \
  } while (0)

namespace sparkle::fuzz {

// Where TouchBytes stores its sum, so that the reads are not optimised away.
inline volatile unsigned touch_sink = 0;

// Reads every byte of [data, data + size) so that ASan reports any byte outside a live buffer.
inline void TouchBytes(const void* data, size_t size) {
  const auto* p = static_cast<const volatile unsigned char*>(data);
  unsigned sum = 0;
  for (size_t i = 0; i < size; ++i) sum += p[i];
  touch_sink = sum;
}

// True when [p, p + size) lies inside [begin, begin + buffer_size).
inline bool Inside(const void* p, size_t size, const void* begin, size_t buffer_size) {
  const auto a = reinterpret_cast<uintptr_t>(p), b = reinterpret_cast<uintptr_t>(begin);
  return a >= b && a - b <= buffer_size && size <= buffer_size - (a - b);
}

// A directory of this process, made once under $TMPDIR (else /dev/shm, which is memory, else
// /tmp); left behind at exit (libFuzzer exits through _exit), a few small files.
inline const std::string& ScratchDir() {
  static const std::string* dir = [] {
    const char* base = std::getenv("TMPDIR");
    std::string root = base != nullptr && *base != '\0' ? base
                       : access("/dev/shm", W_OK) == 0 ? "/dev/shm"
                                                        : "/tmp";
    std::string templ = root + "/sparkle-fuzz-XXXXXX";
    if (mkdtemp(templ.data()) == nullptr) {
      std::perror("mkdtemp");
      std::abort();
    }
    return new std::string(templ);
  }();
  return *dir;
}

// Replaces the file at `path` with `bytes`; aborts when that fails (not the input's fault).
inline void WriteFileOrDie(const std::string& path, absl::string_view bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    std::perror(path.c_str());
    std::abort();
  }
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n <= 0) {
      std::perror(path.c_str());
      std::abort();
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
}

}  // namespace sparkle::fuzz
