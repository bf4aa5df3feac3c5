// sparklectl's per-daemon commands: status, devices, queue (sparkle.v1.Control/GetStatus) and
// drain (Control/Drain). With one daemon in --target they print that daemon's view; with a list
// or a dns: name (client/target.h) they query every daemon in parallel and print one row (or
// one JSON array element) per daemon, so that an operator sees the whole fleet at once.
//
// Result: OK when every daemon answered; otherwise the first failure in target order (after
// printing what the others answered), so that the exit code is 1 (a server error) or 2 (could
// not connect) as for a single daemon. drain is also a server error (DEADLINE_EXCEEDED, exit 1)
// when a daemon still had jobs in flight at its timeout.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/sparkle_client.h"
#include "sparkle/v1/control.pb.h"

namespace sparkle::client {

// One daemon's answer.
struct DaemonStatus {
  std::string target;
  absl::StatusOr<sparkle::v1::GetStatusResponse> status;
};

// GetStatus from every daemon of connection.target, in target order. Fails only when the target
// itself is invalid (INVALID_ARGUMENT) or a dns: name does not resolve (UNAVAILABLE).
absl::StatusOr<std::vector<DaemonStatus>> QueryEveryDaemon(
    const SparkleClient::Options& connection);

// `status`: everything GetStatus reports (identity, lifecycle, devices, router, registry,
// queues, counters). JSON: the GetStatusResponse with proto field names and every field; for a
// list, an array of {"target": ..., "status": {...}} or {"target": ..., "error": {...}}.
absl::Status RunStatus(const SparkleClient::Options& connection, bool json, std::ostream& out);

// `devices`: one row per device (per daemon). JSON: {"target", "devices": [...]}, an array for
// a list.
absl::Status RunDevices(const SparkleClient::Options& connection, bool json, std::ostream& out);

// `queue`: queued and in-flight jobs with their limits, and the jobs waiting per shape class.
// JSON: {"target", "queued_jobs", "queued_bytes", "max_queued_jobs", "max_queued_bytes",
// "in_flight_jobs", "queue": [...]}, an array for a list.
absl::Status RunQueue(const SparkleClient::Options& connection, bool json, std::ostream& out);

// `drain`: Control.Drain on every daemon in parallel; waits up to `timeout` (zero: each
// daemon's own --drain_timeout). The daemons stay up, not serving, until stopped.
absl::Status RunDrain(const SparkleClient::Options& connection, absl::Duration timeout,
                      bool json, std::ostream& out);

}  // namespace sparkle::client
