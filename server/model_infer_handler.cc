#include "server/model_infer_handler.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/infer_request_reader.h"
#include "server/scheduling_client.h"
#include "spdlog/spdlog.h"

namespace sparkle {
namespace {

// What a response's output slice keeps until gRPC drops it: the pooled buffer the engine wrote,
// and the job's share of the in-flight budget (which thus covers the response being sent).
struct OutputLease {
  TensorBufferPool::Buffer buffer;
  Engine::Admission admission;
};

void ReleaseOutputLease(void* lease) { delete static_cast<OutputLease*>(lease); }

void AppendVarint(uint64_t value, std::string* out) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>(value | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

// One request from acceptance to its reply: the bytes its tensors point into, what it parsed
// (copies, regions, registered weights), the output buffer and the admission.
struct PendingInfer {
  std::vector<grpc::Slice> slices;
  InferRequestView view;
  ParsedInferRequest parsed;
  TensorBufferPool::Buffer output;
  Engine::Admission admission;
  ModelInferHandler::Done done;
  absl::Time received;
};

// The ModelInferResponse: model, version, id and the output's metadata, serialized into one
// small slice; then the output bytes as raw_output_contents (field 6), handed over as the pooled
// buffer itself, unless the output went to a shared-memory region.
grpc::ByteBuffer BuildResponse(PendingInfer& pending, int64_t* response_bytes) {
  const Conv2dParams& p = pending.parsed.params;
  inference::ModelInferResponse header;
  header.set_model_name(kModelName);
  header.set_model_version(kModelVersion);
  header.set_id(pending.view.header().id());
  auto* out = header.add_outputs();
  out->set_name("output");
  out->set_datatype("FP32");
  if (p.layout == Layout::kNHWC) {
    for (int64_t d : {p.n, p.p(), p.q(), p.k}) out->add_shape(d);
  } else {
    for (int64_t d : {p.n, p.k, p.p(), p.q()}) out->add_shape(d);
  }
  std::string bytes = header.SerializeAsString();
  if (!pending.output) {  // in shared memory
    *response_bytes = static_cast<int64_t>(bytes.size());
    grpc::Slice slice(bytes);
    return grpc::ByteBuffer(&slice, 1);
  }
  const int64_t output_bytes = pending.output.size();
  bytes.push_back(static_cast<char>((6 << 3) | 2));  // raw_output_contents, length-delimited
  AppendVarint(static_cast<uint64_t>(output_bytes), &bytes);
  *response_bytes = static_cast<int64_t>(bytes.size()) + output_bytes;
  auto* lease = new OutputLease{std::move(pending.output), std::move(pending.admission)};
  grpc::Slice slices[2] = {grpc::Slice(bytes),
                           grpc::Slice(lease->buffer.data(), static_cast<size_t>(output_bytes),
                                       &ReleaseOutputLease, lease)};
  return grpc::ByteBuffer(slices, 2);
}

}  // namespace

ModelInferHandler::ModelInferHandler(Engine* engine, TensorBufferPool* pool,
                                     SharedMemoryRegistry* shared_memory, InferenceStats* stats,
                                     ServerMetrics* metrics, const Options& options)
    : engine_(engine),
      pool_(pool),
      shared_memory_(shared_memory),
      stats_(stats),
      metrics_(metrics),
      options_(options) {}

void ModelInferHandler::RecordRejection(const absl::Status& status, bool queue_full) {
  if (metrics_ != nullptr) {
    metrics_->RecordRejection(RejectReasonFor(status, queue_full, engine_->draining()));
  }
}

void ModelInferHandler::Handle(const grpc::ByteBuffer& request, const CallIdentity& caller,
                               absl::Time deadline, CancelFlag cancelled, Done done) {
  auto pending = std::make_unique<PendingInfer>();
  pending->received = absl::Now();
  auto refuse = [&](const absl::Status& status, bool queue_full) {
    RecordRejection(status, queue_full);
    InferReply reply;
    reply.status = status;
    reply.id = pending->view.header().id();
    reply.queue_full = queue_full;
    done(std::move(reply));
  };
  const int64_t length = static_cast<int64_t>(request.Length());
  if (metrics_ != nullptr) metrics_->RecordRequestBytes(length);
  // Checked before reading, so that an oversized request costs nothing more (gRPC itself refuses
  // anything above twice the limit).
  if (length > options_.limits.max_request_bytes) {
    return refuse(absl::ResourceExhaustedError(absl::StrCat(
                      "the request is ", length, " bytes, above the ",
                      options_.limits.max_request_bytes, "-byte message limit max_message_bytes")),
                  false);
  }
  if (!request.Dump(&pending->slices).ok()) {
    return refuse(absl::InternalError("cannot read the request's bytes"), false);
  }
  std::vector<absl::string_view> pieces;
  pieces.reserve(pending->slices.size());
  for (const grpc::Slice& s : pending->slices) {
    pieces.emplace_back(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  if (absl::Status read = ReadInferRequest(pieces, &pending->view); !read.ok()) {
    return refuse(read, false);
  }
  const std::string client = SchedulingClient(caller);  // token name, or peer host
  ParseContext context;
  context.limits = options_.limits;
  context.registry = &engine_->registry();
  context.shared_memory = shared_memory_;
  context.owner = client;
  context.pool = pool_;
  absl::StatusOr<ParsedInferRequest> parsed = ParseInferRequest(pending->view, context);
  if (!parsed.ok()) {
    spdlog::debug("ModelInfer id='{}' rejected: {}", pending->view.header().id(),
                  parsed.status().ToString());
    return refuse(parsed.status(), false);
  }
  pending->parsed = *std::move(parsed);
  const Conv2dParams& p = pending->parsed.params;
  // Admission (cost limits, in-flight budget) before the output buffer exists.
  absl::StatusOr<Engine::Admission> admission = engine_->Admit(p);
  if (!admission.ok()) return refuse(admission.status(), IsQueueFull(admission.status()));
  pending->admission = *std::move(admission);
  float* output = pending->parsed.output_in_region;
  if (output == nullptr) {
    absl::StatusOr<TensorBufferPool::Buffer> buffer = pool_->Get(p.output_elements() * 4);
    if (!buffer.ok()) return refuse(buffer.status(), false);
    pending->output = *std::move(buffer);
    output = reinterpret_cast<float*>(pending->output.data());
  }

  auto job = std::make_unique<Conv2dJob>();
  job->params = p;
  job->input = pending->parsed.input;
  job->weight = pending->parsed.weight;
  job->bias = pending->parsed.bias;
  job->registered_weight = pending->parsed.registered_weight;
  job->output = output;
  job->priority = pending->parsed.priority;
  job->device = pending->parsed.device;
  job->deadline = std::min(deadline, absl::Now() + pending->parsed.queue_timeout);
  job->cancelled = std::move(cancelled);
  job->client = client;
  pending->done = std::move(done);
  PendingInfer* raw = pending.get();
  job->done = [pending = std::move(pending), stats = stats_, metrics = metrics_](
                  const absl::Status& status, const ExecTimestamps& timestamps) mutable {
    InferReply reply;
    reply.status = status;
    reply.id = pending->view.header().id();
    int64_t response_bytes = 0;
    if (status.ok()) reply.response = BuildResponse(*pending, &response_bytes);
    // Recorded before the reply (< 1 us: sparkle_bench metrics_record), so that a client that
    // has its response also sees it counted in ModelStatistics and /metrics.
    RequestOutcome outcome;
    outcome.code = status.code();
    outcome.timestamps = timestamps;
    outcome.received = pending->received;
    outcome.n = pending->parsed.params.n;
    outcome.response_bytes = response_bytes;
    stats->Record(outcome);
    if (metrics != nullptr) metrics->RecordOutcome(outcome);
    ModelInferHandler::Done reply_to = std::move(pending->done);
    // The request's bytes, copies and regions go before the reply; the output buffer and the
    // admission go with the response's last slice.
    pending.reset();
    reply_to(std::move(reply));
  };
  absl::Status status = engine_->Submit(&job, raw->admission);
  if (!status.ok()) {
    // Submit refused: the job (and with it `pending`) is still ours, and done has not run.
    Done reply_to = std::move(raw->done);
    const std::string id = raw->view.header().id();
    job.reset();
    RecordRejection(status, IsQueueFull(status));
    InferReply reply;
    reply.status = status;
    reply.id = id;
    reply.queue_full = IsQueueFull(status);
    reply_to(std::move(reply));
  }
}

}  // namespace sparkle
