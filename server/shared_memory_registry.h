// SharedMemoryRegistry: the system shared-memory regions clients registered (Triton's extension,
// docs/protocol.md "System shared memory"). A region is a byte range of a POSIX shared-memory
// object that the client created; the daemon maps it read-write, and tensors of later requests
// are read from and written to it in place (the parser calls Find).
//
// Regions are per owner (the caller's scheduling identity, server/scheduling_client.h: the token
// name, or the peer's host): another owner never sees, uses or removes them.
//
// Lifetime: a region is unmapped (and its fd closed) when the last reference goes; a region
// unregistered while queued or running jobs hold spans of it lives until they finish.
//
// Thread-safety: all methods may be called concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace sparkle {

// One registered region: bytes [offset, offset + byte_size) of the POSIX shared-memory object
// `key` (as shm_open names it), mapped read-write.
class SharedMemoryRegion {
 public:
  // Opens `key` (O_RDWR), checks that the object holds [offset, offset + byte_size) and maps
  // [0, offset + byte_size). Errors as SharedMemoryRegistry::Register documents (key syntax
  // excepted: the registry checks it first).
  static absl::StatusOr<std::shared_ptr<const SharedMemoryRegion>> Open(
      absl::string_view owner, absl::string_view name, absl::string_view key, uint64_t offset,
      uint64_t byte_size);

  SharedMemoryRegion(const SharedMemoryRegion&) = delete;
  SharedMemoryRegion& operator=(const SharedMemoryRegion&) = delete;
  ~SharedMemoryRegion();  // munmap + close

  const std::string& name() const { return name_; }
  const std::string& key() const { return key_; }
  const std::string& owner() const { return owner_; }
  uint64_t offset() const { return offset_; }
  uint64_t byte_size() const { return byte_size_; }
  uint8_t* data() const { return mapping_ + offset_; }  // the object's byte `offset`

  // OK if the object still holds offset + byte_size bytes (one fstat). A client that shrinks
  // its object after registering would make the daemon fault (SIGBUS) on the missing pages;
  // this turns the common case into FAILED_PRECONDITION naming the region and both sizes.
  absl::Status CheckObjectSize() const;

  // -------------------------------------------------------------------------------------------
  // Implementation details follow.
 private:
  SharedMemoryRegion(std::string owner, std::string name, std::string key, uint64_t offset,
                     uint64_t byte_size, int fd, uint8_t* mapping);

  const std::string owner_;
  const std::string name_;
  const std::string key_;
  const uint64_t offset_;
  const uint64_t byte_size_;
  const int fd_;
  uint8_t* const mapping_;  // offset_ + byte_size_ bytes from the object's byte 0
};

// What a tensor uses: keeps the region mapped while it lives.
struct SharedMemorySpan {
  std::shared_ptr<const SharedMemoryRegion> region;
  uint8_t* data = nullptr;  // region->data() + offset
  int64_t bytes = 0;
};

class SharedMemoryRegistry {
 public:
  struct Options {
    // Registered regions, all owners together; [1, 65536]. --shm_max_regions.
    int max_regions = 64;
    // Sum of byte_size of the registered regions, bytes; [1 MiB, 2^50]. --shm_max_bytes.
    int64_t max_bytes = int64_t{64} << 30;
  };

  // INVALID_ARGUMENT naming the option when `options` is out of range.
  static absl::StatusOr<std::unique_ptr<SharedMemoryRegistry>> Create(const Options& options);

  // Registers region `name` of `owner`: bytes [offset, offset + byte_size) of the object `key`.
  // INVALID_ARGUMENT: empty or > 256-byte name; a key that is not "[/]name" with 1..255 bytes,
  // no other '/', not "." or ".."; byte_size 0; offset + byte_size overflowing or beyond the
  // object's size. NOT_FOUND: no such object. PERMISSION_DENIED: the daemon's user may not open
  // it read-write. ALREADY_EXISTS: `owner` already has a region `name`. RESOURCE_EXHAUSTED
  // naming shm_max_regions / shm_max_bytes.
  absl::Status Register(absl::string_view owner, absl::string_view name, absl::string_view key,
                        uint64_t offset, uint64_t byte_size);
  // Removes region `name` of `owner` ("": all of the owner's). An unknown name is OK (as in
  // Triton). Jobs holding spans keep their mapping until they finish.
  absl::Status Unregister(absl::string_view owner, absl::string_view name);

  struct RegionInfo {
    std::string name, key;
    uint64_t offset = 0, byte_size = 0;
  };
  // Region `name` of `owner`, or all of them sorted by name when `name` is "". NOT_FOUND naming
  // an unknown region.
  absl::StatusOr<std::vector<RegionInfo>> Status(absl::string_view owner,
                                                 absl::string_view name) const;

  // [offset, offset + bytes) inside region `name` of `owner`. NOT_FOUND naming the region when
  // unknown; INVALID_ARGUMENT naming region, offset, size and the region's size when outside it
  // (overflow-checked); FAILED_PRECONDITION when the object shrank below the region
  // (SharedMemoryRegion::CheckObjectSize). Hot path: one mutex, one fstat, no allocation
  // beyond the shared_ptr copy.
  absl::StatusOr<SharedMemorySpan> Find(absl::string_view owner, absl::string_view name,
                                        uint64_t offset, uint64_t bytes) const;

  struct Snapshot {
    int64_t regions = 0;  // registered now
    int64_t bytes = 0;    // sum of their byte_size
  };
  Snapshot snapshot() const;

  // -------------------------------------------------------------------------------------------
  // Implementation details follow.
 private:
  explicit SharedMemoryRegistry(const Options& options) : options_(options) {}
  // OK or RESOURCE_EXHAUSTED if one more region of `byte_size` bytes would exceed a limit.
  absl::Status CheckLimits(uint64_t byte_size) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  using Regions = absl::flat_hash_map<std::string, std::shared_ptr<const SharedMemoryRegion>>;

  const Options options_;
  mutable absl::Mutex mutex_;
  absl::flat_hash_map<std::string, Regions> owners_ ABSL_GUARDED_BY(mutex_);
  int64_t regions_ ABSL_GUARDED_BY(mutex_) = 0;
  int64_t bytes_ ABSL_GUARDED_BY(mutex_) = 0;
};

}  // namespace sparkle
