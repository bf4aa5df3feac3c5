#include "client/weights_commands.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/arg_parse.h"
#include "client/human_format.h"
#include "client/json_output.h"
#include "client/npy.h"
#include "client/table.h"
#include "base/status_macros.h"
#include "sparkle/v1/control.grpc.pb.h"

namespace sparkle::client {
namespace {

using sparkle::v1::Control;

absl::Status UsageError(absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(message, " (see `sparklectl help`)"));
}

// A Control stub over a fresh connection, and a context bounded by the connection's timeout.
struct ControlCall {
  std::unique_ptr<SparkleClient> client;
  std::unique_ptr<Control::Stub> stub;
  grpc::ClientContext context;
};

absl::StatusOr<std::unique_ptr<ControlCall>> Open(const SparkleClient::Options& connection) {
  auto call = std::make_unique<ControlCall>();
  SPARKLE_ASSIGN_OR_RETURN(call->client, SparkleClient::Connect(connection));
  call->stub = Control::NewStub(call->client->channels().front());
  call->client->PrepareContext(&call->context);  // deadline and bearer token
  return call;
}

std::string Time(double unix_seconds) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC",
                          absl::UnixEpoch() + absl::Seconds(unix_seconds), absl::UTCTimeZone());
}

std::string Shape(const sparkle::v1::WeightInfo& w) {
  return FormatShape(std::vector<int64_t>(w.shape().begin(), w.shape().end()));
}

}  // namespace

absl::Status RunWeightsRegister(const SparkleClient::Options& connection,
                                const std::string& weight_path,
                                const WeightsCommandOptions& options, std::ostream& out) {
  if (options.chunk_bytes < 1 || options.chunk_bytes > connection.max_message_bytes - (64 << 10)) {
    return UsageError(absl::StrCat("chunk size must be in [1, max_message_bytes - 64 KiB]; was ",
                                   options.chunk_bytes));
  }
  // Files first: a typo in a path is reported without touching the server.
  SPARKLE_ASSIGN_OR_RETURN(NpyArray weight, ReadNpyFile(weight_path));
  sparkle::v1::RegisterWeightsRequest first;
  sparkle::v1::WeightsHeader* header = first.mutable_header();
  header->set_label(options.label);
  header->set_datatype("FP32");
  for (int64_t d : weight.shape) header->add_shape(d);
  if (!options.bias_path.empty()) {
    SPARKLE_ASSIGN_OR_RETURN(NpyArray bias, ReadNpyFile(options.bias_path));
    if (bias.shape.size() != 1) {
      return absl::InvalidArgumentError(absl::StrCat("--bias ", options.bias_path,
                                                     " must be 1-D ([K]); its shape is ",
                                                     FormatShape(bias.shape)));
    }
    header->set_bias(std::move(bias.data));
  }

  SPARKLE_ASSIGN_OR_RETURN(std::unique_ptr<ControlCall> call, Open(connection));
  sparkle::v1::RegisterWeightsResponse response;
  std::unique_ptr<grpc::ClientWriter<sparkle::v1::RegisterWeightsRequest>> writer =
      call->stub->RegisterWeights(&call->context, &response);
  const absl::string_view data = weight.data;
  const size_t chunk = static_cast<size_t>(options.chunk_bytes);
  sparkle::v1::RegisterWeightsRequest message = std::move(first);
  size_t pos = 0;
  do {  // the header goes with the first chunk, even for zero bytes of data
    const size_t size = std::min(chunk, data.size() - pos);
    message.set_data(std::string(data.substr(pos, size)));
    pos += size;
    if (!writer->Write(message)) break;  // the server ended the call: Finish says why
    message.Clear();
  } while (pos < data.size());
  writer->WritesDone();
  const grpc::Status status = writer->Finish();
  if (!status.ok()) return call->client->CallStatus(status);

  if (options.json) return PrintJson(response, out);
  const sparkle::v1::WeightInfo& w = response.weight();
  out << (response.already_registered() ? "already registered  " : "registered  ")
      << w.weight_id() << '\n';
  out << "shape       " << Shape(w) << (w.has_bias() ? " with bias" : " without bias") << '\n';
  out << "bytes       " << HumanBytes(static_cast<double>(w.bytes())) << '\n';
  if (!w.label().empty()) out << "label       " << w.label() << '\n';
  out << "use it with --weight_id=" << w.weight_id() << " (infer, bench) or the request "
      << "parameter weight_id\n";
  return absl::OkStatus();
}

absl::Status RunWeightsList(const SparkleClient::Options& connection, bool json,
                            std::ostream& out) {
  SPARKLE_ASSIGN_OR_RETURN(std::unique_ptr<ControlCall> call, Open(connection));
  sparkle::v1::ListWeightsResponse response;
  const grpc::Status status =
      call->stub->ListWeights(&call->context, sparkle::v1::ListWeightsRequest(), &response);
  if (!status.ok()) return call->client->CallStatus(status);
  if (json) return PrintJson(response, out);
  TextTable table({"WEIGHT_ID", "SHAPE", "BIAS", "BYTES", "IN_USE", "USES", "REGISTERED", "LABEL"});
  for (const sparkle::v1::WeightInfo& w : response.weights()) {
    table.AddRow({w.weight_id(), Shape(w), YesNo(w.has_bias()),
                  HumanBytes(static_cast<double>(w.bytes())), absl::StrCat(w.in_use()),
                  absl::StrCat(w.uses()), Time(w.registered_unix_seconds()), w.label()});
  }
  if (!table.empty()) table.Print(out);
  out << response.weights_size() << " registered; "
      << HumanBytes(static_cast<double>(response.bytes())) << " of "
      << HumanBytes(static_cast<double>(response.budget_bytes())) << " budget used\n";
  return absl::OkStatus();
}

absl::Status RunWeightsRemove(const SparkleClient::Options& connection,
                              const std::string& weight_id, bool json, std::ostream& out) {
  SPARKLE_ASSIGN_OR_RETURN(std::unique_ptr<ControlCall> call, Open(connection));
  sparkle::v1::UnregisterWeightsRequest request;
  request.set_weight_id(weight_id);
  sparkle::v1::UnregisterWeightsResponse response;
  const grpc::Status status = call->stub->UnregisterWeights(&call->context, request, &response);
  if (!status.ok()) return call->client->CallStatus(status);
  if (json) {
    out << "{\"weight_id\": " << JsonQuote(weight_id) << ", \"unregistered\": true}\n";
  } else {
    out << "unregistered " << weight_id
        << " (its memory is released when the jobs using it finish)\n";
  }
  return absl::OkStatus();
}

absl::Status RunWeights(const SparkleClient::Options& connection,
                        const std::vector<std::string>& args,
                        const WeightsCommandOptions& options, std::ostream& out) {
  const std::string sub = args.empty() ? "" : args[0];
  if (sub == "register" && args.size() == 2) {
    return RunWeightsRegister(connection, args[1], options, out);
  }
  if (sub == "register" || !options.bias_path.empty() || !options.label.empty()) {
    return UsageError(sub == "register" ? "weights register takes one FILE.npy"
                                        : "--bias and --label apply to `weights register`");
  }
  if (sub == "list" && args.size() == 1) return RunWeightsList(connection, options.json, out);
  if (sub == "rm" && args.size() == 2) {
    return RunWeightsRemove(connection, args[1], options.json, out);
  }
  return UsageError(absl::StrCat("weights needs register FILE.npy, list or rm ID; got \"",
                                 absl::StrJoin(args, " "), "\""));
}

}  // namespace sparkle::client
