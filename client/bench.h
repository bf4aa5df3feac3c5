// Closed-loop load generator for sparkled, modelled on perf_analyzer's concurrency mode
// (serving-anchors.md §6): for each shape class and each concurrency level C it keeps exactly C
// ModelInfer requests in flight (or, with BenchOptions::stream, requests on ModelStreamInfer
// streams) for a warm-up period and then a measurement window, and reports
// requests/s, GFLOP/s, MB/s of tensor payload, latency percentiles and errors by code. With
// BenchOptions::shared_memory the tensors lie in system shared memory instead of the messages.
//
// The client is built to spend its CPU on transport, not on messages (it shares the machine
// with the server): each shape class's request is built and serialized once, with random data
// generated once, and every call re-sends the same reference-counted bytes through a generic
// stub on the callback API, spread over several channels (grpc-transport.md).
//
// Every level stops by itself: issuing stops at the end of the window (or after max_requests
// measured completions), and each call in flight is bounded by the RPC deadline.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/infer_request.h"
#include "client/sparkle_client.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/status.h"

namespace sparkle::client {

// One conv2d geometry that the bench sends (NCHW, with a bias).
struct ShapeClass {
  std::string name;
  int64_t n = 1, c = 1, h = 1, w = 1;  // input
  int64_t k = 1, r = 1, s = 1;         // output channels, kernel height and width
  ConvGeometry geometry;

  int64_t OutputHeight() const;  // P
  int64_t OutputWidth() const;   // Q
  // Useful FLOP of one request: 2·N·K·P·Q·(C/groups)·R·S.
  double Flop() const;
  // benchdnn-style description, e.g. "mb1_ic16oc16_ih32kh3ph1_iw32kw3pw1".
  std::string Describe() const;
};

// The built-in classes, in the order the usage text lists them ("mixed" is not among them).
const std::vector<ShapeClass>& BuiltinShapeClasses();

// The classes one --shape_class name stands for: a built-in one, or for "mixed" the round robin
// tiny, resnet_3x3_28, mobilenet_dw. INVALID_ARGUMENT listing the valid names otherwise.
absl::StatusOr<std::vector<ShapeClass>> ResolveShapeClass(absl::string_view name);

struct BenchOptions {
  // Requests kept in flight, one level after another; each in [1, 4096].
  std::vector<int> concurrency = {1, 4, 16, 64};
  // Names accepted by ResolveShapeClass, run one after another.
  std::vector<std::string> shape_classes = {"tiny"};
  // Measurement window per level; (0, 1 h].
  absl::Duration duration = absl::Seconds(5);
  // Load before each window that is not measured (connections, caches, the server's batcher
  // settling); [0, 10 min].
  absl::Duration warmup = absl::Seconds(1);
  // Ends a level's window early after this many measured completions (OK or not); 0: no bound.
  int64_t max_requests = 0;
  // Placement (string_param "device"); empty: not sent.
  std::string device;
  // string_param "weight_id": registered weights used instead of sending weight and bias; they
  // must match every shape class run (K, C/groups, R, S, with a bias).
  std::string weight_id;
  // Extra int64 request parameters (priority, timeout, ...).
  std::vector<std::pair<std::string, int64_t>> extra_params;
  // Seed of the random tensors (the same for every level, so levels are comparable).
  uint64_t seed = 1;
  // If set, results are also written there as CSV (see CsvHeader); the file is replaced.
  std::string csv_path;
  // Fairness (docs/operations.md "Scheduling"): a second identity, on a connection of its own
  // (typically the same target with another bearer token). When set, each level runs twice:
  // the second identity alone at second_concurrency for warmup + duration, then alongside the
  // main load (both warm up and measure together); the second identity's latency alone and
  // alongside and their ratios are reported (FairnessResult). Unset: no second identity.
  std::optional<SparkleClient::Options> second_connection;
  // Requests the second identity keeps in flight; [1, 4096].
  int second_concurrency = 1;
  // Send the requests on ModelStreamInfer streams instead of unary ModelInfer calls: one
  // bidirectional stream per channel, the level's concurrency spread over them, responses
  // matched to requests by id. A response's error_message counts as an error under the code
  // it names ("[CODE] ..."), UNKNOWN when it names none.
  bool stream = false;
  // Tensors through system shared memory (client/shared_memory_client.h; the daemon must be on
  // this host and accept registrations from this client). For each level, one region
  // ("bench.<pid>.<n>") holds, for every in-flight slot, a 64-byte-aligned stretch per tensor of
  // each request the slot sends (input, weight and bias when sent, and the output), written
  // once before the level; each slot re-sends its own prepared bytes, which carry the
  // shared-memory parameters and no tensor bytes. The region is unregistered and unlinked
  // after the level. An OK answer that carries raw_output_contents or no output metadata, or
  // whose output (checked for the first answer of each slot and request) does not match the
  // result of the class's first, ordinary request, counts as an error, DATA_LOSS
  // (LevelResult::not_via_shared_memory). payload_bytes (MB/s) counts tensor bytes in the
  // messages only, so it is 0. Not with second_connection.
  bool shared_memory = false;
};

// What one (shape class, concurrency) level measured.
struct LevelResult {
  std::string shape_class;
  int concurrency = 0;
  double window_seconds = 0;
  int64_t ok = 0;                                // completed OK in the window
  std::map<absl::StatusCode, int64_t> errors;    // non-OK completions in the window, by code
  // Of those, RESOURCE_EXHAUSTED answers with the trailing metadata grpc-retry-pushback-ms or
  // retry-after-ms: the server refused the job (full queue) and said when to come back. Bench
  // counts them and does not retry.
  int64_t refused = 0;
  // Of those, with BenchOptions::shared_memory: DATA_LOSS answers, OK on the wire but not
  // through shared memory (output in raw_output_contents, no output metadata, or a first
  // output that does not match; see BenchOptions::shared_memory).
  int64_t not_via_shared_memory = 0;
  double flop = 0;                               // useful FLOP of the OK requests
  // Tensor bytes carried in the messages (request raw_input_contents + response
  // raw_output_contents) of the OK requests; 0 with BenchOptions::shared_memory.
  double payload_bytes = 0;
  // Latency of the OK requests, microseconds (nearest-rank percentiles).
  double mean_us = 0, p50_us = 0, p90_us = 0, p95_us = 0, p99_us = 0, max_us = 0;
  // Who ran the load: "main", or with BenchOptions::second_connection "second_alone" /
  // "second_alongside" (the second identity without / with the main load running).
  std::string identity = "main";

  double RequestsPerSecond() const;
  double GflopPerSecond() const;
  double MegabytesPerSecond() const;  // 10^6 bytes
  int64_t ErrorCount() const;
  // "-" or e.g. "DEADLINE_EXCEEDED:1 RESOURCE_EXHAUSTED:12 (refused:12)" (with shared
  // memory also "(not via shm:N)").
  std::string ErrorSummary() const;
};

// The second identity's view of one level (BenchOptions::second_connection).
struct FairnessResult {
  LevelResult alone;      // the second identity by itself
  LevelResult alongside;  // the same, while the main load ran at its concurrency
  // Latency alongside / alone; 0 when either has no OK request.
  double P50Ratio() const;
  double P99Ratio() const;
  // One line, e.g. "fairness tiny conc 64 / second 1: p50 0.210 -> 0.305 ms (x1.45), p99 0.480
  // -> 0.912 ms (x1.90)" (bench/fairness_bench.sh parses the x figures).
  std::string Summary(int main_concurrency) const;
};

// Whether a failed call is a refusal with retry pushback (see LevelResult::refused).
bool IsPushback(const grpc::Status& status, const grpc::ClientContext& context);

// The nearest-rank q-quantile (q in [0, 1]) of `sorted` (ascending); 0 for an empty vector.
double Percentile(const std::vector<double>& sorted, double q);

// CSV: perf_analyzer's column names where the meaning is the same (latencies in µs), then
// sparkle's extras. One header line, one line per level.
std::string CsvHeader();
std::string CsvRow(const LevelResult& result);

// INVALID_ARGUMENT naming the field if `options` is out of range or names an unknown class.
absl::Status ValidateBenchOptions(const BenchOptions& options);

// Connects (connection.channels channels), then runs every class × level, printing a table row
// to `out` as each level finishes and writing the CSV at the end. A class whose first request
// fails is reported and skipped; the first such failure is returned (a server error, exit 1)
// after the remaining classes have run.
// Each level's result is also appended to *results when it is not null.
// With a second identity, *fairness (when not null) gets one FairnessResult per level, and
// *results the second identity's runs too (LevelResult::identity).
absl::Status RunBench(const SparkleClient::Options& connection, const BenchOptions& options,
                      std::ostream& out, std::vector<LevelResult>* results = nullptr,
                      std::vector<FairnessResult>* fairness = nullptr);

}  // namespace sparkle::client
