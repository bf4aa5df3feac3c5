#include "client/bench.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "base/status_macros.h"
#include "grpcpp/client_context.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"

namespace sparkle::client {
namespace {

constexpr char kModelInferMethod[] = "/inference.GRPCInferenceService/ModelInfer";

ShapeClass Conv(std::string name, int64_t n, int64_t c, int64_t h, int64_t w, int64_t k,
                int64_t rs, int64_t stride, int64_t pad, int64_t groups = 1) {
  ShapeClass shape;
  shape.name = std::move(name);
  shape.n = n;
  shape.c = c;
  shape.h = h;
  shape.w = w;
  shape.k = k;
  shape.r = rs;
  shape.s = rs;
  shape.geometry.stride_h = shape.geometry.stride_w = stride;
  shape.geometry.pad_h = shape.geometry.pad_w = pad;
  shape.geometry.groups = groups;
  return shape;
}

// A request of one shape class, serialized once and re-sent by every call.
struct PreparedRequest {
  grpc::ByteBuffer bytes;  // reference-counted: each call takes a new reference, not a copy
  double flop = 0;
  double payload_bytes = 0;  // request tensors + response tensor
};

// Serializes `request` straight into a slice that gRPC owns (no intermediate std::string).
grpc::ByteBuffer SerializeOnce(const inference::ModelInferRequest& request) {
  const size_t size = request.ByteSizeLong();
  void* buffer = std::malloc(std::max<size_t>(size, 1));
  request.SerializeWithCachedSizesToArray(static_cast<uint8_t*>(buffer));
  grpc::Slice slice(buffer, size, std::free);
  return grpc::ByteBuffer(&slice, 1);
}

// Builds the request of `shape`, checks with one ordinary call that the server accepts it (so
// that a misconfigured class fails loudly instead of producing a table of errors), and
// serializes it.
absl::StatusOr<PreparedRequest> Prepare(SparkleClient& client, const ShapeClass& shape,
                                        const BenchOptions& options) {
  InferInputs inputs;
  inputs.input = RandomArray({shape.n, shape.c, shape.h, shape.w}, options.seed);
  inputs.weight = RandomArray({shape.k, shape.c / shape.geometry.groups, shape.r, shape.s},
                              options.seed + 1);
  inputs.bias = RandomArray({shape.k}, options.seed + 2);
  InferRequestOptions request_options;
  request_options.geometry = shape.geometry;
  request_options.device = options.device;
  request_options.weight_id = options.weight_id;
  request_options.extra_params = options.extra_params;
  SPARKLE_ASSIGN_OR_RETURN(inference::ModelInferRequest request,
                           BuildInferRequest(std::move(inputs), request_options));
  absl::StatusOr<inference::ModelInferResponse> response = client.ModelInfer(request);
  if (!response.ok()) {
    absl::Status failed(response.status().code(),
                        absl::StrCat("shape class ", shape.name, " (", shape.Describe(),
                                     "): the first request failed: ",
                                     response.status().message()));
    return ExitCodeFor(response.status()) == kExitServerError ? MarkAsServerError(failed)
                                                              : failed;
  }
  int64_t response_bytes = 0;
  for (const std::string& raw : response->raw_output_contents()) response_bytes += raw.size();
  PreparedRequest prepared;
  prepared.flop = shape.Flop();
  prepared.payload_bytes = static_cast<double>(RequestPayloadBytes(request) + response_bytes);
  prepared.bytes = SerializeOnce(request);
  return prepared;
}

// The state of one level's run. Shared with every call's completion callback, so that it lives
// until the last callback has returned (the main thread may wake before that callback unwinds).
class LoadRun : public std::enable_shared_from_this<LoadRun> {
 public:
  // `client` must outlive Run() (it sets up every call's context: deadline, bearer token).
  LoadRun(const SparkleClient* client,
          std::shared_ptr<const std::vector<PreparedRequest>> requests, int concurrency,
          int64_t max_requests)
      : client_(client), requests_(std::move(requests)), max_requests_(max_requests) {
    for (const auto& channel : client->channels()) {
      stubs_.push_back(std::make_unique<grpc::GenericStub>(channel));
    }
    for (int i = 0; i < concurrency; ++i) {
      auto slot = std::make_unique<Slot>();
      slot->stub = stubs_[i % stubs_.size()].get();
      slots_.push_back(std::move(slot));
    }
  }

  // Runs warmup + window and blocks until every call has completed.
  LevelResult Run(absl::Duration warmup, absl::Duration duration) {
    const absl::Time begin = absl::Now();
    measure_start_ = begin + warmup;
    measure_end_ = begin + warmup + duration;
    {
      absl::MutexLock lock(&mu_);
      outstanding_ = static_cast<int>(slots_.size());
    }
    for (auto& slot : slots_) Issue(slot.get(), begin);
    {
      // Bounded: issuing stops at measure_end_ and every call carries the connection's timeout
      // as deadline, after which gRPC completes it.
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](int* outstanding) { return *outstanding == 0; }, &outstanding_));
    }
    return Collect();
  }

 private:
  struct Slot {
    grpc::GenericStub* stub = nullptr;
    std::unique_ptr<grpc::ClientContext> context;
    grpc::ByteBuffer response;
    absl::Time start;
    size_t request_index = 0;
    // Written only by this slot's callbacks, one at a time (a slot has one call in flight and
    // issues the next from the previous one's callback); read by Run() after all completed.
    std::vector<double> latencies_us;
    std::map<absl::StatusCode, int64_t> errors;
    int64_t refused = 0;
    double flop = 0;
    double payload_bytes = 0;
  };

  void Issue(Slot* slot, absl::Time now) {
    slot->context = std::make_unique<grpc::ClientContext>();
    client_->PrepareContext(slot->context.get());
    slot->response.Clear();
    slot->request_index = next_request_.fetch_add(1, std::memory_order_relaxed) % requests_->size();
    slot->start = now;
    std::shared_ptr<LoadRun> self = shared_from_this();
    slot->stub->UnaryCall(slot->context.get(), kModelInferMethod, grpc::StubOptions(),
                          &(*requests_)[slot->request_index].bytes, &slot->response,
                          [self = std::move(self), slot](grpc::Status status) {
                            self->OnDone(slot, status);
                          });
  }

  void OnDone(Slot* slot, const grpc::Status& status) {
    const absl::Time now = absl::Now();
    if (now >= measure_start_ && now <= measure_end_ && !stopped_.load()) {
      bool counted = true;
      if (max_requests_ > 0) {
        const int64_t n = measured_.fetch_add(1);
        counted = n < max_requests_;
        if (n + 1 == max_requests_) {
          window_end_ns_.store(absl::ToUnixNanos(now));
          stopped_.store(true);
        }
      }
      if (counted) {
        if (status.ok()) {
          const PreparedRequest& request = (*requests_)[slot->request_index];
          slot->latencies_us.push_back(absl::ToDoubleMicroseconds(now - slot->start));
          slot->flop += request.flop;
          slot->payload_bytes += request.payload_bytes;
        } else {
          ++slot->errors[static_cast<absl::StatusCode>(status.error_code())];
          if (IsPushback(status, *slot->context)) ++slot->refused;
        }
      }
    }
    if (now < measure_end_ && !stopped_.load()) {
      Issue(slot, now);
      return;
    }
    absl::MutexLock lock(&mu_);
    --outstanding_;
  }

  LevelResult Collect() {
    LevelResult result;
    result.concurrency = static_cast<int>(slots_.size());
    const int64_t end_ns = window_end_ns_.load();
    const absl::Time window_end = end_ns != 0 ? absl::FromUnixNanos(end_ns) : measure_end_;
    result.window_seconds = absl::ToDoubleSeconds(window_end - measure_start_);
    std::vector<double> latencies;
    for (const auto& slot : slots_) {
      latencies.insert(latencies.end(), slot->latencies_us.begin(), slot->latencies_us.end());
      for (const auto& [code, count] : slot->errors) result.errors[code] += count;
      result.refused += slot->refused;
      result.flop += slot->flop;
      result.payload_bytes += slot->payload_bytes;
    }
    std::sort(latencies.begin(), latencies.end());
    result.ok = static_cast<int64_t>(latencies.size());
    if (!latencies.empty()) {
      double sum = 0;
      for (double l : latencies) sum += l;
      result.mean_us = sum / latencies.size();
      result.p50_us = Percentile(latencies, 0.50);
      result.p90_us = Percentile(latencies, 0.90);
      result.p95_us = Percentile(latencies, 0.95);
      result.p99_us = Percentile(latencies, 0.99);
      result.max_us = latencies.back();
    }
    return result;
  }

  const SparkleClient* const client_;
  const std::shared_ptr<const std::vector<PreparedRequest>> requests_;
  const int64_t max_requests_;
  std::vector<std::unique_ptr<grpc::GenericStub>> stubs_;
  std::vector<std::unique_ptr<Slot>> slots_;
  // Set before the first call is issued, read-only afterwards.
  absl::Time measure_start_;
  absl::Time measure_end_;

  std::atomic<uint64_t> next_request_{0};  // round robin over requests_ ("mixed")
  std::atomic<int64_t> measured_{0};       // completions in the window (with max_requests_)
  std::atomic<bool> stopped_{false};       // monotonic: max_requests_ reached
  std::atomic<int64_t> window_end_ns_{0};  // when stopped_ was set; 0 while not

  absl::Mutex mu_;
  int outstanding_ ABSL_GUARDED_BY(mu_) = 0;  // slots whose last call has not completed
};

std::string Ms(double us) { return absl::StrFormat("%.3f", us / 1000.0); }

constexpr char kRowFormat[] = "%-15s %5s %10s %9s %9s %9s %9s %9s %9s %8s  %s\n";

void PrintHeader(std::ostream& out) {
  out << absl::StrFormat(kRowFormat, "CLASS", "CONC", "REQ/s", "GFLOP/s", "MB/s", "p50 ms",
                         "p90 ms", "p99 ms", "mean ms", "OK", "ERRORS");
}

void PrintRow(const LevelResult& r, std::ostream& out) {
  out << absl::StrFormat(kRowFormat, r.shape_class, absl::StrCat(r.concurrency),
                         absl::StrFormat("%.1f", r.RequestsPerSecond()),
                         absl::StrFormat("%.2f", r.GflopPerSecond()),
                         absl::StrFormat("%.1f", r.MegabytesPerSecond()), Ms(r.p50_us),
                         Ms(r.p90_us), Ms(r.p99_us), Ms(r.mean_us), absl::StrCat(r.ok),
                         r.ErrorSummary());
  out.flush();
}

}  // namespace

int64_t ShapeClass::OutputHeight() const {
  return (h + 2 * geometry.pad_h - geometry.dilation_h * (r - 1) - 1) / geometry.stride_h + 1;
}

int64_t ShapeClass::OutputWidth() const {
  return (w + 2 * geometry.pad_w - geometry.dilation_w * (s - 1) - 1) / geometry.stride_w + 1;
}

double ShapeClass::Flop() const {
  return 2.0 * n * k * OutputHeight() * OutputWidth() * (c / geometry.groups) * r * s;
}

std::string ShapeClass::Describe() const {
  std::string out = absl::StrCat("mb", n, "_");
  if (geometry.groups != 1) absl::StrAppend(&out, "g", geometry.groups);
  absl::StrAppend(&out, "ic", c, "oc", k, "_ih", h, "kh", r);
  if (geometry.stride_h != 1) absl::StrAppend(&out, "sh", geometry.stride_h);
  absl::StrAppend(&out, "ph", geometry.pad_h, "_iw", w, "kw", s);
  if (geometry.stride_w != 1) absl::StrAppend(&out, "sw", geometry.stride_w);
  absl::StrAppend(&out, "pw", geometry.pad_w);
  return out;
}

const std::vector<ShapeClass>& BuiltinShapeClasses() {
  static const auto* const kClasses = new std::vector<ShapeClass>{
      Conv("tiny", 1, 16, 32, 32, 16, 3, 1, 1),
      Conv("small_3x3", 1, 16, 32, 32, 16, 3, 1, 1),
      Conv("resnet_3x3_56", 1, 64, 56, 56, 64, 3, 1, 1),
      Conv("resnet_1x1_56", 1, 64, 56, 56, 256, 1, 1, 0),
      Conv("resnet_conv1", 1, 3, 224, 224, 64, 7, 2, 3),
      Conv("resnet_3x3_28", 1, 128, 28, 28, 128, 3, 1, 1),
      Conv("resnet_3x3_14", 1, 256, 14, 14, 256, 3, 1, 1),
      Conv("resnet_3x3_7", 1, 512, 7, 7, 512, 3, 1, 1),
      Conv("resnet_3x3_56_b8", 8, 64, 56, 56, 64, 3, 1, 1),
      Conv("mid_3x3", 4, 32, 64, 64, 32, 3, 1, 1),
      Conv("mobilenet_dw", 1, 128, 56, 56, 128, 3, 1, 1, /*groups=*/128),
      Conv("vgg_3x3_224", 1, 64, 224, 224, 64, 3, 1, 1),
  };
  return *kClasses;
}

absl::StatusOr<std::vector<ShapeClass>> ResolveShapeClass(absl::string_view name) {
  auto find = [](absl::string_view wanted) -> const ShapeClass* {
    for (const ShapeClass& c : BuiltinShapeClasses()) {
      if (c.name == wanted) return &c;
    }
    return nullptr;
  };
  if (name == "mixed") {
    std::vector<ShapeClass> mixed;
    for (absl::string_view part : {"tiny", "resnet_3x3_28", "mobilenet_dw"}) {
      mixed.push_back(*find(part));
    }
    return mixed;
  }
  if (const ShapeClass* c = find(name)) return std::vector<ShapeClass>{*c};
  std::vector<std::string> names;
  for (const ShapeClass& c : BuiltinShapeClasses()) names.push_back(c.name);
  names.push_back("mixed");
  return absl::InvalidArgumentError(absl::StrCat("unknown shape class \"", name,
                                                 "\"; known: ", absl::StrJoin(names, ", ")));
}

double LevelResult::RequestsPerSecond() const {
  return window_seconds > 0 ? ok / window_seconds : 0;
}
double LevelResult::GflopPerSecond() const {
  return window_seconds > 0 ? flop / window_seconds / 1e9 : 0;
}
double LevelResult::MegabytesPerSecond() const {
  return window_seconds > 0 ? payload_bytes / window_seconds / 1e6 : 0;
}
int64_t LevelResult::ErrorCount() const {
  int64_t total = 0;
  for (const auto& [code, count] : errors) total += count;
  return total;
}
std::string LevelResult::ErrorSummary() const {
  if (errors.empty()) return "-";
  std::vector<std::string> parts;
  for (const auto& [code, count] : errors) {
    parts.push_back(absl::StrCat(absl::StatusCodeToString(code), ":", count));
  }
  if (refused > 0) parts.push_back(absl::StrCat("(refused:", refused, ")"));
  return absl::StrJoin(parts, " ");
}

double FairnessResult::P50Ratio() const {
  return alone.p50_us > 0 && alongside.ok > 0 ? alongside.p50_us / alone.p50_us : 0;
}

double FairnessResult::P99Ratio() const {
  return alone.p99_us > 0 && alongside.ok > 0 ? alongside.p99_us / alone.p99_us : 0;
}

std::string FairnessResult::Summary(int main_concurrency) const {
  return absl::StrFormat(
      "fairness %s conc %d / second %d: p50 %s -> %s ms (x%.2f), p99 %s -> %s ms (x%.2f)%s",
      alongside.shape_class, main_concurrency, alongside.concurrency, Ms(alone.p50_us),
      Ms(alongside.p50_us), P50Ratio(), Ms(alone.p99_us), Ms(alongside.p99_us), P99Ratio(),
      alone.ErrorCount() + alongside.ErrorCount() > 0
          ? absl::StrCat("; second errors alone ", alone.ErrorSummary(), ", alongside ",
                         alongside.ErrorSummary())
          : "");
}

bool IsPushback(const grpc::Status& status, const grpc::ClientContext& context) {
  if (status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) return false;
  const auto& trailers = context.GetServerTrailingMetadata();
  return trailers.find("grpc-retry-pushback-ms") != trailers.end() ||
         trailers.find("retry-after-ms") != trailers.end();
}

double Percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  // Nearest rank: the smallest value with at least q of the samples at or below it.
  const double rank = std::ceil(std::clamp(q, 0.0, 1.0) * static_cast<double>(sorted.size()));
  const size_t index = rank < 1 ? 0 : static_cast<size_t>(rank) - 1;
  return sorted[std::min(index, sorted.size() - 1)];
}

std::string CsvHeader() {
  return "Concurrency,Inferences/Second,p50 latency,p90 latency,p95 latency,p99 latency,"
         "Avg latency,Max latency,Shape Class,GFLOP/s,MB/s,Requests,Errors,Error Codes,"
         "Window Seconds,Identity";
}

std::string CsvRow(const LevelResult& r) {
  auto us = [](double v) { return absl::StrCat(static_cast<int64_t>(std::llround(v))); };
  return absl::StrCat(r.concurrency, ",", absl::StrFormat("%.3f", r.RequestsPerSecond()), ",",
                      us(r.p50_us), ",", us(r.p90_us), ",", us(r.p95_us), ",", us(r.p99_us), ",",
                      us(r.mean_us), ",", us(r.max_us), ",", r.shape_class, ",",
                      absl::StrFormat("%.3f", r.GflopPerSecond()), ",",
                      absl::StrFormat("%.3f", r.MegabytesPerSecond()), ",", r.ok, ",",
                      r.ErrorCount(), ",", r.errors.empty() ? "" : r.ErrorSummary(), ",",
                      absl::StrFormat("%.3f", r.window_seconds), ",", r.identity);
}

absl::Status ValidateBenchOptions(const BenchOptions& options) {
  if (options.concurrency.empty()) {
    return absl::InvalidArgumentError("concurrency must list at least one level");
  }
  for (int c : options.concurrency) {
    if (c < 1 || c > 4096) {
      return absl::InvalidArgumentError(
          absl::StrCat("concurrency levels must be in [1, 4096]; was ", c));
    }
  }
  if (options.shape_classes.empty()) {
    return absl::InvalidArgumentError("shape_class must name at least one class");
  }
  for (const std::string& name : options.shape_classes) {
    SPARKLE_RETURN_IF_ERROR(ResolveShapeClass(name).status());
  }
  if (options.duration <= absl::ZeroDuration() || options.duration > absl::Hours(1)) {
    return absl::InvalidArgumentError(absl::StrCat("duration must be in (0, 1h]; was ",
                                                   absl::FormatDuration(options.duration)));
  }
  if (options.warmup < absl::ZeroDuration() || options.warmup > absl::Minutes(10)) {
    return absl::InvalidArgumentError(absl::StrCat("warmup must be in [0, 10m]; was ",
                                                   absl::FormatDuration(options.warmup)));
  }
  if (options.second_connection.has_value() &&
      (options.second_concurrency < 1 || options.second_concurrency > 4096)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "second_concurrency must be in [1, 4096]; was ", options.second_concurrency));
  }
  if (options.max_requests < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_requests must be >= 0; was ", options.max_requests));
  }
  return absl::OkStatus();
}

absl::Status RunBench(const SparkleClient::Options& connection, const BenchOptions& options,
                      std::ostream& out, std::vector<LevelResult>* results,
                      std::vector<FairnessResult>* fairness) {
  SPARKLE_RETURN_IF_ERROR(ValidateBenchOptions(options));
  // Opening the CSV first: a bad path should not cost a whole run.
  std::ofstream csv;
  if (!options.csv_path.empty()) {
    csv.open(options.csv_path, std::ios::out | std::ios::trunc);
    if (!csv) {
      return absl::InvalidArgumentError(
          absl::StrCat("--csv: cannot create ", options.csv_path));
    }
    csv << CsvHeader() << '\n';
  }
  SPARKLE_ASSIGN_OR_RETURN(std::unique_ptr<SparkleClient> client,
                           SparkleClient::Connect(connection));
  std::unique_ptr<SparkleClient> second;
  if (options.second_connection.has_value()) {
    SPARKLE_ASSIGN_OR_RETURN(second, SparkleClient::Connect(*options.second_connection));
  }
  out << absl::StrFormat("target %s, %d channel(s), warmup %s, window %s%s\n", connection.target,
                         connection.channels, absl::FormatDuration(options.warmup),
                         absl::FormatDuration(options.duration),
                         options.max_requests > 0
                             ? absl::StrCat(" or ", options.max_requests, " requests")
                             : "");
  absl::Status first_failure;
  bool header_printed = false;
  for (const std::string& name : options.shape_classes) {
    SPARKLE_ASSIGN_OR_RETURN(std::vector<ShapeClass> shapes, ResolveShapeClass(name));
    auto requests = std::make_shared<std::vector<PreparedRequest>>();
    absl::Status prepared;
    for (const ShapeClass& shape : shapes) {
      absl::StatusOr<PreparedRequest> request = Prepare(*client, shape, options);
      if (!request.ok()) {
        prepared = request.status();
        break;
      }
      requests->push_back(*std::move(request));
    }
    if (!prepared.ok()) {
      out << "skipping " << name << ": " << StatusText(prepared) << '\n';
      if (first_failure.ok()) first_failure = prepared;
      header_printed = false;
      continue;
    }
    if (!header_printed) {
      PrintHeader(out);
      header_printed = true;
    }
    auto record = [&](LevelResult& result, const std::string& identity) {
      result.shape_class = name;
      result.identity = identity;
      if (csv.is_open()) csv << CsvRow(result) << '\n';
      if (results != nullptr) results->push_back(result);
    };
    for (int concurrency : options.concurrency) {
      FairnessResult fair;
      std::thread second_thread;
      if (second != nullptr) {
        // Alone first, then alongside: started together, so that both warm up and measure over
        // the same window.
        fair.alone = std::make_shared<LoadRun>(second.get(), requests,
                                               options.second_concurrency, 0)
                         ->Run(options.warmup, options.duration);
        record(fair.alone, "second_alone");
        second_thread = std::thread([&] {
          fair.alongside = std::make_shared<LoadRun>(second.get(), requests,
                                                     options.second_concurrency, 0)
                               ->Run(options.warmup, options.duration);
        });
      }
      auto run = std::make_shared<LoadRun>(client.get(), requests, concurrency,
                                           options.max_requests);
      LevelResult result = run->Run(options.warmup, options.duration);
      record(result, "main");
      PrintRow(result, out);
      if (second_thread.joinable()) {
        second_thread.join();
        record(fair.alongside, "second_alongside");
        out << fair.Summary(concurrency) << '\n';
        out.flush();
        if (fairness != nullptr) fairness->push_back(fair);
      }
    }
  }
  if (csv.is_open()) {
    csv.close();
    if (!csv) return absl::InternalError(absl::StrCat("--csv: cannot write ", options.csv_path));
  }
  return first_failure;
}

}  // namespace sparkle::client
