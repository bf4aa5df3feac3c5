// HttpGet: a minimal HTTP/1.0 GET over loopback TCP for tests that read sparkled's /metrics
// endpoint (no HTTP client library needed).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace sparkle::testing {

// GET http://`host_port``path` (host_port as "127.0.0.1:PORT", IPv4 only). Returns the body of a
// 200 reply; UNAVAILABLE when nothing listens, INTERNAL for any other reply.
absl::StatusOr<std::string> HttpGet(const std::string& host_port, const std::string& path);

// The value of the sample line in a Prometheus text exposition that starts with `series`
// (metric name and labels exactly as written, e.g. `sparkle_queue_jobs` or
// `sparkle_requests_total{device="cpu",status="OK"}`), or -1 when there is none.
double MetricValue(const std::string& text, const std::string& series);

}  // namespace sparkle::testing
