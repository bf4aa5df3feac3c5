#include "client/commands.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "client/arg_parse.h"
#include "client/human_format.h"
#include "client/npy.h"
#include "client/shared_memory_client.h"
#include "base/status_macros.h"
#include "client/table.h"

namespace sparkle::client {
namespace {

// One tensor: read from `path` or generated with `shape` (ValidateInferOptions allows at most
// one of the two); nullopt if neither is given.
absl::StatusOr<std::optional<NpyArray>> LoadOrGenerate(const std::string& path,
                                                       const std::vector<int64_t>& shape,
                                                       uint64_t seed) {
  if (!path.empty()) return ReadNpyFile(path);
  if (!shape.empty()) return RandomArray(shape, seed);
  return std::optional<NpyArray>();
}

// Bytes of the conv2d output of `request` (FP32 [N, K, P, Q]), for the shared-memory region that
// receives it: the geometry of `options`, K, R and S from the weight input or, with weight_id,
// from the daemon's ListWeights. INVALID_ARGUMENT when the shapes give no output (the server
// would name the problem; here the region cannot be sized).
absl::StatusOr<int64_t> OutputBytes(SparkleClient& client,
                                    const inference::ModelInferRequest& request,
                                    const InferRequestOptions& options) {
  std::vector<int64_t> input, weight;
  for (const auto& t : request.inputs()) {
    if (t.name() == "input") input.assign(t.shape().begin(), t.shape().end());
    if (t.name() == "weight") weight.assign(t.shape().begin(), t.shape().end());
  }
  if (!options.weight_id.empty()) {
    auto stub = sparkle::v1::Control::NewStub(client.channels()[0]);
    auto context = client.NewContext();
    sparkle::v1::ListWeightsResponse list;
    const grpc::Status status =
        stub->ListWeights(context.get(), sparkle::v1::ListWeightsRequest(), &list);
    if (!status.ok()) return client.CallStatus(status);
    for (const auto& w : list.weights()) {
      if (w.weight_id() == options.weight_id) weight.assign(w.shape().begin(), w.shape().end());
    }
    if (weight.empty()) {
      return MarkAsServerError(absl::NotFoundError(
          absl::StrCat("no registered weights with weight_id '", options.weight_id, "'")));
    }
  }
  if (input.size() != 4 || weight.size() != 4) {
    return absl::InvalidArgumentError("--shm needs a rank-4 input and weight");
  }
  const bool nhwc = options.layout == Layout::kNHWC;
  const int64_t n = input[0], h = input[nhwc ? 1 : 2], w = input[nhwc ? 2 : 3];
  const int64_t k = weight[0], r = weight[2], s = weight[3];
  const ConvGeometry& g = options.geometry;
  auto extent = [](int64_t size, int64_t pad, int64_t dilation, int64_t kernel, int64_t stride) {
    const int64_t span = size + 2 * pad - dilation * (kernel - 1) - 1;
    return span < 0 || stride < 1 ? int64_t{0} : span / stride + 1;
  };
  const int64_t p = extent(h, g.pad_h, g.dilation_h, r, g.stride_h);
  const int64_t q = extent(w, g.pad_w, g.dilation_w, s, g.stride_w);
  const double bytes = 4.0 * n * k * p * q;
  if (n < 1 || k < 1 || p < 1 || q < 1 || bytes > double{int64_t{1} << 40}) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--shm: the input ", FormatShape(input), " and weight ", FormatShape(weight),
        " give no output of a size a region can hold"));
  }
  return static_cast<int64_t>(bytes);
}

absl::Status SaveInputs(const std::string& dir, const InferInputs& inputs) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    return absl::InvalidArgumentError(
        absl::StrCat("--save_inputs: cannot create ", dir, ": ", error.message()));
  }
  const std::filesystem::path base(dir);
  SPARKLE_RETURN_IF_ERROR(WriteNpyFile(base / "input.npy", inputs.input));
  if (!inputs.weight.shape.empty()) {
    SPARKLE_RETURN_IF_ERROR(WriteNpyFile(base / "weight.npy", inputs.weight));
  }
  if (inputs.bias.has_value()) {
    SPARKLE_RETURN_IF_ERROR(WriteNpyFile(base / "bias.npy", *inputs.bias));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RunHealth(const SparkleClient::Options& connection, std::ostream& out) {
  SPARKLE_ASSIGN_OR_RETURN(std::unique_ptr<SparkleClient> client,
                           SparkleClient::Connect(connection));
  // Liveness is the one answer health cannot do without: if even that fails, report it as the
  // server's error. The other probes degrade to a "no (reason)" line.
  SPARKLE_ASSIGN_OR_RETURN(const bool live, client->ServerLive());
  out << "live:   " << YesNo(live) << '\n';

  const absl::StatusOr<bool> ready = client->ServerReady();
  out << "ready:  "
      << (ready.ok() ? YesNo(*ready) : absl::StrCat("no (", StatusText(ready.status()), ")"))
      << '\n';

  // ModelReady needs a token on a daemon with --auth_token_file (the probes above and below do
  // not): without one, readiness rests on them and the line says why the model was not asked.
  const absl::StatusOr<bool> model = client->ModelReady(kModelName);
  const bool model_unasked = absl::IsUnauthenticated(model.status());
  out << "model:  " << kModelName << ' '
      << (model.ok()        ? (*model ? "ready" : "not ready")
          : model_unasked   ? "not checked (ModelReady needs a bearer token: --token_file)"
                            : absl::StrCat("not ready (", StatusText(model.status()), ")"))
      << '\n';

  // A server without grpc.health.v1 is still usable: the line says so and readiness rests on
  // the KServe answers alone.
  const absl::StatusOr<ServingStatus> health = client->HealthCheck("");
  bool health_ok = true;
  if (health.ok()) {
    health_ok = *health == ServingStatus::kServing;
    out << "health: " << ServingStatusName(*health) << '\n';
  } else {
    out << "health: not available (" << StatusText(health.status()) << ")\n";
  }

  const bool model_ok = model_unasked || (model.ok() && *model);
  if (live && ready.ok() && *ready && model_ok && health_ok) return absl::OkStatus();
  return MarkAsServerError(
      absl::UnavailableError(absl::StrCat(connection.target, " is reachable but not ready")));
}

absl::Status ValidateInferOptions(const InferCommandOptions& options) {
  auto exactly_one = [](absl::string_view name, bool path, bool shape) -> absl::Status {
    if (path && shape) {
      return absl::InvalidArgumentError(
          absl::StrCat("give --", name, " or --", name, "_shape, not both"));
    }
    if (!path && !shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          "infer needs --", name, "=FILE.npy or --", name, "_shape=DIMS (random data)"));
    }
    return absl::OkStatus();
  };
  SPARKLE_RETURN_IF_ERROR(
      exactly_one("input", !options.input_path.empty(), !options.input_shape.empty()));
  if (!options.request.weight_id.empty()) {
    if (!options.weight_path.empty() || !options.weight_shape.empty() ||
        !options.bias_path.empty() || !options.bias_shape.empty()) {
      return absl::InvalidArgumentError(
          "--weight_id names registered weights (with their bias): give no --weight, "
          "--weight_shape, --bias or --bias_shape with it");
    }
  } else {
    SPARKLE_RETURN_IF_ERROR(
        exactly_one("weight", !options.weight_path.empty(), !options.weight_shape.empty()));
  }
  if (!options.bias_path.empty() && !options.bias_shape.empty()) {
    return absl::InvalidArgumentError("give --bias or --bias_shape, not both");
  }
  if (options.bias_shape.size() > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--bias_shape must be 1-D ([K]); was ", FormatShape(options.bias_shape)));
  }
  return absl::OkStatus();
}

absl::Status RunInfer(const SparkleClient::Options& connection, InferCommandOptions options,
                      std::ostream& out) {
  SPARKLE_RETURN_IF_ERROR(ValidateInferOptions(options));
  // Files first: a typo in a path is reported without touching the server.
  InferInputs inputs;
  SPARKLE_ASSIGN_OR_RETURN(
      std::optional<NpyArray> input,
      LoadOrGenerate(options.input_path, options.input_shape, options.seed));
  SPARKLE_ASSIGN_OR_RETURN(
      std::optional<NpyArray> weight,
      LoadOrGenerate(options.weight_path, options.weight_shape, options.seed + 1));
  SPARKLE_ASSIGN_OR_RETURN(
      inputs.bias, LoadOrGenerate(options.bias_path, options.bias_shape, options.seed + 2));
  inputs.input = std::move(*input);
  if (weight.has_value()) inputs.weight = std::move(*weight);
  if (!options.save_inputs_dir.empty()) {
    SPARKLE_RETURN_IF_ERROR(SaveInputs(options.save_inputs_dir, inputs));
  }
  const std::string input_shape = FormatShape(inputs.input.shape);
  const std::string weight_shape = options.request.weight_id.empty()
                                       ? FormatShape(inputs.weight.shape)
                                       : options.request.weight_id;
  SPARKLE_ASSIGN_OR_RETURN(inference::ModelInferRequest request,
                           BuildInferRequest(std::move(inputs), options.request));

  SPARKLE_ASSIGN_OR_RETURN(std::unique_ptr<SparkleClient> client,
                           SparkleClient::Connect(connection));
  std::optional<SharedMemoryRequest> placed;
  if (options.shared_memory) {
    SPARKLE_ASSIGN_OR_RETURN(const int64_t output_bytes,
                             OutputBytes(*client, request, options.request));
    SPARKLE_ASSIGN_OR_RETURN(
        placed, MoveTensorsToSharedMemory(*client, absl::StrCat("sparklectl.infer.", getpid()),
                                          output_bytes, &request));
  }
  const absl::Time start = absl::Now();
  SPARKLE_ASSIGN_OR_RETURN(inference::ModelInferResponse response, client->ModelInfer(request));
  const absl::Duration round_trip = absl::Now() - start;
  if (placed.has_value()) {
    if (absl::Status s = ReadSharedMemoryOutput(*placed, &response); !s.ok()) {
      return MarkAsServerError(s);
    }
  }
  // A malformed response is the server's fault: exit 1, like any other server error.
  absl::StatusOr<NpyArray> output = TakeOutput(&response);
  if (!output.ok()) return MarkAsServerError(output.status());

  out << "input   " << input_shape << "  weight " << weight_shape << '\n';
  out << "output  " << FormatShape(output->shape) << " FP32 (" << HumanBytes(output->data.size())
      << ")";
  if (!options.output_path.empty()) {
    SPARKLE_RETURN_IF_ERROR(WriteNpyFile(options.output_path, *output));
    out << " -> " << options.output_path;
  }
  out << '\n';
  // The KServe response has no timing field; the round trip includes transfer both ways. Any
  // parameters the server attaches (e.g. timings, should it add them) are shown as sent.
  out << "time    " << absl::StrFormat("%.3f ms", absl::ToDoubleMilliseconds(round_trip))
      << " round trip\n";
  if (!response.parameters().empty()) {
    std::vector<std::string> params;
    for (const auto& [key, value] : response.parameters()) {
      switch (value.parameter_choice_case()) {
        case inference::InferParameter::kBoolParam:
          params.push_back(absl::StrCat(key, "=", value.bool_param() ? "true" : "false"));
          break;
        case inference::InferParameter::kInt64Param:
          params.push_back(absl::StrCat(key, "=", value.int64_param()));
          break;
        case inference::InferParameter::kStringParam:
          params.push_back(absl::StrCat(key, "=", value.string_param()));
          break;
        case inference::InferParameter::kDoubleParam:
          params.push_back(absl::StrCat(key, "=", value.double_param()));
          break;
        case inference::InferParameter::kUint64Param:
          params.push_back(absl::StrCat(key, "=", value.uint64_param()));
          break;
        default:
          params.push_back(key);
      }
    }
    std::sort(params.begin(), params.end());  // map order is unspecified
    out << "server  " << absl::StrJoin(params, " ") << '\n';
  }
  return absl::OkStatus();
}

}  // namespace sparkle::client
