#include "client/bench.h"

#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "base/status_macros.h"
#include "client/shared_memory_client.h"
#include "grpcpp/client_context.h"
#include "grpcpp/generic/generic_stub.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/client_callback.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "grpcpp/support/slice.h"

namespace sparkle::client {
namespace {

constexpr char kModelInferMethod[] = "/inference.GRPCInferenceService/ModelInfer";
constexpr char kModelStreamInferMethod[] = "/inference.GRPCInferenceService/ModelStreamInfer";

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
  double payload_bytes = 0;  // tensor bytes in the request and response messages
  // With shared memory (BenchOptions::shared_memory): where the daemon writes the output, and
  // what the first answer must hold there (the answer to the class's first, ordinary request).
  const uint8_t* shm_output = nullptr;
  std::shared_ptr<const std::string> expected_output;
};

// The requests that the in-flight slots send: slot i sends the requests of set
// i % sets.size(), round robin over the set's entries (one per class of a "mixed" run). Over
// the wire every slot shares one set; with shared memory each slot has its own, whose bytes
// name the slot's stretch of the region.
using RequestSets = std::vector<std::vector<PreparedRequest>>;

// One class as Prepare() checked it: the wire request, and for shared memory the message it
// was built from, without its tensors (they are in `inputs`).
struct ClassRequest {
  PreparedRequest wire;
  inference::ModelInferRequest message;  // raw_input_contents cleared; shared memory only
  std::vector<std::string> inputs;       // its raw_input_contents; shared memory only
  int64_t output_bytes = 0;
  std::shared_ptr<const std::string> expected_output;  // the first answer's output bytes
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
absl::StatusOr<ClassRequest> Prepare(SparkleClient& client, const ShapeClass& shape,
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
  ClassRequest prepared;
  prepared.wire.flop = shape.Flop();
  prepared.wire.payload_bytes =
      static_cast<double>(RequestPayloadBytes(request) + response_bytes);
  prepared.wire.bytes = SerializeOnce(request);
  if (options.shared_memory) {
    if (response->raw_output_contents_size() != 1) {
      return MarkAsServerError(absl::InternalError(absl::StrCat(
          "shape class ", shape.name, ": the first answer has ",
          response->raw_output_contents_size(), " raw outputs; expected one")));
    }
    prepared.output_bytes = 4 * shape.n * shape.k * shape.OutputHeight() * shape.OutputWidth();
    prepared.expected_output = std::make_shared<const std::string>(
        std::move(*response->mutable_raw_output_contents(0)));
    if (static_cast<int64_t>(prepared.expected_output->size()) != prepared.output_bytes) {
      return MarkAsServerError(absl::InternalError(absl::StrCat(
          "shape class ", shape.name, ": the first answer's output has ",
          prepared.expected_output->size(), " bytes; expected ", prepared.output_bytes)));
    }
    prepared.inputs.assign(request.raw_input_contents().begin(),
                           request.raw_input_contents().end());
    request.clear_raw_input_contents();
    prepared.message = std::move(request);
  }
  return prepared;
}

constexpr size_t kShmAlignment = 64;
size_t AlignUp(size_t n) { return (n + kShmAlignment - 1) / kShmAlignment * kShmAlignment; }

// The shared-memory side of one level (BenchOptions::shared_memory): one region, and one request
// set per slot whose requests place their tensors in the slot's stretch of it. The region is
// unregistered and unlinked when this is destroyed (after the level: no call in flight).
struct SharedMemoryLevel {
  std::unique_ptr<ClientSharedMemory> region;
  std::shared_ptr<const RequestSets> sets;
};

absl::StatusOr<SharedMemoryLevel> PrepareSharedMemoryLevel(
    SparkleClient& client, const std::vector<ClassRequest>& classes, int concurrency) {
  // The layout of one slot's stretch: per class, its inputs in order, then its output.
  size_t slot_bytes = 0;
  for (const ClassRequest& c : classes) {
    for (const std::string& input : c.inputs) slot_bytes = AlignUp(slot_bytes + input.size());
    slot_bytes = AlignUp(slot_bytes + static_cast<size_t>(c.output_bytes));
  }
  const size_t total = slot_bytes * static_cast<size_t>(concurrency);
  // tmpfs allocates on first write: a region larger than what /dev/shm has left would end in
  // SIGBUS while the tensors are written, so refuse it here.
  struct statvfs fs;
  if (statvfs("/dev/shm", &fs) == 0) {
    const double available = static_cast<double>(fs.f_bavail) * static_cast<double>(fs.f_frsize);
    if (static_cast<double>(total) > available) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "shared memory: %d slots need %.1f MB in /dev/shm; %.1f MB are available (lower "
          "--concurrency)",
          concurrency, total / 1e6, available / 1e6));
    }
  }
  static std::atomic<int> level_counter{0};
  SharedMemoryLevel level;
  SPARKLE_ASSIGN_OR_RETURN(
      level.region,
      ClientSharedMemory::Create(
          client, absl::StrCat("bench.", getpid(), ".", level_counter.fetch_add(1)), total));
  auto sets = std::make_shared<RequestSets>(static_cast<size_t>(concurrency));
  const std::string& name = level.region->name();
  for (int slot = 0; slot < concurrency; ++slot) {
    size_t offset = static_cast<size_t>(slot) * slot_bytes;
    for (const ClassRequest& c : classes) {
      inference::ModelInferRequest request = c.message;
      for (int i = 0; i < request.inputs_size(); ++i) {
        const std::string& bytes = c.inputs[static_cast<size_t>(i)];
        std::memcpy(level.region->data() + offset, bytes.data(), bytes.size());
        SetSharedMemoryParameters(request.mutable_inputs(i)->mutable_parameters(), name,
                                  static_cast<int64_t>(bytes.size()),
                                  static_cast<int64_t>(offset));
        offset = AlignUp(offset + bytes.size());
      }
      request.clear_outputs();
      inference::ModelInferRequest::InferRequestedOutputTensor* output = request.add_outputs();
      output->set_name("output");
      SetSharedMemoryParameters(output->mutable_parameters(), name, c.output_bytes,
                                static_cast<int64_t>(offset));
      // NaN until the daemon writes it, so that an output never written cannot pass the check.
      std::memset(level.region->data() + offset, 0xff, static_cast<size_t>(c.output_bytes));
      PreparedRequest prepared;
      prepared.bytes = SerializeOnce(request);
      prepared.flop = c.wire.flop;
      prepared.payload_bytes = 0;  // no tensor byte travels in the messages
      prepared.shm_output = level.region->data() + offset;
      prepared.expected_output = c.expected_output;
      (*sets)[static_cast<size_t>(slot)].push_back(std::move(prepared));
      offset = AlignUp(offset + static_cast<size_t>(c.output_bytes));
    }
  }
  level.sets = std::move(sets);
  return level;
}

// What an answer (ModelInferResponse) carried, as far as shared memory cares.
struct AnswerLayout {
  bool has_output = false;      // an outputs entry (the output's metadata)
  bool has_raw_output = false;  // a raw_output_contents entry (tensor bytes on the wire)
};

// Reads the fields of a ModelInferResponse from `in` up to its limit or end: the id into *id
// (when not null), the rest noted in *layout, tensors skipped without copying. False when the
// bytes do not parse.
bool ScanInferResponse(google::protobuf::io::CodedInputStream& in, std::string* id,
                       AnswerLayout* layout) {
  using google::protobuf::internal::WireFormatLite;
  while (const uint32_t tag = in.ReadTag()) {
    const uint32_t field = tag >> 3;
    const bool delimited = (tag & 7) == WireFormatLite::WIRETYPE_LENGTH_DELIMITED;
    if (field == 3 && delimited && id != nullptr) {  // id
      uint32_t length = 0;
      if (!in.ReadVarint32(&length) || !in.ReadString(id, static_cast<int>(length))) {
        return false;
      }
      continue;
    }
    if (field == 5 && delimited) layout->has_output = true;      // outputs
    if (field == 6 && delimited) layout->has_raw_output = true;  // raw_output_contents
    if (!WireFormatLite::SkipField(&in, tag)) return false;
  }
  return true;
}

// Whether an OK answer to `request` honoured shared memory. With `verify_output`, the output in
// the region is also compared with the expected one (a tolerance covers another algorithm or
// batch size on the daemon's side; a NaN, the fill of an output never written, never passes).
bool HonouredSharedMemory(const PreparedRequest& request, const AnswerLayout& answer,
                          bool verify_output) {
  if (!answer.has_output || answer.has_raw_output) return false;
  if (!verify_output) return true;
  const std::string& expected = *request.expected_output;
  const size_t count = expected.size() / sizeof(float);
  for (size_t i = 0; i < count; ++i) {
    float want, got;
    std::memcpy(&want, expected.data() + i * sizeof(float), sizeof(float));
    std::memcpy(&got, request.shm_output + i * sizeof(float), sizeof(float));
    if (!(std::fabs(got - want) <= 1e-3f * (1.0f + std::fabs(want)))) return false;
  }
  return true;
}

// Statistics of one in-flight slot. Written only by the slot's completions, one at a time (a
// slot has one request in flight and issues the next from the previous one's completion); read
// by Collect() after every call has completed.
struct SlotStats {
  std::vector<double> latencies_us;
  std::map<absl::StatusCode, int64_t> errors;
  int64_t refused = 0;
  int64_t not_via_shared_memory = 0;
  double flop = 0;
  double payload_bytes = 0;
};

// The measurement window of one level, shared by the unary and the streaming load: which
// completions count, when issuing stops, and the result.
class LoadWindow {
 protected:
  explicit LoadWindow(int64_t max_requests) : max_requests_(max_requests) {}

  // Before the first request: the window is [begin + warmup, begin + warmup + duration].
  void SetWindow(absl::Time begin, absl::Duration warmup, absl::Duration duration) {
    measure_start_ = begin + warmup;
    measure_end_ = begin + warmup + duration;
  }

  // Records one completion at `now` of a request started at `start` (code OK or the error's;
  // DATA_LOSS with not_via_shared_memory). Returns whether the slot issues its next request.
  bool Complete(SlotStats* stats, const PreparedRequest& request, absl::Time start,
                absl::Time now, absl::StatusCode code, bool refused,
                bool not_via_shared_memory = false) {
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
        if (code == absl::StatusCode::kOk) {
          stats->latencies_us.push_back(absl::ToDoubleMicroseconds(now - start));
          stats->flop += request.flop;
          stats->payload_bytes += request.payload_bytes;
        } else {
          ++stats->errors[code];
          if (refused) ++stats->refused;
          if (not_via_shared_memory) ++stats->not_via_shared_memory;
        }
      }
    }
    return now < measure_end_ && !stopped_.load();
  }

  absl::Time measure_end() const { return measure_end_; }

  LevelResult Collect(const std::vector<const SlotStats*>& slots) const {
    LevelResult result;
    result.concurrency = static_cast<int>(slots.size());
    const int64_t end_ns = window_end_ns_.load();
    const absl::Time window_end = end_ns != 0 ? absl::FromUnixNanos(end_ns) : measure_end_;
    result.window_seconds = absl::ToDoubleSeconds(window_end - measure_start_);
    std::vector<double> latencies;
    for (const SlotStats* slot : slots) {
      latencies.insert(latencies.end(), slot->latencies_us.begin(), slot->latencies_us.end());
      for (const auto& [code, count] : slot->errors) result.errors[code] += count;
      result.refused += slot->refused;
      result.not_via_shared_memory += slot->not_via_shared_memory;
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

 private:
  const int64_t max_requests_;
  // Set before the first call is issued, read-only afterwards.
  absl::Time measure_start_;
  absl::Time measure_end_;
  std::atomic<int64_t> measured_{0};       // completions in the window (with max_requests_)
  std::atomic<bool> stopped_{false};       // monotonic: max_requests_ reached
  std::atomic<int64_t> window_end_ns_{0};  // when stopped_ was set; 0 while not
};

// The state of one level's unary run. Shared with every call's completion callback, so that it
// lives until the last callback has returned (the main thread may wake before that callback
// unwinds).
class LoadRun : public LoadWindow, public std::enable_shared_from_this<LoadRun> {
 public:
  // `client` must outlive Run() (it sets up every call's context: deadline, bearer token).
  LoadRun(const SparkleClient* client, std::shared_ptr<const RequestSets> requests,
          int concurrency, int64_t max_requests)
      : LoadWindow(max_requests), client_(client), requests_(std::move(requests)) {
    for (const auto& channel : client->channels()) {
      stubs_.push_back(std::make_unique<grpc::GenericStub>(channel));
    }
    for (int i = 0; i < concurrency; ++i) {
      auto slot = std::make_unique<Slot>();
      slot->stub = stubs_[i % stubs_.size()].get();
      slot->requests = &(*requests_)[i % requests_->size()];
      slot->verified.assign(slot->requests->size(), false);
      slots_.push_back(std::move(slot));
    }
  }

  // Runs warmup + window and blocks until every call has completed.
  LevelResult Run(absl::Duration warmup, absl::Duration duration) {
    const absl::Time begin = absl::Now();
    SetWindow(begin, warmup, duration);
    {
      absl::MutexLock lock(&mu_);
      outstanding_ = static_cast<int>(slots_.size());
    }
    for (auto& slot : slots_) Issue(slot.get(), begin);
    {
      // Bounded: issuing stops at the window's end and every call carries the connection's
      // timeout as deadline, after which gRPC completes it.
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](int* outstanding) { return *outstanding == 0; }, &outstanding_));
    }
    std::vector<const SlotStats*> stats;
    for (const auto& slot : slots_) stats.push_back(&slot->stats);
    return Collect(stats);
  }

 private:
  struct Slot {
    grpc::GenericStub* stub = nullptr;
    const std::vector<PreparedRequest>* requests = nullptr;  // the slot's set
    std::vector<bool> verified;  // shared memory: whether request i's output was checked
    std::unique_ptr<grpc::ClientContext> context;
    grpc::ByteBuffer response;
    absl::Time start;
    size_t request_index = 0;
    SlotStats stats;
  };

  void Issue(Slot* slot, absl::Time now) {
    slot->context = std::make_unique<grpc::ClientContext>();
    client_->PrepareContext(slot->context.get());
    slot->response.Clear();
    slot->request_index =
        next_request_.fetch_add(1, std::memory_order_relaxed) % slot->requests->size();
    slot->start = now;
    std::shared_ptr<LoadRun> self = shared_from_this();
    slot->stub->UnaryCall(slot->context.get(), kModelInferMethod, grpc::StubOptions(),
                          &(*slot->requests)[slot->request_index].bytes, &slot->response,
                          [self = std::move(self), slot](grpc::Status status) {
                            self->OnDone(slot, status);
                          });
  }

  void OnDone(Slot* slot, const grpc::Status& status) {
    const absl::Time now = absl::Now();
    const PreparedRequest& request = (*slot->requests)[slot->request_index];
    auto code = static_cast<absl::StatusCode>(status.error_code());
    bool not_via_shared_memory = false;
    if (status.ok() && request.shm_output != nullptr) {
      AnswerLayout layout;
      bool parsed = false;
      {
        grpc::ProtoBufferReader reader(&slot->response);
        google::protobuf::io::CodedInputStream in(&reader);
        parsed = reader.status().ok() && ScanInferResponse(in, nullptr, &layout) &&
                 in.ConsumedEntireMessage();
      }
      const bool verify = !slot->verified[slot->request_index];
      slot->verified[slot->request_index] = true;
      if (!parsed || !HonouredSharedMemory(request, layout, verify)) {
        code = absl::StatusCode::kDataLoss;
        not_via_shared_memory = true;
      }
    }
    const bool next = Complete(&slot->stats, request, slot->start, now, code,
                               !status.ok() && IsPushback(status, *slot->context),
                               not_via_shared_memory);
    if (next) {
      Issue(slot, now);
      return;
    }
    absl::MutexLock lock(&mu_);
    --outstanding_;
  }

  const SparkleClient* const client_;
  const std::shared_ptr<const RequestSets> requests_;
  std::vector<std::unique_ptr<grpc::GenericStub>> stubs_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::atomic<uint64_t> next_request_{0};  // round robin over a set's requests ("mixed")

  absl::Mutex mu_;
  int outstanding_ ABSL_GUARDED_BY(mu_) = 0;  // slots whose last call has not completed
};

// The id, error_message and answer layout of a serialized ModelStreamInferResponse, read
// without copying its tensors. False when the bytes do not parse.
bool ScanStreamResponse(grpc::ByteBuffer* buffer, std::string* id, std::string* error,
                        AnswerLayout* layout) {
  using google::protobuf::internal::WireFormatLite;
  grpc::ProtoBufferReader reader(buffer);
  if (!reader.status().ok()) return false;
  google::protobuf::io::CodedInputStream in(&reader);
  auto read_string = [&in](std::string* out) {
    uint32_t length = 0;
    return in.ReadVarint32(&length) && in.ReadString(out, static_cast<int>(length));
  };
  while (const uint32_t tag = in.ReadTag()) {
    const uint32_t field = tag >> 3;
    const bool delimited = (tag & 7) == WireFormatLite::WIRETYPE_LENGTH_DELIMITED;
    if (field == 1 && delimited) {  // error_message
      if (!read_string(error)) return false;
    } else if (field == 2 && delimited) {  // infer_response
      uint32_t length = 0;
      if (!in.ReadVarint32(&length)) return false;
      const auto limit = in.PushLimit(static_cast<int>(length));
      if (!ScanInferResponse(in, id, layout)) return false;
      if (in.BytesUntilLimit() != 0) return false;
      in.PopLimit(limit);
    } else if (!WireFormatLite::SkipField(&in, tag)) {
      return false;
    }
  }
  return in.ConsumedEntireMessage();
}

// The code of a stream error_message "[CODE] message" (the daemon's form); UNKNOWN otherwise.
absl::StatusCode StreamErrorCode(absl::string_view message) {
  if (absl::ConsumePrefix(&message, "[")) {
    const size_t end = message.find(']');
    if (end != absl::string_view::npos) {
      const absl::string_view name = message.substr(0, end);
      for (int code = 1; code <= 16; ++code) {
        if (absl::StatusCodeToString(static_cast<absl::StatusCode>(code)) == name) {
          return static_cast<absl::StatusCode>(code);
        }
      }
    }
  }
  return absl::StatusCode::kUnknown;
}

// The state of one level's streaming run (BenchOptions::stream): one ModelStreamInfer stream
// per channel, the level's slots spread over them round robin; each slot keeps one request in
// flight, named by the request id "<slot>", and sends its next one when its response comes back.
// Every request re-sends the prepared bytes behind a small per-slot id field (protobuf fields
// may come in any order), so that nothing is copied or re-serialized per request.
class StreamLoadRun : public LoadWindow, public std::enable_shared_from_this<StreamLoadRun> {
 public:
  StreamLoadRun(const SparkleClient* client, std::shared_ptr<const RequestSets> requests,
                int concurrency, int64_t max_requests)
      : LoadWindow(max_requests), client_(client), requests_(std::move(requests)) {
    for (const std::vector<PreparedRequest>& set : *requests_) {
      std::vector<std::vector<grpc::Slice>> set_slices;
      for (const PreparedRequest& request : set) {
        std::vector<grpc::Slice> slices;
        (void)request.bytes.Dump(&slices);
        set_slices.push_back(std::move(slices));
      }
      request_slices_.push_back(std::move(set_slices));
    }
    for (const auto& channel : client->channels()) {
      stubs_.push_back(std::make_unique<grpc::GenericStub>(channel));
    }
    // One stream per channel (fewer when fewer requests are in flight). Measured on the 2-core
    // reference machine: 4 streams beat 1 (too little overlap) and 8-16 (fewer requests queued
    // per stream, so fewer writes coalesced with buffer hints).
    const int stream_count =
        std::max(1, std::min(static_cast<int>(stubs_.size()), concurrency));
    for (int i = 0; i < stream_count; ++i) {
      streams_.push_back(std::make_unique<Stream>(this, stubs_[i % stubs_.size()].get()));
    }
    for (int i = 0; i < concurrency; ++i) {
      auto slot = std::make_unique<Slot>();
      slot->stream = streams_[i % streams_.size()].get();
      slot->set = static_cast<size_t>(i) % requests_->size();
      slot->verified.assign((*requests_)[slot->set].size(), false);
      ++slot->stream->active_slots;
      // ModelInferRequest.id (field 3, length-delimited) = "<i>".
      const std::string id = absl::StrCat(i);
      std::string field = {static_cast<char>((3 << 3) | 2), static_cast<char>(id.size())};
      field += id;
      slot->id_field = grpc::Slice(field);
      slots_.push_back(std::move(slot));
    }
  }

  LevelResult Run(absl::Duration warmup, absl::Duration duration) {
    const absl::Time begin = absl::Now();
    SetWindow(begin, warmup, duration);
    {
      absl::MutexLock lock(&mu_);
      open_streams_ = static_cast<int>(streams_.size());
    }
    for (size_t i = 0; i < streams_.size(); ++i) {
      Stream* stream = streams_[i].get();
      client_->PrepareContext(&stream->context);
      // Bounded: the whole level plus one RPC timeout.
      stream->context.set_deadline(
          absl::ToChronoTime(measure_end() + client_->options().timeout));
      stream->stub->PrepareBidiStreamingCall(&stream->context, kModelStreamInferMethod,
                                          grpc::StubOptions(), stream);
    }
    for (auto& slot : slots_) Issue(slot.get(), begin);
    for (auto& stream : streams_) {
      stream->StartRead(&stream->response);
      stream->StartCall();
    }
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](int* open) { return *open == 0; }, &open_streams_));
    }
    std::vector<const SlotStats*> stats;
    for (const auto& slot : slots_) stats.push_back(&slot->stats);
    return Collect(stats);
  }

 private:
  struct Slot;

  class Stream final : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
   public:
    Stream(StreamLoadRun* run, grpc::GenericStub* stub) : stub(stub), run_(run) {}
    grpc::GenericStub* const stub;

    // Queues one request (gRPC allows one write in flight).
    void Send(grpc::ByteBuffer request) {
      {
        absl::MutexLock lock(&mu_);
        if (writing_) {
          queue_.push_back(std::move(request));
          return;
        }
        writing_ = true;
        writing_buffer_ = std::move(request);
      }
      StartWrite(&writing_buffer_);
    }

    // A slot of this stream has stopped issuing; the last one half-closes the stream.
    void SlotStopped() {
      {
        absl::MutexLock lock(&mu_);
        if (--active_slots > 0) return;
        if (writing_) {
          writes_done_pending_ = true;
          return;
        }
      }
      StartWritesDone();
    }

    void OnWriteDone(bool ok) override {
      bool write_next = false;
      bool writes_done = false;
      bool more = false;
      {
        absl::MutexLock lock(&mu_);
        if (ok && !queue_.empty()) {
          writing_buffer_ = std::move(queue_.front());
          queue_.pop_front();
          write_next = true;
          more = !queue_.empty();
        } else {
          writing_ = false;
          writing_buffer_.Clear();
          queue_.clear();  // after a failed write the stream is over; OnDone counts the slots
          writes_done = ok && writes_done_pending_;
          writes_done_pending_ = false;
        }
      }
      if (write_next) {
        // More requests wait behind this one: gRPC may send them together.
        grpc::WriteOptions options;
        if (more) options.set_buffer_hint();
        StartWrite(&writing_buffer_, options);
      }
      if (writes_done) StartWritesDone();
    }

    void OnReadDone(bool ok) override {
      if (!ok) return;  // the stream ends; OnDone follows
      std::string id, error;
      AnswerLayout layout;
      const bool parsed = ScanStreamResponse(&response, &id, &error, &layout);
      response.Clear();
      Slot* slot = parsed ? run_->FindSlot(id, this) : nullptr;
      if (slot != nullptr) {
        run_->OnReply(slot, error.empty() ? absl::StatusCode::kOk : StreamErrorCode(error),
                      layout);
      } else {
        ++unmatched;  // counted under UNKNOWN at the end: a reply the bench cannot attribute
      }
      StartRead(&response);
    }

    void OnDone(const grpc::Status& status) override {
      // After every other reaction: the slots still waiting failed with the stream.
      std::shared_ptr<StreamLoadRun> keep = run_->shared_from_this();
      run_->OnStreamDone(this, status);
    }

    grpc::ClientContext context;
    grpc::ByteBuffer response;
    int active_slots = 0;  // set before the call starts, then changed under mu_
    int64_t unmatched = 0;

   private:
    StreamLoadRun* const run_;
    absl::Mutex mu_;
    bool writing_ = false;
    bool writes_done_pending_ = false;
    grpc::ByteBuffer writing_buffer_;
    std::deque<grpc::ByteBuffer> queue_;
  };

  struct Slot {
    Stream* stream = nullptr;
    size_t set = 0;              // index of the slot's request set in requests_
    std::vector<bool> verified;  // shared memory: whether request i's output was checked
    grpc::Slice id_field;
    absl::Time start;
    size_t request_index = 0;
    bool in_flight = false;
    SlotStats stats;
  };

  Slot* FindSlot(const std::string& id, const Stream* stream) {
    size_t index = 0;
    if (!absl::SimpleAtoi(id, &index) || index >= slots_.size()) return nullptr;
    Slot* slot = slots_[index].get();
    return slot->stream == stream && slot->in_flight ? slot : nullptr;
  }

  const PreparedRequest& RequestOf(const Slot* slot) const {
    return (*requests_)[slot->set][slot->request_index];
  }

  void Issue(Slot* slot, absl::Time now) {
    slot->request_index =
        next_request_.fetch_add(1, std::memory_order_relaxed) % (*requests_)[slot->set].size();
    slot->start = now;
    slot->in_flight = true;
    const std::vector<grpc::Slice>& body = request_slices_[slot->set][slot->request_index];
    std::vector<grpc::Slice> slices;
    slices.reserve(body.size() + 1);
    slices.push_back(slot->id_field);
    slices.insert(slices.end(), body.begin(), body.end());
    slot->stream->Send(grpc::ByteBuffer(slices.data(), slices.size()));
  }

  void OnReply(Slot* slot, absl::StatusCode code, const AnswerLayout& layout) {
    const absl::Time now = absl::Now();
    slot->in_flight = false;
    const PreparedRequest& request = RequestOf(slot);
    bool not_via_shared_memory = false;
    if (code == absl::StatusCode::kOk && request.shm_output != nullptr) {
      const bool verify = !slot->verified[slot->request_index];
      slot->verified[slot->request_index] = true;
      if (!HonouredSharedMemory(request, layout, verify)) {
        code = absl::StatusCode::kDataLoss;
        not_via_shared_memory = true;
      }
    }
    if (Complete(&slot->stats, request, slot->start, now, code, /*refused=*/false,
                 not_via_shared_memory)) {
      Issue(slot, now);
    } else {
      slot->stream->SlotStopped();
    }
  }

  void OnStreamDone(Stream* stream, const grpc::Status& status) {
    const absl::Time now = absl::Now();
    const absl::StatusCode code = status.ok() ? absl::StatusCode::kUnknown
                                              : static_cast<absl::StatusCode>(status.error_code());
    for (auto& slot : slots_) {
      if (slot->stream != stream || !slot->in_flight) continue;
      slot->in_flight = false;
      Complete(&slot->stats, RequestOf(slot.get()), slot->start, now, code, false);
    }
    if (stream->unmatched > 0) {
      // Attributed to the first slot of the stream, for the totals.
      for (auto& slot : slots_) {
        if (slot->stream == stream) {
          slot->stats.errors[absl::StatusCode::kUnknown] += stream->unmatched;
          break;
        }
      }
    }
    absl::MutexLock lock(&mu_);
    --open_streams_;
  }

  const SparkleClient* const client_;
  const std::shared_ptr<const RequestSets> requests_;
  // requests_[set][i]'s bytes, shared
  std::vector<std::vector<std::vector<grpc::Slice>>> request_slices_;
  std::vector<std::unique_ptr<grpc::GenericStub>> stubs_;
  std::vector<std::unique_ptr<Stream>> streams_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::atomic<uint64_t> next_request_{0};

  absl::Mutex mu_;
  int open_streams_ ABSL_GUARDED_BY(mu_) = 0;  // streams whose OnDone has not run
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
  if (not_via_shared_memory > 0) {
    parts.push_back(absl::StrCat("(not via shm:", not_via_shared_memory, ")"));
  }
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
  if (options.shared_memory && options.second_connection.has_value()) {
    return absl::InvalidArgumentError(
        "shared memory (shm) cannot be combined with a second identity (second_token_file)");
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
  out << absl::StrFormat("target %s, %d channel(s)%s%s, warmup %s, window %s%s\n",
                         connection.target, connection.channels,
                         options.stream ? ", ModelStreamInfer (one stream per channel)" : "",
                         options.shared_memory
                             ? ", tensors in shared memory (MB/s: none on the wire)"
                             : "",
                         absl::FormatDuration(options.warmup),
                         absl::FormatDuration(options.duration),
                         options.max_requests > 0
                             ? absl::StrCat(" or ", options.max_requests, " requests")
                             : "");
  absl::Status first_failure;
  bool header_printed = false;
  for (const std::string& name : options.shape_classes) {
    SPARKLE_ASSIGN_OR_RETURN(std::vector<ShapeClass> shapes, ResolveShapeClass(name));
    std::vector<ClassRequest> classes;
    auto requests = std::make_shared<RequestSets>(1);  // over the wire: one set for all slots
    absl::Status prepared;
    for (const ShapeClass& shape : shapes) {
      absl::StatusOr<ClassRequest> request = Prepare(*client, shape, options);
      if (!request.ok()) {
        prepared = request.status();
        break;
      }
      requests->front().push_back(request->wire);
      classes.push_back(*std::move(request));
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
      std::shared_ptr<const RequestSets> level_requests = requests;
      SharedMemoryLevel shm;  // unregistered and unlinked at the end of this iteration
      if (options.shared_memory) {
        absl::StatusOr<SharedMemoryLevel> level =
            PrepareSharedMemoryLevel(*client, classes, concurrency);
        if (!level.ok()) {
          out << "skipping " << name << " at concurrency " << concurrency << ": "
              << StatusText(level.status()) << '\n';
          if (first_failure.ok()) first_failure = level.status();
          continue;
        }
        shm = *std::move(level);
        level_requests = shm.sets;
      }
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
      LevelResult result =
          options.stream
              ? std::make_shared<StreamLoadRun>(client.get(), level_requests, concurrency,
                                                options.max_requests)
                    ->Run(options.warmup, options.duration)
              : std::make_shared<LoadRun>(client.get(), level_requests, concurrency,
                                          options.max_requests)
                    ->Run(options.warmup, options.duration);
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
