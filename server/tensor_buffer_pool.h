// TensorBufferPool: 64-byte-aligned buffers for the tensor bytes the server must hold itself (an
// input that arrived split across gRPC slices, every response output), reused instead of freshly
// allocated: a fresh page costs ~11 µs here (docs/operations.md "Memory"), and zero-filling or
// faulting a new output buffer per request is what the pool removes. Capacities are quarter
// powers of two (≤ 19 % above the size asked for) from 4 KiB; idle buffers are kept up to
// max_idle_bytes in total and the rest freed. From 1 MiB, a new buffer's pages are faulted in
// when it is made, on the caller's thread, not one by one later inside the engine's compute.
// Buffers in use belong to admitted jobs, so the engine's in-flight budget bounds them
// (docs/operations.md "Memory bounds"). Thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace sparkle {

class TensorBufferPool {
 public:
  struct Options {
    // Idle buffers kept for reuse, in bytes of capacity. [0, 2^40]; 0 frees every buffer when it
    // is given back (no pooling).
    int64_t max_idle_bytes = int64_t{256} << 20;
  };

  // A buffer of at least `size()` bytes; move-only; back to its pool when destroyed. An empty
  // Buffer (default-constructed or moved from) holds nothing.
  class Buffer {
   public:
    Buffer() = default;
    Buffer(Buffer&& other) noexcept { *this = std::move(other); }
    Buffer& operator=(Buffer&& other) noexcept;
    ~Buffer() { Reset(); }

    uint8_t* data() const { return data_; }
    int64_t size() const { return size_; }          // bytes asked for
    int64_t capacity() const { return capacity_; }  // bytes allocated
    explicit operator bool() const { return data_ != nullptr; }
    void Reset();

   private:
    friend class TensorBufferPool;
    TensorBufferPool* pool_ = nullptr;
    uint8_t* data_ = nullptr;
    int64_t size_ = 0;
    int64_t capacity_ = 0;
  };

  // INVALID_ARGUMENT when max_idle_bytes is out of range.
  static absl::StatusOr<std::unique_ptr<TensorBufferPool>> Create(const Options& options);
  ~TensorBufferPool();  // every Buffer must have been given back

  // A buffer of `bytes` bytes (> 0), not zero-filled. RESOURCE_EXHAUSTED when memory is out.
  absl::StatusOr<Buffer> Get(int64_t bytes);

  struct Snapshot {
    int64_t idle_bytes = 0;      // capacity kept for reuse
    int64_t in_use_bytes = 0;    // capacity handed out and not yet back
    int64_t reused = 0;          // Get served from the idle buffers
    int64_t allocated = 0;       // Get that allocated
  };
  Snapshot snapshot() const;

  // The capacity Get(bytes) allocates (exposed for tests).
  static int64_t CapacityFor(int64_t bytes);

 private:
  explicit TensorBufferPool(const Options& options) : options_(options) {}
  void Return(uint8_t* data, int64_t capacity);

  static constexpr int kClasses = 4 * 41;  // quarter powers of two up to 2^41 bytes
  static int ClassOf(int64_t capacity);

  const Options options_;
  mutable absl::Mutex mu_;
  std::vector<uint8_t*> idle_[kClasses] ABSL_GUARDED_BY(mu_);
  Snapshot counters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sparkle
