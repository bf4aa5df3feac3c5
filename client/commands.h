// sparklectl's single-shot commands: health and infer. Each takes its options as a
// struct (main.cc fills them from flags), connects with SparkleClient::Options, writes its
// human-readable result to `out`, and returns the status that main.cc turns into the exit code
// (ExitCodeFor) and a "sparklectl: CODE: message" line.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client/infer_request.h"
#include "client/sparkle_client.h"

namespace sparkle::client {

// `health`: ServerLive, ServerReady, ModelReady("conv2d") and grpc.health.v1 Check(""), one
// line each. OK when the server and the model are ready; a server-marked UNAVAILABLE (exit 1)
// when reachable but not ready; a local UNAVAILABLE (exit 2) when it cannot connect.
absl::Status RunHealth(const SparkleClient::Options& connection, std::ostream& out);

// `status` (and devices, queue, drain) live in client/status_commands.h.

struct InferCommandOptions {
  // Each tensor comes either from a .npy file (path) or is generated (shape); exactly one of the
  // two for input and weight, at most one for bias.
  std::string input_path;
  std::string weight_path;
  std::string bias_path;
  std::vector<int64_t> input_shape;
  std::vector<int64_t> weight_shape;
  std::vector<int64_t> bias_shape;
  // Seed of the generated tensors; input, weight and bias use seed, seed+1 and seed+2.
  uint64_t seed = 1;
  // If set, the inputs actually sent are written there as input.npy, weight.npy and bias.npy
  // (the directory is created if needed), so that the result can be checked offline.
  std::string save_inputs_dir;
  // Where the output goes; empty: not written (the summary is still printed).
  std::string output_path;
  // Send the tensors through system shared memory (client/shared_memory_client.h): inputs and
  // the output in one region registered for this request; no tensor bytes on the wire. Needs
  // the daemon on this host.
  bool shared_memory = false;
  InferRequestOptions request;
};

// INVALID_ARGUMENT naming the flags when `options` is inconsistent (both or neither of a path and
// a shape, a bias shape that is not 1-D).
absl::Status ValidateInferOptions(const InferCommandOptions& options);

// `infer`: loads or generates the tensors, sends one ModelInfer, writes the output .npy and
// prints its shape and the round-trip time.
absl::Status RunInfer(const SparkleClient::Options& connection, InferCommandOptions options,
                      std::ostream& out);

}  // namespace sparkle::client
