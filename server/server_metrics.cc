#include "server/server_metrics.h"

#include <algorithm>
#include <exception>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"

namespace sparkle {
namespace {

// Latency buckets, seconds (upper bounds). The workload spans a few µs (queue and batch
// formation of an idle server, tiny convolutions) to seconds (large layers under load, queue
// waits near the deadline): 1-2.5-5 steps from 5 µs to 10 s keep the relative error of a
// histogram_quantile below ~2.5× anywhere in that range with 20 buckets.
const std::vector<double>& LatencyBuckets() {
  static const auto* const kBuckets =
      new std::vector<double>{5e-6, 1e-5,   2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3,
                              1e-2, 2.5e-2, 5e-2,   0.1,  0.25, 0.5,    1,    2.5,  5,      10};
  return *kBuckets;
}

// Executed batch sizes (N of a batch): powers of two up to the largest --max_batch_size that is
// useful in practice; a single large job may exceed them (+Inf).
const std::vector<double>& BatchSizeBuckets() {
  static const auto* const kBuckets =
      new std::vector<double>{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
  return *kBuckets;
}

const char* StatusCodeName(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return "OK";
    case absl::StatusCode::kCancelled:
      return "CANCELLED";
    case absl::StatusCode::kUnknown:
      return "UNKNOWN";
    case absl::StatusCode::kInvalidArgument:
      return "INVALID_ARGUMENT";
    case absl::StatusCode::kDeadlineExceeded:
      return "DEADLINE_EXCEEDED";
    case absl::StatusCode::kNotFound:
      return "NOT_FOUND";
    case absl::StatusCode::kAlreadyExists:
      return "ALREADY_EXISTS";
    case absl::StatusCode::kPermissionDenied:
      return "PERMISSION_DENIED";
    case absl::StatusCode::kResourceExhausted:
      return "RESOURCE_EXHAUSTED";
    case absl::StatusCode::kFailedPrecondition:
      return "FAILED_PRECONDITION";
    case absl::StatusCode::kAborted:
      return "ABORTED";
    case absl::StatusCode::kOutOfRange:
      return "OUT_OF_RANGE";
    case absl::StatusCode::kUnimplemented:
      return "UNIMPLEMENTED";
    case absl::StatusCode::kInternal:
      return "INTERNAL";
    case absl::StatusCode::kUnavailable:
      return "UNAVAILABLE";
    case absl::StatusCode::kDataLoss:
      return "DATA_LOSS";
    case absl::StatusCode::kUnauthenticated:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

prometheus::MetricFamily Family(const char* name, const char* help, prometheus::MetricType type) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  return f;
}

prometheus::ClientMetric Sample(double value, prometheus::MetricType type,
                                std::vector<prometheus::ClientMetric::Label> labels = {}) {
  prometheus::ClientMetric m;
  m.label = std::move(labels);
  if (type == prometheus::MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  return m;
}

}  // namespace

const char* RejectReasonName(RejectReason reason) {
  switch (reason) {
    case RejectReason::kInvalid:
      return "invalid";
    case RejectReason::kUnknownModel:
      return "unknown_model";
    case RejectReason::kTooLarge:
      return "too_large";
    case RejectReason::kQueueFull:
      return "queue_full";
    case RejectReason::kDraining:
      return "draining";
    case RejectReason::kUnavailable:
      return "unavailable";
    case RejectReason::kDevice:
      return "device";
    case RejectReason::kDeadline:
      return "deadline";
    case RejectReason::kOther:
      return "other";
  }
  return "other";
}

RejectReason RejectReasonFor(const absl::Status& status, bool queue_full, bool draining) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
      return RejectReason::kInvalid;
    case absl::StatusCode::kNotFound:
      return RejectReason::kUnknownModel;
    case absl::StatusCode::kResourceExhausted:
      return queue_full ? RejectReason::kQueueFull : RejectReason::kTooLarge;
    case absl::StatusCode::kUnavailable:
      return draining ? RejectReason::kDraining : RejectReason::kUnavailable;
    case absl::StatusCode::kFailedPrecondition:
      return RejectReason::kDevice;
    case absl::StatusCode::kDeadlineExceeded:
      return RejectReason::kDeadline;
    default:
      return RejectReason::kOther;
  }
}

struct ServerMetrics::DeviceSeries {
  std::string name;
  std::array<std::atomic<prometheus::Counter*>, kNumStatusCodes> requests{};
  // Successful requests only; null where the stage never happens on this kind of device.
  prometheus::Histogram* latency = nullptr;
  prometheus::Histogram* queue = nullptr;
  prometheus::Histogram* batch_formation = nullptr;
  prometheus::Histogram* h2d = nullptr;
  prometheus::Histogram* compute = nullptr;
  prometheus::Histogram* d2h = nullptr;
  prometheus::Histogram* output = nullptr;
};

// Families computed at scrape time from snapshots.
class ServerMetrics::SnapshotCollector final : public prometheus::Collectable {
 public:
  explicit SnapshotCollector(Sources sources) : sources_(std::move(sources)) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    using prometheus::MetricType;
    std::vector<prometheus::MetricFamily> out;
    auto gauge = [&out](const char* name, const char* help, double value) {
      auto f = Family(name, help, MetricType::Gauge);
      f.metric.push_back(Sample(value, MetricType::Gauge));
      out.push_back(std::move(f));
    };
    const EngineStats e = sources_.engine();
    gauge("sparkle_queue_jobs", "Jobs waiting in the batcher's queues.",
          static_cast<double>(e.queue.jobs));
    gauge("sparkle_queue_bytes", "Bytes (input + weight + bias + output) of the waiting jobs.",
          static_cast<double>(e.queue.bytes));
    gauge("sparkle_queue_shape_classes", "Batching keys (shape classes) with waiting jobs.",
          static_cast<double>(e.queue.queues.size()));
    if (!e.queue.levels.empty()) {
      auto level_jobs =
          Family("sparkle_queue_level_jobs",
                 "Jobs waiting in the batcher, by priority level (1 is served first).",
                 MetricType::Gauge);
      auto level_wait = Family("sparkle_queue_level_oldest_wait_seconds",
                               "How long the oldest waiting job of each priority level has waited "
                               "(0 when the level is empty).",
                               MetricType::Gauge);
      for (const QueueSnapshot::LevelQueue& l : e.queue.levels) {
        const std::string level = std::to_string(l.level);
        level_jobs.metric.push_back(
            Sample(static_cast<double>(l.jobs), MetricType::Gauge, {{"level", level}}));
        level_wait.metric.push_back(Sample(absl::ToDoubleSeconds(l.oldest_wait),
                                           MetricType::Gauge, {{"level", level}}));
      }
      out.push_back(std::move(level_jobs));
      out.push_back(std::move(level_wait));
    }

    auto jobs = Family("sparkle_engine_jobs_total",
                       "Jobs by engine outcome: accepted, rejected at admission, succeeded, "
                       "failed after acceptance.",
                       MetricType::Counter);
    const std::pair<const char*, int64_t> outcomes[] = {{"accepted", e.jobs_accepted},
                                                        {"rejected", e.jobs_rejected},
                                                        {"succeeded", e.jobs_succeeded},
                                                        {"failed", e.jobs_failed}};
    for (const auto& [name, value] : outcomes) {
      jobs.metric.push_back(
          Sample(static_cast<double>(value), MetricType::Counter, {{"outcome", name}}));
    }
    out.push_back(std::move(jobs));

    CollectDevices(e, &out);
    if (sources_.registry) {
      const RegistrySize r = sources_.registry();
      gauge("sparkle_registry_weights", "Weight tensors in the registry.",
            static_cast<double>(r.weights));
      gauge("sparkle_registry_bytes", "Bytes held by the registry (prepacked copies included).",
            static_cast<double>(r.bytes));
      gauge("sparkle_registry_budget_bytes", "The registry's byte budget.",
            static_cast<double>(r.budget_bytes));
    }
    out.push_back(BatchSizeHistogram(sources_.stats->Get()));
    return out;
  }

 private:
  // Per device (the CPU pool and each GPU): health, work done, queue, router decisions.
  void CollectDevices(const EngineStats& e, std::vector<prometheus::MetricFamily>* out) const {
    using prometheus::MetricType;
    DevicesSnapshot d;
    if (sources_.devices) {
      d = sources_.devices();
    } else {
      DeviceSnapshot cpu;
      cpu.name = "cpu";
      cpu.batches_done = e.batches;
      cpu.jobs_done = e.jobs_succeeded;
      cpu.gflop_done = e.gflop;
      cpu.busy_seconds = e.busy_seconds;
      cpu.decisions = e.batches;
      d.devices.push_back(cpu);
    }
    struct Column {
      const char* name;
      const char* help;
      MetricType type;
      double (*value)(const DeviceSnapshot&);
    };
    static const Column kColumns[] = {
        {"sparkle_device_healthy", "1 when the device takes work, 0 when latched unhealthy.",
         MetricType::Gauge, [](const DeviceSnapshot& s) { return s.healthy ? 1.0 : 0.0; }},
        {"sparkle_device_busy_seconds_total",
         "Seconds spent executing batches (CPU: wall time summed over batches running side by "
         "side; GPU: compute-stream time); rate() is the utilisation.",
         MetricType::Counter, [](const DeviceSnapshot& s) { return s.busy_seconds; }},
        {"sparkle_device_flop_total", "Useful floating-point operations of successful batches.",
         MetricType::Counter, [](const DeviceSnapshot& s) { return s.gflop_done * 1e9; }},
        {"sparkle_device_batches_total", "Batches executed on the device (failed included).",
         MetricType::Counter,
         [](const DeviceSnapshot& s) { return static_cast<double>(s.batches_done); }},
        {"sparkle_device_jobs_total", "Jobs completed successfully on the device.",
         MetricType::Counter,
         [](const DeviceSnapshot& s) { return static_cast<double>(s.jobs_done); }},
        {"sparkle_device_queued_batches", "Batches routed to the device and not finished.",
         MetricType::Gauge,
         [](const DeviceSnapshot& s) { return static_cast<double>(s.queued_batches); }},
        {"sparkle_device_memory_used_bytes", "Device memory in use (GPU; 0 for the CPU).",
         MetricType::Gauge,
         [](const DeviceSnapshot& s) { return static_cast<double>(s.memory_used_bytes); }},
        {"sparkle_router_decisions_total", "Batches the router sent to the device.",
         MetricType::Counter,
         [](const DeviceSnapshot& s) { return static_cast<double>(s.decisions); }},
    };
    for (const Column& column : kColumns) {
      auto f = Family(column.name, column.help, column.type);
      for (const DeviceSnapshot& s : d.devices) {
        f.metric.push_back(Sample(column.value(s), column.type, {{"device", s.name}}));
      }
      out->push_back(std::move(f));
    }
  }

  // Executed batch sizes, from the same table as ModelStatistics' batch_stats.
  static prometheus::MetricFamily BatchSizeHistogram(const InferenceStats::Snapshot& s) {
    auto f = Family("sparkle_batch_size",
                    "N (sum of request N) of executed batches that had a successful request.",
                    prometheus::MetricType::Histogram);
    prometheus::ClientMetric h;
    for (double bound : BatchSizeBuckets()) {
      prometheus::ClientMetric::Bucket b;
      b.upper_bound = bound;
      for (const auto& size : s.batch_sizes) {
        if (static_cast<double>(size.batch_size) <= bound) b.cumulative_count += size.executions;
      }
      h.histogram.bucket.push_back(b);
    }
    prometheus::ClientMetric::Bucket inf;
    inf.upper_bound = std::numeric_limits<double>::infinity();
    for (const auto& size : s.batch_sizes) {
      inf.cumulative_count += size.executions;
      h.histogram.sample_sum += static_cast<double>(size.batch_size) * size.executions;
    }
    h.histogram.bucket.push_back(inf);
    h.histogram.sample_count = inf.cumulative_count;
    f.metric.push_back(std::move(h));
    return f;
  }

  const Sources sources_;
};

absl::StatusOr<std::unique_ptr<ServerMetrics>> ServerMetrics::Create(const Options& options,
                                                                     Sources sources) {
  if (!sources.engine || sources.stats == nullptr) {
    return absl::InvalidArgumentError("ServerMetrics needs an engine source and stats");
  }
  std::unique_ptr<ServerMetrics> m(new ServerMetrics);
  m->registry_ = std::make_shared<prometheus::Registry>();
  prometheus::Registry& r = *m->registry_;
  m->requests_family_ = &prometheus::BuildCounter()
                             .Name("sparkle_requests_total")
                             .Help(
                                 "Accepted inference requests by final gRPC status and the "
                                 "device that ran them (none: completed before execution).")
                             .Register(r);
  m->latency_family_ = &prometheus::BuildHistogram()
                            .Name("sparkle_request_duration_seconds")
                            .Help(
                                "End-to-end latency of successful requests inside the server: "
                                "ModelInfer received to response ready.")
                            .Register(r);
  m->stage_family_ = &prometheus::BuildHistogram()
                          .Name("sparkle_stage_duration_seconds")
                          .Help(
                              "Per-stage latency of successful requests: queue, "
                              "batch_formation, compute, output (CPU); queue, h2d, compute, "
                              "d2h (GPU).")
                          .Register(r);
  m->queue_wait_family_ = &prometheus::BuildHistogram()
                               .Name("sparkle_queue_wait_seconds")
                               .Help(
                                   "Time jobs waited in the batcher (enqueued to batch formed), "
                                   "by the priority level they were queued at; every job taken "
                                   "into a batch, whatever its final status.")
                               .Register(r);
  m->request_bytes_ = &prometheus::BuildCounter()
                           .Name("sparkle_request_bytes_total")
                           .Help("Bytes of ModelInfer request messages received (all requests).")
                           .Register(r)
                           .Add({});
  m->response_bytes_ = &prometheus::BuildCounter()
                            .Name("sparkle_response_bytes_total")
                            .Help("Output tensor bytes of successful responses.")
                            .Register(r)
                            .Add({});
  auto& rejected = prometheus::BuildCounter()
                       .Name("sparkle_rejected_requests_total")
                       .Help("Requests refused at admission, by reason.")
                       .Register(r);
  for (int i = 0; i < kNumRejectReasons; ++i) {
    m->rejected_[i] = &rejected.Add({{"reason", RejectReasonName(static_cast<RejectReason>(i))}});
  }
  m->snapshots_ = std::make_shared<SnapshotCollector>(std::move(sources));
  // The CPU pool always exists: its series start at 0 before the first request, so that rate()
  // sees the first requests (a series born with its value would hide them).
  m->Requests(m->Device(-1, /*executed=*/true), absl::StatusCode::kOk);

  if (!options.address.empty()) {
    try {
      m->exposer_ = std::make_unique<prometheus::Exposer>(options.address, /*num_threads=*/1);
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrCat(
          "cannot serve metrics on ", options.address,
          " (address in use, or not host:port?); --metrics_address=\"\" turns metrics off: ",
          e.what()));
    }
    m->exposer_->RegisterCollectable(m->registry_);
    m->exposer_->RegisterCollectable(m->snapshots_);
    const std::vector<int> ports = m->exposer_->GetListeningPorts();
    const size_t colon = options.address.rfind(':');
    m->bound_address_ = ports.empty() || colon == std::string::npos
                            ? options.address
                            : absl::StrCat(options.address.substr(0, colon), ":", ports[0]);
  }
  return m;
}

ServerMetrics::~ServerMetrics() = default;

void ServerMetrics::StopEndpoint() { exposer_.reset(); }

ServerMetrics::DeviceSeries& ServerMetrics::Device(int device, bool executed) {
  const int slot = !executed ? 0 : device < 0 ? 1 : 2 + device;
  if (slot < static_cast<int>(devices_.size())) {
    if (DeviceSeries* s = devices_[slot].load(std::memory_order_acquire)) return *s;
  }
  // Slow path: first use of this device, or a GPU ordinal beyond the lock-free slots.
  absl::MutexLock lock(&mu_);
  if (auto it = owned_.find(slot); it != owned_.end()) return *it->second;
  auto series = std::make_unique<DeviceSeries>();
  series->name = DeviceName(device, executed);
  if (executed) {
    const prometheus::Labels device_label = {{"device", series->name}};
    series->latency = &latency_family_->Add(device_label, LatencyBuckets());
    auto stage = [&](const char* name) {
      prometheus::Labels labels = device_label;
      labels["stage"] = name;
      return &stage_family_->Add(labels, LatencyBuckets());
    };
    series->queue = stage("queue");
    series->compute = stage("compute");
    if (device < 0) {
      series->batch_formation = stage("batch_formation");
      series->output = stage("output");
    } else {
      series->h2d = stage("h2d");
      series->d2h = stage("d2h");
    }
  }
  DeviceSeries* raw = series.get();
  owned_.emplace(slot, std::move(series));
  if (slot < static_cast<int>(devices_.size())) {
    devices_[slot].store(raw, std::memory_order_release);
  }
  return *raw;
}

prometheus::Histogram& ServerMetrics::QueueWait(int level) {
  if (prometheus::Histogram* h = queue_wait_[level].load(std::memory_order_acquire)) return *h;
  absl::MutexLock lock(&mu_);
  prometheus::Histogram* h = queue_wait_[level].load(std::memory_order_acquire);
  if (h == nullptr) {
    h = &queue_wait_family_->Add({{"level", std::to_string(level)}}, LatencyBuckets());
    queue_wait_[level].store(h, std::memory_order_release);
  }
  return *h;
}

prometheus::Counter& ServerMetrics::Requests(DeviceSeries& device, absl::StatusCode code) {
  int index = static_cast<int>(code);
  if (index < 0 || index >= kNumStatusCodes) index = static_cast<int>(absl::StatusCode::kUnknown);
  if (prometheus::Counter* c = device.requests[index].load(std::memory_order_acquire)) return *c;
  absl::MutexLock lock(&mu_);
  prometheus::Counter* c = device.requests[index].load(std::memory_order_acquire);
  if (c == nullptr) {
    c = &requests_family_->Add({{"device", device.name},
                                {"status", StatusCodeName(static_cast<absl::StatusCode>(index))}});
    device.requests[index].store(c, std::memory_order_release);
  }
  return *c;
}

void ServerMetrics::RecordOutcome(const RequestOutcome& outcome) {
  const StageDurations s = StagesOf(outcome);
  const ExecTimestamps& t = outcome.timestamps;
  if (t.level >= 1 && t.level <= kMaxPriorityLevels && t.batch_formed != absl::InfinitePast() &&
      t.enqueued != absl::InfinitePast()) {
    QueueWait(t.level).Observe(
        std::max(0.0, absl::ToDoubleSeconds(t.batch_formed - t.enqueued)));
  }
  DeviceSeries& device = Device(outcome.timestamps.device, s.executed);
  Requests(device, outcome.code).Increment();
  if (outcome.code != absl::StatusCode::kOk || !s.executed) return;
  response_bytes_->Increment(static_cast<double>(outcome.response_bytes));
  device.latency->Observe(s.total);
  if (s.has_queue) device.queue->Observe(s.queue);
  if (s.has_compute) device.compute->Observe(s.compute);
  if (s.has_batch_formation && device.batch_formation) {
    device.batch_formation->Observe(s.batch_formation);
  }
  if (s.has_output && device.output) device.output->Observe(s.output);
  if (s.has_h2d && device.h2d) device.h2d->Observe(s.h2d);
  if (s.has_d2h && device.d2h) device.d2h->Observe(s.d2h);
}

void ServerMetrics::RecordRequestBytes(int64_t bytes) {
  request_bytes_->Increment(static_cast<double>(bytes));
}

void ServerMetrics::RecordRejection(RejectReason reason) {
  rejected_[static_cast<int>(reason)]->Increment();
}

std::string ServerMetrics::Serialize() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  for (auto& f : snapshots_->Collect()) families.push_back(std::move(f));
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

}  // namespace sparkle
