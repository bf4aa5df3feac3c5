#include "client/status_commands.h"

#include <memory>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "client/human_format.h"
#include "client/json_output.h"
#include "client/table.h"
#include "client/target.h"
#include "base/status_macros.h"

namespace sparkle::client {
namespace {

using sparkle::v1::DeviceStatus;
using sparkle::v1::GetStatusResponse;

// Runs `query(target)` for every daemon on its own thread; results in target order.
template <typename Result, typename Query>
std::vector<Result> ForEachDaemon(const std::vector<std::string>& daemons, Query query) {
  std::vector<Result> results(daemons.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < daemons.size(); ++i) {
    threads.emplace_back([&, i] { results[i] = query(daemons[i]); });
  }
  for (std::thread& t : threads) t.join();
  return results;
}

SparkleClient::Options ForOneDaemon(const SparkleClient::Options& connection,
                                    const std::string& daemon) {
  SparkleClient::Options options = connection;
  options.target = daemon;
  options.channels = 1;
  return options;
}

std::string ErrorJson(const absl::Status& status) {
  return absl::StrCat("{\"code\": ", JsonQuote(absl::StatusCodeToString(status.code())),
                      ", \"message\": ", JsonQuote(status.message()), "}");
}

// The first failure in target order, or OK.
absl::Status FirstError(const std::vector<DaemonStatus>& daemons) {
  for (const DaemonStatus& d : daemons) {
    if (!d.status.ok()) return d.status.status();
  }
  return absl::OkStatus();
}

// Whether --target named several daemons (a list or a dns: name): the per-daemon layouts.
absl::StatusOr<bool> IsFleet(const SparkleClient::Options& connection) {
  SPARKLE_ASSIGN_OR_RETURN(const Target target, ParseTarget(connection.target));
  return target.round_robin;
}

std::string Rate(double gflop, double seconds) {
  return seconds > 0 ? absl::StrFormat("%.1f", gflop / seconds) : "-";
}

void AddDeviceRow(TextTable* table, const std::string* target, const DeviceStatus& d) {
  std::vector<std::string> row;
  if (target != nullptr) row.push_back(*target);
  std::string memory = "-";
  if (d.memory_bytes() > 0) {
    memory = absl::StrCat(HumanBytes(d.memory_used_bytes()), " / ", HumanBytes(d.memory_bytes()));
  }
  std::string detail = d.detail();
  if (!d.unhealthy_reason().empty()) absl::StrAppend(&detail, " (", d.unhealthy_reason(), ")");
  for (std::string cell :
       {d.name(), d.kind(), YesNo(d.healthy()), absl::StrCat(d.threads()),
        absl::StrCat(d.jobs_done()), absl::StrCat(d.batches_done()),
        absl::StrFormat("%.1f", d.gflop_done()), absl::StrFormat("%.1fs", d.busy_seconds()),
        Rate(d.gflop_done(), d.busy_seconds()), absl::StrCat(d.queued_batches()),
        d.measured_gflops() > 0 ? absl::StrFormat("%.1f", d.measured_gflops()) : "-",
        d.measured_transfer_gbps() > 0 ? absl::StrFormat("%.1f", d.measured_transfer_gbps())
                                       : "-",
        memory, detail}) {
    row.push_back(std::move(cell));
  }
  table->AddRow(std::move(row));
}

std::vector<std::string> DeviceHeader(bool with_target) {
  std::vector<std::string> header;
  if (with_target) header.push_back("TARGET");
  for (const char* h : {"DEVICE", "KIND", "HEALTHY", "THREADS", "JOBS", "BATCHES", "GFLOP",
                        "BUSY", "GFLOP/s(busy)", "QUEUED", "EST.GFLOP/s", "EST.GB/s", "MEMORY",
                        "DETAIL"}) {
    header.push_back(h);
  }
  return header;
}

std::string QueueLine(const GetStatusResponse& s) {
  return absl::StrCat("queue ", s.queued_jobs(), " jobs, ", HumanBytes(s.queued_bytes()),
                      " (limits ", s.max_queued_jobs(), " jobs, ",
                      HumanBytes(s.max_queued_bytes()), ")  in flight ", s.in_flight_jobs());
}

std::string RouterLine(const GetStatusResponse& s) {
  const auto& r = s.router();
  std::string line = absl::StrCat(
      "router ", r.policy().empty() ? "-" : r.policy(), "  batches cpu ", r.decisions_cpu(),
      " gpu ", r.decisions_gpu(), "  crossover ",
      r.crossover_mflop() > 0 ? absl::StrFormat("%.1f MFLOP", r.crossover_mflop())
                              : std::string("none"));
  if (!r.gpu_fallback_reason().empty()) absl::StrAppend(&line, "  (", r.gpu_fallback_reason(), ")");
  return line;
}

std::string RegistryLine(const GetStatusResponse& s) {
  const auto& r = s.registry();
  return absl::StrCat("registry ", r.weights(), " weights, ", HumanBytes(r.bytes()), " of ",
                      r.budget_bytes() > 0 ? HumanBytes(r.budget_bytes()) : std::string("-"),
                      " budget");
}

// The transport security of one daemon in a few words: "plaintext", "tls", "mtls", plus
// "+token" and "+admin" (a separate admin listener); "-" when the daemon does not report it.
std::string SecuritySummary(const GetStatusResponse& s) {
  if (!s.has_security()) return "-";
  const sparkle::v1::SecurityStatus& sec = s.security();
  std::string text = sec.mtls() ? "mtls" : sec.tls() ? "tls" : "plaintext";
  if (sec.auth_tokens()) absl::StrAppend(&text, "+token");
  if (sec.admin_listener()) absl::StrAppend(&text, "+admin");
  if (sec.warnings_size() > 0) absl::StrAppend(&text, " (", sec.warnings_size(), " warning",
                                               sec.warnings_size() == 1 ? "" : "s", ")");
  return text;
}

// "security tls on, client certificates required ..." and the certificate/caller lines.
void PrintSecurity(const GetStatusResponse& s, std::ostream& out) {
  if (!s.has_security()) return;
  const sparkle::v1::SecurityStatus& sec = s.security();
  out << "security tls " << (sec.tls() ? "on" : "off");
  if (sec.tls()) out << "  client certificates " << (sec.mtls() ? "required" : "not required");
  out << "  tokens " << (sec.auth_tokens() ? "required" : "off") << "  admin listener "
      << YesNo(sec.admin_listener()) << '\n';
  if (!sec.certificate_subject().empty() || sec.certificate_not_after_unix_seconds() > 0) {
    out << "  certificate "
        << (sec.certificate_subject().empty() ? "-" : sec.certificate_subject());
    if (sec.certificate_not_after_unix_seconds() > 0) {
      const absl::Time not_after =
          absl::UnixEpoch() + absl::Seconds(sec.certificate_not_after_unix_seconds());
      const absl::Duration left = not_after - absl::Now();
      out << "  expires " << absl::FormatTime("%Y-%m-%d %H:%M UTC", not_after, absl::UTCTimeZone())
          << (left < absl::ZeroDuration()
                  ? " (EXPIRED)"
                  : left >= absl::Hours(48)
                        ? absl::StrCat(" (in ", absl::ToInt64Hours(left) / 24, " days)")
                        : absl::StrCat(" (in ", absl::ToInt64Hours(left), " hours)"));
    }
    out << '\n';
  }
  if (!sec.caller().empty() || !sec.caller_role().empty()) {
    out << "  caller " << (sec.caller().empty() ? "-" : sec.caller()) << "  role "
        << (sec.caller_role().empty() ? "-" : sec.caller_role()) << '\n';
  }
}

// One "WARNING: ..." line per security warning (prefixed by the target for a fleet).
void PrintSecurityWarnings(const GetStatusResponse& s, const std::string* target,
                           std::ostream& out) {
  for (const std::string& warning : s.security().warnings()) {
    out << "WARNING: " << (target != nullptr ? absl::StrCat(*target, ": ") : "") << warning
        << '\n';
  }
}

void PrintOneStatus(const GetStatusResponse& status, std::ostream& out) {
  out << "sparkled " << status.version() << " (" << status.build() << ")";
  if (!status.listen_address().empty()) out << " at " << status.listen_address();
  out << '\n';
  out << "uptime " << HumanUptime(status.uptime_seconds()) << "  ready " << YesNo(status.ready())
      << "  draining " << YesNo(status.draining());
  if (!status.metrics_address().empty()) out << "  metrics " << status.metrics_address();
  out << '\n';
  PrintSecurity(status, out);
  PrintSecurityWarnings(status, nullptr, out);
  out << '\n';

  TextTable devices(DeviceHeader(false));
  for (const auto& d : status.devices()) AddDeviceRow(&devices, nullptr, d);
  devices.Print(out);

  out << '\n' << RouterLine(status) << '\n' << RegistryLine(status) << '\n';
  out << '\n' << QueueLine(status) << '\n';
  if (status.queue_size() > 0) {
    TextTable queue({"SHAPE CLASS", "JOBS", "BYTES"});
    for (const auto& q : status.queue()) {
      queue.AddRow({q.shape(), absl::StrCat(q.jobs()), HumanBytes(q.bytes())});
    }
    queue.Print(out, "  ");
  }

  out << "\njobs accepted " << status.jobs_accepted() << "  succeeded "
      << status.jobs_succeeded() << "  failed " << status.jobs_failed() << "  rejected "
      << status.jobs_rejected() << "  mean batch size "
      << absl::StrFormat("%.2f", status.mean_batch_size()) << '\n';
}

// JSON for a fleet: [{"target": T, <key>: <value JSON>} | {"target": T, "error": {...}}, ...].
template <typename Render>
absl::Status PrintFleetJson(const std::vector<DaemonStatus>& daemons, const char* key,
                            Render render, std::ostream& out) {
  out << "[";
  for (size_t i = 0; i < daemons.size(); ++i) {
    out << (i == 0 ? "\n  " : ",\n  ") << "{\"target\": " << JsonQuote(daemons[i].target) << ", ";
    if (daemons[i].status.ok()) {
      SPARKLE_ASSIGN_OR_RETURN(const std::string body, render(*daemons[i].status));
      out << '"' << key << "\": " << body << "}";
    } else {
      out << "\"error\": " << ErrorJson(daemons[i].status.status()) << "}";
    }
  }
  out << "\n]\n";
  return absl::OkStatus();
}

absl::StatusOr<std::string> DevicesJson(const GetStatusResponse& s) {
  std::vector<std::string> parts;
  for (const auto& d : s.devices()) {
    SPARKLE_ASSIGN_OR_RETURN(std::string text, ToJson(d, /*pretty=*/false));
    parts.push_back(std::move(text));
  }
  return absl::StrCat("[", absl::StrJoin(parts, ", "), "]");
}

absl::StatusOr<std::string> QueueJson(const GetStatusResponse& s) {
  std::vector<std::string> classes;
  for (const auto& q : s.queue()) {
    SPARKLE_ASSIGN_OR_RETURN(std::string text, ToJson(q, /*pretty=*/false));
    classes.push_back(std::move(text));
  }
  return absl::StrCat("{\"queued_jobs\": ", s.queued_jobs(), ", \"queued_bytes\": ",
                      s.queued_bytes(), ", \"max_queued_jobs\": ", s.max_queued_jobs(),
                      ", \"max_queued_bytes\": ", s.max_queued_bytes(),
                      ", \"in_flight_jobs\": ", s.in_flight_jobs(), ", \"queue\": [",
                      absl::StrJoin(classes, ", "), "]}");
}

}  // namespace

absl::StatusOr<std::vector<DaemonStatus>> QueryEveryDaemon(
    const SparkleClient::Options& connection) {
  SPARKLE_ASSIGN_OR_RETURN(const Target target, ParseTarget(connection.target));
  SPARKLE_ASSIGN_OR_RETURN(const std::vector<std::string> daemons, DaemonTargets(target));
  std::vector<absl::StatusOr<GetStatusResponse>> answers =
      ForEachDaemon<absl::StatusOr<GetStatusResponse>>(
          daemons, [&](const std::string& daemon) -> absl::StatusOr<GetStatusResponse> {
            SPARKLE_ASSIGN_OR_RETURN(std::unique_ptr<SparkleClient> client,
                                     SparkleClient::Connect(ForOneDaemon(connection, daemon)));
            return client->GetStatus();
          });
  std::vector<DaemonStatus> result;
  for (size_t i = 0; i < daemons.size(); ++i) {
    result.push_back({daemons[i], std::move(answers[i])});
  }
  return result;
}

absl::Status RunStatus(const SparkleClient::Options& connection, bool json, std::ostream& out) {
  SPARKLE_ASSIGN_OR_RETURN(const bool fleet, IsFleet(connection));
  SPARKLE_ASSIGN_OR_RETURN(const std::vector<DaemonStatus> daemons, QueryEveryDaemon(connection));
  if (!fleet) {
    const DaemonStatus& d = daemons.front();
    if (!d.status.ok()) return d.status.status();
    if (json) {
      SPARKLE_ASSIGN_OR_RETURN(const std::string text, ToJson(*d.status, /*pretty=*/true));
      out << text << '\n';
    } else {
      PrintOneStatus(*d.status, out);
    }
    return absl::OkStatus();
  }
  if (json) {
    SPARKLE_RETURN_IF_ERROR(PrintFleetJson(
        daemons, "status", [](const GetStatusResponse& s) { return ToJson(s, false); }, out));
    return FirstError(daemons);
  }
  TextTable table({"TARGET", "VERSION", "UPTIME", "READY", "DRAINING", "DEVICES", "IN FLIGHT",
                   "QUEUED", "ACCEPTED", "SUCCEEDED", "FAILED", "REJECTED", "CROSSOVER",
                   "WEIGHTS", "SECURITY", "ERROR"});
  for (const DaemonStatus& d : daemons) {
    if (!d.status.ok()) {
      table.AddRow({d.target, "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-",
                    "-", StatusText(d.status.status())});
      continue;
    }
    const GetStatusResponse& s = *d.status;
    int healthy = 0;
    for (const auto& dev : s.devices()) healthy += dev.healthy() ? 1 : 0;
    table.AddRow({d.target, s.version(), HumanUptime(s.uptime_seconds()), YesNo(s.ready()),
                  YesNo(s.draining()), absl::StrCat(healthy, "/", s.devices_size(), " healthy"),
                  absl::StrCat(s.in_flight_jobs()), absl::StrCat(s.queued_jobs()),
                  absl::StrCat(s.jobs_accepted()), absl::StrCat(s.jobs_succeeded()),
                  absl::StrCat(s.jobs_failed()), absl::StrCat(s.jobs_rejected()),
                  s.router().crossover_mflop() > 0
                      ? absl::StrFormat("%.1f MFLOP", s.router().crossover_mflop())
                      : "-",
                  absl::StrCat(s.registry().weights()), SecuritySummary(s), ""});
  }
  table.Print(out);
  for (const DaemonStatus& d : daemons) {
    if (d.status.ok()) PrintSecurityWarnings(*d.status, &d.target, out);
  }
  return FirstError(daemons);
}

absl::Status RunDevices(const SparkleClient::Options& connection, bool json, std::ostream& out) {
  SPARKLE_ASSIGN_OR_RETURN(const bool fleet, IsFleet(connection));
  SPARKLE_ASSIGN_OR_RETURN(const std::vector<DaemonStatus> daemons, QueryEveryDaemon(connection));
  if (!fleet && !daemons.front().status.ok()) return daemons.front().status.status();
  if (json) {
    if (!fleet) {
      SPARKLE_ASSIGN_OR_RETURN(const std::string body, DevicesJson(*daemons.front().status));
      out << "{\"target\": " << JsonQuote(daemons.front().target) << ", \"devices\": " << body
          << "}\n";
      return absl::OkStatus();
    }
    SPARKLE_RETURN_IF_ERROR(PrintFleetJson(daemons, "devices", DevicesJson, out));
    return FirstError(daemons);
  }
  TextTable table(DeviceHeader(fleet));
  for (const DaemonStatus& d : daemons) {
    if (!d.status.ok()) {
      std::vector<std::string> row(DeviceHeader(true).size() - 1, "-");
      row.front() = d.target;
      row.push_back(StatusText(d.status.status()));  // in the DETAIL column
      table.AddRow(std::move(row));
      continue;
    }
    for (const auto& dev : d.status->devices()) {
      AddDeviceRow(&table, fleet ? &d.target : nullptr, dev);
    }
  }
  table.Print(out);
  return FirstError(daemons);
}

absl::Status RunQueue(const SparkleClient::Options& connection, bool json, std::ostream& out) {
  SPARKLE_ASSIGN_OR_RETURN(const bool fleet, IsFleet(connection));
  SPARKLE_ASSIGN_OR_RETURN(const std::vector<DaemonStatus> daemons, QueryEveryDaemon(connection));
  if (!fleet && !daemons.front().status.ok()) return daemons.front().status.status();
  if (json) {
    if (!fleet) {
      SPARKLE_ASSIGN_OR_RETURN(const std::string body, QueueJson(*daemons.front().status));
      out << body << '\n';
      return absl::OkStatus();
    }
    SPARKLE_RETURN_IF_ERROR(PrintFleetJson(daemons, "queue", QueueJson, out));
    return FirstError(daemons);
  }
  if (!fleet) {
    const GetStatusResponse& s = *daemons.front().status;
    out << QueueLine(s) << '\n';
    if (s.queue_size() > 0) {
      TextTable queue({"SHAPE CLASS", "JOBS", "BYTES"});
      for (const auto& q : s.queue()) {
        queue.AddRow({q.shape(), absl::StrCat(q.jobs()), HumanBytes(q.bytes())});
      }
      queue.Print(out, "  ");
    }
    return absl::OkStatus();
  }
  TextTable table({"TARGET", "QUEUED", "BYTES", "IN FLIGHT", "MAX JOBS", "MAX BYTES",
                   "SHAPE CLASSES", "ERROR"});
  for (const DaemonStatus& d : daemons) {
    if (!d.status.ok()) {
      table.AddRow({d.target, "-", "-", "-", "-", "-", "-", StatusText(d.status.status())});
      continue;
    }
    const GetStatusResponse& s = *d.status;
    table.AddRow({d.target, absl::StrCat(s.queued_jobs()), HumanBytes(s.queued_bytes()),
                  absl::StrCat(s.in_flight_jobs()), absl::StrCat(s.max_queued_jobs()),
                  HumanBytes(s.max_queued_bytes()), absl::StrCat(s.queue_size()), ""});
  }
  table.Print(out);
  return FirstError(daemons);
}

absl::Status RunDrain(const SparkleClient::Options& connection, absl::Duration timeout,
                      bool json, std::ostream& out) {
  if (timeout < absl::ZeroDuration() || timeout > absl::Hours(1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--drain_timeout must be in [0, 1h]; was ", absl::FormatDuration(timeout)));
  }
  SPARKLE_ASSIGN_OR_RETURN(const bool fleet, IsFleet(connection));
  SPARKLE_ASSIGN_OR_RETURN(const Target target, ParseTarget(connection.target));
  SPARKLE_ASSIGN_OR_RETURN(const std::vector<std::string> daemons, DaemonTargets(target));
  using Answer = absl::StatusOr<sparkle::v1::DrainResponse>;
  std::vector<Answer> answers =
      ForEachDaemon<Answer>(daemons, [&](const std::string& daemon) -> Answer {
        SPARKLE_ASSIGN_OR_RETURN(std::unique_ptr<SparkleClient> client,
                                 SparkleClient::Connect(ForOneDaemon(connection, daemon)));
        return client->Drain(timeout);
      });
  // A daemon that answered but still had work in flight is a server-side failure (exit 1).
  absl::Status first_error;
  for (size_t i = 0; i < daemons.size() && first_error.ok(); ++i) {
    if (!answers[i].ok()) {
      first_error = answers[i].status();
    } else if (!answers[i]->drained()) {
      first_error = MarkAsServerError(absl::DeadlineExceededError(absl::StrCat(
          daemons[i], ": drain timeout passed with ", answers[i]->in_flight_jobs(),
          " job(s) still in flight")));
    }
  }
  if (json) {
    std::vector<std::string> parts;
    for (size_t i = 0; i < daemons.size(); ++i) {
      std::string body;
      if (answers[i].ok()) {
        SPARKLE_ASSIGN_OR_RETURN(std::string text, ToJson(*answers[i], /*pretty=*/false));
        body = absl::StrCat("\"drain\": ", text);
      } else {
        body = absl::StrCat("\"error\": ", ErrorJson(answers[i].status()));
      }
      parts.push_back(absl::StrCat("{\"target\": ", JsonQuote(daemons[i]), ", ", body, "}"));
    }
    out << (fleet ? absl::StrCat("[", absl::StrJoin(parts, ",\n "), "]") : parts.front())
        << '\n';
    return first_error;
  }
  TextTable table({"TARGET", "DRAINED", "IN FLIGHT", "WAITED", "ERROR"});
  for (size_t i = 0; i < daemons.size(); ++i) {
    if (!answers[i].ok()) {
      table.AddRow({daemons[i], "-", "-", "-", StatusText(answers[i].status())});
      continue;
    }
    table.AddRow({daemons[i], YesNo(answers[i]->drained()),
                  absl::StrCat(answers[i]->in_flight_jobs()),
                  absl::StrFormat("%.3fs", answers[i]->waited_seconds()), ""});
  }
  table.Print(out);
  bool any_answered = false;
  for (const Answer& a : answers) any_answered |= a.ok();
  if (any_answered) {
    out << "a drained daemon stays up, NOT_SERVING, until stopped (SIGTERM, systemctl stop "
           "sparkled)\n";
  }
  return first_error;
}

}  // namespace sparkle::client
