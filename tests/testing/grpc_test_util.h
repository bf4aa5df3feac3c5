// gRPC helpers shared by the server and client tests: a plaintext channel without size limits
// and grpc.health.v1.Health/Check without the health proto (raw bytes). Header-only, so that
// sparkle_testing itself needs no gRPC.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"

namespace sparkle::testing {

// A plaintext channel to `address` with no message size limit on the client side.
inline std::shared_ptr<grpc::Channel> Connect(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

// grpc.health.v1.Health/Check for `service` ("" = the whole server), sent as raw bytes:
// HealthCheckRequest{service} is field 1 (empty message for ""), and the reply's status is
// field 1 (SERVING = 1, NOT_SERVING = 2). On OK, *serving says whether the reply was SERVING.
inline grpc::Status HealthCheck(const std::shared_ptr<grpc::Channel>& channel,
                                const std::string& service, bool* serving = nullptr,
                                absl::Duration timeout = absl::Seconds(10)) {
  std::string request;
  if (!service.empty()) {
    request.push_back(0x0a);
    request.push_back(static_cast<char>(service.size()));
    request += service;
  }
  grpc::GenericStub generic(channel);
  grpc::Slice slice(request);
  grpc::ByteBuffer req_buf(&slice, 1), resp_buf;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(timeout));
  absl::Mutex mu;
  bool finished = false;
  grpc::Status status;
  generic.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &req_buf,
                    &resp_buf, [&](grpc::Status s) {
                      absl::MutexLock lock(&mu);
                      status = std::move(s);
                      finished = true;
                    });
  absl::MutexLock lock(&mu);
  mu.Await(absl::Condition(&finished));
  if (status.ok() && serving != nullptr) {
    std::vector<grpc::Slice> slices;
    std::string bytes;
    if (resp_buf.Dump(&slices).ok()) {
      for (auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
    *serving = bytes == std::string("\x08\x01", 2);
  }
  return status;
}

}  // namespace sparkle::testing
