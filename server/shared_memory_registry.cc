#include "server/shared_memory_registry.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace sparkle {
namespace {

constexpr size_t kMaxNameBytes = 256;
constexpr size_t kMaxKeyBytes = 255;  // after the optional leading '/' (NAME_MAX)
constexpr int kMaxRegionsLimit = 65536;
constexpr int64_t kMinBytesLimit = int64_t{1} << 20;
constexpr int64_t kMaxBytesLimit = int64_t{1} << 50;

// OK if `key` is a name shm_open takes for an object directly under /dev/shm.
absl::Status ValidateKey(absl::string_view key) {
  absl::string_view rest = key;
  if (!rest.empty() && rest.front() == '/') rest.remove_prefix(1);
  const bool bad = rest.empty() || rest.size() > kMaxKeyBytes || rest == "." || rest == ".." ||
                   rest.find('/') != absl::string_view::npos ||
                   rest.find('\0') != absl::string_view::npos;
  if (!bad) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "invalid shared memory key '", absl::CEscape(key),
      "': expected an optional leading '/' then 1 to 255 bytes without '/' (as shm_open names "
      "an object in /dev/shm), not '.' or '..'"));
}

absl::Status OpenError(absl::string_view key, absl::string_view name, int error) {
  const std::string what =
      absl::StrCat("shared memory object '", key, "' of region '", name, "'");
  switch (error) {
    case ENOENT:
      return absl::NotFoundError(absl::StrCat("unable to open shared memory object '", key,
                                              "' for region '", name,
                                              "': no such object (create it with shm_open on "
                                              "the daemon's host before registering)"));
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(absl::StrCat(
          "unable to open ", what, " read-write: ", std::strerror(error),
          ". sparkled runs as uid ", geteuid(), " gid ", getegid(),
          ": give the object a mode and group that let this user read and write it (e.g. "
          "0660 and a group shared with the daemon; docs/operations.md \"Shared memory\")"));
    case EINVAL:
    case ENAMETOOLONG:
      return absl::InvalidArgumentError(
          absl::StrCat("unable to open ", what, ": ", std::strerror(error)));
    default:
      return absl::InternalError(
          absl::StrCat("unable to open ", what, ": ", std::strerror(error)));
  }
}

// a + b, or false if it overflows uint64.
bool AddOverflows(uint64_t a, uint64_t b, uint64_t* sum) {
  return __builtin_add_overflow(a, b, sum);
}

// OK if byte_size >= 1 and offset + byte_size fits an off_t.
absl::Status ValidateRange(absl::string_view name, uint64_t offset, uint64_t byte_size) {
  if (byte_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("shared memory region '", name, "': byte_size must be >= 1; was 0"));
  }
  uint64_t end = 0;
  if (AddOverflows(offset, byte_size, &end) ||
      end > static_cast<uint64_t>(std::numeric_limits<off_t>::max())) {
    return absl::InvalidArgumentError(absl::StrCat("shared memory region '", name, "': offset ",
                                                   offset, " + byte_size ", byte_size,
                                                   " overflows"));
  }
  return absl::OkStatus();
}

}  // namespace

// ---- SharedMemoryRegion ----------------------------------------------------------------------

absl::StatusOr<std::shared_ptr<const SharedMemoryRegion>> SharedMemoryRegion::Open(
    absl::string_view owner, absl::string_view name, absl::string_view key, uint64_t offset,
    uint64_t byte_size) {
  if (absl::Status s = ValidateRange(name, offset, byte_size); !s.ok()) return s;
  const uint64_t end = offset + byte_size;
  const std::string key_string(key);
  const int fd = shm_open(key_string.c_str(), O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) return OpenError(key, name, errno);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int error = errno;
    close(fd);
    return absl::InternalError(absl::StrCat("fstat of shared memory object '", key,
                                            "' failed: ", std::strerror(error)));
  }
  if (st.st_size < 0 || static_cast<uint64_t>(st.st_size) < end) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrCat(
        "shared memory region '", name, "': offset ", offset, " + byte_size ", byte_size, " = ",
        end, " exceeds the size of shared memory object '", key, "' (", st.st_size,
        " bytes)"));
  }
  void* mapping = mmap(nullptr, end, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (mapping == MAP_FAILED) {
    const int error = errno;
    close(fd);
    return absl::InternalError(absl::StrCat("mmap of shared memory object '", key, "' (", end,
                                            " bytes) failed: ", std::strerror(error)));
  }
  return std::shared_ptr<const SharedMemoryRegion>(
      new SharedMemoryRegion(std::string(owner), std::string(name), key_string, offset,
                             byte_size, fd, static_cast<uint8_t*>(mapping)));
}

SharedMemoryRegion::SharedMemoryRegion(std::string owner, std::string name, std::string key,
                                       uint64_t offset, uint64_t byte_size, int fd,
                                       uint8_t* mapping)
    : owner_(std::move(owner)),
      name_(std::move(name)),
      key_(std::move(key)),
      offset_(offset),
      byte_size_(byte_size),
      fd_(fd),
      mapping_(mapping) {}

SharedMemoryRegion::~SharedMemoryRegion() {
  munmap(mapping_, offset_ + byte_size_);
  close(fd_);
}

absl::Status SharedMemoryRegion::CheckObjectSize() const {
  struct stat st;
  if (fstat(fd_, &st) != 0) {
    return absl::InternalError(absl::StrCat("fstat of shared memory object '", key_,
                                            "' failed: ", std::strerror(errno)));
  }
  const uint64_t end = offset_ + byte_size_;  // checked in Open
  if (st.st_size >= 0 && static_cast<uint64_t>(st.st_size) >= end) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "shared memory object '", key_, "' of region '", name_, "' shrank to ", st.st_size,
      " bytes; the region needs ", end, ": unregister the region and register it again"));
}

// ---- SharedMemoryRegistry --------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<SharedMemoryRegistry>> SharedMemoryRegistry::Create(
    const Options& options) {
  if (options.max_regions < 1 || options.max_regions > kMaxRegionsLimit) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shm_max_regions must be in [1, 65536]; was ", options.max_regions));
  }
  if (options.max_bytes < kMinBytesLimit || options.max_bytes > kMaxBytesLimit) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shm_max_bytes must be in [1048576 (1 MiB), 2^50]; was ", options.max_bytes));
  }
  return std::unique_ptr<SharedMemoryRegistry>(new SharedMemoryRegistry(options));
}

absl::Status SharedMemoryRegistry::CheckLimits(uint64_t byte_size) const {
  if (regions_ + 1 > options_.max_regions) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot register another shared memory region: ", regions_,
        " are registered, the limit (shm_max_regions) is ", options_.max_regions,
        "; unregister unused regions"));
  }
  if (byte_size > static_cast<uint64_t>(options_.max_bytes - bytes_)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot register a shared memory region of ", byte_size, " bytes: ", bytes_,
        " bytes are registered, the limit (shm_max_bytes) is ", options_.max_bytes));
  }
  return absl::OkStatus();
}

absl::Status SharedMemoryRegistry::Register(absl::string_view owner, absl::string_view name,
                                            absl::string_view key, uint64_t offset,
                                            uint64_t byte_size) {
  if (name.empty() || name.size() > kMaxNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shared memory region name must have 1 to 256 bytes; was ", name.size()));
  }
  if (absl::Status s = ValidateKey(key); !s.ok()) return s;
  if (absl::Status s = ValidateRange(name, offset, byte_size); !s.ok()) return s;
  auto already = [&] {
    return absl::AlreadyExistsError(
        absl::StrCat("shared memory region '", name, "' is already registered"));
  };
  {
    // Cheap refusals first, before touching the object.
    absl::MutexLock lock(&mutex_);
    if (auto it = owners_.find(owner); it != owners_.end() && it->second.contains(name)) {
      return already();
    }
    if (absl::Status s = CheckLimits(byte_size); !s.ok()) return s;
  }
  absl::StatusOr<std::shared_ptr<const SharedMemoryRegion>> region =
      SharedMemoryRegion::Open(owner, name, key, offset, byte_size);
  if (!region.ok()) return region.status();
  // Checked again: another call may have registered meanwhile. On refusal the mapping goes
  // with `region`.
  absl::MutexLock lock(&mutex_);
  Regions& regions = owners_[owner];
  if (regions.contains(name)) return already();
  if (absl::Status s = CheckLimits(byte_size); !s.ok()) {
    if (regions.empty()) owners_.erase(owner);
    return s;
  }
  regions.emplace(std::string(name), *std::move(region));
  regions_ += 1;
  bytes_ += static_cast<int64_t>(byte_size);
  return absl::OkStatus();
}

absl::Status SharedMemoryRegistry::Unregister(absl::string_view owner, absl::string_view name) {
  // The regions are released outside the lock: the last reference unmaps.
  std::vector<std::shared_ptr<const SharedMemoryRegion>> released;
  {
    absl::MutexLock lock(&mutex_);
    auto it = owners_.find(owner);
    if (it == owners_.end()) return absl::OkStatus();
    Regions& regions = it->second;
    auto take = [&](Regions::iterator r) {
      regions_ -= 1;
      bytes_ -= static_cast<int64_t>(r->second->byte_size());
      released.push_back(std::move(r->second));
    };
    if (name.empty()) {
      for (auto r = regions.begin(); r != regions.end(); ++r) take(r);
      regions.clear();
    } else if (auto r = regions.find(name); r != regions.end()) {
      take(r);
      regions.erase(r);
    }
    if (regions.empty()) owners_.erase(it);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<SharedMemoryRegistry::RegionInfo>> SharedMemoryRegistry::Status(
    absl::string_view owner, absl::string_view name) const {
  std::vector<RegionInfo> result;
  auto info = [](const SharedMemoryRegion& r) {
    return RegionInfo{r.name(), r.key(), r.offset(), r.byte_size()};
  };
  absl::MutexLock lock(&mutex_);
  auto it = owners_.find(owner);
  if (!name.empty()) {
    const SharedMemoryRegion* found = nullptr;
    if (it != owners_.end()) {
      if (auto r = it->second.find(name); r != it->second.end()) found = r->second.get();
    }
    if (found == nullptr) {
      return absl::NotFoundError(
          absl::StrCat("unable to find system shared memory region: '", name, "'"));
    }
    result.push_back(info(*found));
    return result;
  }
  if (it == owners_.end()) return result;
  result.reserve(it->second.size());
  for (const auto& [unused, region] : it->second) result.push_back(info(*region));
  std::sort(result.begin(), result.end(),
            [](const RegionInfo& a, const RegionInfo& b) { return a.name < b.name; });
  return result;
}

absl::StatusOr<SharedMemorySpan> SharedMemoryRegistry::Find(absl::string_view owner,
                                                            absl::string_view name,
                                                            uint64_t offset,
                                                            uint64_t bytes) const {
  SharedMemorySpan span;
  {
    absl::MutexLock lock(&mutex_);
    if (auto it = owners_.find(owner); it != owners_.end()) {
      if (auto r = it->second.find(name); r != it->second.end()) span.region = r->second;
    }
  }
  if (span.region == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("unable to find system shared memory region: '", name, "'"));
  }
  const uint64_t size = span.region->byte_size();
  if (offset > size || bytes > size - offset ||
      bytes > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shared memory region '", name, "': offset ", offset, " + byte size ", bytes,
        " is outside the region, which has ", size, " bytes"));
  }
  if (absl::Status s = span.region->CheckObjectSize(); !s.ok()) return s;
  span.data = span.region->data() + offset;
  span.bytes = static_cast<int64_t>(bytes);
  return span;
}

SharedMemoryRegistry::Snapshot SharedMemoryRegistry::snapshot() const {
  absl::MutexLock lock(&mutex_);
  return Snapshot{regions_, bytes_};
}

}  // namespace sparkle
