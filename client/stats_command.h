// sparklectl `stats`: the model's cumulative statistics from inference.GRPCInferenceService/
// ModelStatistics (Triton's message, the numbers perf_analyzer reads): request counts, mean
// latency per stage and the executed batch sizes. A human table, or JSON with --json.
#pragma once

#include <ostream>

#include "absl/status/status.h"
#include "client/sparkle_client.h"
#include "inference/grpc_predict_v2.pb.h"

namespace sparkle::client {

// Calls ModelStatistics for "conv2d" and prints the result (PrintStats, or the response as JSON
// with proto field names when `json`).
absl::Status RunStats(const SparkleClient::Options& connection, bool json, std::ostream& out);

// The table: one summary line, one row per stage (count, mean, total) and one row per executed
// batch size (executions, mean time per stage per execution).
void PrintStats(const inference::ModelStatisticsResponse& response, std::ostream& out);

}  // namespace sparkle::client
