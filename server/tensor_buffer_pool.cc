#include "server/tensor_buffer_pool.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#include "absl/strings/str_cat.h"

namespace sparkle {
namespace {

constexpr int64_t kAlignment = 64;
constexpr int kMinExponent = 12;  // 4 KiB
// From this capacity on, a new buffer's pages are faulted in (written once) where it is made,
// on the calling server thread, as the old zero-filled response buffer was: left to the engine,
// a 252 MiB output faulted page by page held the CPU pool ~0.5 s longer per job, and every small
// job waited behind it. (MAP_POPULATE did not do as well: 1.3 s of compute vs 1.0 s, measured.)
constexpr int64_t kTouchFrom = int64_t{1} << 20;

uint8_t* Allocate(int64_t capacity) {
  auto* p = static_cast<uint8_t*>(std::aligned_alloc(kAlignment, capacity));
  if (p != nullptr && capacity >= kTouchFrom) std::memset(p, 0, capacity);
  return p;
}

}  // namespace

TensorBufferPool::Buffer& TensorBufferPool::Buffer::operator=(Buffer&& other) noexcept {
  if (this != &other) {
    Reset();
    pool_ = std::exchange(other.pool_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    capacity_ = std::exchange(other.capacity_, 0);
  }
  return *this;
}

void TensorBufferPool::Buffer::Reset() {
  if (data_ != nullptr) pool_->Return(data_, capacity_);
  pool_ = nullptr;
  data_ = nullptr;
  size_ = capacity_ = 0;
}

absl::StatusOr<std::unique_ptr<TensorBufferPool>> TensorBufferPool::Create(
    const Options& options) {
  if (options.max_idle_bytes < 0 || options.max_idle_bytes > (int64_t{1} << 40)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor_pool_bytes must be in [0, 2^40]; was ", options.max_idle_bytes));
  }
  return std::unique_ptr<TensorBufferPool>(new TensorBufferPool(options));
}

TensorBufferPool::~TensorBufferPool() {
  for (auto& list : idle_) {
    for (uint8_t* p : list) std::free(p);
  }
}

int64_t TensorBufferPool::CapacityFor(int64_t bytes) {
  int64_t base = int64_t{1} << kMinExponent;
  if (bytes <= base) return base;
  while (base * 2 < bytes) base *= 2;
  // base < bytes <= 2 * base: the first quarter step at or above bytes.
  for (int quarter = 1; quarter <= 4; ++quarter) {
    const int64_t capacity = base + base / 4 * quarter;
    if (capacity >= bytes) return capacity;
  }
  return 2 * base;
}

int TensorBufferPool::ClassOf(int64_t capacity) {
  // capacity = 2^e * (1 + q/4), q in 1..4 (q = 4 is the next power), or 2^kMinExponent.
  int e = kMinExponent;
  while ((int64_t{2} << e) < capacity) ++e;
  if (capacity == (int64_t{1} << e)) return (e - kMinExponent) * 4;
  const int q = static_cast<int>((capacity - (int64_t{1} << e)) / ((int64_t{1} << e) / 4));
  return (e - kMinExponent) * 4 + q;
}

absl::StatusOr<TensorBufferPool::Buffer> TensorBufferPool::Get(int64_t bytes) {
  if (bytes <= 0 || bytes > (int64_t{1} << 40)) {
    return absl::InvalidArgumentError(absl::StrCat("buffer size out of range: ", bytes));
  }
  const int64_t capacity = CapacityFor(bytes);
  const int c = ClassOf(capacity);
  Buffer buffer;
  buffer.pool_ = this;
  buffer.size_ = bytes;
  buffer.capacity_ = capacity;
  {
    absl::MutexLock lock(&mu_);
    counters_.in_use_bytes += capacity;
    if (!idle_[c].empty()) {
      buffer.data_ = idle_[c].back();
      idle_[c].pop_back();
      counters_.idle_bytes -= capacity;
      ++counters_.reused;
      return buffer;
    }
    ++counters_.allocated;
  }
  buffer.data_ = Allocate(capacity);
  if (buffer.data_ == nullptr) {
    absl::MutexLock lock(&mu_);
    counters_.in_use_bytes -= capacity;
    buffer.pool_ = nullptr;
    return absl::ResourceExhaustedError(
        absl::StrCat("out of memory allocating a ", capacity, "-byte tensor buffer"));
  }
  return buffer;
}

void TensorBufferPool::Return(uint8_t* data, int64_t capacity) {
  {
    absl::MutexLock lock(&mu_);
    counters_.in_use_bytes -= capacity;
    if (counters_.idle_bytes + capacity <= options_.max_idle_bytes) {
      idle_[ClassOf(capacity)].push_back(data);
      counters_.idle_bytes += capacity;
      return;
    }
  }
  std::free(data);
}

TensorBufferPool::Snapshot TensorBufferPool::snapshot() const {
  absl::MutexLock lock(&mu_);
  return counters_;
}

}  // namespace sparkle
