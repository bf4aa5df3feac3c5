#include "bench/metrics_bench.h"

#include <algorithm>
#include <cstdio>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "server/inference_stats.h"
#include "server/server_metrics.h"

namespace sparkle::bench {
namespace {

RequestOutcome TypicalOutcome() {
  const absl::Time t0 = absl::Now();
  RequestOutcome o;
  o.n = 1;
  o.response_bytes = 65536;
  o.received = t0;
  ExecTimestamps& t = o.timestamps;
  t.enqueued = t0 + absl::Microseconds(20);
  t.batch_formed = t0 + absl::Microseconds(60);
  t.compute_start = t0 + absl::Microseconds(70);
  t.compute_end = t0 + absl::Microseconds(150);
  t.done = t0 + absl::Microseconds(155);
  t.batch_n = 4;
  t.batch_jobs = 4;
  t.device = -1;
  return o;
}

// ns per request with `threads` threads recording `per_thread` requests each.
double NsPerRequest(InferenceStats* stats, ServerMetrics* metrics, int threads, int per_thread) {
  const RequestOutcome outcome = TypicalOutcome();
  const absl::Time start = absl::Now();
  std::vector<std::thread> workers;
  for (int i = 0; i < threads; ++i) {
    workers.emplace_back([&] {
      for (int j = 0; j < per_thread; ++j) {
        stats->Record(outcome);
        if (metrics != nullptr) metrics->RecordOutcome(outcome);
      }
    });
  }
  for (auto& w : workers) w.join();
  return absl::ToDoubleNanoseconds(absl::Now() - start) /
         (static_cast<double>(threads) * per_thread);
}

}  // namespace

int MetricsRecord(int rounds) {
  InferenceStats stats;
  ServerMetrics::Sources sources;
  sources.engine = [] { return EngineStats(); };
  sources.stats = &stats;
  auto metrics = ServerMetrics::Create({}, sources);
  if (!metrics.ok()) {
    std::fprintf(stderr, "%s\n", metrics.status().ToString().c_str());
    return 1;
  }
  constexpr int kPerThread = 1000000;
  std::printf("ns per recorded request (wall time / requests), min/median/max over %d rounds\n",
              rounds);
  for (int threads : {1, 2}) {
    std::vector<double> only_stats, with_metrics;
    for (int round = 0; round < rounds; ++round) {
      only_stats.push_back(NsPerRequest(&stats, nullptr, threads, kPerThread));
      with_metrics.push_back(NsPerRequest(&stats, metrics->get(), threads, kPerThread));
    }
    std::sort(only_stats.begin(), only_stats.end());
    std::sort(with_metrics.begin(), with_metrics.end());
    auto fmt = [](const std::vector<double>& v) {
      char buf[64];
      std::snprintf(buf, sizeof(buf), "%.0f/%.0f/%.0f", v.front(), v[v.size() / 2], v.back());
      return std::string(buf);
    };
    std::printf("%d thread(s): InferenceStats only %s ns; + Prometheus metrics %s ns\n", threads,
                fmt(only_stats).c_str(), fmt(with_metrics).c_str());
  }
  return 0;
}

}  // namespace sparkle::bench
