#include "client/shared_memory_client.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/client_context.h"

namespace sparkle::client {
namespace {

constexpr size_t kMaxBytes = size_t{1} << 40;
constexpr size_t kMaxNameBytes = 256;

std::string ErrnoText(absl::string_view call, absl::string_view key, int error) {
  return absl::StrCat(call, "('", key, "') failed: ", std::strerror(error));
}

// A key no other live process uses: pid plus a per-process counter.
std::string NewKey() {
  static std::atomic<uint64_t> counter{0};
  return absl::StrCat("/sparklectl.", getpid(), ".", counter.fetch_add(1));
}

}  // namespace

absl::StatusOr<std::unique_ptr<ClientSharedMemory>> ClientSharedMemory::Create(
    SparkleClient& client, const Options& options) {
  if (options.name.empty() || options.name.size() > kMaxNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shared memory region name must have 1 to 256 bytes; was ", options.name.size()));
  }
  if (options.bytes < 1 || options.bytes > kMaxBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shared memory region size must be in [1, 2^40] bytes; was ", options.bytes));
  }
  if ((options.mode & ~mode_t{0777}) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("shared memory mode must be in [0, 0777]; was 0", absl::Hex(options.mode)));
  }
  const std::string key = NewKey();
  const int fd = shm_open(key.c_str(), O_CREAT | O_EXCL | O_RDWR, options.mode);
  if (fd < 0) return absl::InternalError(ErrnoText("shm_open", key, errno));
  // shm_open's mode is filtered by the umask; fchmod sets the bits asked for.
  auto fail = [&](absl::string_view call) {
    const int error = errno;
    close(fd);
    shm_unlink(key.c_str());
    return absl::InternalError(ErrnoText(call, key, error));
  };
  if (fchmod(fd, options.mode) != 0) return fail("fchmod");
  if (ftruncate(fd, static_cast<off_t>(options.bytes)) != 0) return fail("ftruncate");
  void* data = mmap(nullptr, options.bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (data == MAP_FAILED) return fail("mmap");
  std::unique_ptr<ClientSharedMemory> region(new ClientSharedMemory(
      client, options.name, key, fd, static_cast<uint8_t*>(data), options.bytes));

  inference::SystemSharedMemoryRegisterRequest request;
  request.set_name(options.name);
  request.set_key(key);
  request.set_offset(0);
  request.set_byte_size(options.bytes);
  inference::SystemSharedMemoryRegisterResponse response;
  auto stub = inference::GRPCInferenceService::NewStub(client.channels()[0]);
  auto context = client.NewContext();
  const grpc::Status status = stub->SystemSharedMemoryRegister(context.get(), request, &response);
  if (!status.ok()) return client.CallStatus(status);  // ~ClientSharedMemory unlinks
  region->registered_ = true;
  return region;
}

ClientSharedMemory::ClientSharedMemory(SparkleClient& client, std::string name, std::string key,
                                       int fd, uint8_t* data, size_t size)
    : client_(client),
      name_(std::move(name)),
      key_(std::move(key)),
      fd_(fd),
      data_(data),
      size_(size) {}

ClientSharedMemory::~ClientSharedMemory() {
  if (registered_) (void)Unregister();
  munmap(data_, size_);
  close(fd_);
  shm_unlink(key_.c_str());
}

absl::Status ClientSharedMemory::Unregister() {
  if (!registered_) return absl::OkStatus();
  inference::SystemSharedMemoryUnregisterRequest request;
  request.set_name(name_);
  inference::SystemSharedMemoryUnregisterResponse response;
  auto stub = inference::GRPCInferenceService::NewStub(client_.channels()[0]);
  auto context = client_.NewContext();
  const grpc::Status status =
      stub->SystemSharedMemoryUnregister(context.get(), request, &response);
  if (!status.ok()) return client_.CallStatus(status);
  registered_ = false;
  return absl::OkStatus();
}

void SetSharedMemoryParameters(
    google::protobuf::Map<std::string, inference::InferParameter>* parameters,
    absl::string_view region, int64_t byte_size, int64_t offset) {
  (*parameters)[std::string(kSharedMemoryRegionParam)].set_string_param(std::string(region));
  (*parameters)[std::string(kSharedMemoryByteSizeParam)].set_int64_param(byte_size);
  if (offset != 0) {
    (*parameters)[std::string(kSharedMemoryOffsetParam)].set_int64_param(offset);
  } else {
    parameters->erase(std::string(kSharedMemoryOffsetParam));
  }
}

namespace {
constexpr size_t kAlignment = 64;
size_t AlignUp(size_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }
}  // namespace

absl::StatusOr<SharedMemoryRequest> MoveTensorsToSharedMemory(
    SparkleClient& client, std::string name, int64_t output_bytes,
    inference::ModelInferRequest* request) {
  if (request->raw_input_contents_size() != request->inputs_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shared memory: the request must carry one raw_input_contents entry per input; has ",
        request->raw_input_contents_size(), " for ", request->inputs_size(), " inputs"));
  }
  if (output_bytes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("shared memory: output byte size must be >= 1; was ", output_bytes));
  }
  std::vector<size_t> offsets;
  size_t total = 0;
  for (const std::string& bytes : request->raw_input_contents()) {
    offsets.push_back(total);
    total = AlignUp(total + bytes.size());
  }
  SharedMemoryRequest result;
  result.output_offset = total;
  result.output_bytes = static_cast<size_t>(output_bytes);
  absl::StatusOr<std::unique_ptr<ClientSharedMemory>> region =
      ClientSharedMemory::Create(client, std::move(name), total + result.output_bytes);
  if (!region.ok()) return region.status();
  result.region = *std::move(region);
  for (int i = 0; i < request->inputs_size(); ++i) {
    const std::string& bytes = request->raw_input_contents(i);
    std::memcpy(result.region->data() + offsets[i], bytes.data(), bytes.size());
    SetSharedMemoryParameters(request->mutable_inputs(i)->mutable_parameters(),
                              result.region->name(), static_cast<int64_t>(bytes.size()),
                              static_cast<int64_t>(offsets[i]));
  }
  request->clear_raw_input_contents();
  request->clear_outputs();
  auto* output = request->add_outputs();
  output->set_name("output");
  SetSharedMemoryParameters(output->mutable_parameters(), result.region->name(), output_bytes,
                            static_cast<int64_t>(result.output_offset));
  return result;
}

absl::Status ReadSharedMemoryOutput(const SharedMemoryRequest& placed,
                                    inference::ModelInferResponse* response) {
  if (response->raw_output_contents_size() != 0) {
    return absl::InvalidArgumentError(
        "the server sent the output in raw_output_contents although it was requested into "
        "shared memory");
  }
  if (response->outputs_size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected one output; the server sent ", response->outputs_size()));
  }
  int64_t elements = 1;
  for (int64_t d : response->outputs(0).shape()) {
    if (d < 0 || (d > 0 && elements > INT64_MAX / 4 / d)) {
      return absl::InvalidArgumentError("the output's shape is negative or overflows");
    }
    elements *= d;
  }
  const size_t bytes = static_cast<size_t>(elements) * 4;
  if (bytes > placed.output_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the output's shape needs ", bytes, " bytes; ", placed.output_bytes,
        " were reserved for it in shared memory"));
  }
  response->add_raw_output_contents()->assign(
      reinterpret_cast<const char*>(placed.region->data() + placed.output_offset), bytes);
  return absl::OkStatus();
}

}  // namespace sparkle::client
