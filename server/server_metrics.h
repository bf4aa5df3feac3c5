// ServerMetrics: sparkled's Prometheus metrics (prometheus-cpp), served as text on
// http://<address>/metrics. docs/metrics.md lists every family with its labels, unit and
// buckets.
//
// Two kinds of families:
//  - recorded per request: RecordOutcome from the engine's done callback (just before the
//    reply, so that a client holding its response sees it counted), RecordRejection where
//    admission refused a request. Series handles are resolved once and cached, so a request
//    costs a few atomic adds and one uncontended mutex per histogram observation
//    (prometheus-cpp's Histogram::Observe): ~0.4 us (sparkle_bench metrics_record);
//  - read at scrape time from snapshots (EngineStats: queue, devices; InferenceStats: executed
//    batch sizes), through a prometheus::Collectable: nothing is updated per request for them.
//
// Thread-safe.
#pragma once

#include <array>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "engine/devices_snapshot.h"
#include "engine/engine.h"
#include "server/inference_stats.h"
#include "server/request_outcome.h"

namespace prometheus {
class Counter;
class Exposer;
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace sparkle {

// Why admission refused a request (label `reason` of sparkle_rejected_requests_total).
enum class RejectReason {
  kInvalid,       // INVALID_ARGUMENT: malformed request, bad geometry or parameters
  kUnknownModel,  // NOT_FOUND: model name or version
  kTooLarge,      // RESOURCE_EXHAUSTED: message or job above a size limit
  kQueueFull,     // RESOURCE_EXHAUSTED: the queue bound (retryable)
  kDraining,      // UNAVAILABLE: shutting down
  kUnavailable,   // UNAVAILABLE otherwise (e.g. the requested device is unhealthy)
  kDevice,        // FAILED_PRECONDITION: the requested device does not exist or cannot run it
  kDeadline,      // DEADLINE_EXCEEDED: expired before admission
  kOther,
};
inline constexpr int kNumRejectReasons = 9;
const char* RejectReasonName(RejectReason reason);

// The reason for a status that Submit or the parser returned. `queue_full`: IsQueueFull(status);
// `draining`: the engine was draining.
RejectReason RejectReasonFor(const absl::Status& status, bool queue_full, bool draining);

class ServerMetrics {
 public:
  struct Options {
    // host:port for the HTTP endpoint (civetweb syntax; port 0 picks a free one). Empty: no
    // endpoint, the metrics are only recorded (tests read them with Serialize()).
    std::string address;
  };
  // Weights registry size, for the sparkle_registry_* gauges.
  struct RegistrySize {
    int64_t weights = 0;
    int64_t bytes = 0;
    int64_t budget_bytes = 0;
  };
  // What the scrape-time families read. Each is called once per scrape, on the HTTP thread,
  // and must stay callable until StopEndpoint() (or destruction). A null source leaves its
  // families out (devices: the CPU pool is then described from `engine` alone).
  struct Sources {
    std::function<EngineStats()> engine;       // required
    std::function<DevicesSnapshot()> devices;  // per-device health, work, router decisions
    std::function<RegistrySize()> registry;    // weights registry
    const InferenceStats* stats = nullptr;     // required; executed batch sizes
  };

  // Builds the registry and, when options.address is set, starts the endpoint. UNAVAILABLE
  // naming the address when it cannot be bound (in use, bad address).
  static absl::StatusOr<std::unique_ptr<ServerMetrics>> Create(const Options& options,
                                                               Sources sources);
  ~ServerMetrics();

  // Stops serving /metrics (joins the HTTP threads), so that the sources may go away while
  // recording continues (jobs still completing during shutdown). Idempotent.
  void StopEndpoint();

  // One accepted request completed (any status). `request_bytes` was counted on arrival.
  void RecordOutcome(const RequestOutcome& outcome);
  // ModelInfer received a message of this many bytes (every request, accepted or not).
  void RecordRequestBytes(int64_t bytes);
  // Admission refused a request.
  void RecordRejection(RejectReason reason);

  // The text exposition format, exactly what /metrics serves.
  std::string Serialize() const;
  // "host:port" of the endpoint with the bound port; empty without an endpoint.
  const std::string& address() const { return bound_address_; }

 private:
  // Series of one device, resolved on first use.
  struct DeviceSeries;
  class SnapshotCollector;
  static constexpr int kMaxGpus = 16;
  static constexpr int kNumStatusCodes = 17;  // absl/gRPC codes 0..16
  static constexpr int kMaxPriorityLevels = 16;  // ShapeBatcher::Options::priority_levels

  ServerMetrics() = default;
  DeviceSeries& Device(int device, bool executed);
  // sparkle_queue_wait_seconds{level}, created on first use; level in [1, kMaxPriorityLevels].
  prometheus::Histogram& QueueWait(int level);
  prometheus::Counter& Requests(DeviceSeries& device, absl::StatusCode code);

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<SnapshotCollector> snapshots_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string bound_address_;

  prometheus::Family<prometheus::Counter>* requests_family_ = nullptr;
  prometheus::Family<prometheus::Histogram>* latency_family_ = nullptr;
  prometheus::Family<prometheus::Histogram>* stage_family_ = nullptr;
  prometheus::Family<prometheus::Histogram>* queue_wait_family_ = nullptr;
  // Indexed by level; [0] unused.
  std::array<std::atomic<prometheus::Histogram*>, kMaxPriorityLevels + 1> queue_wait_{};
  prometheus::Counter* request_bytes_ = nullptr;
  prometheus::Counter* response_bytes_ = nullptr;
  std::array<prometheus::Counter*, kNumRejectReasons> rejected_{};

  absl::Mutex mu_;  // creating series
  // Slot 0 "none" (never executed), 1 "cpu", 2 + i "gpu:i". The first 2 + kMaxGpus slots are
  // also published in devices_ for lock-free lookup.
  std::array<std::atomic<DeviceSeries*>, 2 + kMaxGpus> devices_{};
  std::map<int, std::unique_ptr<DeviceSeries>> owned_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sparkle
