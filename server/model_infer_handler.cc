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

struct InferOutput::Lease {
  TensorBufferPool::Buffer buffer;
  Engine::Admission admission;
};

InferOutput::InferOutput() = default;
InferOutput::InferOutput(std::unique_ptr<Lease> lease) : lease_(std::move(lease)) {}
InferOutput::InferOutput(InferOutput&&) noexcept = default;
InferOutput& InferOutput::operator=(InferOutput&&) noexcept = default;
InferOutput::~InferOutput() = default;
const char* InferOutput::data() const {
  return lease_ == nullptr ? nullptr : reinterpret_cast<const char*>(lease_->buffer.data());
}
int64_t InferOutput::size() const { return lease_ == nullptr ? 0 : lease_->buffer.size(); }

grpc::Slice InferOutput::ToSlice() && {
  Lease* lease = lease_.release();
  return grpc::Slice(lease->buffer.data(), static_cast<size_t>(lease->buffer.size()),
                     [](void* p) { delete static_cast<Lease*>(p); }, lease);
}

namespace {

void AppendVarint(uint64_t value, std::string* out) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>(value | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

int VarintSize(uint64_t value) {
  int n = 1;
  for (; value >= 0x80; value >>= 7) ++n;
  return n;
}

}  // namespace

// One request from acceptance to its reply: the bytes its tensors point into, what it parsed
// (copies, regions, registered weights), the output buffer and the admission.
struct ModelInferHandler::Pending {
  std::vector<grpc::Slice> slices;    // gRPC: the request's bytes
  std::shared_ptr<const void> bytes;  // other adapters: what holds the request's bytes
  InferRequestView view;
  ParsedInferRequest parsed;
  TensorBufferPool::Buffer output;
  Engine::Admission admission;
  ModelInferHandler::Done done;
  absl::Time received;
};

namespace {

// The reply of a completed job: model, version, id and the output's metadata, and the output
// bytes (none when they went to a shared-memory region). Sets the response's size as gRPC
// sends it.
InferReply BuildReply(const ParsedInferRequest& parsed, const std::string& id,
                      TensorBufferPool::Buffer output, Engine::Admission admission,
                      int64_t* response_bytes) {
  const Conv2dParams& p = parsed.params;
  InferReply reply;
  reply.id = id;
  inference::ModelInferResponse& header = reply.header;
  header.set_model_name(kModelName);
  header.set_model_version(kModelVersion);
  header.set_id(id);
  auto* out = header.add_outputs();
  out->set_name("output");
  out->set_datatype(DataTypeName(p.output_dtype));
  if (p.layout == Layout::kNHWC) {
    for (int64_t d : {p.n, p.p(), p.q(), p.k}) out->add_shape(d);
  } else {
    for (int64_t d : {p.n, p.k, p.p(), p.q()}) out->add_shape(d);
  }
  *response_bytes = static_cast<int64_t>(header.ByteSizeLong());
  if (output) {
    const int64_t size = output.size();
    *response_bytes += 1 + VarintSize(static_cast<uint64_t>(size)) + size;
    reply.output = InferOutput(std::make_unique<InferOutput::Lease>(
        InferOutput::Lease{std::move(output), std::move(admission)}));
  }
  return reply;
}

}  // namespace

grpc::ByteBuffer ToResponseBuffer(InferReply* reply) {
  std::string bytes = reply->header.SerializeAsString();
  if (reply->output.data() == nullptr) {  // in shared memory
    grpc::Slice slice(bytes);
    return grpc::ByteBuffer(&slice, 1);
  }
  bytes.push_back(static_cast<char>((6 << 3) | 2));  // raw_output_contents, length-delimited
  AppendVarint(static_cast<uint64_t>(reply->output.size()), &bytes);
  grpc::Slice slices[2] = {grpc::Slice(bytes), std::move(reply->output).ToSlice()};
  return grpc::ByteBuffer(slices, 2);
}

ModelInferHandler::ModelInferHandler(Engine* engine, TensorBufferPool* pool,
                                     SharedMemoryRegistry* shared_memory, InferenceStats* stats,
                                     ServerMetrics* metrics, const Options& options)
    : engine_(engine),
      pool_(pool),
      shared_memory_(shared_memory),
      stats_(stats),
      metrics_(metrics),
      options_(options) {}

void ModelInferHandler::Refuse(const absl::Status& status, bool queue_full,
                               const std::string& id, const Done& done) {
  if (metrics_ != nullptr) {
    metrics_->RecordRejection(RejectReasonFor(status, queue_full, engine_->draining()));
  }
  InferReply reply;
  reply.status = status;
  reply.id = id;
  reply.queue_full = queue_full;
  done(std::move(reply));
}

void ModelInferHandler::Handle(const grpc::ByteBuffer& request, const CallIdentity& caller,
                               absl::Time deadline, CancelFlag cancelled, Done done) {
  auto pending = std::make_unique<Pending>();
  pending->received = absl::Now();
  const int64_t length = static_cast<int64_t>(request.Length());
  if (metrics_ != nullptr) metrics_->RecordRequestBytes(length);
  // Checked before reading, so that an oversized request costs nothing more (gRPC itself refuses
  // anything above twice the limit).
  if (length > options_.limits.max_request_bytes) {
    return Refuse(absl::ResourceExhaustedError(absl::StrCat(
                      "the request is ", length, " bytes, above the ",
                      options_.limits.max_request_bytes, "-byte message limit max_message_bytes")),
                  false, "", done);
  }
  if (!request.Dump(&pending->slices).ok()) {
    return Refuse(absl::InternalError("cannot read the request's bytes"), false, "", done);
  }
  std::vector<absl::string_view> pieces;
  pieces.reserve(pending->slices.size());
  for (const grpc::Slice& s : pending->slices) {
    pieces.emplace_back(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  if (absl::Status read = ReadInferRequest(pieces, &pending->view); !read.ok()) {
    return Refuse(read, false, "", done);
  }
  Run(std::move(pending), caller, deadline, std::move(cancelled), std::move(done));
}

void ModelInferHandler::Handle(InferRequestView view, std::shared_ptr<const void> bytes,
                               const CallIdentity& caller, absl::Time deadline,
                               CancelFlag cancelled, Done done) {
  auto pending = std::make_unique<Pending>();
  pending->received = absl::Now();
  if (metrics_ != nullptr) metrics_->RecordRequestBytes(view.serialized_bytes);
  pending->view = std::move(view);
  pending->bytes = std::move(bytes);
  Run(std::move(pending), caller, deadline, std::move(cancelled), std::move(done));
}

void ModelInferHandler::Run(std::unique_ptr<Pending> pending, const CallIdentity& caller,
                            absl::Time deadline, CancelFlag cancelled, Done done) {
  // The request was read: a refusal from here on counts in ModelStatistics' fail when it names
  // this model (server/inference_stats.h, "What counts in fail").
  const bool for_model =
      CheckModel(pending->view.header().model_name(), pending->view.header().model_version())
          .ok();
  const absl::Time received = pending->received;
  auto refuse = [&](const absl::Status& status, bool queue_full, const std::string& id,
                    const Done& reply_to) {
    if (for_model) stats_->RecordRefused(received);
    Refuse(status, queue_full, id, reply_to);
  };
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
    return refuse(parsed.status(), false, pending->view.header().id(), done);
  }
  pending->parsed = *std::move(parsed);
  const Conv2dParams& p = pending->parsed.params;
  // Admission (cost limits, in-flight budget) before the output buffer exists.
  absl::StatusOr<Engine::Admission> admission = engine_->Admit(p);
  if (!admission.ok()) {
    return refuse(admission.status(), IsQueueFull(admission.status()),
                  pending->view.header().id(), done);
  }
  pending->admission = *std::move(admission);
  void* output = pending->parsed.output_in_region;
  if (output == nullptr) {
    absl::StatusOr<TensorBufferPool::Buffer> buffer =
        pool_->Get(p.output_elements() * ElementSize(p.output_dtype));
    if (!buffer.ok()) return refuse(buffer.status(), false, pending->view.header().id(), done);
    pending->output = *std::move(buffer);
    output = pending->output.data();
  }

  auto job = std::make_unique<Conv2dJob>();
  job->params = p;
  job->input = pending->parsed.input;
  job->weight = pending->parsed.weight;
  job->bias = pending->parsed.bias;
  job->residual = pending->parsed.residual;
  job->registered_weight = pending->parsed.registered_weight;
  job->output = output;
  job->priority = pending->parsed.priority;
  job->device = pending->parsed.device;
  job->deadline = std::min(deadline, absl::Now() + pending->parsed.queue_timeout);
  job->cancelled = std::move(cancelled);
  job->client = client;
  pending->done = std::move(done);
  Pending* raw = pending.get();
  job->done = [pending = std::move(pending), stats = stats_, metrics = metrics_](
                  const absl::Status& status, const ExecTimestamps& timestamps) mutable {
    int64_t response_bytes = 0;
    InferReply reply;
    if (status.ok()) {
      reply = BuildReply(pending->parsed, pending->view.header().id(), std::move(pending->output),
                         std::move(pending->admission), &response_bytes);
    } else {
      reply.status = status;
      reply.id = pending->view.header().id();
    }
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
    // admission go with the reply's output.
    pending.reset();
    reply_to(std::move(reply));
  };
  absl::Status status = engine_->Submit(&job, raw->admission);
  if (!status.ok()) {
    // Submit refused: the job (and with it `pending`) is still ours, and done has not run.
    Done reply_to = std::move(raw->done);
    const std::string id = raw->view.header().id();
    job.reset();
    refuse(status, IsQueueFull(status), id, reply_to);
  }
}

}  // namespace sparkle
