// Drainer: the graceful drain that SIGTERM (SparkleServer::Shutdown) and the Control.Drain RPC
// share (docs/operations.md, "Stop, drain and restart"): health goes NOT_SERVING for every service, the engine stops
// admitting (new inference requests get UNAVAILABLE), and callers wait until every accepted job
// has completed or their deadline passes. A drain cannot be undone: a drained daemon only
// stops (SIGTERM / `systemctl stop`).
//
// Thread-safety: all methods may be called concurrently.
#pragma once

#include <cstdint>
#include <functional>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "grpcpp/health_check_service_interface.h"

namespace sparkle {

struct DrainResult {
  bool drained = false;         // every accepted job completed before the deadline
  int64_t in_flight_jobs = 0;   // accepted and not completed when Drain returned
  absl::Duration waited;        // time spent in Drain
  bool stopping = false;        // Stop() had been called: nothing was waited for, and the
                                // other fields say nothing (the engine may be gone)
};

class Drainer {
 public:
  // Neither is owned; both must outlive the Drainer. `on_start` (may be empty) runs once, on
  // the thread of the first Drain call, after admission has stopped.
  Drainer(Engine* engine, grpc::HealthCheckServiceInterface* health,
          std::function<void()> on_start);

  // Begins the drain (first call only), then waits until no accepted job is left, `deadline`
  // passes, or Stop() is called. Jobs still running at the deadline keep running.
  DrainResult Drain(absl::Time deadline);

  // Health goes NOT_SERVING for every service now while admission goes on (the preStop
  // pattern: --drain_delay lets load balancers and endpoints move away before anything is
  // refused). Idempotent; Drain does it too.
  void StopAdvertising();

  // Makes every Drain call return now (and later ones at once), and returns when no caller is
  // still inside Drain. SparkleServer calls it before it destroys the engine.
  void Stop();

  bool started() const;

 private:
  int64_t InFlightJobs() const;

  Engine* const engine_;
  grpc::HealthCheckServiceInterface* const health_;
  const std::function<void()> on_start_;

  mutable absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;  // monotonic
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;  // monotonic
  int waiters_ ABSL_GUARDED_BY(mu_) = 0;       // callers inside Drain
};

}  // namespace sparkle
