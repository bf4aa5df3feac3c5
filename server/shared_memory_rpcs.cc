#include "server/shared_memory_rpcs.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "server/scheduling_client.h"

namespace sparkle {
namespace {

absl::Status SharedMemoryOff() {
  return absl::FailedPreconditionError(
      "system shared memory is off on this server (--shared_memory=off); start sparkled with "
      "--shared_memory=local to use it");
}

}  // namespace

bool IsLocalPeer(absl::string_view peer) {
  if (absl::StartsWith(peer, "unix:") || absl::StartsWith(peer, "unix-abstract:")) return true;
  // The host part: PeerHost strips the port.
  const std::string host = PeerHost(peer);
  absl::string_view h = host;
  if (absl::ConsumePrefix(&h, "ipv4:")) return absl::StartsWith(h, "127.");
  if (!absl::ConsumePrefix(&h, "ipv6:")) return false;
  if (!(absl::ConsumePrefix(&h, "[") || absl::ConsumePrefix(&h, "%5B") ||
        absl::ConsumePrefix(&h, "%5b"))) {
    return false;
  }
  if (!(absl::ConsumeSuffix(&h, "]") || absl::ConsumeSuffix(&h, "%5D") ||
        absl::ConsumeSuffix(&h, "%5d"))) {
    return false;
  }
  if (h == "::1" || h == "0:0:0:0:0:0:0:1") return true;
  // An IPv4 loopback client on a dual-stack socket.
  return absl::ConsumePrefix(&h, "::ffff:") && absl::StartsWith(h, "127.");
}

absl::Status SystemSharedMemoryRegister(
    SharedMemoryRegistry* registry, const CallIdentity& caller, absl::string_view peer,
    bool allow_remote, const inference::SystemSharedMemoryRegisterRequest& request) {
  if (registry == nullptr) return SharedMemoryOff();
  if (!allow_remote && !IsLocalPeer(peer)) {
    return absl::PermissionDeniedError(absl::StrCat(
        "system shared memory needs a client on the daemon's host (this call came from ",
        peer, "); connect over loopback or a unix socket, or start sparkled with "
        "--shared_memory=any"));
  }
  return registry->Register(SchedulingClient(caller), request.name(), request.key(),
                            request.offset(), request.byte_size());
}

absl::Status SystemSharedMemoryUnregister(
    SharedMemoryRegistry* registry, const CallIdentity& caller,
    const inference::SystemSharedMemoryUnregisterRequest& request) {
  if (registry == nullptr) return SharedMemoryOff();
  return registry->Unregister(SchedulingClient(caller), request.name());
}

absl::Status SystemSharedMemoryStatus(SharedMemoryRegistry* registry, const CallIdentity& caller,
                                      const inference::SystemSharedMemoryStatusRequest& request,
                                      inference::SystemSharedMemoryStatusResponse* response) {
  if (registry == nullptr) return SharedMemoryOff();
  absl::StatusOr<std::vector<SharedMemoryRegistry::RegionInfo>> regions =
      registry->Status(SchedulingClient(caller), request.name());
  if (!regions.ok()) return regions.status();
  auto* map = response->mutable_regions();
  for (const SharedMemoryRegistry::RegionInfo& info : *regions) {
    auto& status = (*map)[info.name];
    status.set_name(info.name);
    status.set_key(info.key);
    status.set_offset(info.offset);
    status.set_byte_size(info.byte_size);
  }
  return absl::OkStatus();
}

absl::Status CudaSharedMemoryUnsupported(absl::string_view method) {
  return absl::UnimplementedError(absl::StrCat(
      method,
      ": CUDA shared memory (GPU memory handles) is not supported yet; system shared memory "
      "is (SystemSharedMemoryRegister)"));
}

}  // namespace sparkle
