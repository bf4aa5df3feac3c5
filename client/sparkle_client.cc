#include "client/sparkle_client.h"

#include <optional>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "client/target.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/wire_format_lite.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/channel_arguments.h"

namespace sparkle::client {
namespace {

// Marks statuses that came from the server (FromGrpcStatus), which ExitCodeFor maps to 1.
constexpr absl::string_view kOriginPayload = "type.sparkle.dev/sparklectl.origin";

absl::Status WaitForReady(grpc::Channel* channel, const std::string& target,
                          const ConnectionSecurity& security, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  grpc_connectivity_state state = channel->GetState(/*try_to_connect=*/true);
  while (state != GRPC_CHANNEL_READY) {
    if (state == GRPC_CHANNEL_TRANSIENT_FAILURE || state == GRPC_CHANNEL_SHUTDOWN) {
      // The channel state carries no reason; one fail-fast RPC returns gRPC's own description
      // ("Connection refused", "DNS resolution failed", ...).
      inference::GRPCInferenceService::Stub stub(
          std::shared_ptr<grpc::Channel>(channel, [](grpc::Channel*) {}));
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
      inference::ServerLiveResponse response;
      const grpc::Status probe = stub.ServerLive(&context, {}, &response);
      if (std::optional<std::string> why = DescribeHandshakeFailure(security, probe)) {
        return absl::UnavailableError(absl::StrCat("cannot connect to ", target, ": ", *why));
      }
      return absl::UnavailableError(absl::StrCat(
          "cannot connect to ", target,
          probe.ok() ? "" : absl::StrCat(": ", probe.error_message())));
    }
    if (!channel->WaitForStateChange(state, absl::ToChronoTime(deadline))) {
      return absl::DeadlineExceededError(absl::StrCat("cannot connect to ", target, " within ",
                                                      absl::FormatDuration(timeout)));
    }
    state = channel->GetState(/*try_to_connect=*/true);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status MarkAsServerError(absl::Status status) {
  if (!status.ok()) status.SetPayload(kOriginPayload, absl::Cord("server"));
  return status;
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  // (SparkleClient::CallStatus adds the TLS and token explanations on top of this.)
  if (status.ok()) return absl::OkStatus();
  // grpc::StatusCode and absl::StatusCode share the canonical numbering.
  return MarkAsServerError(absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                                        status.error_message()));
}

std::string StatusText(const absl::Status& status) {
  if (status.ok()) return "OK";
  return absl::StrCat(absl::StatusCodeToString(status.code()), ": ", status.message());
}

int ExitCodeFor(const absl::Status& status) {
  if (status.ok()) return kExitOk;
  return status.GetPayload(kOriginPayload).has_value() ? kExitServerError : kExitLocalError;
}

absl::string_view ServingStatusName(ServingStatus status) {
  switch (status) {
    case ServingStatus::kUnknown:
      return "UNKNOWN";
    case ServingStatus::kServing:
      return "SERVING";
    case ServingStatus::kNotServing:
      return "NOT_SERVING";
    case ServingStatus::kServiceUnknown:
      return "SERVICE_UNKNOWN";
  }
  return "INVALID";
}

absl::StatusOr<std::unique_ptr<SparkleClient>> SparkleClient::Connect(const Options& options) {
  if (options.target.empty()) return absl::InvalidArgumentError("target must not be empty");
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("timeout must be > 0; was ",
                                                   absl::FormatDuration(options.timeout)));
  }
  if (options.max_message_bytes < 4096 || options.max_message_bytes > INT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_message_bytes must be in [4096, 2147483647]; was ", options.max_message_bytes));
  }
  if (options.channels < 1 || options.channels > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("channels must be in [1, 64]; was ", options.channels));
  }
  // A list of daemons or a dns: name: one channel over all of them, round_robin (target.h).
  absl::StatusOr<Target> target = ParseTarget(options.target);
  if (!target.ok()) return target.status();
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < options.channels; ++i) {
    grpc::ChannelArguments args;
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
        MakeChannelCredentials(options.security, &args);
    if (!credentials.ok()) return credentials.status();
    args.SetMaxSendMessageSize(static_cast<int>(options.max_message_bytes));
    args.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
    // A private subchannel pool per channel, and distinct args besides, so that each channel
    // opens its own TCP connection instead of sharing the process-wide one.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt("sparkle.channel_index", i);
    // round_robin + health checking for several daemons; for all: retry on UNAVAILABLE.
    args.SetServiceConfigJSON(std::string(target->round_robin ? kRoundRobinServiceConfig
                                                              : kSingleTargetServiceConfig));
    channels.push_back(grpc::CreateCustomChannel(target->channel_target, *credentials, args));
  }
  for (const auto& channel : channels) {
    if (absl::Status s =
            WaitForReady(channel.get(), options.target, options.security, options.timeout);
        !s.ok()) {
      return s;
    }
  }
  return std::unique_ptr<SparkleClient>(new SparkleClient(options, std::move(channels)));
}

SparkleClient::SparkleClient(const Options& options,
                             std::vector<std::shared_ptr<grpc::Channel>> channels)
    : options_(options),
      channels_(std::move(channels)),
      inference_(inference::GRPCInferenceService::NewStub(channels_[0])),
      control_(sparkle::v1::Control::NewStub(channels_[0])) {}

std::unique_ptr<grpc::ClientContext> SparkleClient::NewContext() const {
  auto context = std::make_unique<grpc::ClientContext>();
  PrepareContext(context.get());
  return context;
}

void SparkleClient::PrepareContext(grpc::ClientContext* context) const {
  context->set_deadline(absl::ToChronoTime(absl::Now() + options_.timeout));
  AddCallCredentials(options_.security, context);
}

absl::Status SparkleClient::CallStatus(const grpc::Status& status) const {
  if (status.ok()) return absl::OkStatus();
  if (std::optional<std::string> why = DescribeHandshakeFailure(options_.security, status)) {
    return absl::UnavailableError(absl::StrCat(options_.target, ": ", *why));
  }
  absl::Status result = FromGrpcStatus(status);
  const absl::string_view hint =
      AuthHint(result.code(), !options_.security.bearer_token.empty());
  if (hint.empty()) return result;
  return MarkAsServerError(absl::Status(result.code(), absl::StrCat(result.message(), hint)));
}

absl::StatusOr<bool> SparkleClient::ServerLive() {
  auto context = NewContext();
  inference::ServerLiveResponse response;
  const grpc::Status status = inference_->ServerLive(context.get(), {}, &response);
  if (!status.ok()) return CallStatus(status);
  return response.live();
}

absl::StatusOr<bool> SparkleClient::ServerReady() {
  auto context = NewContext();
  inference::ServerReadyResponse response;
  const grpc::Status status = inference_->ServerReady(context.get(), {}, &response);
  if (!status.ok()) return CallStatus(status);
  return response.ready();
}

absl::StatusOr<bool> SparkleClient::ModelReady(absl::string_view model_name) {
  auto context = NewContext();
  inference::ModelReadyRequest request;
  request.set_name(std::string(model_name));
  inference::ModelReadyResponse response;
  const grpc::Status status = inference_->ModelReady(context.get(), request, &response);
  if (!status.ok()) return CallStatus(status);
  return response.ready();
}

absl::StatusOr<inference::ModelInferResponse> SparkleClient::ModelInfer(
    const inference::ModelInferRequest& request) {
  auto context = NewContext();
  inference::ModelInferResponse response;
  const grpc::Status status = inference_->ModelInfer(context.get(), request, &response);
  if (!status.ok()) return CallStatus(status);
  return response;
}

absl::StatusOr<sparkle::v1::GetStatusResponse> SparkleClient::GetStatus() {
  auto context = NewContext();
  sparkle::v1::GetStatusResponse response;
  const grpc::Status status = control_->GetStatus(context.get(), {}, &response);
  if (!status.ok()) return CallStatus(status);
  return response;
}

absl::StatusOr<sparkle::v1::DrainResponse> SparkleClient::Drain(absl::Duration timeout) {
  // The daemon answers when drained or after `timeout` (0: its own --drain_timeout, at most
  // 1 h); the RPC gets that long on top of the usual deadline.
  grpc::ClientContext context;
  PrepareContext(&context);
  context.set_deadline(absl::ToChronoTime(
      absl::Now() + options_.timeout + (timeout > absl::ZeroDuration() ? timeout : absl::Hours(1))));
  sparkle::v1::DrainRequest request;
  request.set_timeout_seconds(absl::ToDoubleSeconds(timeout));
  sparkle::v1::DrainResponse response;
  const grpc::Status status = control_->Drain(&context, request, &response);
  if (!status.ok()) return CallStatus(status);
  return response;
}

absl::StatusOr<ServingStatus> SparkleClient::HealthCheck(absl::string_view service) {
  using WireFormatLite = google::protobuf::internal::WireFormatLite;
  // HealthCheckRequest { string service = 1; }: proto3 omits the empty string.
  std::string request_bytes;
  if (!service.empty()) {
    google::protobuf::io::StringOutputStream stream(&request_bytes);
    google::protobuf::io::CodedOutputStream out(&stream);
    WireFormatLite::WriteString(1, std::string(service), &out);
  }
  grpc::Slice slice(request_bytes);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  grpc::Status status;
  absl::Notification done;
  auto context = NewContext();
  grpc::GenericStub stub(channels_[0]);
  stub.UnaryCall(context.get(), "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request,
                 &response, [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();
  if (!status.ok()) return CallStatus(status);

  // HealthCheckResponse { ServingStatus status = 1; }: skip any field a newer server adds.
  grpc::Slice joined;
  if (!response.DumpToSingleSlice(&joined).ok()) {
    return absl::InternalError("cannot read the health check response");
  }
  google::protobuf::io::CodedInputStream in(joined.begin(), static_cast<int>(joined.size()));
  uint32_t value = 0;
  while (const uint32_t tag = in.ReadTag()) {
    if (WireFormatLite::GetTagFieldNumber(tag) == 1 &&
        WireFormatLite::GetTagWireType(tag) == WireFormatLite::WIRETYPE_VARINT) {
      if (!in.ReadVarint32(&value)) break;
    } else if (!WireFormatLite::SkipField(&in, tag)) {
      return absl::InternalError("malformed grpc.health.v1.HealthCheckResponse");
    }
  }
  if (value > 3) return absl::InternalError(absl::StrCat("unknown serving status ", value));
  return static_cast<ServingStatus>(value);
}

}  // namespace sparkle::client
