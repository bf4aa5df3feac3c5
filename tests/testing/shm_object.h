// ShmObject: a POSIX shared-memory object a test creates as a client would (shm_open O_CREAT |
// O_EXCL, sized, mapped), unlinked and unmapped at the end; and MappingsOf, how many mappings of
// an object this process holds (the test's own and an in-process server's).
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace sparkle::testing {

class ShmObject {
 public:
  explicit ShmObject(size_t bytes, mode_t mode = 0600) : bytes_(bytes) {
    static std::atomic<int> counter{0};
    key_ = absl::StrCat("/sparkle-test-shm.", getpid(), ".", counter.fetch_add(1));
    fd_ = shm_open(key_.c_str(), O_CREAT | O_EXCL | O_RDWR, mode);
    EXPECT_GE(fd_, 0) << std::strerror(errno);
    EXPECT_EQ(fchmod(fd_, mode), 0);  // shm_open applies the umask
    EXPECT_EQ(ftruncate(fd_, static_cast<off_t>(bytes)), 0);
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    EXPECT_NE(p, MAP_FAILED);
    data_ = static_cast<uint8_t*>(p);
  }
  ShmObject(const ShmObject&) = delete;
  ShmObject& operator=(const ShmObject&) = delete;
  ~ShmObject() {
    munmap(data_, bytes_);
    close(fd_);
    Unlink();
  }
  void Unlink() { shm_unlink(key_.c_str()); }
  void Truncate(size_t bytes) { ASSERT_EQ(ftruncate(fd_, static_cast<off_t>(bytes)), 0); }
  const std::string& key() const { return key_; }
  uint8_t* data() const { return data_; }

 private:
  size_t bytes_;
  std::string key_;
  int fd_ = -1;
  uint8_t* data_ = nullptr;
};

inline int MappingsOf(const std::string& key) {
  std::ifstream maps("/proc/self/maps");
  int n = 0;
  for (std::string line; std::getline(maps, line);) {
    if (absl::StrContains(line, absl::StrCat("/dev/shm", key))) ++n;
  }
  return n;
}

}  // namespace sparkle::testing
