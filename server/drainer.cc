#include "server/drainer.h"

#include <algorithm>
#include <utility>

namespace sparkle {
namespace {

// Engine::Drain cannot be woken early; waiting in slices this long lets Stop() end a waiter.
constexpr absl::Duration kWaitSlice = absl::Milliseconds(50);

}  // namespace

Drainer::Drainer(Engine* engine, grpc::HealthCheckServiceInterface* health,
                 std::function<void()> on_start)
    : engine_(engine), health_(health), on_start_(std::move(on_start)) {}

DrainResult Drainer::Drain(absl::Time deadline) {
  const absl::Time start = absl::Now();
  bool first;
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) {  // the engine may already be destroyed: touch nothing
      DrainResult stopping;
      stopping.stopping = true;
      return stopping;
    }
    first = !started_;
    started_ = true;
    ++waiters_;
  }
  if (first) {
    // Load balancers and health checkers see NOT_SERVING first (Shutdown is the one call that
    // sets every service NOT_SERVING and keeps it so); then admission stops: Engine::Drain with
    // a past deadline only closes the door.
    health_->Shutdown();
    engine_->Drain(absl::InfinitePast()).IgnoreError();
    if (on_start_) on_start_();
  }
  bool drained = false;
  while (true) {
    drained = engine_->Drain(std::min(deadline, absl::Now() + kWaitSlice)).ok();
    if (drained || absl::Now() >= deadline) break;
    absl::MutexLock lock(&mu_);
    if (stopped_) break;
  }
  DrainResult result{drained, InFlightJobs(), absl::Now() - start};
  absl::MutexLock lock(&mu_);
  --waiters_;
  return result;
}

void Drainer::StopAdvertising() {
  absl::MutexLock lock(&mu_);
  if (!stopped_) health_->Shutdown();
}

void Drainer::Stop() {
  absl::MutexLock lock(&mu_);
  stopped_ = true;
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return waiters_ == 0; };
  mu_.Await(absl::Condition(&idle));
}

bool Drainer::started() const {
  absl::MutexLock lock(&mu_);
  return started_;
}

int64_t Drainer::InFlightJobs() const {
  const EngineStats stats = engine_->Stats();
  return std::max<int64_t>(0, stats.jobs_accepted - stats.jobs_succeeded - stats.jobs_failed);
}

}  // namespace sparkle
