// sparklectl's `weights` commands over sparkle.v1.Control's registry RPCs:
//   weights register FILE.npy [--bias=B.npy] [--label=L]   streams the tensor in chunks
//   weights list                                           one row per registered tensor
//   weights rm ID                                          unregisters (deferred release)
// Each prints a human table, or JSON (proto field names) with --json. Exit codes as for every
// command: 0 OK, 1 the server refused (NOT_FOUND, RESOURCE_EXHAUSTED, ...), 2 usage/file/
// connection errors.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client/sparkle_client.h"

namespace sparkle::client {

struct WeightsCommandOptions {
  std::string bias_path;  // register: optional [K] FP32 .npy
  std::string label;      // register: free text shown by list
  // register: bytes of weight data per streamed message; [1, max_message_bytes - 64 KiB].
  int64_t chunk_bytes = int64_t{1} << 20;
  bool json = false;
};

// `args` are the words after `weights`: {"register", FILE}, {"list"} or {"rm", ID}.
// INVALID_ARGUMENT (exit 2) for anything else.
absl::Status RunWeights(const SparkleClient::Options& connection,
                        const std::vector<std::string>& args,
                        const WeightsCommandOptions& options, std::ostream& out);

absl::Status RunWeightsRegister(const SparkleClient::Options& connection,
                                const std::string& weight_path,
                                const WeightsCommandOptions& options, std::ostream& out);
absl::Status RunWeightsList(const SparkleClient::Options& connection, bool json,
                            std::ostream& out);
absl::Status RunWeightsRemove(const SparkleClient::Options& connection,
                              const std::string& weight_id, bool json, std::ostream& out);

}  // namespace sparkle::client
