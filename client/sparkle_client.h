// SparkleClient: a typed, blocking wrapper over sparkled's gRPC services (KServe v2 inference,
// sparkle.v1.Control, grpc.health.v1.Health) for sparklectl's commands, plus the rule that maps
// a status to sparklectl's exit code. It owns one or more channels to the same target; bench
// spreads its load over them (grpc-transport.md: several connections help small RPCs).
//
// Thread-safety: all methods may be called concurrently (gRPC stubs are thread-safe).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/connection_security.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "inference/grpc_predict_v2.grpc.pb.h"
#include "sparkle/v1/control.grpc.pb.h"

namespace sparkle::client {

// sparklectl's exit codes (the usage text documents them).
inline constexpr int kExitOk = 0;
inline constexpr int kExitServerError = 1;  // the server answered with an error (or "not ready")
inline constexpr int kExitLocalError = 2;   // usage, file, or connection error: nothing was served

// Converts a gRPC status returned by the server (or by gRPC on the server's behalf: deadline,
// message size) into an absl::Status with the same code and message, marked as a server error.
absl::Status FromGrpcStatus(const grpc::Status& status);

// `status` marked as the server's answer (e.g. "reachable but not ready"), like FromGrpcStatus.
absl::Status MarkAsServerError(absl::Status status);

// "CODE: message" (e.g. "NOT_FOUND: unknown model"), without the internal origin marker that
// absl::Status::ToString() would print; "OK" for OK.
std::string StatusText(const absl::Status& status);

// kExitOk for OK, kExitServerError for statuses made by FromGrpcStatus or MarkAsServerError,
// kExitLocalError for every other status (those arise on this side: flags, files, connecting).
int ExitCodeFor(const absl::Status& status);

// grpc.health.v1.HealthCheckResponse.ServingStatus, with the wire values.
enum class ServingStatus { kUnknown = 0, kServing = 1, kNotServing = 2, kServiceUnknown = 3 };
absl::string_view ServingStatusName(ServingStatus status);

class SparkleClient {
 public:
  struct Options {
    // gRPC target: host:port, dns:///host:port, unix:/path, ..., or a list
    // "ip:port,ip:port" (client/target.h). Lists and dns: names use round_robin.
    std::string target = "127.0.0.1:8001";
    // Deadline of each RPC, and the bound on connecting. > 0.
    absl::Duration timeout = absl::Seconds(30);
    // Largest message sent or received, bytes; [4096, 2^31 - 1] (gRPC takes an int). The default
    // exceeds sparkled's own default (256 MiB) so that the server's limit is the one that bites,
    // with its message naming the flag that raises it.
    int64_t max_message_bytes = int64_t{1} << 30;
    // Channels (HTTP/2 connections) to open, each with its own subchannel pool so that they do
    // not share one TCP connection. [1, 64].
    int channels = 1;
    // TLS / mTLS of every channel and the bearer token of every call (connection_security.h).
    ConnectionSecurity security;
  };

  // Validates `options` (INVALID_ARGUMENT naming the field), creates the channels and connects
  // each within options.timeout. Fails fast with UNAVAILABLE ("cannot connect to <target>") on
  // the first failed connection attempt rather than retrying until the deadline, because an
  // operator at a terminal wants to know now. Connection errors are local (exit code 2); a TLS
  // handshake failure says what failed (DescribeHandshakeFailure) instead of gRPC's text.
  static absl::StatusOr<std::unique_ptr<SparkleClient>> Connect(const Options& options);

  // inference.GRPCInferenceService. Blocking, bounded by options.timeout.
  absl::StatusOr<bool> ServerLive();
  absl::StatusOr<bool> ServerReady();
  absl::StatusOr<bool> ModelReady(absl::string_view model_name);
  absl::StatusOr<inference::ModelInferResponse> ModelInfer(
      const inference::ModelInferRequest& request);

  // sparkle.v1.Control/GetStatus.
  absl::StatusOr<sparkle::v1::GetStatusResponse> GetStatus();
  // sparkle.v1.Control/Drain: waits up to `timeout` (zero: the daemon's --drain_timeout).
  absl::StatusOr<sparkle::v1::DrainResponse> Drain(absl::Duration timeout);

  // grpc.health.v1.Health/Check for `service` ("" is the server as a whole). Debian's gRPC
  // ships no C++ stubs for health.proto, so the two one-field messages are encoded by hand and
  // sent through a generic stub.
  absl::StatusOr<ServingStatus> HealthCheck(absl::string_view service);

  const Options& options() const { return options_; }
  // The connected channels, options.channels of them; bench issues raw calls on these.
  const std::vector<std::shared_ptr<grpc::Channel>>& channels() const { return channels_; }

  // A context for one call on channels(): deadline now + options.timeout, and the bearer token
  // (the one place every call of sparklectl gets its metadata from).
  std::unique_ptr<grpc::ClientContext> NewContext() const;
  // Sets up a context the caller owns the same way (bench reuses its contexts' storage).
  void PrepareContext(grpc::ClientContext* context) const;

  // The absl::Status of a failed call: a TLS handshake failure as a local error (exit 2) with
  // DescribeHandshakeFailure's sentence; anything else as FromGrpcStatus (exit 1), with
  // AuthHint appended to UNAUTHENTICATED / PERMISSION_DENIED. OK for OK.
  absl::Status CallStatus(const grpc::Status& status) const;

  // -------------------------------------------------------------------------------------------
  // Implementation details follow.
 private:
  SparkleClient(const Options& options, std::vector<std::shared_ptr<grpc::Channel>> channels);

  const Options options_;
  const std::vector<std::shared_ptr<grpc::Channel>> channels_;
  // Stubs over channels_[0]: the single-shot commands need no more.
  const std::unique_ptr<inference::GRPCInferenceService::Stub> inference_;
  const std::unique_ptr<sparkle::v1::Control::Stub> control_;
};

}  // namespace sparkle::client
