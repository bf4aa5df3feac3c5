// ClientSharedMemory: a POSIX shared-memory object that this process creates, maps and registers
// with sparkled as a system shared-memory region (Triton's extension, docs/protocol.md "System
// shared memory"), so that tensors travel through it instead of the wire. RAII: the destructor
// unregisters the region (best effort), unmaps it and unlinks the object.
//
// Also the helper that marks an input or a requested output as lying in a region (the three
// parameters Triton defines). Used by `sparklectl infer --shm` and `sparklectl bench --shm`.
//
// Thread-safety: data() may be written by several threads at disjoint ranges; the object itself
// is not otherwise synchronised.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/sparkle_client.h"
#include "google/protobuf/map.h"
#include "inference/grpc_predict_v2.pb.h"

namespace sparkle::client {

// The parameter names of Triton's shared-memory extension, on inputs and requested outputs.
inline constexpr absl::string_view kSharedMemoryRegionParam = "shared_memory_region";
inline constexpr absl::string_view kSharedMemoryByteSizeParam = "shared_memory_byte_size";
inline constexpr absl::string_view kSharedMemoryOffsetParam = "shared_memory_offset";

class ClientSharedMemory {
 public:
  struct Options {
    // Region name as registered with the daemon (per caller there); non-empty, <= 256 bytes.
    std::string name;
    // Size of the object and of the region, bytes; [1, 2^40].
    size_t bytes = 0;
    // Permission bits of the object. 0600 lets only this user open it: a daemon running as
    // another user (the systemd unit's DynamicUser) then needs 0660 and a shared group
    // (docs/operations.md "Shared memory with the systemd unit"). [0, 0777].
    mode_t mode = 0600;
  };

  // Creates the object ("/sparklectl.<pid>.<n>", O_CREAT|O_EXCL, Options::mode), sizes and maps
  // it, then registers it through `client` (SystemSharedMemoryRegister, offset 0, whole size).
  // INVALID_ARGUMENT for bad options; INTERNAL naming the call and strerror for a failed
  // shm_open/ftruncate/mmap; the server's status (exit code 1) when it refuses the registration.
  // `client` must outlive the returned object.
  static absl::StatusOr<std::unique_ptr<ClientSharedMemory>> Create(SparkleClient& client,
                                                                    const Options& options);
  static absl::StatusOr<std::unique_ptr<ClientSharedMemory>> Create(SparkleClient& client,
                                                                    std::string name,
                                                                    size_t bytes) {
    return Create(client, Options{.name = std::move(name), .bytes = bytes});
  }

  ClientSharedMemory(const ClientSharedMemory&) = delete;
  ClientSharedMemory& operator=(const ClientSharedMemory&) = delete;
  // Unregister() if still registered (its error is ignored), munmap, close, shm_unlink.
  ~ClientSharedMemory();

  // SystemSharedMemoryUnregister of this region; OK if already unregistered. The mapping stays.
  absl::Status Unregister();

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& name() const { return name_; }
  const std::string& key() const { return key_; }  // as shm_open names it, leading '/'

  // -------------------------------------------------------------------------------------------
  // Implementation details follow.
 private:
  ClientSharedMemory(SparkleClient& client, std::string name, std::string key, int fd,
                     uint8_t* data, size_t size);

  SparkleClient& client_;
  const std::string name_;
  const std::string key_;
  const int fd_;
  uint8_t* const data_;
  const size_t size_;
  bool registered_ = false;
};

// Adds to `parameters` (of an InferInputTensor or an InferRequestedOutputTensor) the parameters
// that place the tensor at [offset, offset + byte_size) of region `region`:
// shared_memory_region (string), shared_memory_byte_size (int64) and, when offset != 0,
// shared_memory_offset (int64).
void SetSharedMemoryParameters(google::protobuf::Map<std::string, inference::InferParameter>*
                                   parameters,
                               absl::string_view region, int64_t byte_size, int64_t offset = 0);

// A request whose tensors MoveTensorsToSharedMemory placed in a region.
struct SharedMemoryRequest {
  std::unique_ptr<ClientSharedMemory> region;  // keep until the response has been read
  size_t output_offset = 0;  // where the output "output" goes in the region
  size_t output_bytes = 0;   // bytes reserved for it
};

// Moves every raw_input_contents entry of `request` into one new region named `name` (each at a
// 64-byte aligned offset, in input order), followed by `output_bytes` for the requested output
// "output", and sets the tensors' shared-memory parameters: the request then carries no tensor
// bytes. INVALID_ARGUMENT if the request's raw entries do not match its inputs or
// output_bytes < 1; ClientSharedMemory::Create's errors otherwise.
absl::StatusOr<SharedMemoryRequest> MoveTensorsToSharedMemory(
    SparkleClient& client, std::string name, int64_t output_bytes,
    inference::ModelInferRequest* request);

// For the response to a request placed by MoveTensorsToSharedMemory: copies the output's bytes
// (as many as its FP32 shape says) out of the region into response->raw_output_contents, so that
// TakeOutput reads it like a wire response. INVALID_ARGUMENT if the response carries raw output
// bytes (the server ignored the parameters), has not exactly one output, or its shape needs more
// bytes than were reserved.
absl::Status ReadSharedMemoryOutput(const SharedMemoryRequest& placed,
                                    inference::ModelInferResponse* response);

}  // namespace sparkle::client
